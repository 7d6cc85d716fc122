#!/usr/bin/env python3
"""ferry demo: one live guest migration natively and one through ferry, side by side.

Both run on fresh guests with the same workload, across the same tbf-shaped veth between two
network namespaces (source side a, destination side b). Guest RAM is compared page by page
after each migration. Needs root (namespaces) and scripts/setup.sh done (scripts/demo.sh
does it).
"""
import argparse
import json
import os
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))
import rig  # noqa: E402
from test_proxy import Ferries, read_text  # noqa: E402

DEADLINE_S = 120


def say(msg):
    print('demo: ' + msg, flush=True)


def migrate_native(wd, lk, workload, ram_kib):
    uri = 'tcp:%s:4444' % lk.addr_b
    with rig.Guest('src-n', ram_kib=ram_kib, workload=workload, workdir=wd,
                   netns=lk.ns_a) as src, \
            rig.Guest.destination(src, 'dst-n', uri, netns=lk.ns_b) as dst:
        say('booting the guests for the native run ...')
        src.wait_ready()
        src.wait_heartbeats(3)
        say('migrating natively (QEMU pre-copy over TCP) ...')
        tx0 = lk.tx_bytes('a') + lk.tx_bytes('b')
        outcome, info = src.migrate_until(uri, DEADLINE_S)
        row = {'method': 'native QEMU', 'outcome': outcome,
               'total_ms': info.get('total-time'), 'downtime_ms': info.get('downtime')}
        if outcome == 'completed':
            dst.wait_incoming_done()
            src.wait_status('postmigrate')
        row['link_bytes'] = lk.tx_bytes('a') + lk.tx_bytes('b') - tx0
        row['ram'] = verify(src, dst) if outcome == 'completed' else '-'
        return row


def migrate_ferry(wd, lk, workload, ram_kib):
    qmp2 = lambda name: ['-qmp', 'unix:%s,server=on,wait=off' % wd.path(name + '-m.qmp')]
    with rig.Guest('src-f', ram_kib=ram_kib, workload=workload, workdir=wd, netns=lk.ns_a,
                   extra_args=qmp2('src-f')) as src, \
            rig.Guest.destination(src, 'dst-f', 'unix:' + wd.path('in.sock'), netns=lk.ns_b,
                                  extra_args=qmp2('dst-f')) as dst:
        # Test credentials from scripts/make-credentials.sh: the link is authenticated (x509)
        # and every frame encrypted, as ferry requires between hosts.
        fr = Ferries(wd, link=lk, tag='demo', security='x509')
        mig = None
        try:
            say('credentials: scripts/make-credentials.sh %s (x509 for ferry recv and ferry '
                'migrate: TLS 1.3, AES-256-GCM frames)' % os.path.dirname(fr.security_args[1]))
            say('booting the guests for the ferry run ...')
            src.wait_ready()
            src.wait_heartbeats(3)
            fr.start_recv(wd.path('in.sock'))
            say('migrating through ferry (ferry migrate -> ferry recv) ...')
            tx0 = lk.tx_bytes('a') + lk.tx_bytes('b')
            out, err = wd.path('migrate.json'), wd.path('migrate.err')
            mig = lk.spawn('a', [rig.find_ferry(), 'migrate',
                                 '--src-qmp', 'unix:' + wd.path('src-f-m.qmp'),
                                 '--dst-qmp', 'unix:' + wd.path('dst-f-m.qmp'),
                                 '--peer', fr.peer, '--deadline', str(DEADLINE_S),
                                 '--allow-postcopy', '--sock', wd.path('mig.sock'), '--json'] +
                           fr.security_args,
                           stdout=open(out, 'wb'), stderr=open(err, 'wb'))
            rig.wait_until(lambda: mig.poll() is not None, rig.scaled(DEADLINE_S + 60),
                           'ferry migrate')
            events = [json.loads(x) for x in read_text(out).splitlines() if x.strip()]
            rep = [e for e in events if e.get('event') == 'report']
            if not rep:
                raise rig.RigError('ferry migrate gave no report: %s' % read_text(err))
            rep = rep[0]
            row = {'method': 'ferry', 'outcome': rep['outcome'],
                   'total_ms': rep['total_time_ms'], 'downtime_ms': rep['downtime_ms'],
                   'decisions': rep['decisions']}
            if rep['outcome'] == 'completed':
                dst.wait_incoming_done()
                src.wait_status('postmigrate')
                fr.wait_exit('recv', 60)
            row['link_bytes'] = lk.tx_bytes('a') + lk.tx_bytes('b') - tx0
            row['ram'] = verify(src, dst) if rep['outcome'] == 'completed' else '-'
            return row
        finally:
            rig.reap(mig)
            fr.close()


def verify(src, dst):
    try:
        diff = rig.check_ram_and_resume(src, dst)
        return 'identical (%d pages)' % diff.pages
    except rig.RigError as e:
        return 'DIFFERS: %s' % e


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--rate', default='100mbit', help='tbf rate of the link (default 100mbit)')
    ap.add_argument('--ws', default='96M', help='guest working set (default 96M)')
    ap.add_argument('--pattern', default='mix',
                    help='page content: word|random|text|sparse|structured|mix (default mix)')
    ap.add_argument('--dirty', type=int, default=3000,
                    help='pages the guest dirties per second (default 3000)')
    ap.add_argument('--ram-mib', type=int, default=512, help='guest RAM (default 512)')
    args = ap.parse_args()
    rig.require_qemu_and_guest()
    rig.require_root_netns()
    workload = {'ws': args.ws, 'pattern': args.pattern, 'rate': args.dirty}
    ram_kib = args.ram_mib * 1024 + 8  # never a multiple of 64 pages (QEMU 7.2 TCG bug)
    say('link %s between two namespaces; guest %d MiB, workload %s' %
        (args.rate, args.ram_mib, workload))
    rows = []
    with rig.Workdir('demo') as wd, rig.Link(args.rate) as lk:
        rows.append(migrate_native(wd, lk, workload, ram_kib))
        rows.append(migrate_ferry(wd, lk, workload, ram_kib))
    print()
    fmt = '%-12s %-26s %12s %12s %14s  %s'
    print(fmt % ('method', 'outcome', 'total time', 'downtime', 'bytes on link', 'guest RAM'))
    for r in rows:
        print(fmt % (r['method'], r['outcome'],
                     '%.1f s' % (r['total_ms'] / 1000) if r.get('total_ms') else '-',
                     '%d ms' % r['downtime_ms'] if r.get('downtime_ms') is not None else '-',
                     '%.1f MB' % (r['link_bytes'] / 1e6), r['ram']))
    n, f = rows
    if n['outcome'] == 'completed' and f['outcome'] == 'completed':
        print('\nferry: %.2fx the time, %.2fx the bytes of native pre-copy' %
              (f['total_ms'] / n['total_ms'], f['link_bytes'] / n['link_bytes']))
    for d in f.get('decisions', []):
        print('ferry decision at %.1f s: %s: %s' % (d['t_s'], d['action'], d['reason']))
    ok = f['outcome'] == 'completed' and f['ram'].startswith('identical')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
