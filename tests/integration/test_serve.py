#!/usr/bin/env python3
"""`ferry recv --serve`: one long-running receiver, migration after migration (issue 21).

    test_serve.py sessions|sigterm

sessions:
One `ferry recv --serve --qemu-dir DIR --stats-dir DIR` with a PSK, started with
$NOTIFY_SOCKET pointing at a datagram socket of this test (systemd's readiness protocol):
  1. READY=1 arrives once it listens.
  2. VM "k": a slow pre-copy (QEMU capped below the guest's dirty rate) to DIR/k.sock.
  3. While k runs, VM "a" migrates to DIR/a.sock and completes (two sessions at once): RAM
     identical, the session's stats file says completed, the stream bytes agree.
  4. k's ferry send is killed: the server logs one line saying k failed and stays up; k's
     source keeps the VM.
  5. A sender for VM "ghost" (no DIR/ghost.sock) is refused with one line naming the missing
     socket, which ferry send prints.
  6. k's source migrates again, as VM "b" to DIR/b.sock, by `ferry migrate --vm b`, and
     completes: RAM identical.
  7. The server's open fds are back to what they were before the first session.
  8. SIGTERM: STOPPING=1 arrives, the server exits 0; its log has one line per session.

sigterm: SIGTERM while VM p is in post-copy and VM q in pre-copy: the server stops listening,
  cancels q (its source keeps the VM), says it waits for p, which completes (the destination
  ran during post-copy: the workload's self-check of its memory), then exits 0.
"""
import glob
import json
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402
from test_proxy import (Ferries, check, check_source_keeps_vm, ferry_bin, free_port,  # noqa: E402
                        make_psk, proc_listening, read_text)


def fd_count(pid):
    return len(os.listdir('/proc/%d/fd' % pid))


class Notify:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)

    def expect(self, state, timeout):
        self.sock.settimeout(timeout)
        try:
            got = self.sock.recv(256).decode()
        except socket.timeout:
            raise rig.RigError('no %s on NOTIFY_SOCKET within %.0f s' % (state, timeout))
        check(got == state, 'NOTIFY_SOCKET got %r, expected %r' % (got, state))

    def close(self):
        self.sock.close()


class Server:
    """ferry recv --serve on loopback with a PSK; QEMU sockets in wd/qemu, stats in
    wd/stats."""

    def __init__(self, wd, psk):
        self.wd = wd
        self.port = free_port()
        self.qemu_dir = wd.path('qemu')
        self.stats_dir = wd.path('stats')
        os.mkdir(self.qemu_dir)
        os.mkdir(self.stats_dir)
        self.err = wd.path('serve.err')
        self.notify = Notify(wd.path('notify.sock'))
        argv = [ferry_bin(), 'recv', '--serve', '--listen', 'tcp:127.0.0.1:%d' % self.port,
                '--qemu-dir', self.qemu_dir, '--stats-dir', self.stats_dir,
                '--tls-psk-file', psk]
        env = dict(os.environ, NOTIFY_SOCKET=self.notify.path)
        self.p = rig.spawn(argv, stderr=open(self.err, 'wb'), env=env)
        self.notify.expect('READY=1', rig.scaled(20))
        check(proc_listening(self.p.pid, self.port), 'READY=1 came before the listener')
        check(self.p.poll() is None, 'ferry recv --serve exited: %s' % read_text(self.err))

    def sock(self, vm):
        return os.path.join(self.qemu_dir, vm + '.sock')

    def log(self):
        return read_text(self.err)

    def lines(self, vm, word):
        return [ln for ln in self.log().splitlines() if ('VM %s ' % vm) in ln and word in ln]

    def wait_line(self, vm, word, timeout=30):
        return rig.wait_until(lambda: self.lines(vm, word), rig.scaled(timeout),
                              'the server to log VM %s %s (log: %s)' % (vm, word, self.log()))

    def stats(self, vm):
        files = glob.glob(os.path.join(self.stats_dir, vm + '-*.json'))
        check(len(files) == 1, 'stats files for VM %s: %s' % (vm, files))
        with open(files[0]) as f:
            return json.loads(f.read())

    def close(self):
        rig.reap(self.p)
        self.notify.close()


def sender(wd, srv, psk, vm):
    fr = Ferries(wd, tag='s-' + vm, port=srv.port, security=None, send_args=['--vm', vm])
    fr.security_args = ['--tls-psk-file', psk]
    return fr


