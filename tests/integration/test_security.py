#!/usr/bin/env python3
"""Link protection with real QEMU guests (docs/SECURITY.md).

    test_security.py SCENARIO

Scenarios:
  cli_rules      no QEMU: without credentials ferry recv/send/migrate refuse an address that
                 leaves the host, take it with --insecure (saying so in one line), and keep
                 loopback working
  x509_precopy   x509 on both ends and --tls-authz on ferry recv, over two namespaces; the
                 link, captured with tcpdump, shows the handshake but no QEMU stream
                 plaintext; RAM identical
  x509_postcopy  x509, post-copy with the destination paused until the end; RAM identical
  psk_postcopy   PSK, post-copy with the destination running: its page requests travel the
                 protected return path
  attacks        while a real migration runs: a sender without credentials, one with a
                 certificate of another CA, one with a valid certificate not in --tls-authz,
                 a second session with valid credentials, a flood of idle connections and a
                 slow-loris handshake are all refused or dropped; the migration completes,
                 RAM identical
  tamper         a relay between the ferries flips one byte: the migration fails cleanly, the
                 source keeps the VM, and ferry recv never hands the bad bytes to QEMU
"""
import json
import os
import socket
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402
from test_proxy import (Ferries, check, check_ferry_counts, check_source_keeps_vm,  # noqa: E402
                        ferry_bin, free_port, make_credentials, migrate_and_verify,
                        postcopy, proc_listening, proc_listening_unix, read_text, report,
                        start_postcopy_through, start_slow_precopy)

HANDSHAKE_TIMEOUT_S = 10  # ferry recv's total deadline per link (RecvOptions)
MAX_HANDSHAKES = 32       # links greeted at once (RecvOptions)


def cli_rules():
    with rig.Workdir('secc') as wd:
        psk = wd.path('keys.psk')
        with open(psk, 'w') as f:
            f.write('ferry:%s\n' % os.urandom(32).hex())

        def run(args, expect_rc):
            r = subprocess.run([ferry_bin()] + args, capture_output=True, text=True, timeout=30)
            print('ferry %s -> %d: %s' % (' '.join(args[:3]), r.returncode, r.stderr.strip()))
            check(r.returncode == expect_rc, 'exit %d, expected %d: %s' %
                  (r.returncode, expect_rc, r.stderr))
            return r.stderr.strip()

        port = free_port()
        qemu = 'unix:' + wd.path('nothing.sock')
        err = run(['recv', '--listen', 'tcp:0.0.0.0:%d' % port, '--qemu', qemu], 2)
        check(len(err.splitlines()) == 1 and 'refusing to listen on tcp:0.0.0.0' in err and
              '--insecure' in err and '--tls-psk-file' in err, 'unclear refusal: %r' % err)
        err = run(['send', '--listen', 'unix:' + wd.path('s.sock'),
                   '--peer', 'tcp:10.77.0.2:%d' % port], 2)
        check('refusing to send to tcp:10.77.0.2' in err, 'unclear refusal: %r' % err)
        err = run(['migrate', '--src-qmp', 'unix:/x', '--dst-qmp', 'unix:/y',
                   '--peer', 'udp:10.77.0.2:%d' % port], 2)
        check('refusing to send to udp:10.77.0.2' in err, 'unclear refusal: %r' % err)
        err = run(['recv', '--listen', 'tcp:0.0.0.0:%d' % port, '--qemu', qemu, '--insecure',
                   '--tls-psk-file', psk], 2)
        check('exclude each other' in err, 'unclear conflict: %r' % err)
        err = run(['send', '--listen', 'unix:' + wd.path('s.sock'), '--peer',
                   'tcp:127.0.0.1:%d' % port, '--tls-psk-file', psk, '--tls-authz', 'x'], 2)
        check('needs x509' in err, 'unclear: %r' % err)
        bad = wd.path('bad.psk')
        with open(bad, 'w') as f:
            f.write('ferry:zz\n')
        err = run(['recv', '--listen', 'tcp:0.0.0.0:%d' % port, '--qemu', qemu,
                   '--tls-psk-file', bad], 2)
        check('line 1' in err, 'the PSK file error names no line: %r' % err)

        # Listening: with --insecure (one line says so), on loopback without a word, and with
        # credentials on every address.
        for args, notice in ((['--listen', 'tcp:0.0.0.0:%d' % port, '--insecure'], True),
                             (['--listen', 'tcp:127.0.0.1:%d' % port], False),
                             (['--listen', 'tcp:0.0.0.0:%d' % port, '--tls-psk-file', psk],
                              False)):
            errf = wd.path('recv.err')
            p = rig.spawn([ferry_bin(), 'recv', '--qemu', qemu] + args,
                          stderr=open(errf, 'wb'))
            rig.wait_until(lambda: proc_listening(p.pid, port) or p.poll() is not None,
                           rig.scaled(10), 'ferry recv listening')
            check(p.poll() is None, 'ferry recv %s exited: %s' % (args, read_text(errf)))
            rig.reap(p)
            err = read_text(errf).strip()
            print('ferry recv %s: %r' % (' '.join(args), err))
            if notice:
                check(len(err.splitlines()) == 1 and '--insecure: listening on' in err and
                      'without authentication' in err, 'expected one notice line: %r' % err)
            else:
                check('--insecure' not in err, 'unexpected notice: %r' % err)


