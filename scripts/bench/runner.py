"""One benchmark run: fresh source and destination guests in two network namespaces joined by
a tbf-shaped veth, one migration method, every metric measured on real components.

    run(spec, workdir_parent) -> row (dict)

spec: {'link': '100mbit'|'none', 'workload': name (workloads.py), 'method': name (METHODS),
       'rep': n, 'netns': 8-char name, 'deadline_s', 'postcopy_after_s', 'max_downtime_ms',
       'cache_mib', 'window_s'}

Timeline of a run: boot both guests, let the workload run `window_s` (throughput "before"),
migrate (throughput "during", from the source's and then the destination's heartbeats on one
host time line), check the guest's memory, and measure `window_s` of throughput "after".

Equal rules for every method: `deadline_s` is one wall-clock limit from the migrate command to
the end of the migration, post-copy included. A pre-copy still running at the limit is
cancelled: outcome "did not converge", the guest keeps running on the source. A post-copy
cannot be cancelled (the guest runs on the destination): it is waited out and recorded as
"over limit". `max_downtime_ms` is every method's budget: QEMU's downtime-limit for QEMU's
methods and ferry send/recv, ferry migrate's --max-downtime; a run is within it when the
longest pause the guest saw (guest_max_pause_ms) is (QEMU's own downtime figure is kept beside
it, downtime_within_budget). success = completed within the limit, memory verified, within
budget. app_rate_ratio = the workload's rate during the migration over its rate before;
dst_vcpu_blocktime_ms = the destination's postcopy-blocktime of its vCPU (post-copy runs).
The run's JSON also keeps a time series (`series`: link bytes and the guest's counter every
0.5 s, host time from the migrate command) for the report's time-series figure.

How the destination starts and how memory is checked depend on the method:
  pre-copy only (native, xbzrle, multifd, auto-converge, ferry send/recv): the destination
      waits with -S; after the migration both RAMs are compared page by page, then the
      destination is resumed (cont). The rig's hold (destination completed .. cont) is
      removed from the guest's pause (guest_held_ms says how much).
  post-copy capable (postcopy-timeout, ferry-migrate --allow-postcopy): the destination starts
      without -S, so QEMU runs the guest there right at the switch to post-copy (or when a
      pre-copy completes) while pages still arrive, as in production; its RAM changes at once,
      so memory is checked by the workload itself (self-check: every page against the
      checksum it keeps; the apps guest has none: verified_by "none").

The pause the guest sees (rig.guest_pauses): heartbeats tick every 20 ms and are stamped by the
host on arrival from both QEMUs' serial consoles; guest_max_pause_ms is the longest gap between
consecutive ticks of either side over the migration, guest_stalled_ms the sum of gaps over
50 ms, guest_baseline_ms the longest gap in the `window_s` before the migration.

Used by bench.py, which runs each spec in a child process with a hard timeout.
"""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))
import probes  # noqa: E402
import rig  # noqa: E402
from test_proxy import Ferries, read_text  # noqa: E402
from workloads import WORKLOADS  # noqa: E402


class Method:
    """caps/params go to both QEMUs before the migration; kind picks the driver."""

    def __init__(self, name, kind, about, caps=None, params=None, codec=None,
                 migrate_args=('--allow-postcopy',)):
        self.name, self.kind, self.about = name, kind, about
        self.caps, self.params, self.codec = caps or {}, params or {}, codec
        self.migrate_args = list(migrate_args)  # ferry migrate's (kind 'migrate')