def check_completed(srv, fr, src, dst, vm):
    """The migration of vm through srv completed: ferry send exit 0 (fr; None when ferry
    migrate carried it), the stats say completed (and agree on the stream with ferry send's),
    RAM identical, the destination runs."""
    info = src.wait_migration(timeout=120)
    dst.wait_incoming_done()
    src.wait_status('postmigrate')
    r = srv.stats(vm)
    if fr:
        rc = fr.wait_exit('send')
        check(rc == 0, 'ferry send --vm %s exit %d: %s' % (vm, rc, read_text(fr.send_err)))
        s = json.loads(read_text(fr.send_json))
        check(s['outcome'] == 'completed', 'ferry send: %s' % s['outcome'])
        check(s['bytes_from_qemu'] == r['bytes_to_qemu'],
              'stream bytes differ: send read %d from QEMU, the server wrote %d' %
              (s['bytes_from_qemu'], r['bytes_to_qemu']))
    line = srv.wait_line(vm, 'completed')
    print('server: %s' % line[0])
    check(r['outcome'] == 'completed' and r['vm'] == vm and r['bytes_to_qemu'] > 0,
          'the server\'s stats for VM %s: %s' % (vm, {k: r[k] for k in r
                                                     if k != 'per_channel'}))
    check(info['ram']['total'] > 0, 'query-migrate: %s' % info)
    diff = rig.check_ram_and_resume(src, dst)
    print('VM %s: RAM identical over %d pages; destination heartbeats advance' % (vm, diff.pages))


def qmp2(wd, name):
    """A second QMP monitor for ferry migrate (a QMP socket serves one client; the rig keeps
    its own)."""
    return ['-qmp', 'unix:%s,server=on,wait=off' % wd.path(name + '-m.qmp')]


def serve_sessions(wd, srv, psk, src_k, light, frs):
    """Steps 2-6 of the module docstring; src_k outlives its first destination."""
    with rig.Guest('src-a', workload=light, workdir=wd) as src_a, \
            rig.Guest.destination(src_k, 'dst-k', 'unix:' + srv.sock('k'),
                                  extra_args=[]) as dst_k, \
            rig.Guest.destination(src_a, 'dst-a', 'unix:' + srv.sock('a')) as dst_a:
        for g in (src_k, src_a):
            g.wait_ready()
            g.wait_heartbeats(2)
        # k: capped below its dirty rate (3000 pages/s), so it is still in pre-copy
        # when a completes and when its sender is killed.
        src_k.set_parameters({'max-bandwidth': 8 << 20})
        fr_k = sender(wd, srv, psk, 'k')
        frs.append(fr_k)
        src_k.migrate(fr_k.start_send())
        rig.wait_until(lambda: src_k.query_migrate().get('ram', {}).get(
            'transferred', 0) > (8 << 20), rig.scaled(60), 'k pre-copy progress')
        srv.wait_line('k', 'started')

        fr_a = sender(wd, srv, psk, 'a')
        frs.append(fr_a)
        src_a.migrate(fr_a.start_send())
        check_completed(srv, fr_a, src_a, dst_a, 'a')
        check(src_k.query_migrate().get('status') == 'active' and
              not srv.lines('k', 'failed') and not srv.lines('k', 'completed'),
              'k is not running beside a: %s / %s' % (src_k.query_migrate(), srv.log()))
        print('a completed while k ran beside it')

        fr_k.send_p.kill()
        line = srv.wait_line('k', 'failed')
        print('server: %s' % line[0])
        check(len(line) == 1, 'one line for the failed session: %s' % line)
        check(srv.p.poll() is None, 'the server exited after k failed: %s' % srv.log())
        check(srv.stats('k')['outcome'] == 'failed', 'k stats: %s' % srv.stats('k'))
        info = src_k.wait_migration(timeout=60, raise_on_fail=False)
        check_source_keeps_vm(src_k, info)

    # A VM without a destination socket: refused, the sender says why in one line.
    with rig.Guest.destination(src_k, 'dst-b', 'unix:' + srv.sock('b'),
                               extra_args=qmp2(wd, 'dst-b')) as dst_b:
        fr_g = sender(wd, srv, psk, 'ghost')
        frs.append(fr_g)
        src_k.migrate(fr_g.start_send())
        info = src_k.wait_migration(timeout=60, raise_on_fail=False)
        rc = fr_g.wait_exit('send')
        err = read_text(fr_g.send_err).strip()
        print('ferry send --vm ghost: exit %d: %s' % (rc, err))
        check(rc == 1 and len(err.splitlines()) == 1 and
              srv.sock('ghost') + ' does not exist' in err,
              'expected one line naming the missing socket, got %r' % err)
        check_source_keeps_vm(src_k, info)
        check(srv.p.poll() is None, 'the server exited after a refusal')

        # k's source again, now as VM b, to another destination socket, by ferry migrate.
        argv = [ferry_bin(), 'migrate', '--src-qmp', 'unix:' + wd.path('src-k-m.qmp'),
                '--dst-qmp', 'unix:' + wd.path('dst-b-m.qmp'),
                '--peer', 'tcp:127.0.0.1:%d' % srv.port, '--vm', 'b', '--tls-psk-file', psk,
                '--sock', wd.path('mig-b.sock'), '--json']
        err = wd.path('migrate-b.err')
        mig = rig.spawn(argv, stdout=open(wd.path('migrate-b.out'), 'wb'),
                        stderr=open(err, 'wb'))
        try:
            rig.wait_until(lambda: mig.poll() is not None, rig.scaled(120), 'ferry migrate')
            check(mig.returncode == 0, 'ferry migrate --vm b exit %d: %s' % (mig.returncode,
                                                                           read_text(err)))
        finally:
            rig.reap(mig)
        check_completed(srv, None, src_k, dst_b, 'b')


