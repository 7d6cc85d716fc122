#!/usr/bin/env python3
"""Capture tests: real QEMU 7.2 migration streams, captured by the test itself (never
committed), checked against `ferry inspect`.

    test_capture.py precopy_paused | precopy_live | xbzrle | postcopy | postcopy_live |
                    multifd | all

For every migration: guest RAM on the destination equals the source's page by page (both
paused), then the destination is resumed and its heartbeats advance. (postcopy_live: the
destination runs during post-copy to produce page requests, so only heartbeats are checked.)
For every captured stream (each connection, each direction):
  * `ferry inspect --rebuild OUT` reproduces the capture byte for byte;
  * `ferry inspect --json` exits 0 with error null, bytes.total = capture size, and the same
    JSON when the input is fed in random splits (--split-random 1, 7, 12345);
  * page counts equal those of stream_count.py, an independent reference counter, and
    pass-through begins no earlier than the first device section;
  * against QEMU's query-migrate counters, where 7.2 keeps exact ones: ram.normal and
    ram.duplicate (pre-copy, xbzrle, post-copy); xbzrle-cache.bytes = XBZRLE record bytes
    + 4096 x overflow (xbzrle-cache.pages counts cache hits, not records); postcopy-requests
    = REQ_PAGES(_ID) messages on the return path; multifd: ram.duplicate = ZERO records on
    main, multifd-bytes = channel bytes after the 64-byte handshakes (7.2's ram.normal
    undercounts multifd pages by ~0.5 %, so there only pages >= ram.normal).

Precopy streams go to `exec:cat > FILE` and the destination loads the file with
`-incoming exec:cat FILE`. Post-copy and multifd streams pass live through the logging relay
(tests/integration/relay.py), one file per connection and direction.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402
from relay import Relay  # noqa: E402
import stream_count  # noqa: E402

SPLIT_SEEDS = (1, 7, 12345)


class CheckFailed(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise CheckFailed(msg)


# --------------------------------------------------------------------------------------------
# ferry inspect

def inspect_json(path, channel='main', extra=()):
    args = ['inspect', '--json', '--channel', channel] + list(extra) + [path]
    p = rig.run_ferry(args, timeout=300)
    out = p.stdout.decode(errors='replace')
    try:
        doc = json.loads(out)
    except ValueError:
        raise CheckFailed('ferry %s: exit %d, no JSON on stdout: %r; stderr: %s' %
                          (' '.join(args), p.returncode, out[:300],
                           p.stderr.decode(errors='replace')[-1000:]))
    return p.returncode, doc


def check_stream(path, channel, wd, label):
    """rebuild byte-identical, JSON sane and split-invariant. Returns the JSON dict."""
    size = os.path.getsize(path)
    check(size > 0, '%s: empty capture %s' % (label, path))
    rc, doc = inspect_json(path, channel)
    check(rc == 0 and doc.get('error') is None,
          '%s: ferry inspect reported an error (exit %d): %s' % (label, rc, doc.get('error')))
    total = doc.get('bytes', {}).get('total')
    check(total == size, '%s: bytes.total %s != capture size %d' % (label, total, size))
    if channel == 'main':
        check(doc.get('magic_ok') is True, '%s: magic_ok is not true' % label)

    out = os.path.join(wd.dir, os.path.basename(path) + '.rebuilt')
    p = rig.run_ferry(['inspect', '--json', '--channel', channel, '--rebuild', out, path],
                      timeout=300)
    check(p.returncode == 0, '%s: ferry inspect --rebuild failed (%d): %s' %
          (label, p.returncode, p.stderr.decode(errors='replace')[-1000:]))
    with open(path, 'rb') as a, open(out, 'rb') as b:
        same = a.read() == b.read()
    check(same, '%s: rebuilt stream differs from the capture (sizes %d/%d)' %
          (label, size, os.path.getsize(out)))
    os.unlink(out)

    for seed in SPLIT_SEEDS:
        rc2, doc2 = inspect_json(path, channel, ['--split-random', str(seed)])
        check(rc2 == rc and doc2 == doc, '%s: JSON differs when split with seed %d:\n%s\nvs\n%s' %
              (label, seed, json.dumps(doc, sort_keys=True), json.dumps(doc2, sort_keys=True)))
    print('%s: %s, %d bytes: rebuild identical, split-invariant (seeds %s); pages %s; '
          'passthrough_from %s' % (label, channel, size, SPLIT_SEEDS, json.dumps(doc.get('pages')),
                                   doc.get('passthrough_from')))
    return doc


def same(label, what, got, want):
    print('%s: %s: ferry/oracle %s, expected %s' % (label, what, got, want))
    check(got == want, '%s: %s differ: got %s, expected %s' % (label, what, got, want))


def read(path):
    with open(path, 'rb') as f:
        return f.read()


def check_main_counts(label, path, doc, info, xbzrle=False):
    """inspect == reference oracle == QEMU counters for a main-channel capture."""
    ref = stream_count.count_main(read(path))
    pages = doc['pages']
    kinds = ('zero', 'normal', 'xbzrle')
    same(label, 'inspect vs reference pages', {k: pages.get(k) for k in kinds},
         {k: ref[k] for k in kinds})
    # Everything up to the device state must have been parsed, not passed through.
    if ref['stop'] == 'full':
        check(doc.get('passthrough_from') in (None, ref['stop_at']),
              '%s: pass-through from %s, but the first device section is at %s' %
              (label, doc.get('passthrough_from'), ref['stop_at']))
    ram = info['ram']
    same(label, 'pages vs QEMU ram.normal/duplicate', {'normal': pages.get('normal'),
                                                       'zero': pages.get('zero')},
         {'normal': ram['normal'], 'zero': ram['duplicate']})
    if xbzrle:
        x = info['xbzrle-cache']
        # 7.2 counts every cache hit in xbzrle-cache.pages (also overflows, sent as PAGE, and
        # unchanged pages, not sent), but bytes exactly: per XBZRLE record its length minus
        # the 8-byte word, plus 4096 per overflow.
        same(label, 'xbzrle bytes vs QEMU xbzrle-cache.bytes',
             ref['xbzrle_bytes'] + x['overflow'] * rig.PAGE, x['bytes'])
        check(0 < pages['xbzrle'] <= x['pages'] - x['overflow'],
              '%s: %d XBZRLE records, QEMU cache hits %d, overflows %d' %
              (label, pages['xbzrle'], x['pages'], x['overflow']))


# --------------------------------------------------------------------------------------------
# scenarios

def dest_from_file(src, wd, path, name='dst'):
    # The destination reads the capture; -S keeps it paused for the RAM comparison.
    return rig.Guest.destination(src, name, 'exec:cat %s' % path)


def verify_ram(src, dst):
    dst.wait_incoming_done()
    src.wait_status('postmigrate')
    diff = rig.check_ram_and_resume(src, dst)
    print('RAM identical over %d pages, destination runs' % diff.pages)


def hold_until_passes(src, passes, extra=None, timeout=120):
    """Keeps pre-copy iterating (downtime-limit 1 ms cannot be met while the guest dirties
    memory) until `passes` dirty-bitmap syncs happened and extra(info) holds, then allows a
    normal downtime so it completes. Returns the query-migrate dict seen last."""
    def enough():
        info = src.query_migrate()
        if info.get('status') in ('failed', 'cancelled'):
            raise rig.MigrationFailed(info)
        if info.get('status') == 'completed':
            raise CheckFailed('pre-copy completed before %d passes: %s' % (passes, info))
        ram = info.get('ram', {})
        return ram.get('dirty-sync-count', 0) >= passes and (extra is None or extra(info)) and info
    info = rig.wait_until(enough, rig.scaled(timeout), '%d pre-copy passes' % passes, 0.1)
    src.set_parameters({'downtime-limit': 2000})
    return info


def precopy_to_file(wd, workload, caps=None, params=None, paused=False, passes=0,
                    extra=None):
    cap = wd.path('stream.bin')
    with rig.Guest('src', workload=workload, workdir=wd) as src:
        src.wait_ready()
        src.wait_heartbeats(2)
        if caps:
            src.set_capabilities(caps)
        if params:
            src.set_parameters(params)
        if passes:
            src.set_parameters({'downtime-limit': 1})
        if paused:
            src.stop()
        src.migrate('exec:cat > %s' % cap)
        if passes:
            hold_until_passes(src, passes, extra)
        info = src.wait_migration(timeout=150)
        ram = info['ram']
        print('migration: total-time %d ms, downtime %s ms, dirty-sync-count %d, normal %d, '
              'duplicate %d, xbzrle %s' % (info['total-time'], info.get('downtime'),
                                           ram['dirty-sync-count'], ram['normal'],
                                           ram['duplicate'], info.get('xbzrle-cache')))
        with dest_from_file(src, wd, cap) as dst:
            verify_ram(src, dst)
    return cap, info


def check_superseded(path, doc, label, expect_any):
    """ferry inspect --superseded: every page record counted once; a copy superseded within a
    window is superseded within every larger one; a paused guest's pages never repeat, a live
    one's do (later passes re-send what the workload dirtied)."""
    rc, sup = inspect_json(path, 'main', ['--superseded'])
    check(rc == 0 and sup.get('error') is None, '%s: --superseded failed: %r' % (label, sup))
    check(sup['page_records'] == doc['pages']['zero'] + doc['pages']['normal'],
          '%s: --superseded saw %d page records, inspect %r' %
          (label, sup['page_records'], doc['pages']))
    counts = [w['superseded'] for w in sup['windows']]
    check(counts == sorted(counts), '%s: superseded counts not monotonic: %r' % (label, counts))
    check((counts[-1] > 0) == expect_any,
          '%s: %d records superseded anywhere in the stream' % (label, counts[-1]))
    print('%s: superseded %s of %d page records (windows %s)' %
          (label, counts, sup['page_records'], [w['window_bytes'] for w in sup['windows']]))


