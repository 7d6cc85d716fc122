#!/usr/bin/env python3
"""Soak of `ferry recv --serve` (issue 21; run by hand, not in CI).

    scripts/soak-serve.py [--runs 30] [--out docs/bench/soak] [--codec auto]

One `ferry recv --serve` on loopback (PSK) serves N back-to-back migrations of one small guest
(256 MiB + 8 KiB, a light dirtying workload): each run starts a destination QEMU on
DIR/vm-<i>.sock, migrates the guest there through a fresh `ferry send --vm vm-<i>`
(default --codec auto, so every session allocates and must free its 256 MiB page cache),
checks that it completed (ferry send exit 0, the server's `completed` line), resumes the guest
on the destination and retires the old source. After each run, once the session's line is
logged, it records the server's open fds (/proc/PID/fd) and RSS (/proc/PID/status VmRSS).
Writes OUT/serve-soak.csv (one row per run) and OUT/serve-soak.txt (the command, the server's
log, a summary); exits 1 when a migration failed or fds grew.
"""
import argparse
import csv
import os
import re
import shlex
import signal
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))
import rig  # noqa: E402
from test_proxy import Ferries, ferry_bin, free_port, make_psk, read_text  # noqa: E402
from test_serve import Notify  # noqa: E402


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        m = re.search(r'^VmRSS:\s+(\d+) kB', f.read(), re.M)
    return int(m.group(1))


def fds(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


def threads(pid):
    return len(os.listdir('/proc/%d/task' % pid))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    ap.add_argument('--runs', type=int, default=30)
    ap.add_argument('--out', default=os.path.join(ROOT, 'docs', 'bench', 'soak'))
    ap.add_argument('--codec', default='auto')
    args = ap.parse_args()
    rig.require_qemu_and_guest()
    os.makedirs(args.out, exist_ok=True)
    wl = {'ws': '32M', 'pattern': 'mix', 'rate': 2000}
    rows = []
    with rig.Workdir('soak') as wd:
        psk = make_psk(wd, 'soak')
        qdir, sdir = wd.path('qemu'), wd.path('stats')
        os.mkdir(qdir)
        os.mkdir(sdir)
        port = free_port()
        notify = Notify(wd.path('notify.sock'))
        err = wd.path('serve.err')
        argv = [ferry_bin(), 'recv', '--serve', '--listen', 'tcp:127.0.0.1:%d' % port,
                '--qemu-dir', qdir, '--stats-dir', sdir, '--tls-psk-file', psk]
        srv = rig.spawn(argv, stderr=open(err, 'wb'),
                        env=dict(os.environ, NOTIFY_SOCKET=notify.path))
        notify.expect('READY=1', 20)
        base = {'fds': fds(srv.pid), 'rss_kib': rss_kib(srv.pid), 'threads': threads(srv.pid)}
        print('server pid %d ready: %s' % (srv.pid, base), flush=True)
        src = rig.Guest('soak-0', workload=wl, workdir=wd)
        src.wait_ready()
        src.wait_heartbeats(2)
        t_start = time.monotonic()
        failed = None
        try:
            for i in range(1, args.runs + 1):
                vm = 'vm-%d' % i
                sock = os.path.join(qdir, vm + '.sock')
                dst = rig.Guest.destination(src, 'soak-%d' % i, 'unix:' + sock)
                fr = Ferries(wd, tag=vm, port=port, security=None, codec=args.codec,
                             send_args=['--vm', vm])
                fr.security_args = ['--tls-psk-file', psk]
                t0 = time.monotonic()
                src.migrate(fr.start_send())
                info = src.wait_migration(timeout=180)
                dst.wait_incoming_done()
                rc = fr.wait_exit('send')
                secs = time.monotonic() - t0
                if rc != 0:
                    failed = 'run %d: ferry send exit %d: %s' % (i, rc, read_text(fr.send_err))

                def ended():
                    return [ln for ln in read_text(err).splitlines()
                            if ('VM %s ' % vm) in ln and ('completed' in ln or 'failed' in ln)]
                line = rig.wait_until(ended, 30, 'the server to log the end of %s' % vm)
                if 'completed' not in line[0]:
                    failed = failed or 'run %d: %s' % (i, line)
                fr.close()
                dst.cont()
                dst.wait_heartbeats(2)
                src.close()
                src = dst
                # The session object goes just after its line: wait for the thread count
                # to settle (bounded) before sampling.
                rig.wait_until(lambda: threads(srv.pid) <= base['threads'], 10,
                               'the session threads to end')
                row = {'run': i, 'vm': vm, 'seconds': round(secs, 2),
                       'qemu_transferred': info['ram']['transferred'],
                       'fds': fds(srv.pid), 'rss_kib': rss_kib(srv.pid),
                       'threads': threads(srv.pid)}
                rows.append(row)
                print(row, flush=True)
                if failed:
                    break
        finally:
            src.close()
            srv.send_signal(signal.SIGTERM)
            try:
                srv.wait(timeout=20)
            except Exception:
                srv.kill()
            notify.close()
        total = time.monotonic() - t_start
        log = read_text(err)

    with open(os.path.join(args.out, 'serve-soak.csv'), 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    fd_values = [r['fds'] for r in rows]
    rss_values = [r['rss_kib'] for r in rows]
    half = len(rss_values) // 2
    summary = [
        'runs: %d completed of %d, %.0f s in all; server exit %s' %
        (len(rows) if not failed else len(rows) - 1, args.runs, total, srv.returncode),
        'fds: %d at READY, after each run min %d max %d (first %d, last %d)' %
        (base['fds'], min(fd_values), max(fd_values), fd_values[0], fd_values[-1]),
        'threads: %d at READY, after each run max %d' %
        (base['threads'], max(r['threads'] for r in rows)),
        'RSS KiB: %d at READY, after each run min %d max %d (first %d, last %d; mean of the '
        'first half %d, second half %d)' %
        (base['rss_kib'], min(rss_values), max(rss_values), rss_values[0], rss_values[-1],
         sum(rss_values[:half]) // max(half, 1),
         sum(rss_values[half:]) // max(len(rss_values) - half, 1)),
    ]
    if failed:
        summary.append('FAILED: ' + failed)
    with open(os.path.join(args.out, 'serve-soak.txt'), 'w') as f:
        f.write('command: scripts/soak-serve.py %s\n' % ' '.join(shlex.quote(a)
                                                               for a in sys.argv[1:]))
        f.write('server: %s\n\n' % ' '.join(shlex.quote(a) for a in argv))
        f.write('\n'.join(summary) + '\n\nserver log:\n' + log)
    print('\n'.join(summary))
    grew = fd_values[-1] > fd_values[0]
    return 1 if failed or grew else 0


if __name__ == '__main__':
    sys.exit(main())