def sessions():
    busy = {'ws': '64M', 'pattern': 'random', 'rate': 3000}
    light = {'ws': '32M', 'pattern': 'mix', 'rate': 2000}
    with rig.Workdir('serve') as wd:
        psk = make_psk(wd, 'serve')
        srv = Server(wd, psk)
        fds0 = fd_count(srv.p.pid)
        frs = []
        try:
            with rig.Guest('src-k', workload=busy, workdir=wd,
                           extra_args=qmp2(wd, 'src-k')) as src_k:
                serve_sessions(wd, srv, psk, src_k, light, frs)

            # Everything a session opened is closed once it ended (the log line comes just
            # before its session object goes).
            rig.wait_until(lambda: fd_count(srv.p.pid) == fds0, rig.scaled(10),
                           'the server back to %d fds (now %d)' % (fds0, fd_count(srv.p.pid)))
            print('server fds: %d before the first session, %d after the last' %
                  (fds0, fd_count(srv.p.pid)))

            srv.p.send_signal(signal.SIGTERM)
            srv.notify.expect('STOPPING=1', rig.scaled(10))
            rig.wait_until(lambda: srv.p.poll() is not None, rig.scaled(15),
                           'ferry recv --serve to exit after SIGTERM')
            log = srv.log()
            print('server log:\n' + log)
            check(srv.p.returncode == 0, 'ferry recv --serve exit %d' % srv.p.returncode)
            ended = [ln for ln in log.splitlines() if ': completed, ' in ln or ': failed' in ln]
            check(len(ended) == 3, 'expected 3 session lines (a, k, b), got %s' % ended)
            check(len(glob.glob(os.path.join(srv.stats_dir, '*.json'))) == 3,
                  'stats files: %s' % os.listdir(srv.stats_dir))
        finally:
            for fr in frs:
                fr.close()
            srv.close()