def capture_start(link, port, path):
    """tcpdump on the destination's veth for the link's port (the first 40000 packets)."""
    errf = path + '.err'
    p = link.spawn('b', ['tcpdump', '-i', link.veth_b, '-U', '-s', '0', '-c', '40000', '-w',
                         path, 'tcp', 'port', str(port)], stderr=open(errf, 'wb'))
    rig.wait_until(lambda: 'listening on' in read_text(errf) or p.poll() is not None,
                   rig.scaled(10), 'tcpdump to start')
    check(p.poll() is None, 'tcpdump failed: %s' % read_text(errf))
    return p


def x509_precopy():
    wl = {'ws': '32M', 'pattern': 'mix', 'rate': 500}
    with rig.Workdir('secx') as wd, rig.Link('100mbit') as link, \
            rig.Guest('src', workload=wl, workdir=wd, netns=link.ns_a) as src, \
            rig.Guest.destination(src, 'dst', 'unix:' + wd.path('in.sock'),
                                  netns=link.ns_b) as dst:
        fr = Ferries(wd, link=link, security='x509', recv_args=['--tls-authz', 'ferry-send'])
        try:
            src.wait_ready()
            src.wait_heartbeats(2)
            fr.start_recv(wd.path('in.sock'))
            cap = wd.path('link.pcap')
            dump = capture_start(link, fr.port, cap)
            migrate_and_verify(src, dst, fr, 'x509 over a 100 Mbit/s link')
            rig.reap(dump)
            data = open(cap, 'rb').read()
            print('captured %d bytes of the link' % len(data))
            # The capture holds the link: the plaintext HELLO and megabytes after it.
            check(b'FERY' in data and len(data) > (8 << 20),
                  'the capture does not hold the link (%d bytes)' % len(data))
            # Long enough that ciphertext does not hold one by chance (a bare 'QEVM' turns up
            # in ~3 % of 100 MB captures): the stream's magic with its version, and the RAM
            # block's name with its length byte, as the stream's first section carries it.
            for plain in (b'QEVM\x00\x00\x00\x03', b'\x06pc.ram'):
                check(plain not in data, 'QEMU stream plaintext %r on the link' % plain)
            print('no QEMU stream header, no RAM block name on the link')
        finally:
            fr.close()


def x509_postcopy():
    """Post-copy with the destination kept paused until the end, so that its RAM can be
    compared with the (stopped) source's."""
    wl = {'ws': '96M', 'pattern': 'mix', 'rate': 0}
    with rig.Workdir('secxp') as wd, rig.Link('100mbit') as link, \
            rig.Guest('src', workload=wl, workdir=wd, netns=link.ns_a) as src, \
            rig.Guest.destination(src, 'dst', 'unix:' + wd.path('in.sock'),
                                  netns=link.ns_b) as dst:
        fr = Ferries(wd, link=link, security='x509')
        try:
            start_postcopy_through(src, dst, fr, wd)
            info = src.wait_migration(timeout=150)
            dst.wait_incoming_done()
            report('x509 post-copy (destination paused)', info)
            check_ferry_counts(fr, info, 1)
            diff = rig.check_ram_and_resume(src, dst)
            print('RAM identical over %d pages; destination heartbeats advance' % diff.pages)
        finally:
            fr.close()


# Idle connections and one slow-loris, from the source's namespace; prints one JSON line:
# for each connection, seconds from its connect to the receiver closing it (null = still open
# when the script gave up).
FLOOD = r'''
import json, socket, struct, sys, time
host, port, idle, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
hello = struct.pack('>IIQI', 6, 20, 0, 0) + b'FERY' + bytes(16)
conns = []
for i in range(idle + 1):  # the slow-loris first, so that it is not one the cap drops
    s = socket.create_connection((host, port), timeout=5)
    s.setblocking(False)
    conns.append([s, time.monotonic(), None])
loris = conns[0]
t0 = time.monotonic()
sent = 0
while time.monotonic() - t0 < limit and any(c[2] is None for c in conns):
    if loris[2] is None and sent < len(hello):
        try:
            loris[0].send(hello[sent:sent + 1])
            sent += 1
        except OSError:
            loris[2] = time.monotonic() - loris[1]
    for c in conns:
        if c[2] is None:
            try:
                if c[0].recv(4096) == b'':
                    c[2] = time.monotonic() - c[1]
            except BlockingIOError:
                pass
            except OSError:
                c[2] = time.monotonic() - c[1]
    time.sleep(0.5)
print(json.dumps({'idle': [c[2] for c in conns[1:]], 'loris': loris[2], 'loris_sent': sent}))
'''


