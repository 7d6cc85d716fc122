#!/usr/bin/env bash
# ferry benchmark matrix: native QEMU, QEMU's own options and ferry, side by side on real
# guests over tbf-shaped links between network namespaces. Needs root.
#
#   scripts/bench.sh                       the quick matrix (about 15 minutes)
#   scripts/bench.sh --matrix full         3 links x 5 workloads x 5 methods (~80 minutes)
#   scripts/bench.sh --matrix codecs       ferry's codec levels on one link
#   scripts/bench.sh --help                every option (resume, --only, --list, --report)
#   scripts/bench/throughput.py --help     (separate) ferry send -> recv on loopback vs a plain
#                                          copy of a captured stream: GB/s and CPU s/GB
#
# Installs and builds what it needs (scripts/setup.sh; the apps guest, a debootstrap-built
# Debian root with redis and PostgreSQL, when the matrix uses it), then runs
# scripts/bench/bench.py. Results: results/bench-<matrix>/ (runs.csv, summary.md, plots/).
set -euo pipefail
cd "$(dirname "$0")/.."
for a in "$@"; do
  case $a in -h|--help|--list) exec /usr/bin/python3 scripts/bench/bench.py "$@" ;; esac
done
scripts/setup.sh >/dev/null
/usr/bin/python3 - "$@" <<'PY' && scripts/guest/build-apps.sh
import json, os, sys
sys.path.insert(0, 'scripts/bench')
from workloads import WORKLOADS
args = sys.argv[1:]
m = args[args.index('--matrix') + 1] if '--matrix' in args else 'quick'
path = m if m.endswith('.json') else os.path.join('scripts/bench/matrix', m + '.json')
try:
    wls = json.load(open(path))['workloads']
except (OSError, ValueError, KeyError):
    sys.exit(1)  # bench.py reports the bad matrix
sys.exit(0 if any(WORKLOADS[w].guest == 'apps' for w in wls if w in WORKLOADS) else 1)
PY
exec /usr/bin/python3 scripts/bench/bench.py "$@"