def scenario_precopy_paused(wd):
    cap, info = precopy_to_file(wd, {'ws': '64M', 'pattern': 'mix', 'rate': 20000},
                                paused=True)
    doc = check_stream(cap, 'main', wd, 'precopy_paused')
    check_main_counts('precopy_paused', cap, doc, info)
    check_superseded(cap, doc, 'precopy_paused', expect_any=False)


def scenario_precopy_live(wd):
    # The workload re-dirties pages of every kind as fast as it can while pre-copy runs at most
    # 64 MiB/s; at least 5 passes happen before the downtime limit lets it finish.
    cap, info = precopy_to_file(
        wd, {'ws': '32M', 'pattern': 'mix', 'rate': 0},
        params={'max-bandwidth': 64 << 20}, passes=5)
    doc = check_stream(cap, 'main', wd, 'precopy_live')
    check_main_counts('precopy_live', cap, doc, info)
    check_superseded(cap, doc, 'precopy_live', expect_any=True)


def scenario_xbzrle(wd):
    # xbzrle starts after the bulk pass and needs a page cached by an earlier pass: iterate
    # until xbzrle has sent pages.
    cap, info = precopy_to_file(
        wd, {'ws': '32M', 'pattern': 'mix', 'rate': 0},
        caps={'xbzrle': True},
        params={'max-bandwidth': 64 << 20, 'xbzrle-cache-size': 32 << 20}, passes=5,
        extra=lambda i: i.get('xbzrle-cache', {}).get('pages', 0) > 500)
    check(info.get('xbzrle-cache', {}).get('pages', 0) > 0,
          'xbzrle sent no pages; the test would prove nothing: %r' % info.get('xbzrle-cache'))
    doc = check_stream(cap, 'main', wd, 'xbzrle')
    check_main_counts('xbzrle', cap, doc, info, xbzrle=True)


