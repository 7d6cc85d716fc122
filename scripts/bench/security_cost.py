#!/usr/bin/env python3
"""What link protection costs a real migration (docs/SECURITY.md): the same pre-copy over a
1 Gbit/s tbf-shaped veth between two namespaces, through ferry send/recv with --codec none
(so only the protection differs), with --insecure and with a pre-shared key (TLS 1.3 +
AES-256-GCM frames), in a random order per repetition.

    security_cost.py [--reps 3] [--rate 1gbit] [--out DIR]

Guest: 1 GiB (+8 KiB, the QEMU 7.2 TCG workaround) whose workload fills 768 MiB with random
(incompressible) pages at start and then re-dirties only 100 pages/s, so every run moves
about the same ~800 MB. Per run: QEMU's total-time, the bytes QEMU sent, user+sys CPU seconds of ferry send and ferry recv
(their --stats-json), and the guest's RAM compared page by page with the destination's.
Output: DIR/runs.csv and DIR/summary.md (median, min-max; time ratio protected/insecure of
the same repetition). Published runs go to docs/bench/security/.
"""
import argparse
import csv
import datetime
import os
import random
import statistics
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))
import rig  # noqa: E402
from test_proxy import Ferries, check_ferry_counts  # noqa: E402

RAM_KIB = 1048584
WORKLOAD = {'ws': '768M', 'pattern': 'random', 'rate': 100}
GB = 1e9


def one_run(mode, rate):
    with rig.Workdir('seccost') as wd, rig.Link(rate) as link, \
            rig.Guest('src', ram_kib=RAM_KIB, workload=WORKLOAD, workdir=wd,
                      netns=link.ns_a) as src, \
            rig.Guest.destination(src, 'dst', 'unix:' + wd.path('in.sock'),
                                  netns=link.ns_b) as dst:
        fr = Ferries(wd, link=link, security=mode)
        try:
            src.wait_ready()
            src.wait_heartbeats(3)
            src.set_parameters({'max-bandwidth': 10 << 30})
            fr.start_recv(wd.path('in.sock'))
            src.migrate(fr.start_send())
            info = src.wait_migration(timeout=600)
            dst.wait_incoming_done()
            src.wait_status('postmigrate')
            s, r = check_ferry_counts(fr, info, 1)
            diff = rig.check_ram_and_resume(src, dst)
            return {'mode': mode, 'total_ms': info['total-time'],
                    'transferred': info['ram']['transferred'],
                    'link_bytes': s['bytes_on_link'],
                    'send_cpu_s': round(s['cpu_user_s'] + s['cpu_sys_s'], 3),
                    'recv_cpu_s': round(r['cpu_user_s'] + r['cpu_sys_s'], 3),
                    'ram_pages_identical': diff.pages}
        finally:
            fr.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--rate', default='1gbit')
    ap.add_argument('--out', default=os.path.join(ROOT, 'results', 'security'))
    args = ap.parse_args()
    rig.require_qemu_and_guest()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for rep in range(1, args.reps + 1):
        modes = ['insecure', 'psk']
        random.shuffle(modes)
        for order, mode in enumerate(modes, 1):
            row = one_run(mode, args.rate)
            row.update(rep=rep, order=order)
            print('rep %d %-8s %6.1f s  %.0f MB  send %.2f s CPU  recv %.2f s CPU' %
                  (rep, mode, row['total_ms'] / 1e3, row['transferred'] / 1e6,
                   row['send_cpu_s'], row['recv_cpu_s']), flush=True)
            rows.append(row)
    cols = ['rep', 'order', 'mode', 'total_ms', 'transferred', 'link_bytes', 'send_cpu_s',
            'recv_cpu_s', 'ram_pages_identical']
    with open(os.path.join(args.out, 'runs.csv'), 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)

    def med(vals):
        return '%.2f (%.2f-%.2f)' % (statistics.median(vals), min(vals), max(vals))
    lines = ['# Link protection cost: %s, %s' % (args.rate, datetime.date.today()), '',
             'Command: `scripts/bench/security_cost.py --reps %d --rate %s`; commit %s.' %
             (args.reps, args.rate, subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short',
                                                    'HEAD'], capture_output=True,
                                                   text=True).stdout.strip()), '',
             '| mode | total time s | send CPU s/GB | recv CPU s/GB |', '|---|---|---|---|']
    for mode in ('insecure', 'psk'):
        rs = [r for r in rows if r['mode'] == mode]
        lines.append('| %s | %s | %s | %s |' % (
            mode, med([r['total_ms'] / 1e3 for r in rs]),
            med([r['send_cpu_s'] / (r['transferred'] / GB) for r in rs]),
            med([r['recv_cpu_s'] / (r['transferred'] / GB) for r in rs])))
    ratios = []
    for rep in range(1, args.reps + 1):
        t = {r['mode']: r['total_ms'] for r in rows if r['rep'] == rep}
        ratios.append(t['psk'] / t['insecure'])
    lines += ['', 'Time psk / insecure, per repetition: %s; median %.3f.' %
              (', '.join('%.3f' % x for x in ratios), statistics.median(ratios)), '']
    with open(os.path.join(args.out, 'summary.md'), 'w') as f:
        f.write('\n'.join(lines))
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
