#!/usr/bin/env python3
"""The pause the guest sees (docs/BENCHMARKS.md, "The pause the guest sees"): host-stamped
heartbeats, post-copy with a running destination, and the workload's self-check.

  test_pauses.py stop              the metric itself: the running guest is stopped for 1 s
                                   (QMP stop, cont); guest_max_pause_ms must be that second
                                   (the host's stop..cont) and not much more
  test_pauses.py postcopy_running  a post-copy migration whose destination is started as the
                                   benchmark runner starts it for post-copy methods
                                   (runner.dst_autostart): the destination must tick while the
                                   source reports postcopy-active, and its self-check passes
  test_pauses.py selfcheck_bad     the self-check catches a damaged page: OK on the source, a
                                   page damaged on the destination during post-copy (the
                                   workload's CORRUPT command), BAD naming that page after
"""
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, '..', '..', 'scripts', 'bench'))
import rig  # noqa: E402


def check(cond, what):
    if not cond:
        raise rig.RigError('FAIL: ' + what)


def stop():
    wl = {'ws': '32M', 'pattern': 'mix', 'rate': 5000}
    with rig.Guest('src', workload=wl) as g:
        g.wait_ready()
        g.wait_heartbeats(120)  # a baseline of ticks (20 ms each)
        t0 = time.monotonic()
        g.stop()
        t_stopped = time.monotonic()
        time.sleep(1.0)  # the pause being measured, not a wait for an event
        g.cont()
        t1 = time.monotonic()
        g.wait_heartbeats(5)
        p = rig.guest_pauses(g, None, t0, t1, baseline_s=2.0)
        # The VM was certainly stopped between stop returning and cont being sent.
        held_ms = (t1 - t_stopped) * 1000
        print('stopped for %.1f ms (stop returned .. cont returned): %s' % (held_ms, p))
        check(p['guest_resumed'], 'no tick after cont')
        check(p['guest_max_pause_ms'] >= held_ms - 5,
              'pause %.1f ms shorter than the stop (%.1f ms)' % (p['guest_max_pause_ms'],
                                                                  held_ms))
        # One tick period (20 ms) + the console and the reader thread; generous on a busy host.
        check(p['guest_max_pause_ms'] <= held_ms + 150,
              'pause %.1f ms much longer than the stop (%.1f ms)' % (p['guest_max_pause_ms'],
                                                                     held_ms))
        check(p['guest_stalled_ms'] >= p['guest_max_pause_ms'], 'stalled < max pause')
        check(p['guest_baseline_ms'] is not None and p['guest_baseline_ms'] < 500,
              'baseline %s: ticks before the stop missing or irregular' %
              p['guest_baseline_ms'])


def _postcopy(wd, wl, before=None, during=None):
    """Source and destination (started as the runner starts a post-copy method's), a
    post-copy migration over a unix socket with its bandwidth limited so post-copy lasts a few
    seconds. before(src) runs before the migration, during(src, dst) once post-copy is
    active. Returns (src, dst, t0, t_pc,
    t_done) with both guests still open (the caller closes them)."""
    import runner  # scripts/bench/runner.py
    autostart = runner.dst_autostart(runner.METHODS['postcopy-timeout'])
    src = rig.Guest('src', workload=wl, workdir=wd)
    dst = rig.Guest.destination(src, 'dst', 'unix:' + wd.path('in.sock'), autostart=autostart)
    src.wait_ready()
    src.wait_heartbeats(50)  # about a second of ticks before the migration
    if before:
        before(src)
    for g in (src, dst):
        g.set_capabilities({'postcopy-ram': True})
    src.set_parameters({'max-bandwidth': 32 << 20, 'max-postcopy-bandwidth': 12 << 20})
    t0 = time.monotonic()
    src.migrate('unix:' + wd.path('in.sock'))
    rig.wait_until(lambda: src.query_migrate().get('ram', {}).get('transferred', 0) >
                   (16 << 20), rig.scaled(60), 'pre-copy progress')
    src.start_postcopy()
    src.wait_migration(timeout=60, until=('postcopy-active', 'completed'))
    t_pc = time.monotonic()
    if during:
        during(src, dst)
    src.wait_migration(timeout=120)
    t_done = time.monotonic()
    dst.wait_incoming_done()
    return src, dst, t0, t_pc, t_done


def postcopy_running():
    wl = {'ws': '64M', 'pattern': 'mix', 'rate': 5000}
    with rig.Workdir('pcrun') as wd:
        src, dst, t0, t_pc, t_done = _postcopy(wd, wl)
        with src, dst:
            n = sum(1 for t, _, _ in dst.ticks() if t_pc <= t <= t_done)
            print('post-copy active for %.2f s; the destination ticked %d times meanwhile' %
                  (t_done - t_pc, n))
            check(t_done - t_pc >= 0.5, 'post-copy too short to tell (%.2f s)' %
                  (t_done - t_pc))
            check(n >= 5, 'the destination did not run during post-copy (%d ticks): started '
                  'or kept paused' % n)
            check(dst.status() == 'running', 'destination is %s' % dst.status())
            dst.wait_heartbeats(3)
            p = rig.guest_pauses(src, dst, t0, t_done, baseline_s=1.0)
            print('guest pauses: %s' % p)
            check(p['guest_resumed'] and p['guest_max_pause_ms'] is not None, str(p))
            ok, line = dst.self_check()
            check(ok, 'self-check after post-copy: %s' % line)


def selfcheck_bad():
    # word pages: later writes change single words, so the damaged byte stays damaged.
    wl = {'ws': '32M', 'pattern': 'word', 'rate': 5000}
    page = 1234
    with rig.Workdir('pcbad') as wd:
        def before(src):
            # The source's check must pass, or BAD below would prove nothing.
            ok, line = src.self_check()
            check(ok, 'self-check on the source before any damage: %s' % line)

        def during(src, dst):
            print('destination during post-copy: %s' % dst.corrupt(page))

        src, dst, t0, t_pc, t_done = _postcopy(wd, wl, before=before, during=during)
        with src, dst:
            ok, line = dst.self_check()
            print('after post-copy: %s' % line)
            check(not ok, 'a damaged page was not caught: %s' % line)
            check(line.split()[2] == str(page), 'BAD names page %s, not %d' %
                  (line.split()[2], page))


def main(argv):
    rig.require_qemu_and_guest()
    which = argv[1]
    {'stop': stop, 'postcopy_running': postcopy_running,
     'selfcheck_bad': selfcheck_bad}[which]()
    print('PASS %s' % which)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