def relay_migration(wd, workload, caps, params, postcopy=False, live_dst=False):
    """src -> relay -> dst over unix sockets; returns (info, conns). live_dst (post-copy):
    the destination runs during post-copy, so its faults become page requests on the return
    path; its RAM then legitimately diverges, so only its heartbeats are checked."""
    dst_sock = wd.path('dst.sock')
    relay_sock = wd.path('relay.sock')
    with rig.Guest('src', workload=workload, workdir=wd) as src, \
            rig.Guest.destination(src, 'dst', 'defer') as dst:
        for g in (src, dst):
            g.set_capabilities(caps)
            if params:
                g.set_parameters(params)
        dst.migrate_incoming('unix:' + dst_sock)
        rig.wait_until(lambda: os.path.exists(dst_sock), rig.scaled(30), 'destination socket')
        src.wait_ready()
        src.wait_heartbeats(2)
        with Relay(relay_sock, dst_sock, wd.dir, prefix='conn') as relay:
            if postcopy:
                src.set_parameters({'max-bandwidth': 32 << 20})
                if live_dst:
                    # Slow background push: the running guest faults on missing pages.
                    src.set_parameters({'max-postcopy-bandwidth': 16 << 20})
            src.migrate('unix:' + relay_sock)
            if postcopy:
                # Let pre-copy make some progress, then switch.
                rig.wait_until(lambda: src.query_migrate().get('ram', {}).get('transferred', 0)
                               > (24 << 20), rig.scaled(60), 'pre-copy progress')
                src.start_postcopy()
                info = src.wait_migration(timeout=150, until=('postcopy-active', 'completed'))
                check(info['status'] == 'postcopy-active',
                      'migration completed before switching to post-copy: %s' % info['status'])
                if live_dst:
                    dst.wait_status('paused')
                    dst.cont()
                else:
                    src.set_parameters({'max-postcopy-bandwidth': 0})
            info = src.wait_migration(timeout=150)
            dst.wait_incoming_done()
            conns = relay.wait_idle(rig.scaled(60))
            check(not relay.errors, 'relay errors: %s' % relay.errors)
        ram = info['ram']
        print('migration: total-time %d ms, downtime %s ms, dirty-sync-count %d, normal %d, '
              'duplicate %d, postcopy-requests %d, conns %s' %
              (info['total-time'], info.get('downtime'), ram['dirty-sync-count'], ram['normal'],
               ram['duplicate'], ram.get('postcopy-requests', 0), conns))
        if live_dst:
            dst.wait_heartbeats(3)
            print('destination ran during post-copy and keeps running')
        else:
            verify_ram(src, dst)
    return info, conns


