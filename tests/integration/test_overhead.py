#!/usr/bin/env python3
"""What ferry costs when it does no encoding, measured side by side with native QEMU in one
run (the machine is shared and noisy, so only ratios within one run mean anything).

    test_overhead.py loopback | loopback_unthrottled | link | codec_fast |
                     codec_fast_unthrottled      [--json FILE]

loopback  one live source guest migrated 3 times natively (unix socket straight into the
          destination QEMU) and 3 times through ferry send/recv (TCP on loopback),
          alternating, each to a fresh destination; RAM verified every time. Passes when the
          median total time through ferry is at most 1.10x the native median.
loopback_unthrottled  the same with QEMU's max-bandwidth lifted from its 128 MiB/s default,
          so the copy through ferry is what limits. A measurement for docs/BENCHMARKS.md: it
          prints the ratio and checks RAM, but has no time limit.
codec_fast  --codec fast against --codec none, 3 runs each on loopback: fast must not be
          slower (median ratio <= 1.05; best of 3 printed too); codec_fast_unthrottled measures it without QEMU's
          bandwidth cap.
link      a paused guest (so both runs carry the same memory) migrated natively over TCP and
          through ferry across a 100 Mbit/s tbf veth between two namespaces. Passes when the
          bytes on the veth (both directions) through ferry are within 1 % of native.
"""
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402
from test_proxy import Ferries, check, check_ferry_counts  # noqa: E402

RUNS = 3
MAX_TIME_RATIO = 1.10
MAX_BYTES_RATIO = 1.01


def wait_dest_done(dst, t0):
    """Wall seconds from t0 until the destination finished loading (polled every 20 ms)."""
    def done():
        st = dst.query_migrate().get('status')
        if st == 'failed':
            raise rig.RigError('%s: incoming migration failed' % dst.name)
        return st == 'completed'
    rig.wait_until(done, rig.scaled(180), '%s incoming migration' % dst.name, interval=0.02)
    return time.monotonic() - t0


def one_migration(src, wd, method, index, link=None):
    """Migrates src to a fresh destination; returns a result row. src is left running
    (cont after postmigrate) so the next run starts from a live guest again."""
    ns_b = link.ns_b if link else None
    tag = '%s%d' % (method[0] + method[-1], index)
    if method == 'native':
        incoming = ('tcp:%s:%d' % (link.addr_b, 4400 + index)) if link else \
            'unix:' + wd.path(tag + '-in.sock')
    else:
        incoming = 'unix:' + wd.path(tag + '-in.sock')
    with rig.Guest.destination(src, 'dst' + tag, incoming, netns=ns_b) as dst:
        fr = None
        try:
            if method == 'native':
                uri = incoming
            else:
                codec = method.split('-', 1)[1] if '-' in method else 'none'
                fr = Ferries(wd, tag=tag, link=link, codec=codec)
                fr.start_recv(wd.path(tag + '-in.sock'))
                uri = fr.start_send()
            tx0 = (link.tx_bytes('a') + link.tx_bytes('b')) if link else 0
            t0 = time.monotonic()
            src.migrate(uri)
            info = src.wait_migration(timeout=180)
            wall = wait_dest_done(dst, t0)
            dst.wait_incoming_done()
            src.wait_status('postmigrate')
            if fr:
                check_ferry_counts(fr, info, 1)
            link_bytes = (link.tx_bytes('a') + link.tx_bytes('b') - tx0) if link else 0
            diff = rig.compare_ram(src, dst)
            check(diff.ok, '%s run %d: guest RAM differs: %r' % (method, index, diff))
        finally:
            if fr:
                fr.close()
    row = {'method': method, 'run': index, 'total_time_ms': info['total-time'],
           'downtime_ms': info.get('downtime'), 'wall_to_dest_s': round(wall, 3),
           'transferred': info['ram']['transferred'], 'link_bytes': link_bytes,
           'dirty_syncs': info['ram']['dirty-sync-count']}
    print('%-6s run %d: total %5d ms, wall to destination %.3f s, downtime %s ms, '
          'transferred %d, link bytes %d, syncs %d' %
          (method, index, row['total_time_ms'], wall, row['downtime_ms'], row['transferred'],
           link_bytes, row['dirty_syncs']))
    sys.stdout.flush()
    return row


def alternate(name, methods, unthrottled):
    """RUNS migrations per method, alternating, of one live 512 MiB + 8 KiB guest (never a
    multiple of 64 pages) on loopback; returns (rows, median total time per method)."""
    wl = {'ws': '128M', 'pattern': 'mix', 'rate': 5000}
    rows = []
    with rig.Workdir(name) as wd, \
            rig.Guest('src', ram_kib=524296, workload=wl, workdir=wd) as src:
        if unthrottled:
            # QEMU's default max-bandwidth (128 MiB/s) would cap every method alike; lift it
            # so ferry's own cost shows.
            src.set_parameters({'max-bandwidth': 64 << 30})
        src.wait_ready()
        src.wait_heartbeats(3)
        for i in range(RUNS):
            for method in methods:
                rows.append(one_migration(src, wd, method, i))
                src.cont()
                src.wait_heartbeats(2)
    med = {m: statistics.median(r['total_time_ms'] for r in rows if r['method'] == m)
           for m in methods}
    return rows, med


