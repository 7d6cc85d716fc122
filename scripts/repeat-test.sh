#!/usr/bin/env bash
# Runs one test of the meson suites N times in a row, for timing-sensitive tests whose rare
# failures one run cannot show. Prints one line per run (result and the test's lines that
# match PATTERN) and a closing tally; exits 1 if any run failed.
#
#   scripts/repeat-test.sh TEST N [PATTERN]
#   scripts/repeat-test.sh proxy_udp_lossy_netns 10 'goodput'
#
# Each run's whole log is kept in build/meson-logs/repeat-TEST-K.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 2 ]]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
test_name=$1 runs=$2 pattern=${3:-PASS}
passed=0
for ((k = 1; k <= runs; k++)); do
  log=build/meson-logs/repeat-$test_name-$k.txt
  if meson test -C build --print-errorlogs "$test_name" >/dev/null 2>&1; then
    result=pass
    ((passed++))
  else
    result=FAIL
  fi
  cp build/meson-logs/testlog.txt "$log"
  echo "run $k: $result $(grep -m1 -e "$pattern" "$log" | cut -c1-400)"
done
echo "$test_name: $passed of $runs runs passed"
[[ $passed -eq $runs ]]