def _methods():
    ms = [
        Method('native', 'qemu', 'QEMU pre-copy with its defaults (downtime-limit 300 ms)'),
        Method('xbzrle', 'qemu', 'QEMU pre-copy with xbzrle (cache = the matrix cache_mib)',
               caps={'xbzrle': True}),
        Method('multifd-zstd', 'qemu', 'QEMU multifd, 2 channels, zstd level 1',
               caps={'multifd': True},
               params={'multifd-channels': 2, 'multifd-compression': 'zstd'}),
        Method('auto-converge', 'qemu', 'QEMU pre-copy with auto-converge (vCPU throttling)',
               caps={'auto-converge': True}),
        Method('postcopy-timeout', 'postcopy',
               'QEMU pre-copy, switched to post-copy after postcopy_after_s (as libvirt and '
               'KubeVirt do)', caps={'postcopy-ram': True}),
        Method('ferry-migrate', 'migrate',
               'ferry migrate --allow-postcopy --max-downtime <budget> (policy engine)'),
        # Earlier defaults, for A/Bs against the one above (since 2026-12-06 ferry migrate
        # holds the stream with preempt, and paces the main link in post-copy; since
        # 2026-12-07 its backlog shrinks at migrate-start-postcopy).
        Method('ferry-migrate-hold', 'migrate',
               'ferry migrate --allow-postcopy --postcopy-hold 512 --max-downtime <budget>',
               migrate_args=['--allow-postcopy', '--postcopy-hold', '512']),
        Method('ferry-migrate-unpaced', 'migrate',
               'ferry migrate --allow-postcopy --postcopy-pace 0 --max-downtime <budget>',
               migrate_args=['--allow-postcopy', '--postcopy-pace', '0']),
        Method('ferry-migrate-backlog-package', 'migrate',
               'ferry migrate --allow-postcopy --postcopy-backlog-from package '
               '--max-downtime <budget>',
               migrate_args=['--allow-postcopy', '--postcopy-backlog-from', 'package']),
    ]
    for codec in ('none', 'fast', 'max', 'auto'):
        ms.append(Method('ferry-' + codec, 'ferry',
                         'ferry send/recv --codec %s, pre-copy only, QEMU defaults' % codec,
                         codec=codec))
    return {m.name: m for m in ms}


METHODS = _methods()


def dst_autostart(m):
    """Whether the method's destination runs as soon as QEMU hands it the guest (no -S):
    every method that may switch to post-copy, so the guest runs there during post-copy."""
    return m.kind == 'postcopy' or (m.kind == 'migrate' and '--allow-postcopy' in m.migrate_args)


def _event_time(guest, event, status=None):
    """Host time.monotonic() of the first QMP event `event` (with data.status == status) the
    guest emitted, from the event's own timestamp (host wall clock, microseconds)."""
    for e in guest.events():
        if e.get('event') == event and (status is None or
                                        e.get('data', {}).get('status') == status):
            ts = e['timestamp']
            wall = ts['seconds'] + ts['microseconds'] / 1e6
            return wall - (time.time() - time.monotonic())
    return None


def _switch_timeline(src, dst, requests=None, source_requests=None, source_switch=None):
    """Where the guest's pause at the switch to post-copy goes, in ms from the source's
    STOP: the source's last tick before it, the destination's RESUME (it received the device
    state and started the vCPUs) and its first tick after that (the pages the guest needed
    first had arrived). With ferry recv's request timeline (its --stats-json
    postcopy.requests_monotonic_ms: [ms, wait ms or None, 1 if on preempt, offset]), also
    the page faults between RESUME and that tick: how many, how long they waited in all and
    at most, how many were answered on the preempt channel, and their pages. With ferry
    send's (ferry migrate's report, postcopy_source), the source QEMU's part of those waits:
    each fault matched with the first request for the same page that reached the source
    after it. With ferry send's switch_monotonic_ms (postcopy_source), when it saw QEMU's
    first discard, framed the package, and had all of it in the kernel."""
    t_stop = _event_time(src, 'STOP')
    if t_stop is None:
        return None
    t_resume = _event_time(dst, 'RESUME')
    last_src = max((t for t, _, _ in src.ticks() if t <= t_stop), default=None)
    first_dst = min((t for t, _, _ in dst.ticks() if t_resume is not None and t >= t_resume),
                    default=None)

    def ms(t):
        return None if t is None else round((t - t_stop) * 1000, 1)
    out = {'src_last_tick': ms(last_src), 'dst_resume': ms(t_resume),
           'dst_first_tick': ms(first_dst)}
    for name, at in (source_switch or {}).items():
        out['ferry_' + name] = None if at is None else ms(at / 1000)
    if requests is not None and t_resume is not None and first_dst is not None:
        faults = [r for r in requests if t_resume * 1000 <= r[0] <= first_dst * 1000]
        waits = [r[1] for r in faults if r[1] is not None]
        out.update({'faults': len(faults), 'faults_unanswered': len(faults) - len(waits),
                    'faults_on_preempt': sum(1 for r in faults if r[2]),
                    'fault_wait_sum_ms': round(sum(waits), 1),
                    'fault_wait_max_ms': round(max(waits), 1) if waits else None,
                    'fault_offsets': [r[3] for r in faults[:64] if len(r) > 3]})
        if source_requests:
            part = []
            for f in faults:
                later = [s for s in source_requests
                         if len(f) > 3 and len(s) > 3 and s[3] == f[3] and s[0] >= f[0]]
                if later and later[0][1] is not None:
                    part.append(later[0][1])
            out['fault_source_wait_sum_ms'] = round(sum(part), 1)
            out['faults_matched_at_source'] = len(part)
    return out


