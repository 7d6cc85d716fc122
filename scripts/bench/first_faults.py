#!/usr/bin/env python3
"""Where a post-copy destination's first page faults land, from benchmark runs.

    first_faults.py RUN.json [RUN.json ...]

Reads `switch_ms.fault_offsets` (the pages the destination asked for before its first tick
after the switch, runner.py) of every ferry run given and prints, per cell (link.workload):
runs, faults, the share in the top 16 MiB of the guest's RAM (the highest offset seen in the
cell stands for the RAM's end), and the share of a run's faults that were also among another
run's of the same cell (how repeatable the first faults are).
"""
import collections
import json
import sys

TOP_BYTES = 16 << 20


def main(paths):
    cells = collections.defaultdict(list)
    for p in paths:
        with open(p) as f:
            run = json.load(f)
        offsets = (run.get('switch_ms') or {}).get('fault_offsets')
        if offsets:
            cells['%s.%s' % (run['link'], run['workload'])].append(offsets)
    if not cells:
        sys.exit('first_faults: no run with switch_ms.fault_offsets among the files given')
    print('%-22s %5s %7s %12s %16s' % ('cell', 'runs', 'faults', 'top 16 MiB', 'in another run'))
    for cell, runs in sorted(cells.items()):
        end = max(max(r) for r in runs) + 4096
        faults = sum(len(r) for r in runs)
        top = sum(1 for r in runs for o in r if o >= end - TOP_BYTES)
        shared = 0
        for i, r in enumerate(runs):
            others = set().union(*(set(x) for j, x in enumerate(runs) if j != i))
            shared += sum(1 for o in r if o in others)
        print('%-22s %5d %7d %11.0f%% %15.0f%%' % (cell, len(runs), faults, 100.0 * top / faults,
                                                  100.0 * shared / faults))
    return 0


if __name__ == '__main__':
    if len(sys.argv) < 2 or sys.argv[1] in ('-h', '--help'):
        print(__doc__.strip())
        sys.exit(0 if len(sys.argv) > 1 else 2)
    sys.exit(main(sys.argv[1:]))
