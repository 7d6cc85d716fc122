#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh) and runs every test suite: unit, then integration
# (real QEMU guests). Prints one closing line 'N passed, N failed, N skipped'.
#
#   scripts/test.sh                 all suites
#   scripts/test.sh --suite unit    one suite (any meson test arguments pass through)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

args=("$@")
if [[ ${#args[@]} -eq 0 ]]; then args=(--suite unit --suite integration); fi

status=0
meson test -C build --print-errorlogs --num-processes 2 "${args[@]}" || status=$?

# One closing line any CI can read.
python3 - build/meson-logs/testlog.json <<'PY'
import json, sys
counts = {"OK": 0, "FAIL": 0, "SKIP": 0, "TIMEOUT": 0, "EXPECTEDFAIL": 0, "UNEXPECTEDPASS": 0, "ERROR": 0}
for line in open(sys.argv[1]):
    r = json.loads(line)
    counts[r["result"]] = counts.get(r["result"], 0) + 1
failed = counts["FAIL"] + counts["TIMEOUT"] + counts["ERROR"] + counts["UNEXPECTEDPASS"]
print(f"{counts['OK'] + counts['EXPECTEDFAIL']} passed, {failed} failed, {counts['SKIP']} skipped")
PY
exit $status
