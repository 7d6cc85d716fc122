"""A logging relay between two unix sockets (Python 3 stdlib only).

Listens on `listen_path`; for every accepted connection it connects to `target_path` (in
accept order, synchronously, so QEMU 7.2's "first connection is main" rule holds), then
copies both directions, writing each direction to its own file:

    <capture_dir>/<prefix>.<n>.fwd   bytes source -> destination   (n = 0, 1, ... accept order)
    <capture_dir>/<prefix>.<n>.rev   bytes destination -> source   (return path)

EOF in one direction is forwarded as shutdown(SHUT_WR) on the other socket, exactly what a
direct connection would show. Each Conn records its byte counts and kind ('main' if the
stream starts with "QEVM", 'multifd' if with 0x11223344, else 'other').

In-process:
    r = Relay(listen, target, capture_dir, prefix='pc').start()
    ... migrate to 'unix:' + listen ...
    r.wait_idle(timeout)   # all accepted connections closed in both directions
    r.close()
Standalone:  python3 relay.py LISTEN TARGET CAPTURE_DIR [PREFIX]
"""

import os
import socket
import sys
import threading
import time

QEVM = b'QEVM'
MULTIFD_MAGIC = bytes.fromhex('11223344')


class Conn:
    def __init__(self, index, fwd_path, rev_path):
        self.index = index
        self.fwd_path = fwd_path
        self.rev_path = rev_path
        self.fwd_bytes = 0
        self.rev_bytes = 0
        self.head = b''
        self.done = {'fwd': False, 'rev': False}
        self.error = None

    @property
    def kind(self):
        if self.head.startswith(QEVM):
            return 'main'
        if self.head.startswith(MULTIFD_MAGIC):
            return 'multifd'
        return 'other'

    @property
    def closed(self):
        return self.done['fwd'] and self.done['rev']

    def __repr__(self):
        return 'Conn(%d, %s, fwd=%d, rev=%d)' % (self.index, self.kind, self.fwd_bytes,
                                                 self.rev_bytes)


class Relay:
    def __init__(self, listen_path, target_path, capture_dir, prefix='cap', connect_timeout=30):
        self.listen_path = listen_path
        self.target_path = target_path
        self.capture_dir = capture_dir
        self.prefix = prefix
        self.connect_timeout = connect_timeout
        self.conns = []
        self.errors = []
        self._lock = threading.Lock()
        self._stop = False
        self._threads = []
        self._socks = []
        if os.path.exists(listen_path):
            os.unlink(listen_path)
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(listen_path)
        self.lsock.listen(16)
        self.lsock.settimeout(0.2)

    def start(self):
        t = threading.Thread(target=self._accept_loop, name='relay-accept', daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _connect_target(self):
        deadline = time.monotonic() + self.connect_timeout
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(self.target_path)
                return s
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _accept_loop(self):
        while not self._stop:
            try:
                a, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            a.settimeout(None)
            with self._lock:
                n = len(self.conns)
                c = Conn(n, os.path.join(self.capture_dir, '%s.%d.fwd' % (self.prefix, n)),
                         os.path.join(self.capture_dir, '%s.%d.rev' % (self.prefix, n)))
                self.conns.append(c)
            try:
                b = self._connect_target()
            except OSError as e:
                c.error = 'connect to %s: %s' % (self.target_path, e)
                self.errors.append(c.error)
                c.done = {'fwd': True, 'rev': True}
                a.close()
                continue
            self._socks += [a, b]
            for direction, src, dst, path in (('fwd', a, b, c.fwd_path),
                                              ('rev', b, a, c.rev_path)):
                t = threading.Thread(target=self._pump, args=(c, direction, src, dst, path),
                                     name='relay-%d-%s' % (n, direction), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump(self, c, direction, src, dst, path):
        try:
            with open(path, 'wb') as f:
                while True:
                    data = src.recv(1 << 20)
                    if not data:
                        break
                    f.write(data)
                    if direction == 'fwd':
                        if len(c.head) < 8:
                            c.head += data[:8 - len(c.head)]
                        c.fwd_bytes += len(data)
                    else:
                        c.rev_bytes += len(data)
                    dst.sendall(data)
        except OSError as e:
            if not self._stop:
                c.error = '%s: %s' % (direction, e)
                self.errors.append('conn %d %s' % (c.index, c.error))
                for s in (src, dst):  # a broken half: stop both ends instead of stalling one
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            c.done[direction] = True

    def wait_idle(self, timeout, min_conns=1):
        """Waits until at least min_conns connections were accepted and all are closed in both
        directions. Returns the list of Conn."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                conns = list(self.conns)
            if len(conns) >= min_conns and all(c.closed for c in conns):
                return conns
            if time.monotonic() > deadline:
                raise TimeoutError('relay not idle after %.0f s: %s' % (timeout, conns))
            time.sleep(0.05)

    def close(self):
        self._stop = True
        try:
            self.lsock.close()
        except OSError:
            pass
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)
        if os.path.exists(self.listen_path):
            os.unlink(self.listen_path)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    r = Relay(argv[1], argv[2], argv[3], argv[4] if len(argv) > 4 else 'cap').start()
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        r.close()
        for c in r.conns:
            print(c, file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