def _qmp2(wd, name):
    # ferry migrate needs a QMP monitor of its own on each QEMU (one client per socket).
    return ['-qmp', 'unix:%s,server=on,wait=off' % wd.path(name + '-m.qmp')]


def _wait_window(hb, t_from, seconds, guest):
    """Waits until `seconds` of heartbeats after t_from were seen (a measurement window, not
    a synchronisation: the condition is the heartbeats themselves)."""
    def covered():
        if not guest.alive():
            raise rig.RigError('%s: QEMU exited: %s' % (guest.name, guest.stderr_text()[-500:]))
        pts = hb.snapshot()
        return pts and pts[-1][0] >= t_from + seconds
    rig.wait_until(covered, seconds + rig.scaled(30), '%s heartbeats for %.0f s' %
                   (guest.name, seconds), interval=0.1)
    return time.monotonic()


def run(spec, parent):
    m = METHODS[spec['method']]
    wl = WORKLOADS[spec['workload']]
    deadline = spec['deadline_s']
    window = spec['window_s']
    budget = spec['max_downtime_ms']
    row = {'link': spec['link'], 'workload': wl.name, 'method': m.name, 'rep': spec['rep'],
           'outcome': 'error', 'error': ''}
    os.environ.setdefault('FERRY_TEST_TMP', parent)
    with rig.Workdir('bench') as wd, rig.Link(spec['link'], name=spec['netns']) as lk:
        ferry_side = m.kind in ('ferry', 'migrate')
        incoming = 'unix:' + wd.path('in.sock') if ferry_side else \
            'tcp:%s:4444' % lk.addr_b
        extra = _qmp2(wd, 'src') if m.kind == 'migrate' else []
        boot_timeout = 180 if wl.guest == 'apps' else 90
        autostart = dst_autostart(m)
        with rig.Guest('src', ram_kib=wl.ram_kib, workload=wl.params, workdir=wd,
                       netns=lk.ns_a, extra_args=extra, initrd=wl.initrd) as src, \
                rig.Guest.destination(src, 'dst', incoming, netns=lk.ns_b,
                                      extra_args=_qmp2(wd, 'dst') if extra else [],
                                      autostart=autostart) as dst:
            hb_src = probes.HeartbeatMonitor(src.serial_log)
            hb_dst = probes.HeartbeatMonitor(dst.serial_log)
            fr, mig, series = None, None, None
            try:
                src.wait_ready(timeout=boot_timeout)
                caps = dict(m.caps)
                params = dict(m.params)
                if m.name == 'xbzrle':
                    params['xbzrle-cache-size'] = spec['cache_mib'] << 20
                if m.kind != 'migrate':  # ferry migrate sets it from --max-downtime
                    params['downtime-limit'] = budget
                for g in (src, dst):
                    g.configure_migration(caps, params)
                # The destination's MIGRATION events date the rig's hold (completed .. cont);
                # in post-copy it counts how long its vCPUs waited for pages.
                dst.set_capabilities({'events': True, 'postcopy-blocktime': autostart})
                t_before = _wait_window(hb_src, time.monotonic(), window, src)
                cpu = {'src_qemu': probes.CpuTracker(src.proc.pid),
                       'dst_qemu': probes.CpuTracker(dst.proc.pid)}
                tx0 = lk.tx_bytes('a') + lk.tx_bytes('b')
                series = probes.LinkSampler(src.proc.pid, lk.veth_a)
                t0 = time.monotonic()
                if m.kind in ('qemu', 'postcopy'):
                    info = _run_qemu(m, src, spec, row, t0)
                elif m.kind == 'ferry':
                    fr = Ferries(wd, tag='f', link=lk, codec=m.codec,
                                 send_args=['--cache-mib', str(spec['cache_mib'])])
                    fr.start_recv(wd.path('in.sock'))
                    uri = fr.start_send()
                    cpu['ferry_send'] = probes.CpuTracker(fr.send_p.pid)
                    cpu['ferry_recv'] = probes.CpuTracker(fr.recv_p.pid)
                    outcome, info = src.migrate_until(uri, deadline)
                    row['outcome'] = outcome
                else:
                    fr = Ferries(wd, tag='f', link=lk)
                    fr.start_recv(wd.path('in.sock'))
                    cpu['ferry_recv'] = probes.CpuTracker(fr.recv_p.pid)
                    mig, info = _run_ferry_migrate(wd, lk, fr, spec, row, cpu)
                t_end = time.monotonic()
                series.stop()
                row['wall_s'] = round(t_end - t0, 2)
                row['total_s'] = round(info.get('total-time', 0) / 1000, 2) \
                    if info.get('total-time') else row['wall_s']
                row['downtime_ms'] = info.get('downtime')
                row['passes'] = info.get('ram', {}).get('dirty-sync-count')
                if row['outcome'] == 'completed' and row['total_s'] > deadline:
                    row['outcome'] = 'over limit'  # a post-copy that ran past the limit
                    row['error'] = 'completed after %.1f s, limit %d s' % (row['total_s'],
                                                                         deadline)
                completed = row['outcome'] in ('completed', 'over limit')
                if completed:
                    dst.wait_incoming_done()
                    src.wait_status('postmigrate')
                    if fr is not None:
                        if fr.send_p is not None:
                            fr.wait_exit('send', 60)
                        fr.wait_exit('recv', 60)
                row['link_mb'] = round((lk.tx_bytes('a') + lk.tx_bytes('b') - tx0) / 1e6, 2)
                for k, tr in cpu.items():
                    row[k + '_cpu_s'] = tr.stop()
                row['src_qemu_vcpu_s'] = round(cpu['src_qemu'].last.vcpu -
                                               cpu['src_qemu'].first.vcpu, 2)
                row['src_qemu_mig_cpu_s'] = round(row['src_qemu_cpu_s'] -
                                                  row['src_qemu_vcpu_s'], 2)
                if fr is not None and completed and os.path.exists(fr.send_json):
                    s = json.loads(read_text(fr.send_json))
                    enc = s.get('encoding', {})
                    row['ferry_ratio'] = enc.get('ratio')
                    # How the encoder spent the run (--codec auto moves between efforts).
                    row['ferry_pages_per_effort'] = enc.get('pages_per_effort')
                    row['ferry_effort_changes'] = enc.get('effort_changes')
                    # The page cache's policy and hit rate (issue 18).
                    row['ferry_page_cache'] = s.get('page_cache')
                holds = []
                if completed and not autostart:
                    diff = rig.compare_ram(src, dst)
                    row['ram_verified'] = diff.ok
                    row['verified_by'] = 'ram'
                    if not diff.ok:
                        row['error'] = 'RAM differs: %r' % diff
                    dst.cont()
                    t_cont = time.monotonic()
                    t_ready = _event_time(dst, 'MIGRATION', 'completed')
                    holds.append((t_ready if t_ready is not None else t_end, t_cont))
                elif completed:
                    t_cont = t_end  # the destination has been running since the switch
                if completed:
                    # The window starts 0.5 s after cont (the guest's first heartbeat); wait
                    # until it is covered, so the rate is not diluted by time not yet seen.
                    _wait_window(hb_dst, t_cont + 0.5, window, dst)
                    if wl.guest == 'synthetic':
                        ok, line = dst.self_check(timeout=120)
                        row['guest_check'] = line
                        if autostart:
                            row['ram_verified'] = ok
                            row['verified_by'] = 'self-check'
                        if not ok:
                            row['error'] = 'guest self-check: %s' % line
                    elif autostart:
                        row['verified_by'] = 'none'  # the apps guest has no self-check
                    # With the source's heartbeats too: the counter carries over, and a slow
                    # heartbeat (pgbench: 1 s) may not have come yet at the window's start.
                    pts = probes.merge_points(hb_src.snapshot(), hb_dst.snapshot())
                    row['tput_after'] = _rate(probes.rate_between(pts, t_cont + 0.5,
                                                                  t_cont + 0.5 + window))
                else:
                    row['ram_verified'] = None
                # Both consoles on one time line (a destination that never ran has no ticks).
                row.update(rig.guest_pauses(src, dst, t0, t_end, baseline_s=window,
                                            holds=holds))
                if completed and row.get('postcopy_at_s') is not None:
                    # QEMU's own count of the guest's wait for pages (beside the ticks').
                    per_vcpu = dst.query_migrate().get('postcopy-vcpu-blocktime') or []
                    row['dst_vcpu_blocktime_ms'] = max(per_vcpu) if per_vcpu else None
                if row.get('postcopy_at_s') is not None:
                    requests = None
                    if fr is not None and completed and os.path.exists(fr.recv_json):
                        requests = json.loads(read_text(fr.recv_json)).get(
                            'postcopy', {}).get('requests_monotonic_ms')
                    ps = row.get('postcopy_source') or {}
                    row['switch_ms'] = _switch_timeline(src, dst, requests,
                                                        ps.get('requests_monotonic_ms'),
                                                        ps.get('switch_monotonic_ms'))
                    row['postcopy_requests'] = requests  # ferry recv's first 1024
                    # The guest ran on the destination during post-copy (it must: no -S).
                    row['dst_ticks_postcopy'] = sum(
                        1 for t, _, _ in dst.ticks()
                        if t0 + row['postcopy_at_s'] <= t <= t_end)
                pts = probes.merge_points(hb_src.snapshot(), hb_dst.snapshot())
                row['tput_before'] = _rate(probes.rate_between(pts, t_before - window,
                                                               t_before))
                row['tput_during'] = _rate(probes.rate_between(pts, t0, t_end))
                row['tput_unit'] = wl.unit + '/s'
                if row['tput_before'] and row['tput_during'] is not None:
                    row['app_rate_ratio'] = round(row['tput_during'] / row['tput_before'], 3)
                row['series'] = series.series(t0, pts)
                row['downtime_within_budget'] = completed and row['downtime_ms'] is not None \
                    and row['downtime_ms'] <= budget
                row['within_budget'] = completed and \
                    row.get('guest_max_pause_ms') is not None and \
                    row['guest_max_pause_ms'] <= budget
                # Memory must be verified; only the apps guest in a post-copy-capable run
                # cannot be (verified_by "none": no RAM comparison, no self-check).
                row['success'] = bool(row['outcome'] == 'completed' and row['within_budget'] and
                                      (row.get('ram_verified') or
                                       row.get('verified_by') == 'none'))
            except Exception as e:  # recorded in the row (the outcome stays if one was reached)
                row['error'] = ('%s: %s' % (type(e).__name__, e))[:500]
                row['success'] = False
            finally:
                if series is not None:
                    series.stop()
                hb_src.stop()
                hb_dst.stop()
                rig.reap(mig)
                if fr is not None:
                    fr.close()
    return row