def attacker(link, wd, tag, peer, args):
    """A ferry send with these credentials, made to open a link by a stand-in for QEMU;
    returns (exit code, its one-line error)."""
    sock, errf = wd.path(tag + '.sock'), wd.path(tag + '.err')
    p = link.spawn('a', [ferry_bin(), 'send', '--listen', 'unix:' + sock, '--peer', peer] + args,
                   stderr=open(errf, 'wb'))
    rig.wait_until(lambda: proc_listening_unix(p.pid, sock) or p.poll() is not None,
                   rig.scaled(10), 'attacker ferry send listening')
    qemu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    qemu.connect(sock)
    rig.wait_until(lambda: p.poll() is not None, rig.scaled(30), 'attacker ferry send to exit')
    qemu.close()
    err = read_text(errf).strip()
    print('%s: exit %d: %s' % (tag, p.returncode, err))
    return p.returncode, err


def attacks():
    wl = {'ws': '64M', 'pattern': 'mix', 'rate': 2000}
    with rig.Workdir('seca') as wd, rig.Link('100mbit') as link, \
            rig.Guest('src', workload=wl, workdir=wd, netns=link.ns_a) as src, \
            rig.Guest.destination(src, 'dst', 'unix:' + wd.path('in.sock'),
                                  netns=link.ns_b) as dst:
        fr = Ferries(wd, link=link, security='x509', recv_args=['--tls-authz', 'ferry-send'])
        cred = os.path.dirname(fr.security_args[1])
        other_ca = make_credentials(wd, 'other')
        intruder = make_credentials(wd, 'intruder', '--client-cn', 'intruder', '--ca-from', cred)
        try:
            # Slow enough that the migration runs through every attack (~4 MiB/s).
            start_slow_precopy(src, fr, wd, max_bandwidth=4 << 20, past=8 << 20)
            # One at a time: during the flood below the cap drops new links unanswered.
            results = {
                'no credentials': attacker(link, wd, 'plain', fr.peer, ['--insecure']),
                'another CA': attacker(link, wd, 'otherca', fr.peer,
                                       ['--tls-x509-dir', other_ca + '/x509']),
                'not in --tls-authz': attacker(link, wd, 'intruder', fr.peer,
                                               ['--tls-x509-dir', intruder + '/x509']),
                'second session': attacker(link, wd, 'second', fr.peer, fr.security_args),
            }
            flood = link.spawn('a', [sys.executable, '-c', FLOOD, link.addr_b, str(fr.port),
                                     str(MAX_HANDSHAKES + 8), str(HANDSHAKE_TIMEOUT_S + 8)],
                               stdout=subprocess.PIPE)
            out, _ = flood.communicate(timeout=rig.scaled(HANDSHAKE_TIMEOUT_S + 30))
            check(src.query_migrate()['status'] == 'active',
                  'the migration did not run through the attacks: %s' % src.query_migrate())
            src.set_parameters({'max-bandwidth': 1 << 30})
            info = src.wait_migration(timeout=180)
            dst.wait_incoming_done()
            src.wait_status('postmigrate')
            report('x509 migration beside the attacks', info)
            check_ferry_counts(fr, info, 1)
            diff = rig.check_ram_and_resume(src, dst)
            print('RAM identical over %d pages; destination heartbeats advance' % diff.pages)

            for what, (rc, err) in results.items():
                # (--insecure adds its notice line first)
                results[what] = (rc, err.splitlines()[-1] if err else '')
                check(rc != 0 and len(err.splitlines()) == 1 + (what == 'no credentials'),
                      '%s: expected one line and a failure, got exit %d: %r' % (what, rc, err))
            check('accepts authenticated senders only' in results['no credentials'][1],
                  'no credentials: %r' % results['no credentials'][1])
            check('certificate' in results['another CA'][1], 'another CA: %r' %
                  results['another CA'][1])
            check("'CN=intruder,O=ferry test' is not in --tls-authz" in
                  results['not in --tls-authz'][1], 'intruder: %r' % results['not in --tls-authz'][1])
            check('another migration is running' in results['second session'][1],
                  'second session: %r' % results['second session'][1])
            flood_result = json.loads(out)
            print('flood: %s' % flood_result)
            idle = flood_result['idle']
            check(all(t is not None and t <= HANDSHAKE_TIMEOUT_S + 3 for t in idle),
                  'idle connections held past the handshake deadline: %s' % idle)
            check(sum(1 for t in idle if t < HANDSHAKE_TIMEOUT_S / 2) >= 8,
                  'no connection beyond the cap of %d was closed at once: %s' %
                  (MAX_HANDSHAKES, idle))
            loris = flood_result['loris']
            check(loris is not None and HANDSHAKE_TIMEOUT_S - 2 <= loris <= HANDSHAKE_TIMEOUT_S + 3,
                  'the slow-loris handshake was not cut at the deadline: %s' % flood_result)
            recv_err = read_text(fr.recv_err)
            refused = [x for x in recv_err.splitlines() if 'refused a link' in x]
            print('ferry recv refused %d links; first lines:\n  %s' %
                  (len(refused), '\n  '.join(refused[:6])))
            check(len(refused) >= 4 + 8, 'ferry recv reported %d refusals' % len(refused))
        finally:
            fr.close()


