#!/usr/bin/env python3
"""ferry send / ferry recv forwarding a real QEMU migration over TCP on loopback.

    test_proxy.py precopy_live | garbage_handshake

precopy_live: a live guest migrates into `ferry send` (unix socket), which frames the
stream over TCP to `ferry recv`, which feeds the destination QEMU (-incoming unix:...).
Checks: migration completed with several dirty syncs, guest RAM identical page by page,
destination heartbeats advance after cont, both ferries exit 0, and the byte counts of
both ends agree (send's bytes_from_qemu == recv's bytes_to_qemu, link bytes > payload).
garbage_handshake: 16 garbage bytes to recv's port -> recv exits non-zero with a one-line
reason naming the byte offset, and the destination QEMU is still 'inmigrate'.
"""
import json
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def tcp_listening(port):
    """True when some socket listens on 127.0.0.1:port (read from /proc, no connection)."""
    want = ':%04X' % port
    with open('/proc/net/tcp') as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if cols[1].endswith(want) and cols[3] == '0A':
                return True
    return False


def unix_listening(path):
    with open('/proc/net/unix') as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            # Flags 00010000 = __SO_ACCEPTCON (listening).
            if len(cols) >= 8 and cols[7] == path and int(cols[3], 16) & 0x10000:
                return True
    return False


def ferry_bin():
    b = rig.find_ferry()
    if b is None:
        raise rig.RigError('ferry binary not found (set FERRY_BUILD_DIR or FERRY_BIN)')
    return b


def wait_exit(p, timeout, what):
    rig.wait_until(lambda: p.poll() is not None, timeout, what)
    return p.returncode


def read_text(path):
    try:
        with open(path, errors='replace') as f:
            return f.read()
    except OSError:
        return ''


def start_recv(wd, port, qemu_sock, tag='recv'):
    err = wd.path(tag + '.err')
    p = rig.spawn([ferry_bin(), 'recv', '--listen', 'tcp:127.0.0.1:%d' % port,
                   '--qemu', 'unix:' + qemu_sock, '--stats-json', wd.path(tag + '.json')],
                  stderr=open(err, 'wb'))
    rig.wait_until(lambda: tcp_listening(port) or p.poll() is not None, rig.scaled(20),
                   'ferry recv listening on port %d' % port)
    if p.poll() is not None:
        raise rig.RigError('ferry recv exited %d early: %s' % (p.returncode, read_text(err)))
    return p, err


def precopy_live():
    wl = {'ws': '64M', 'pattern': 'mix', 'rate': 20000}
    port = free_port()
    send_p = recv_p = None
    with rig.Workdir('proxy') as wd, \
            rig.Guest('src', workload=wl, workdir=wd) as src, \
            rig.Guest.destination(src, 'dst', 'unix:' + wd.path('in.sock')) as dst:
        try:
            src.wait_ready()
            src.wait_heartbeats(3)
            recv_p, recv_err = start_recv(wd, port, wd.path('in.sock'))
            send_sock = wd.path('send.sock')
            send_err = wd.path('send.err')
            send_p = rig.spawn([ferry_bin(), 'send', '--listen', 'unix:' + send_sock,
                                '--peer', 'tcp:127.0.0.1:%d' % port,
                                '--stats-json', wd.path('send.json')],
                               stderr=open(send_err, 'wb'))
            rig.wait_until(lambda: unix_listening(send_sock) or send_p.poll() is not None,
                           rig.scaled(20), 'ferry send listening on ' + send_sock)
            if send_p.poll() is not None:
                raise rig.RigError('ferry send exited %d early: %s' %
                                   (send_p.returncode, read_text(send_err)))
            src.migrate('unix:' + send_sock)
            info = src.wait_migration(timeout=rig.scaled(180))
            dst.wait_incoming_done()
            src.wait_status('postmigrate')
            ram = info['ram']
            print('via ferry: total-time %d ms, downtime %d ms, dirty-syncs %d, '
                  'transferred %d, mbps %.1f' % (info['total-time'], info['downtime'],
                                                 ram['dirty-sync-count'], ram['transferred'],
                                                 ram['mbps']))
            if ram['dirty-sync-count'] < 2:
                raise rig.RigError('expected a live migration with several dirty syncs: %r'
                                   % ram)
            rc_send = wait_exit(send_p, rig.scaled(30), 'ferry send to exit')
            rc_recv = wait_exit(recv_p, rig.scaled(30), 'ferry recv to exit')
            if rc_send != 0 or rc_recv != 0:
                raise rig.RigError('ferry send exit %d (%s), ferry recv exit %d (%s)' %
                                   (rc_send, read_text(send_err).strip(), rc_recv,
                                    read_text(recv_err).strip()))
            s_stats = json.loads(read_text(wd.path('send.json')))
            r_stats = json.loads(read_text(wd.path('recv.json')))
            print('send stats %r; recv stats %r' % (s_stats, r_stats))
            if s_stats['bytes_from_qemu'] != r_stats['bytes_to_qemu']:
                raise rig.RigError('byte counts differ: send read %d from QEMU, recv wrote %d'
                                   % (s_stats['bytes_from_qemu'], r_stats['bytes_to_qemu']))
            if s_stats['bytes_from_qemu'] < ram['transferred'] // 2:
                raise rig.RigError('ferry saw %d bytes, QEMU says it transferred %d' %
                                   (s_stats['bytes_from_qemu'], ram['transferred']))
            if s_stats['bytes_on_link'] <= s_stats['bytes_from_qemu']:
                raise rig.RigError('link bytes %d not above payload %d (frames missing?)' %
                                   (s_stats['bytes_on_link'], s_stats['bytes_from_qemu']))
            diff = rig.check_ram_and_resume(src, dst)
            print('RAM identical over %d pages; destination heartbeats advance' % diff.pages)
        finally:
            rig.reap(send_p)
            rig.reap(recv_p)


def garbage_handshake():
    port = free_port()
    recv_p = None
    with rig.Workdir('proxyg') as wd, \
            rig.Guest('src', workload=None, workdir=wd) as src, \
            rig.Guest.destination(src, 'dst', 'unix:' + wd.path('in.sock')) as dst:
        try:
            recv_p, recv_err = start_recv(wd, port, wd.path('in.sock'))
            c = socket.create_connection(('127.0.0.1', port), timeout=rig.scaled(10))
            c.sendall(b'GET / HTTP/1.1\r\n\r\n')
            answer = b''
            try:
                answer = c.recv(16)
            except OSError:
                pass
            c.close()
            rc = wait_exit(recv_p, rig.scaled(20), 'ferry recv to exit')
            err = read_text(recv_err).strip()
            print('ferry recv exit %d, answer %r, stderr: %s' % (rc, answer, err))
            if rc == 0:
                raise rig.RigError('ferry recv accepted a garbage handshake')
            if answer not in (b'', b'\x00'):
                raise rig.RigError('unexpected answer to garbage: %r' % answer)
            if len(err.splitlines()) != 1 or 'offset' not in err:
                raise rig.RigError('expected one error line naming the byte offset: %r' % err)
            status = dst.status()
            if status != 'inmigrate':
                raise rig.RigError('destination QEMU is %r, expected inmigrate' % status)
            print('destination still inmigrate')
        finally:
            rig.reap(recv_p)


def main(argv):
    rig.require_qemu_and_guest()
    which = argv[1] if len(argv) > 1 else 'precopy_live'
    {'precopy_live': precopy_live, 'garbage_handshake': garbage_handshake}[which]()
    print('PASS %s' % which)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