def check_postcopy_capture(wd, label, info, conns):
    check(len(conns) == 1 and conns[0].kind == 'main',
          'expected one main connection, got %s' % conns)
    c = conns[0]
    check(c.rev_bytes > 0, 'no return-path bytes captured')
    doc = check_stream(c.fwd_path, 'main', wd, label + ' main')
    rp = check_stream(c.rev_path, 'return-path', wd, label + ' return-path')
    same(label, 'return-path messages vs reference', rp.get('return_path'),
         stream_count.count_rp(read(c.rev_path)))
    cmds = doc.get('commands', {})
    # RUN and PING 3 sit inside the PACKAGED blob after the device state, which has no
    # length: the parser forwards that rest opaque, so only what precedes it is counted.
    for name in ('OPEN_RETURN_PATH', 'POSTCOPY_ADVISE', 'POSTCOPY_LISTEN', 'PACKAGED',
                 'POSTCOPY_RAM_DISCARD'):
        check(cmds.get(name, 0) >= 1, '%s main stream lacks %s: %s' % (label, name, cmds))
    check_main_counts(label, c.fwd_path, doc, info)
    return doc, rp


def scenario_postcopy(wd):
    # Destination paused (-S) during post-copy: its RAM is compared with the source's.
    info, conns = relay_migration(
        wd, {'ws': '96M', 'pattern': 'random', 'rate': 0},
        caps={'postcopy-ram': True}, params=None, postcopy=True)
    check_postcopy_capture(wd, 'postcopy', info, conns)


def scenario_postcopy_live(wd):
    # Destination running during post-copy: page requests travel on the return path.
    info, conns = relay_migration(
        wd, {'ws': '96M', 'pattern': 'mix', 'rate': 0},
        caps={'postcopy-ram': True}, params=None, postcopy=True, live_dst=True)
    check(info['ram'].get('postcopy-requests', 0) > 0,
          'the running destination requested no pages: %r' % info['ram'])
    _, rp = check_postcopy_capture(wd, 'postcopy_live', info, conns)
    rcmds = rp.get('return_path') or {}
    same('postcopy_live', 'page requests on the return path vs QEMU postcopy-requests',
         rcmds.get('REQ_PAGES', 0) + rcmds.get('REQ_PAGES_ID', 0),
         info['ram']['postcopy-requests'])


