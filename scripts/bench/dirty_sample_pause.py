#!/usr/bin/env python3
"""Does ferry migrate's dirty-rate sample lengthen the pause the migration's setup gives the
guest? (issue 19: ferry's setup pauses at 100 Mbit/s mix-busy were above QEMU's own.)

A rig guest with the mix-busy workload (512 MiB, 96 MiB of mixed pages dirtied at 6000
pages/s) is migrated to `exec:cat > /dev/null` at max-bandwidth 100 Mbit/s (QEMU alone: no
ferry, no network) again and again, each time in one of three ways, in random order per
repetition:

    migrate          the migrate command alone
    migrate+512      then calc-dirty-rate at once, calc-time 1 s, QEMU's default 512 pages/GiB
    migrate+16384    the same with 16384 pages/GiB, as ferry migrate issues it

Per trial: the longest gap between the guest's host-stamped ticks in the 3 s after the
migrate command, then migrate_cancel and 2 s of quiet.

    scripts/bench/dirty_sample_pause.py [--reps 5] [--out FILE.json]
"""
import argparse
import json
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                                'tests', 'integration'))
import rig  # noqa: E402

WAYS = {'migrate': None, 'migrate+512': 512, 'migrate+16384': 16384}


def trial(g, pages):
    t0 = time.monotonic()
    g.migrate('exec:cat > /dev/null')
    if pages:
        g.qmp('calc-dirty-rate', **{'calc-time': 1, 'sample-pages': pages})
    rig.wait_until(lambda: time.monotonic() > t0 + 3, 10, 'window', interval=0.2)
    t = [x[0] for x in g.ticks()]
    gaps = [(b - a, a - t0) for a, b in zip(t, t[1:]) if b > t0 and a < t0 + 3]
    g.qmp('migrate_cancel')
    rig.wait_until(lambda: g.query_migrate().get('status') in ('cancelled', 'failed'), 30,
                   'the migration cancelled')
    if pages:  # the sample must be over before the next trial
        rig.wait_until(lambda: g.qmp('query-dirty-rate').get('status') != 'measuring', 30,
                       'the dirty-rate sample')
    time.sleep(2)  # quiet between trials; not a synchronisation
    gap, at = max(gaps)
    return gap * 1000, at


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--out', default=None)
    args = ap.parse_args()
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    rows = []
    with rig.Workdir('dsp') as wd:
        with rig.Guest('src', ram_kib=512 * 1024 + 8, workdir=wd,
                       workload={'ws': '96M', 'pattern': 'mix', 'rate': 6000}) as g:
            g.wait_ready(timeout=600)
            # A 100 Mbit/s link, as in the cell: the migration must not finish in the window.
            g.qmp('migrate-set-parameters', **{'max-bandwidth': 12_500_000})
            g.wait_heartbeats(50)
            for rep in range(1, args.reps + 1):
                order = list(WAYS)
                rnd.shuffle(order)
                for way in order:
                    ms, at = trial(g, WAYS[way])
                    rows.append({'rep': rep, 'way': way, 'longest_gap_ms': round(ms, 1),
                                 'at_s': round(at, 3)})
                    print('rep %d %-14s longest gap %4.0f ms (%.2f s after migrate)'
                          % (rep, way, ms, at), flush=True)
    print('\nmedian (min-max) of the longest gap, ms:')
    for way in WAYS:
        v = [r['longest_gap_ms'] for r in rows if r['way'] == way]
        print('  %-14s %4.0f (%.0f-%.0f)' % (way, statistics.median(v), min(v), max(v)))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump({'command': ' '.join(['scripts/bench/dirty_sample_pause.py'] + sys.argv[1:]),
                       'seed': seed, 'rows': rows}, f, indent=1)


if __name__ == '__main__':
    main()