def sigterm():
    busy = {'ws': '64M', 'pattern': 'random', 'rate': 3000}
    pc = {'ws': '96M', 'pattern': 'mix', 'rate': 0}
    with rig.Workdir('serves') as wd:
        psk = make_psk(wd, 'serve')
        srv = Server(wd, psk)
        frs = []
        try:
            with rig.Guest('src-p', workload=pc, workdir=wd) as src_p, \
                    rig.Guest('src-q', workload=busy, workdir=wd) as src_q, \
                    rig.Guest.destination(src_p, 'dst-p', 'unix:' + srv.sock('p')) as dst_p, \
                    rig.Guest.destination(src_q, 'dst-q', 'unix:' + srv.sock('q')) as dst_q:
                for g in (src_p, src_q):
                    g.wait_ready()
                    g.wait_heartbeats(2)
                # p: post-copy, its pages trickling (4 MiB/s: ~70 MB left takes ~18 s) so that
                # it surely outlasts the signal; the cap is lifted once that was checked.
                for g in (src_p, dst_p):
                    g.set_capabilities({'postcopy-ram': True})
                src_p.set_parameters({'max-bandwidth': 32 << 20,
                                      'max-postcopy-bandwidth': 4 << 20})
                fr_p = sender(wd, srv, psk, 'p')
                frs.append(fr_p)
                src_p.migrate(fr_p.start_send())
                rig.wait_until(lambda: src_p.query_migrate().get('ram', {}).get(
                    'transferred', 0) > (24 << 20), rig.scaled(60), 'p pre-copy progress')
                src_p.start_postcopy()
                info = src_p.wait_migration(timeout=60, until=('postcopy-active', 'completed'))
                check(info['status'] == 'postcopy-active', 'p: %s' % info['status'])
                dst_p.wait_status('paused')
                # q: a pre-copy that cannot converge (capped below its dirty rate).
                src_q.set_parameters({'max-bandwidth': 8 << 20})
                fr_q = sender(wd, srv, psk, 'q')
                frs.append(fr_q)
                src_q.migrate(fr_q.start_send())
                rig.wait_until(lambda: src_q.query_migrate().get('ram', {}).get(
                    'transferred', 0) > (8 << 20), rig.scaled(60), 'q pre-copy progress')

                srv.p.send_signal(signal.SIGTERM)
                srv.notify.expect('STOPPING=1', rig.scaled(10))
                said = rig.wait_until(
                    lambda: [ln for ln in srv.log().splitlines()
                             if ln.startswith('ferry recv: SIGTERM: ')],
                    rig.scaled(10), 'the server to answer SIGTERM')
                print('server: %s' % said[0])
                check('1 session cancelled' in said[0] and 'waiting for 1 in post-copy' in
                      said[0] and 'VM p ' in said[0], 'unexpected answer: %s' % said[0])
                line = srv.wait_line('q', 'failed')
                print('server: %s' % line[0])
                check('cancelled by SIGTERM' in line[0], 'q: %s' % line[0])
                check_source_keeps_vm(src_q, src_q.wait_migration(timeout=60,
                                                                  raise_on_fail=False))
                rig.wait_until(lambda: not proc_listening(srv.p.pid, srv.port), rig.scaled(10),
                               'the server to close its listener')
                check(srv.p.poll() is None and not srv.lines('p', 'completed'),
                      'the server did not wait for p: %s' % srv.log())
                print('listener closed; the server waits for p')

                # The destination runs and faults on missing pages: its requests travel back
                # through the stopping server. Then the rest may come at full speed.
                dst_p.cont()
                rig.wait_until(lambda: src_p.query_migrate().get('ram', {}).get(
                    'postcopy-requests', 0) > 0, rig.scaled(30), 'page requests from p')
                src_p.set_parameters({'max-postcopy-bandwidth': 0})
                info = src_p.wait_migration(timeout=120)
                dst_p.wait_incoming_done()
                rc = fr_p.wait_exit('send')
                check(rc == 0, 'ferry send --vm p exit %d: %s' % (rc, read_text(fr_p.send_err)))
                print('server: %s' % srv.wait_line('p', 'completed')[0])
                rig.wait_until(lambda: srv.p.poll() is not None, rig.scaled(15),
                               'ferry recv --serve to exit after p')
                check(srv.p.returncode == 0, 'ferry recv --serve exit %d: %s' %
                      (srv.p.returncode, srv.log()))
                check(info['ram'].get('postcopy-requests', 0) > 0, 'p: no page requests')
                dst_p.wait_heartbeats(3)
                ok, answer = dst_p.self_check()
                check(ok, 'p\'s destination found bad memory: %s' % answer)
                print('p completed in post-copy after the signal; its memory checks: %s' % answer)
                print('server log:\n' + srv.log())
        finally:
            for fr in frs:
                fr.close()
            srv.close()


SCENARIOS = {'sessions': sessions, 'sigterm': sigterm}


def main(argv):
    rig.require_qemu_and_guest()
    which = argv[1] if len(argv) > 1 else 'sessions'
    if which not in SCENARIOS:
        print('unknown scenario %s; one of %s' % (which, ', '.join(SCENARIOS)))
        return 2
    t0 = time.monotonic()
    SCENARIOS[which]()
    print('PASS %s (%.0f s)' % (which, time.monotonic() - t0))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