def codec_fast(out, unthrottled=False):
    """--codec fast against --codec none on unshaped loopback (issue 5: fast must not be
    slower): 3 runs each, alternating, medians compared."""
    rows, med = alternate('overfast', ('ferry-none', 'ferry-fast'), unthrottled)
    # Best of 3, printed beside the median: on this shared 2-core host one run can land in a
    # burst of other work.
    best = {m: min(r['total_time_ms'] for r in rows if r['method'] == m) for m in med}
    best_ratio = best['ferry-fast'] / best['ferry-none']
    ratio = med['ferry-fast'] / med['ferry-none']
    print('%s: median total time --codec none %d ms, --codec fast %d ms, ratio %.3f; '
          'best of %d: %d ms vs %d ms, ratio %.3f' %
          ('unthrottled' if unthrottled else 'QEMU default max-bandwidth', med['ferry-none'],
           med['ferry-fast'], ratio, RUNS, best['ferry-none'], best['ferry-fast'], best_ratio))
    if out:
        json.dump({'rows': rows, 'median_ms': med, 'ratio': ratio}, open(out, 'w'), indent=1)
    if unthrottled:
        return  # a measurement (see loopback_unthrottled)
    # "Not slower": within the run-to-run noise of this shared machine (5 %), median of 3.
    check(ratio <= 1.05, '--codec fast took %.3fx --codec none (median of %d)' % (ratio, RUNS))


def loopback(out, unthrottled):
    rows, med = alternate('overhead', ('native', 'ferry'), unthrottled)
    wall = {m: statistics.median(r['wall_to_dest_s'] for r in rows if r['method'] == m)
            for m in ('native', 'ferry')}
    ratio = med['ferry'] / med['native']
    print('%s: median total time: native %d ms, ferry %d ms, ratio %.3f (limit %.2f); '
          'median wall to destination: native %.3f s, ferry %.3f s, ratio %.3f' %
          ('unthrottled' if unthrottled else 'QEMU default max-bandwidth',
           med['native'], med['ferry'], ratio, MAX_TIME_RATIO, wall['native'], wall['ferry'],
           wall['ferry'] / wall['native']))
    if out:
        json.dump({'rows': rows, 'median_ms': med, 'ratio': ratio}, open(out, 'w'), indent=1)
    if unthrottled:
        # A measurement, not a test (not registered in meson): on this 2-core machine the two
        # QEMUs, the guest's vCPU and both ferries share the cores, and each ferry copies
        # every byte twice more than a direct socket does.
        return
    check(ratio <= MAX_TIME_RATIO, 'ferry took %.3fx native (limit %.2fx)' %
          (ratio, MAX_TIME_RATIO))


def link(out):
    rig.require_root_netns()
    rows = []
    with rig.Workdir('overlink') as wd, rig.Link('100mbit') as lk, \
            rig.Guest('src', workload={'pattern': 'idle'}, workdir=wd, netns=lk.ns_a) as src:
        src.wait_ready()
        # Paused: both migrations carry the same memory, so their bytes are comparable.
        src.stop()
        for method in ('native', 'ferry'):
            if src.status() == 'postmigrate':
                # QEMU migrates a paused guest only once; run it for a moment, pause again.
                src.cont()
                src.stop()
            rows.append(one_migration(src, wd, method, 0, link=lk))
    by = {r['method']: r for r in rows}
    ratio = by['ferry']['link_bytes'] / by['native']['link_bytes']
    print('bytes on the 100 Mbit/s link: native %d, ferry %d, ratio %.5f (limit %.2f); '
          'time %d ms vs %d ms' % (by['native']['link_bytes'], by['ferry']['link_bytes'], ratio,
                                   MAX_BYTES_RATIO, by['native']['total_time_ms'],
                                   by['ferry']['total_time_ms']))
    if out:
        json.dump({'rows': rows, 'ratio': ratio}, open(out, 'w'), indent=1)
    check(abs(ratio - 1) <= MAX_BYTES_RATIO - 1,
          'ferry put %.4fx the native bytes on the link' % ratio)


def main(argv):
    rig.require_qemu_and_guest()
    which = argv[1] if len(argv) > 1 else 'loopback'
    out = argv[argv.index('--json') + 1] if '--json' in argv else None
    {'loopback': lambda o: loopback(o, False),
     'loopback_unthrottled': lambda o: loopback(o, True), 'link': link,
     'codec_fast': codec_fast, 'codec_fast_unthrottled': lambda o: codec_fast(o, True)}[which](out)
    print('PASS overhead %s' % which)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