def _rate(v):
    return None if v is None else round(v, 1)


def _run_qemu(m, src, spec, row, t0):
    """QEMU alone: native, its own options, or post-copy after a fixed timeout."""
    uri = 'tcp:%s:4444' % rig.Link.addr_b
    if m.kind == 'qemu':
        outcome, info = src.migrate_until(uri, spec['deadline_s'])
        row['outcome'] = outcome
        return info
    src.migrate(uri)
    after = min(spec['postcopy_after_s'], spec['deadline_s'])
    try:
        info = src.wait_migration(timeout=after)
        row['outcome'] = 'completed'
        return info
    except rig.MigrationFailed as e:
        row['outcome'] = 'failed'
        return e.info
    except rig.RigError:
        pass
    src.start_postcopy()
    row['postcopy_at_s'] = round(time.monotonic() - t0, 1)
    outcome, info = 'completed', None
    try:
        # Past the limit the run is "over limit" (run()), but post-copy cannot be cancelled:
        # wait it out, within the run's own timeout.
        info = src.wait_migration(timeout=max(spec['deadline_s'] - row['postcopy_at_s'], 0) +
                                  spec.get('postcopy_grace_s', 240))
    except rig.MigrationFailed as e:
        outcome, info = 'failed', e.info
    except rig.RigError:
        outcome, info = 'did not finish post-copy', src.query_migrate()
    row['outcome'] = outcome
    return info


