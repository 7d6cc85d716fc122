#!/bin/bash
# Two builds of ferry side by side on the same benchmark runs: for each repetition, every run
# id matching ONLY once with each build, in a random order, so both see the same machine.
#
#   scripts/bench/ab-builds.sh OLD_BUILD_DIR NEW_BUILD_DIR MATRIX ONLY REPS OUT
#
# e.g. scripts/bench/ab-builds.sh /tmp/old-build build scripts/bench/matrix/postcopy-cells.json
#      100mbit.redis.ferry-migrate 3 docs/bench/postcopy-switch
# Results: OUT/old and OUT/new, each a bench.py results folder (runs.csv, runs/*.json), and
# OUT/order.txt (which build ran first in each repetition).
set -euo pipefail
if [ $# -ne 6 ]; then
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
old=$1 new=$2 matrix=$3 only=$4 reps=$5 out=$6
root=$(cd "$(dirname "$0")/../.." && pwd)
for b in "$old" "$new"; do
    [ -x "$b/apps/ferry" ] || { echo "ab-builds: no $b/apps/ferry (build it first)" >&2; exit 2; }
done
mkdir -p "$out"
old=$(cd "$old" && pwd) new=$(cd "$new" && pwd)
for rep in $(seq 1 "$reps"); do
    order=(old new)
    if [ $((RANDOM % 2)) -eq 1 ]; then order=(new old); fi
    echo "rep $rep: ${order[*]}" | tee -a "$out/order.txt"
    for which in "${order[@]}"; do
        dir=$old
        [ "$which" = new ] && dir=$new
        FERRY_BUILD_DIR=$dir python3 "$root/scripts/bench/bench.py" --matrix "$matrix" \
            --out "$out/$which" --only "$only.$rep"
    done
done