class FlipRelay:
    """TCP relay 127.0.0.1:port -> target that flips one bit of the byte at offset `at` of the
    sender's direction."""

    def __init__(self, target_port, at):
        self.at, self.target_port = at, target_port
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(('127.0.0.1', 0))
        self.srv.listen(4)
        self.port = self.srv.getsockname()[1]
        self.flipped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        a, _ = self.srv.accept()
        b = socket.create_connection(('127.0.0.1', self.target_port))
        threading.Thread(target=self._pump, args=(b, a, False), daemon=True).start()
        self._pump(a, b, True)

    def _pump(self, src, dst, flip):
        seen = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if flip and seen <= self.at < seen + len(data):
                    buf = bytearray(data)
                    buf[self.at - seen] ^= 0x10
                    data = bytes(buf)
                    self.flipped = True
                seen += len(data)
                dst.sendall(data)
        except OSError:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


def tamper():
    flip_at = 6 << 20
    wl = {'ws': '64M', 'pattern': 'mix', 'rate': 1000}
    with rig.Workdir('sect') as wd, \
            rig.Guest('src', workload=wl, workdir=wd) as src, \
            rig.Guest.destination(src, 'dst', 'unix:' + wd.path('in.sock')) as dst:
        fr = Ferries(wd, security='psk')
        try:
            src.wait_ready()
            src.wait_heartbeats(2)
            fr.start_recv(wd.path('in.sock'))
            relay = FlipRelay(fr.port, flip_at)  # after recv holds its port
            fr.peer = 'tcp:127.0.0.1:%d' % relay.port
            src.migrate(fr.start_send())
            info = src.wait_migration(timeout=120, raise_on_fail=False)
            print('through a relay that flips one bit at link byte %d: %s' %
                  (flip_at, info.get('status')))
            check(relay.flipped, 'the relay flipped nothing')
            rc_recv, rc_send = fr.wait_exit('recv'), fr.wait_exit('send')
            err_recv, err_send = read_text(fr.recv_err).strip(), read_text(fr.send_err).strip()
            print('ferry recv: exit %d: %s\nferry send: exit %d: %s' %
                  (rc_recv, err_recv, rc_send, err_send))
            check(rc_recv == 1 and 'failed authentication' in err_recv,
                  'ferry recv did not fail on the altered frame: %r' % err_recv)
            check(rc_send == 1, 'ferry send exit %d' % rc_send)
            check_source_keeps_vm(src, info)
            _, r = fr.stats()
            check(r['bytes_to_qemu'] < flip_at,
                  'ferry recv handed %d bytes to QEMU, past the altered byte at %d' %
                  (r['bytes_to_qemu'], flip_at))
            print('the destination QEMU got %d bytes, all before the altered frame' %
                  r['bytes_to_qemu'])
            try:
                dst_status = dst.status()
            except (rig.RigError, OSError):
                dst_status = 'exited'  # QEMU ends when its incoming migration fails
            print('destination QEMU: %s' % dst_status)
            check(dst_status != 'running', 'the destination runs a VM from a broken stream')
        finally:
            fr.close()


SCENARIOS = {
    'cli_rules': cli_rules,
    'x509_precopy': x509_precopy,
    'x509_postcopy': x509_postcopy,
    'psk_postcopy': lambda: postcopy(link_rate='100mbit', security='psk'),
    'attacks': attacks,
    'tamper': tamper,
}


def main(argv):
    if len(argv) != 2 or argv[1] not in SCENARIOS:
        print(__doc__)
        return 2
    if argv[1] != 'cli_rules':
        rig.require_qemu_and_guest()
    SCENARIOS[argv[1]]()
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