def _run_ferry_migrate(wd, lk, fr, spec, row, cpu):
    out, err = wd.path('migrate.json'), wd.path('migrate.err')
    argv = [rig.find_ferry(), 'migrate', '--src-qmp', 'unix:' + wd.path('src-m.qmp'),
            '--dst-qmp', 'unix:' + wd.path('dst-m.qmp'), '--peer', fr.peer,
            '--max-downtime', str(spec['max_downtime_ms']), '--deadline',
            str(spec['deadline_s']), '--cache-mib', str(spec['cache_mib']),
            '--sock', wd.path('mig.sock'), '--json'] + METHODS[spec['method']].migrate_args + \
        fr.security_args
    mig = lk.spawn('a', argv, stdout=open(out, 'wb'), stderr=open(err, 'wb'))
    cpu['ferry_send'] = probes.CpuTracker(mig.pid)
    # --deadline cancels a pre-copy; a post-copy past it is waited out (run(): "over limit").
    rig.wait_until(lambda: mig.poll() is not None,
                   rig.scaled(spec['deadline_s'] + spec.get('postcopy_grace_s', 240)),
                   'ferry migrate')
    events = [json.loads(x) for x in read_text(out).splitlines() if x.strip()]
    reps = [e for e in events if e.get('event') == 'report']
    if not reps:
        raise rig.RigError('ferry migrate gave no report (exit %s): %s' %
                           (mig.returncode, read_text(err)[-500:]))
    rep = reps[0]
    row['outcome'] = rep['outcome']
    if rep.get('reason'):
        row['reason'] = rep['reason']
    row['decisions'] = rep['decisions']
    # The encoding effort ferry migrate reported at each progress sample: [t_s, effort].
    row['effort_series'] = [[round(e['t_s'], 2), e.get('effort')] for e in events
                            if e.get('event') == 'progress']
    row['pages_per_effort'] = rep.get('pages_per_effort')
    # The pass-1 estimates of the dirty rate the policy predicts from (QEMU's calc-dirty-rate):
    # the latest, and each as [t_s, bytes/s].
    row['sampled_dirty_bytes_per_s'] = rep.get('sampled_dirty_bytes_per_s')
    row['sampled_dirty_series'] = rep.get('sampled_dirty_series')
    row['dirty_rate_sample_pages'] = rep.get('dirty_rate_sample_pages')
    # The source QEMU's part of the post-copy page requests (ferry send's tracker).
    row['postcopy_source'] = rep.get('postcopy_source')
    for d in rep['decisions']:
        if d['action'] == 'start-postcopy':
            row['postcopy_at_s'] = round(d['t_s'], 1)
    info = {'total-time': rep['total_time_ms'], 'downtime': rep['downtime_ms'],
            'ram': {'dirty-sync-count': rep.get('passes')}}
    return mig, info


def main(argv):
    """runner.py SPEC_JSON OUT_JSON: one run (bench.py's child)."""
    spec = json.loads(argv[1])
    row = run(spec, os.environ.get('FERRY_TEST_TMP', '/tmp'))
    with open(argv[2] + '.tmp', 'w') as f:
        json.dump(row, f, indent=1)
    os.replace(argv[2] + '.tmp', argv[2])
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