def scenario_multifd(wd):
    info, conns = relay_migration(
        wd, {'ws': '64M', 'pattern': 'mix', 'rate': 5000},
        caps={'multifd': True}, params={'multifd-channels': 2})
    kinds = sorted(c.kind for c in conns)
    check(kinds == ['main', 'multifd', 'multifd'],
          'expected 1 main + 2 multifd connections, got %s' % conns)
    ram = info['ram']
    total = {'normal': 0, 'zero': 0, 'packets': 0}
    ref_total = {'normal': 0, 'packets': 0, 'bytes_after_init': 0}
    for c in conns:
        label = 'multifd conn %d (%s)' % (c.index, c.kind)
        if c.kind == 'main':
            doc = check_stream(c.fwd_path, 'main', wd, label)
            ref = stream_count.count_main(read(c.fwd_path))
            same(label, 'inspect vs reference pages',
                 {k: doc['pages'].get(k) for k in ('zero', 'normal')},
                 {k: ref[k] for k in ('zero', 'normal')})
            check(ref['stop'] != 'full' or doc.get('passthrough_from') in (None, ref['stop_at']),
                  '%s: pass-through from %s, first device section at %s' %
                  (label, doc.get('passthrough_from'), ref['stop_at']))
            # 7.2: every zero page travels as ZERO on main; no page data there.
            same(label, 'zero pages vs QEMU ram.duplicate', doc['pages'].get('zero'),
                 ram['duplicate'])
            check(doc['pages'].get('normal') == 0, '%s: PAGE records on main' % label)
            total['zero'] += doc['pages'].get('zero', 0)
        else:
            doc = check_stream(c.fwd_path, 'multifd', wd, label)
            ref = stream_count.count_multifd(read(c.fwd_path))
            same(label, 'inspect vs reference pages/packets',
                 {'normal': doc['pages'].get('normal'), 'packets': doc['multifd']['packets']},
                 {'normal': ref['normal'], 'packets': ref['packets']})
            total['normal'] += doc['pages'].get('normal', 0)
            total['packets'] += doc['multifd']['packets']
            for k in ref_total:
                ref_total[k] += ref[k]
    print('multifd: summed over channels %s; QEMU normal %d duplicate %d multifd-bytes %d' %
          (total, ram['normal'], ram['duplicate'], ram['multifd-bytes']))
    # QEMU 7.2's multifd-bytes is exact: every channel byte after the 64-byte handshake.
    same('multifd', 'channel bytes vs QEMU multifd-bytes', ref_total['bytes_after_init'],
         ram['multifd-bytes'])
    # 7.2's ram.normal with multifd is not exact: it came out 111-183 pages *below* the
    # pages carried in the packets in every run here (the packets themselves account exactly
    # for multifd-bytes). So: exact against the reference, and never fewer than QEMU counted.
    check(total['normal'] >= ram['normal'],
          'multifd: %d pages in packets, fewer than QEMU ram.normal %d' %
          (total['normal'], ram['normal']))


SCENARIOS = {
    'precopy_paused': scenario_precopy_paused,
    'precopy_live': scenario_precopy_live,
    'xbzrle': scenario_xbzrle,
    'postcopy': scenario_postcopy,
    'postcopy_live': scenario_postcopy_live,
    'multifd': scenario_multifd,
}


def main(argv):
    names = argv[1:] or ['all']
    if names == ['all']:
        names = list(SCENARIOS)
    for n in names:
        if n not in SCENARIOS:
            print('unknown scenario %s (have: %s)' % (n, ', '.join(SCENARIOS)))
            return 2
    rig.require_qemu_and_guest()
    check_ferry = rig.find_ferry()
    if check_ferry is None:
        print('FAIL: ferry binary not found (build it, or set FERRY_BIN / FERRY_BUILD_DIR)')
        return 1
    failed = 0
    for n in names:
        with rig.Workdir('cap-' + n) as wd:
            try:
                SCENARIOS[n](wd)
                print('PASS %s' % n)
            except (CheckFailed, rig.RigError) as e:
                print('FAIL %s: %s' % (n, e))
                failed += 1
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
