"""ferry integration rig: real QEMU guests, QMP, RAM comparison, shaped netns links.

Python 3 standard library only. Every wait has a deadline; every QEMU is killed on exit
(context managers, an atexit hook, SIGTERM handling and PR_SET_PDEATHSIG on the child).

Quick use:

    import rig
    rig.require_qemu_and_guest()                      # exit 77 (skip) with a reason if missing
    with rig.Workdir('precopy') as wd, \\
         rig.Guest('src', workload={'ws': '64M', 'pattern': 'mix', 'rate': 5000}, workdir=wd) as src, \\
         rig.Guest('dst', incoming='unix:' + wd.path('in.sock'), workdir=wd) as dst:
        src.wait_ready()
        src.migrate('unix:' + wd.path('in.sock'))
        info = src.wait_migration(timeout=120)       # dict from query-migrate, status 'completed'
        dst.wait_incoming_done()
        diff = rig.compare_ram(src, dst)             # RamDiff; diff.ok, diff.differing, diff.first
        dst.cont(); dst.wait_heartbeats(3)

Conventions: a test is a script run by meson (tests/integration/meson.build, suite
'integration'); exit 0 pass, 1 fail, 77 skip (rig.skip(reason)). Environment:
FERRY_TIMEOUT_SCALE (multiplies every deadline), FERRY_KEEP=1|fail (keep the workdir),
FERRY_BIN / FERRY_BUILD_DIR (which ferry binary), FERRY_TEST_TMP (workdir parent, /tmp).

API summary:
  Guest(name, ram_kib, workload, incoming, netns, extra_args, workdir) / Guest.destination(src,
      name, incoming): qmp(cmd, **args), events(), status(), cont(), stop(),
      set_capabilities({...}), set_parameters({...}), configure_migration(caps, params),
      migrate(uri), migrate_until(uri, deadline_s) -> (outcome, info), migrate_incoming(uri),
      start_postcopy(), query_migrate(), wait_migration(timeout, until), wait_status(states),
      wait_incoming_done(), wait_ready(), wait_heartbeats(n, timeout), heartbeats(),
      pmemsave(path), serial_text(), stderr_text(), kill(), quit(), close()
      ticks() (host-stamped heartbeats), self_check() -> (ok, line), corrupt(page),
      serial_write(text), console_lines(since); Guest(..., autostart=True): no -S
  guest_pauses(src, dst, t0, t1, baseline_s, holds) -> {guest_max_pause_ms, guest_stalled_ms,
      guest_baseline_ms, ...}; merged_ticks(src, dst); tick_gaps(ticks, t0, t1)
  compare_ram(src, dst) -> RamDiff(pages, differing, first, ok); compare_files(a, b)
  check_ram_and_resume(src, dst): compare (must be identical), cont dst, heartbeats advance
  Link(rate): netns pair ns_a/ns_b, veth_a/veth_b, addr_a/addr_b, tx_bytes(side),
      rx_bytes(side), run(side, argv), spawn(side, argv), down()
  spawn(argv, netns), reap(p), wait_until(cond, timeout, what), run_ferry(args), find_ferry()
  relay.Relay(listen, target, capture_dir, prefix) (see relay.py); stream_count (oracle)
"""

import atexit
import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
GUEST_DIR = os.environ.get('FERRY_GUEST_DIR', os.path.join(ROOT, '.cache', 'guest'))
KERNEL = os.path.join(GUEST_DIR, 'vmlinuz')
INITRD = os.path.join(GUEST_DIR, 'initramfs.cpio.gz')
QEMU = os.environ.get('FERRY_QEMU', shutil.which('qemu-system-x86_64') or 'qemu-system-x86_64')
NETNS_SH = os.path.join(ROOT, 'scripts', 'netns.sh')
PAGE = 4096
DEFAULT_RAM_KIB = 262152  # 256 MiB + 8 KiB: never a multiple of 64 pages (QEMU 7.2 TCG bug)
SKIP = 77

# Multiplier for every default deadline (FERRY_TIMEOUT_SCALE=2 on a slow machine).
TIMEOUT_SCALE = float(os.environ.get('FERRY_TIMEOUT_SCALE', '1'))


def scaled(seconds):
    return seconds * TIMEOUT_SCALE


class RigError(Exception):
    """Any failure of the rig or of a guest (timeout, QMP error, QEMU exit)."""


class MigrationFailed(RigError):
    def __init__(self, info):
        super().__init__('migration ended with status %r: %s' %
                         (info.get('status'), info.get('error-desc', '')))
        self.info = info


def log(*args):
    print('[rig %7.2f]' % (time.monotonic() - _T0), *args, file=sys.stderr, flush=True)


_T0 = time.monotonic()


def skip(reason):
    """Exits with the meson 'skipped' code and a stated reason."""
    print('SKIP: ' + reason, flush=True)
    sys.exit(SKIP)


def require_qemu_and_guest():
    if not shutil.which(QEMU) and not os.access(QEMU, os.X_OK):
        skip('qemu-system-x86_64 not found (apt-get install qemu-system-x86)')
    if not (os.path.exists(KERNEL) and os.path.exists(INITRD)):
        skip('guest image missing: run scripts/guest/build.sh (expects %s and %s)' %
             (KERNEL, INITRD))


def require_root_netns():
    if os.geteuid() != 0 or not shutil.which('ip') or not shutil.which('tc'):
        skip('network namespaces need root, ip and tc (iproute2)')


def find_ferry():
    """Path of the ferry binary: $FERRY_BIN, else <builddir>/apps/ferry (meson sets
    MESON_BUILD_ROOT only for run targets, so tests pass it via env), else build/apps/ferry."""
    for cand in (os.environ.get('FERRY_BIN'),
                 os.path.join(os.environ.get('FERRY_BUILD_DIR', ''), 'apps', 'ferry')
                 if os.environ.get('FERRY_BUILD_DIR') else None,
                 os.path.join(ROOT, 'build', 'apps', 'ferry')):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def wait_until(cond, timeout, what, interval=0.05):
    """Polls cond() until it returns a truthy value (returned) or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise RigError('timed out after %.0f s waiting for %s' % (timeout, what))
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Process hygiene: every child is registered and killed at exit, even on SIGTERM (meson timeout).

_children = set()
_children_lock = threading.Lock()
_cleanups = []  # callables run at exit (netns teardown)


def _kill_all():
    with _children_lock:
        procs = list(_children)
    for p in procs:
        try:
            p.kill()
        except Exception:
            pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except Exception:
            pass
    for fn in list(reversed(_cleanups)):
        try:
            fn()
        except Exception:
            pass
    _cleanups.clear()


atexit.register(_kill_all)


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def _child_setup():
    # The child dies with the rig, even if the rig is SIGKILLed.
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spawn(argv, netns=None, **kw):
    """Starts a registered child process (killed at exit). netns: run inside that namespace."""
    if netns:
        argv = ['ip', 'netns', 'exec', netns] + list(argv)
    p = subprocess.Popen(argv, preexec_fn=_child_setup, **kw)
    with _children_lock:
        _children.add(p)
    return p


def reap(p, timeout=10):
    if p is None:
        return
    if p.poll() is None:
        p.kill()
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    with _children_lock:
        _children.discard(p)


# --------------------------------------------------------------------------------------------

class Workdir:
    """A scratch directory for one test (sockets, logs, captures, RAM dumps). Kept on failure
    when FERRY_KEEP=1, else removed. Short path: unix socket paths are limited to 107 bytes."""

    def __init__(self, name):
        base = os.environ.get('FERRY_TEST_TMP', '/tmp')
        self.dir = tempfile.mkdtemp(prefix='ferry-%s-' % name, dir=base)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if os.environ.get('FERRY_KEEP') == '1' or (et is not None and
                                                   os.environ.get('FERRY_KEEP') == 'fail'):
            log('kept workdir', self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        return False


# --------------------------------------------------------------------------------------------

class Qmp:
    """A small synchronous QMP client: greeting, qmp_capabilities, commands with ids, events
    queued in self.events (list of dicts)."""

    def __init__(self, path, timeout):
        self.path = path
        self.events = []
        self._buf = b''
        self._id = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        deadline = time.monotonic() + timeout
        self.greeting = self._read_msg(deadline)
        # A QEMU started with -incoming may emit its first MIGRATION event ahead of the
        # greeting when a client connects while it starts up: keep it, read on.
        while 'event' in self.greeting:
            self.events.append(self.greeting)
            self.greeting = self._read_msg(deadline)
        if 'QMP' not in self.greeting:
            raise RigError('bad QMP greeting: %r' % self.greeting)
        self.cmd('qmp_capabilities')

    def close(self):
        try:
            self.sock.close()
        except Exception:
            pass

    def _read_msg(self, deadline):
        while b'\n' not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RigError('QMP timeout on %s' % self.path)
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise RigError('QMP connection closed (%s)' % self.path)
            self._buf += chunk
        line, self._buf = self._buf.split(b'\n', 1)
        return json.loads(line)

    def cmd(self, name, timeout=60, **args):
        """Runs one command; returns its 'return' value; raises RigError on a QMP error."""
        self._id += 1
        msg = {'execute': name, 'id': self._id}
        if args:
            msg['arguments'] = args
        self.sock.sendall(json.dumps(msg).encode() + b'\n')
        deadline = time.monotonic() + scaled(timeout)
        while True:
            r = self._read_msg(deadline)
            if 'event' in r:
                self.events.append(r)
                continue
            if r.get('id') != self._id:
                continue
            if 'error' in r:
                raise RigError('QMP %s failed: %s' % (name, r['error'].get('desc', r['error'])))
            return r.get('return')

    def poll_events(self):
        """Reads any events already sent (non-blocking) into self.events."""
        while True:
            r, _, _ = select.select([self.sock], [], [], 0)
            if not r:
                break
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self._buf += chunk
        while b'\n' in self._buf:
            line, self._buf = self._buf.split(b'\n', 1)
            self.events.append(json.loads(line))
        return self.events


# --------------------------------------------------------------------------------------------

_HB_RE = re.compile(rb'FERRY-HB (\d+) (\d+)')
_HB_LINE_RE = re.compile(rb'FERRY-HB (\d+) (\d+)\r?$')


class SerialReader:
    """The guest's serial console, read as it arrives: QEMU connects its serial chardev to a
    unix socket this reader listens on (`-chardev socket,path=...`, QEMU the client, so no byte
    is lost before the rig connects). A thread appends everything to the serial log file (what
    serial_text() and heartbeats() read) and stamps every complete line with the host's
    time.monotonic() at the recv() that completed it.

    ticks   [(t_host, seq, counter)] of FERRY-HB lines
    lines   [(t_host, text)] of every other complete line (FERRY-CHECK answers, ...)
    head    (t_host, bytes) of the bytes before the stream's first newline: on a migration
            destination, the end of a line the source started (see guest_pauses)
    tail    bytes after the last newline so far (a line not finished yet)
    """

    def __init__(self, sock_path, log_path):
        self.sock_path = sock_path
        self.log_path = log_path
        self.ticks = []
        self.lines = []
        self.head = None
        self.tail = b''
        self.conn = None
        self._lock = threading.Lock()
        self._thread = None
        self._stop = False
        if os.path.exists(sock_path):
            os.unlink(sock_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(sock_path)
        self.listener.listen(1)
        self._log = open(log_path, 'ab', buffering=0)

    def accept(self, timeout, alive):
        """Waits for QEMU to connect (it does during its start-up), then starts the thread.
        alive() raises if QEMU exited."""
        deadline = time.monotonic() + timeout
        while True:
            alive()
            r, _, _ = select.select([self.listener], [], [], 0.1)
            if r:
                self.conn, _ = self.listener.accept()
                break
            if time.monotonic() >= deadline:
                raise RigError('QEMU did not connect its serial chardev to %s' % self.sock_path)
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name='serial-' + os.path.basename(self.sock_path))
        self._thread.start()

    def _loop(self):
        first = True
        while not self._stop:
            try:
                r, _, _ = select.select([self.conn], [], [], 0.2)
                if not r:
                    continue
                data = self.conn.recv(65536)
            except (OSError, ValueError):
                break
            now = time.monotonic()
            if not data:
                break
            try:
                self._log.write(data)
            except (OSError, ValueError):
                pass
            buf = self.tail + data
            parts = buf.split(b'\n')
            complete, tail = parts[:-1], parts[-1]
            ticks, lines, head = [], [], None
            for i, line in enumerate(complete):
                if first and i == 0:
                    head = (now, line)
                m = _HB_LINE_RE.search(line)
                if m:
                    ticks.append((now, int(m.group(1)), int(m.group(2))))
                elif line.strip():
                    lines.append((now, line.decode(errors='replace').strip()))
            with self._lock:
                self.tail = tail
                if head is not None:
                    self.head = head
                if complete:
                    first = False
                self.ticks.extend(ticks)
                self.lines.extend(lines)

    def write(self, data):
        if self.conn is None:
            raise RigError('serial %s not connected' % self.sock_path)
        self.conn.sendall(data)

    def snapshot(self):
        """(ticks, lines, head, tail) copies."""
        with self._lock:
            return list(self.ticks), list(self.lines), self.head, self.tail

    def close(self):
        self._stop = True
        if self._thread is not None:
            self._thread.join(timeout=2)
        for s in (self.conn, self.listener):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        try:
            self._log.close()
        except OSError:
            pass
        if os.path.exists(self.sock_path):
            try:
                os.unlink(self.sock_path)
            except OSError:
                pass


class Guest:
    """One QEMU (qemu-system-x86_64 -M pc, TCG) running the ferry test guest.

    name      label (log and socket names)
    ram_kib   guest RAM in KiB (same on both sides of a migration; never a multiple of 256)
    workload  dict mapped to the kernel command line as ferry.<k>=<v>: ws ('64M'), rate
              (pages/s, 0 = unlimited), pattern (word|random|text|sparse|structured|mix|idle),
              mode (uniform|seq|hot), seed, hb_ms
    incoming  None (boots the guest), 'defer', or a URI ('unix:PATH', 'tcp:HOST:PORT',
              'exec:CMD'); a destination starts with -S so its RAM can be compared before
              cont(), unless autostart
    autostart a destination without -S: QEMU runs the guest as soon as it can (post-copy: at
              the switch, while pages still arrive; pre-copy: when the migration completes).
              Its RAM cannot be compared then: use self_check()
    netns     run QEMU inside this network namespace
    extra_args more QEMU arguments
    workdir   a Workdir (default: a private one removed at close)
    start     False to construct without launching (call launch())
    initrd    another initramfs for the same kernel (default: the small guest's; the
              benchmark's apps guest is .cache/guest-apps/initramfs.cpio.gz)

    Files: self.serial_log (console), self.qmp_path, self.stderr_log.
    Console: QEMU's serial chardev is a unix socket the rig reads on a thread (SerialReader):
    every heartbeat line is stamped with the host's monotonic clock on arrival (ticks()), and
    the rig can write commands to the workload (self_check(), corrupt()).
    """

    def __init__(self, name, ram_kib=DEFAULT_RAM_KIB, workload=None, incoming=None,
                 netns=None, extra_args=(), workdir=None, start=True, append_extra='',
                 initrd=None, autostart=False):
        self.name = name
        self.autostart = autostart
        self.initrd = initrd or INITRD
        self.ram_kib = ram_kib
        self.workload = dict(workload or {})
        self.incoming = incoming
        self.netns = netns
        self.extra_args = list(extra_args)
        self.append_extra = append_extra
        self._own_wd = workdir is None
        self.wd = workdir or Workdir(name)
        self.qmp_path = self.wd.path('%s.qmp' % name)
        self.serial_log = self.wd.path('%s.serial' % name)
        self.stderr_log = self.wd.path('%s.stderr' % name)
        self.serial_sock = self.wd.path('%s.ser' % name)
        self.serial = None  # SerialReader while QEMU runs
        self.proc = None
        self._qmp = None
        if start:
            try:
                self.launch()
            except BaseException:
                log('%s failed to start; stderr: %r' % (name, self.stderr_text()[-800:]))
                self.close()
                raise

    @classmethod
    def destination(cls, src, name='dst', incoming='defer', **kw):
        """A destination matching src (same RAM size, kernel command line, netns unless given,
        workdir), started with -S -incoming <incoming> (without -S if autostart=True)."""
        kw.setdefault('ram_kib', src.ram_kib)
        kw.setdefault('workload', src.workload)
        kw.setdefault('workdir', src.wd)
        kw.setdefault('append_extra', src.append_extra)
        kw.setdefault('extra_args', src.extra_args)
        kw.setdefault('initrd', src.initrd)
        return cls(name, incoming=incoming, **kw)

    @property
    def ram_bytes(self):
        return self.ram_kib * 1024

    def cmdline(self):
        append = ['console=ttyS0', 'quiet', 'panic=-1']
        for k, v in self.workload.items():
            append.append('ferry.%s=%s' % (k, v))
        if self.append_extra:
            append.append(self.append_extra)
        argv = [QEMU, '-M', 'pc', '-accel', 'tcg', '-m', '%dK' % self.ram_kib, '-nodefaults',
                '-display', 'none', '-vga', 'none', '-no-user-config',
                '-kernel', KERNEL, '-initrd', self.initrd, '-append', ' '.join(append),
                '-chardev', 'socket,id=ser0,path=%s' % self.serial_sock,
                '-serial', 'chardev:ser0',
                '-qmp', 'unix:%s,server=on,wait=off' % self.qmp_path, '-name', self.name + ',debug-threads=on']
        if self.incoming is not None:
            argv += ([] if self.autostart else ['-S']) + ['-incoming', self.incoming]
        return argv + self.extra_args

    def launch(self, timeout=30):
        for p in (self.qmp_path, self.serial_log):
            if os.path.exists(p):
                os.unlink(p)
        argv = self.cmdline()
        log('%s: %s' % (self.name, ' '.join(argv)))
        self._stderr = open(self.stderr_log, 'ab')
        self.serial = SerialReader(self.serial_sock, self.serial_log)
        self.proc = spawn(argv, netns=self.netns, stdin=subprocess.DEVNULL,
                          stdout=self._stderr, stderr=self._stderr)
        self.serial.accept(scaled(timeout), self._check_alive)
        wait_until(lambda: os.path.exists(self.qmp_path) or self._check_alive(),
                   scaled(timeout), '%s QMP socket' % self.name)

        def try_connect():
            self._check_alive()
            try:
                self._qmp = Qmp(self.qmp_path, scaled(timeout))
                return True
            except (ConnectionRefusedError, FileNotFoundError):
                return False
        wait_until(try_connect, scaled(timeout), '%s QMP connect' % self.name)
        return self

    def _check_alive(self):
        if self.proc is not None and self.proc.poll() is not None:
            raise RigError('%s: QEMU exited with %s; stderr: %s' %
                           (self.name, self.proc.returncode, self.stderr_text()[-2000:]))
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self):
        try:
            with open(self.stderr_log, 'rb') as f:
                return f.read().decode(errors='replace')
        except OSError:
            return ''

    def serial_text(self):
        try:
            with open(self.serial_log, 'rb') as f:
                return f.read().decode(errors='replace')
        except OSError:
            return ''

    # ---- QMP ----
    def qmp(self, cmd, timeout=60, **args):
        """Runs a QMP command (dashes in names, e.g. qmp('query-migrate')); returns 'return'."""
        if self._qmp is None:
            raise RigError('%s: QMP not connected' % self.name)
        self._check_alive()
        return self._qmp.cmd(cmd, timeout=timeout, **args)

    def events(self):
        """All QMP events received so far (list of dicts)."""
        return self._qmp.poll_events() if self._qmp else []

    def status(self):
        return self.qmp('query-status')['status']

    def cont(self):
        self.qmp('cont')

    def stop(self):
        self.qmp('stop')

    def set_capabilities(self, caps):
        """caps: {'xbzrle': True, 'postcopy-ram': True, 'multifd': True, ...}"""
        self.qmp('migrate-set-capabilities',
                 capabilities=[{'capability': k, 'state': bool(v)} for k, v in caps.items()])

    def set_parameters(self, params):
        """params: {'multifd-channels': 2, 'max-bandwidth': ..., 'xbzrle-cache-size': ...}"""
        self.qmp('migrate-set-parameters', **params)

    def migrate(self, uri):
        self.qmp('migrate', uri=uri)

    def migrate_incoming(self, uri):
        """For incoming='defer'."""
        self.qmp('migrate-incoming', uri=uri)

    def start_postcopy(self):
        self.qmp('migrate-start-postcopy')

    def query_migrate(self):
        return self.qmp('query-migrate')

    def wait_migration(self, timeout=120, until=('completed',), raise_on_fail=True):
        """Polls query-migrate until status is in `until` (or failed/cancelled). Returns the
        final dict (status, total-time, downtime, ram{...}, xbzrle-cache{...}). Raises
        MigrationFailed on failed/cancelled and RigError on the deadline."""
        last = {}

        def done():
            nonlocal last
            last = self.query_migrate()
            st = last.get('status')
            if st in until:
                return True
            if st in ('failed', 'cancelled'):
                if raise_on_fail:
                    raise MigrationFailed(last)
                return True
            return False
        try:
            wait_until(done, scaled(timeout), '%s migration (last status %s)' %
                       (self.name, last.get('status')), interval=0.1)
        except RigError as e:
            if not isinstance(e, MigrationFailed):
                raise RigError('%s; last query-migrate: %s' % (e, json.dumps(last)))
            raise
        return last

    def migrate_until(self, uri, deadline_s):
        """Starts a migration to uri and waits up to deadline_s for it. Returns (outcome,
        info): 'completed', 'failed', or 'did not converge' (then it is cancelled and the
        guest keeps running here); info is the last query-migrate."""
        self.migrate(uri)
        try:
            return 'completed', self.wait_migration(timeout=deadline_s)
        except MigrationFailed as e:
            return 'failed', e.info
        except RigError:
            info = self.query_migrate()
            self.qmp('migrate_cancel')
            self.wait_migration(timeout=60, until=('cancelled', 'failed', 'completed'),
                                raise_on_fail=False)
            return 'did not converge', info

    def configure_migration(self, caps=None, params=None):
        """migrate-set-capabilities / -parameters when given (both are dicts)."""
        if caps:
            self.set_capabilities(caps)
        if params:
            self.set_parameters(params)

    def wait_status(self, statuses, timeout=60):
        """Waits until query-status is one of `statuses` (e.g. 'postmigrate', 'paused')."""
        if isinstance(statuses, str):
            statuses = (statuses,)
        return wait_until(lambda: self.status() in statuses and self.status(), scaled(timeout),
                          '%s run state in %s' % (self.name, statuses), interval=0.1)

    def wait_incoming_done(self, timeout=120):
        """Destination: waits until the incoming migration finished: its query-migrate status
        is 'completed' (this matters in post-copy, where the guest may be runnable long before
        the last page arrived) and the run state is 'paused' (started with -S) or 'running'
        (after cont()). Returns the run state."""
        def done():
            st = self.status()
            if st in ('internal-error', 'shutdown', 'guest-panicked'):
                raise RigError('%s: incoming migration ended in state %s; stderr: %s' %
                               (self.name, st, self.stderr_text()[-2000:]))
            mig = self.query_migrate().get('status')
            if mig == 'failed':
                raise RigError('%s: incoming migration failed; stderr: %s' %
                               (self.name, self.stderr_text()[-2000:]))
            if st in ('paused', 'running', 'postmigrate') and mig in (None, 'completed'):
                return st
            return False
        return wait_until(done, scaled(timeout), '%s incoming migration (stderr: %s)' %
                          (self.name, self.stderr_text()[-500:]), interval=0.1)

    # ---- console ----
    def ticks(self):
        """[(t_host, seq, counter), ...]: heartbeats stamped with time.monotonic() when they
        arrived on the host (see SerialReader)."""
        return self.serial.snapshot()[0] if self.serial else []

    def console_lines(self, since=0.0):
        """[(t_host, text)] of non-heartbeat console lines that arrived at or after since."""
        if not self.serial:
            return []
        return [x for x in self.serial.snapshot()[1] if x[0] >= since]

    def serial_write(self, text):
        """Writes to the guest's console input (the workload reads commands from it)."""
        self.serial.write(text.encode() if isinstance(text, str) else text)

    def _command(self, cmd, answer, timeout):
        t = time.monotonic()
        self.serial_write(cmd + '\n')

        def answered():
            self._check_alive()
            for _, line in self.console_lines(t):
                if line.startswith(answer) or line.startswith('FERRY-ERROR'):
                    return line
            return None
        line = wait_until(answered, scaled(timeout), '%s: answer to %r' % (self.name, cmd))
        if line.startswith('FERRY-ERROR'):
            raise RigError('%s: %s' % (self.name, line))
        return line

    def self_check(self, timeout=60):
        """Asks the workload to verify every page of its working set against the checksums
        it keeps (scripts/guest/workload.c). Returns (ok, answer line), e.g. (True,
        'FERRY-CHECK OK 16384') or (False, 'FERRY-CHECK BAD 5 bad=1 pages=16384'). The guest
        must be running."""
        line = self._command('CHECK', 'FERRY-CHECK ', timeout)
        ok = line.split()[1] == 'OK'
        log('%s self-check: %s' % (self.name, line))
        return ok, line

    def corrupt(self, page, timeout=30):
        """Has the workload flip a byte of page `page` of its working set without updating
        its checksum (the test that self_check() catches a bad page)."""
        return self._command('CORRUPT %d' % page, 'FERRY-CORRUPTED ', timeout)

    def heartbeats(self):
        """[(seq, pages_written_total), ...] parsed from the serial log."""
        try:
            with open(self.serial_log, 'rb') as f:
                data = f.read()
        except OSError:
            return []
        # Complete lines only: the reader thread appends bytes as they come, so the file may
        # end in the middle of a tick ("FERRY-HB 515 5" of "FERRY-HB 515 53447").
        data = data[:data.rfind(b'\n') + 1]
        return [(int(a), int(b)) for a, b in _HB_RE.findall(data)]

    def wait_ready(self, timeout=90):
        """Waits for the workload's FERRY-READY line and its first heartbeat."""
        def ready():
            self._check_alive()
            txt = self.serial_text()
            if 'FERRY-ERROR' in txt:
                raise RigError('%s workload error: %s' % (self.name, txt[-500:]))
            return 'FERRY-READY' in txt and 'FERRY-HB' in txt
        wait_until(ready, scaled(timeout), '%s guest boot (FERRY-READY); serial tail: %r' %
                   (self.name, self.serial_text()[-300:]), interval=0.2)

    def wait_heartbeats(self, n=3, timeout=60):
        """Waits until n more heartbeats than now appear on the console, with their pages
        counter not going backwards. Returns the last (seq, pages)."""
        start = len(self.heartbeats())

        def enough():
            self._check_alive()
            hb = self.heartbeats()
            return len(hb) >= start + n and hb
        hb = wait_until(enough, scaled(timeout), '%d heartbeats from %s' % (n, self.name),
                        interval=0.2)
        new = hb[max(start - 1, 0):]
        for a, b in zip(new, new[1:]):
            if b[1] < a[1]:
                raise RigError('%s: heartbeat pages counter went backwards: %s -> %s' %
                               (self.name, a, b))
        return hb[-1]

    # ---- memory ----
    def pmemsave(self, path, size=None):
        """Dumps guest-physical memory [0, size) (default: all RAM below 4 GiB) to path."""
        size = size or self.ram_bytes
        if os.path.exists(path):
            os.unlink(path)
        self.qmp('pmemsave', val=0, size=size, filename=path, timeout=120)
        wait_until(lambda: os.path.exists(path) and os.path.getsize(path) == size, scaled(30),
                   'pmemsave file %s' % path)

    # ---- lifetime ----
    def kill(self):
        if self._qmp:
            self._qmp.close()
            self._qmp = None
        reap(self.proc)
        if self.serial is not None:
            self.serial.close()
            self.serial = None
        if getattr(self, '_stderr', None):
            self._stderr.close()
            self._stderr = None

    def quit(self, timeout=10):
        try:
            if self._qmp and self.alive():
                self._qmp.cmd('quit', timeout=timeout)
                self.proc.wait(timeout=scaled(timeout))
        except Exception:
            pass
        self.kill()

    def close(self):
        self.kill()
        if self._own_wd:
            self.wd.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:
            log('%s failed; serial tail: %r; stderr tail: %r' %
                (self.name, self.serial_text()[-400:], self.stderr_text()[-800:]))
        self.close()
        return False


# --------------------------------------------------------------------------------------------

class RamDiff:
    def __init__(self, pages, differing, first):
        self.pages = pages
        self.differing = differing
        self.first = first  # up to 16 differing page indexes

    @property
    def ok(self):
        return self.differing == 0

    def __repr__(self):
        return 'RamDiff(pages=%d, differing=%d, first=%s)' % (self.pages, self.differing,
                                                              self.first)


def compare_files(a, b, limit=16):
    """Compares two RAM dumps page by page."""
    sa, sb = os.path.getsize(a), os.path.getsize(b)
    if sa != sb:
        raise RigError('RAM dumps differ in size: %s=%d %s=%d' % (a, sa, b, sb))
    differing = 0
    first = []
    chunk = 1 << 20
    with open(a, 'rb') as fa, open(b, 'rb') as fb:
        off = 0
        while True:
            ca = fa.read(chunk)
            cb = fb.read(chunk)
            if not ca:
                break
            if ca != cb:
                for i in range(0, len(ca), PAGE):
                    if ca[i:i + PAGE] != cb[i:i + PAGE]:
                        differing += 1
                        if len(first) < limit:
                            first.append((off + i) // PAGE)
            off += len(ca)
    return RamDiff(sa // PAGE, differing, first)


def compare_ram(src, dst, keep=False):
    """Dumps both guests' RAM (both must be paused: the source in postmigrate, the destination
    started with -S and not yet cont'ed) and compares page by page. Returns a RamDiff."""
    for g, ok in ((src, ('postmigrate', 'paused', 'finish-migrate')), (dst, ('paused',
                                                                             'inmigrate'))):
        st = g.status()
        if st not in ok:
            raise RigError('compare_ram: %s is %r, expected one of %s' % (g.name, st, ok))
    if src.ram_kib != dst.ram_kib:
        raise RigError('compare_ram: RAM sizes differ')
    pa = src.wd.path('%s.ram' % src.name)
    pb = dst.wd.path('%s.ram' % dst.name)
    try:
        src.pmemsave(pa)
        dst.pmemsave(pb)
        diff = compare_files(pa, pb)
    finally:
        if not keep:
            for p in (pa, pb):
                if os.path.exists(p):
                    os.unlink(p)
    log('compare_ram %s vs %s: %r' % (src.name, dst.name, diff))
    return diff


def check_ram_and_resume(src, dst, heartbeats=3, timeout=60):
    """compare_ram, raise if any page differs, then cont the destination and check its
    heartbeats advance. Returns the RamDiff."""
    diff = compare_ram(src, dst)
    if not diff.ok:
        raise RigError('guest RAM differs after migration: %r' % diff)
    before = dst.heartbeats()
    dst.cont()
    last = dst.wait_heartbeats(heartbeats, timeout=timeout)
    if before and last[0] <= before[-1][0]:
        raise RigError('%s: heartbeat sequence did not advance after cont' % dst.name)
    return diff


# --------------------------------------------------------------------------------------------
# The pause the guest sees: host-stamped heartbeats ("ticks") of a source and its destination.

LONG_GAP_MS = 50  # gaps longer than this count as stalls (ticks are due every 20 ms)


def merged_ticks(*guests):
    """The ticks of a source and its destination(s) on one host time line, [(t, seq,
    counter)] sorted by t. A line the source started and the destination finished (the guest
    was stopped while its UART sent it) is joined and stamped on its arrival at the
    destination; a sequence number seen twice keeps its first arrival."""
    snaps = [g.serial.snapshot() if g.serial else ([], [], None, b'') for g in guests]
    out = []
    for i, (ticks, _, head, tail) in enumerate(snaps):
        out.extend(ticks)
        if i + 1 < len(snaps) and tail:
            nhead = snaps[i + 1][2]
            if nhead is not None:
                m = _HB_LINE_RE.search(tail + nhead[1])
                if m and not _HB_LINE_RE.search(nhead[1]):
                    out.append((nhead[0], int(m.group(1)), int(m.group(2))))
    out.sort(key=lambda x: x[0])
    seen, uniq = set(), []
    for t in out:
        if t[1] not in seen:
            seen.add(t[1])
            uniq.append(t)
    return uniq


def _overlap(a0, a1, b0, b1):
    return max(0.0, min(a1, b1) - max(a0, b0))


def tick_gaps(ticks, t0, t1, now=None):
    """[(start, end)] between consecutive ticks, for every gap that overlaps [t0, t1]. When no
    tick came after the last one, the open gap runs until `now` (default: now)."""
    times = [t for t, _, _ in ticks]
    out = [(a, b) for a, b in zip(times, times[1:]) if b > t0 and a < t1]
    if times and times[-1] < t1:
        out.append((times[-1], max(now or time.monotonic(), t1)))
    return out


def guest_pauses(src, dst, t0, t1, baseline_s=5.0, holds=(), now=None):
    """What the guest saw of a migration in host time window [t0, t1] (time.monotonic():
    migrate command .. migration completed and the guest running on the destination). dst may
    be None (a pause of the source alone, e.g. stop/cont).

    Returns a dict:
      guest_max_pause_ms    the longest gap between consecutive ticks, from either side,
                            among the gaps overlapping the window (so a pause that starts
                            before t0 or ends after t1 counts whole)
      guest_stalled_ms      the sum of those gaps longer than LONG_GAP_MS
      guest_baseline_ms     the longest gap in [t0 - baseline_s, t0]: how irregular ticks
                            already were before the migration (TCG, a busy host)
      guest_held_ms         time subtracted for `holds`
      guest_ticks           ticks in the window
      guest_resumed         whether a tick arrived after the last gap (False: the guest had
                            not ticked again by `now`; the open gap is counted up to now)
      guest_pause_at_s      where the longest gap started, seconds after t0
      guest_long_gaps       [[start s after t0, ms], ...] of every gap over LONG_GAP_MS
    holds: [(h0, h1)] host times when the rig kept the destination paused on purpose (the
    RAM comparison between its completed migration and cont): removed from any gap they fall
    in, so a pre-copy run reports the pause the guest would have seen had the destination
    resumed at once; reported as guest_held_ms.
    """
    ticks = merged_ticks(*[g for g in (src, dst) if g is not None])
    gaps = tick_gaps(ticks, t0, t1, now)
    resumed = bool(ticks) and ticks[-1][0] >= t1
    held = 0.0
    lens = []
    for a, b in gaps:
        h = sum(_overlap(a, b, h0, h1) for h0, h1 in holds)
        held += h
        lens.append(((b - a - h) * 1000.0, a))
    base = [(b - a) * 1000.0 for a, b in tick_gaps(ticks, t0 - baseline_s, t0, now)
            if a >= t0 - baseline_s and b <= t0]
    longest = max(lens) if lens else (None, None)
    return {
        'guest_max_pause_ms': None if longest[0] is None else round(longest[0], 1),
        'guest_stalled_ms': round(sum(x for x, _ in lens if x > LONG_GAP_MS), 1),
        'guest_baseline_ms': round(max(base), 1) if base else None,
        'guest_held_ms': round(held * 1000.0, 1),
        'guest_ticks': sum(1 for t in ticks if t0 <= t[0] <= t1),
        'guest_resumed': resumed,
        'guest_pause_at_s': None if longest[1] is None else round(longest[1] - t0, 2),
        'guest_long_gaps': [[round(a - t0, 2), round(x, 1)] for x, a in lens
                            if x > LONG_GAP_MS],
    }


# --------------------------------------------------------------------------------------------

_link_counter = 0


class Link:
    """Two network namespaces joined by a veth pair, tbf-shaped at `rate` on both directions
    (scripts/netns.sh). Side 'a' = source (10.77.0.1), side 'b' = destination (10.77.0.2).

        with rig.Link('100mbit') as link:
            Guest(..., netns=link.ns_a) ...
            link.tx_bytes('a')
    """

    addr_a = '10.77.0.1'
    addr_b = '10.77.0.2'

    def __init__(self, rate='none', name=None, queue=None, mtu=None):
        global _link_counter
        require_root_netns()
        _link_counter += 1
        self.name = name or 'f%05d%02d' % (os.getpid() % 100000, _link_counter % 100)
        self.rate = rate
        self.ns_a, self.ns_b = self.name + '-a', self.name + '-b'
        self.veth_a, self.veth_b = self.name + '-va', self.name + '-vb'
        self._up = False
        subprocess.run([NETNS_SH, 'down', self.name], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        extra = [queue or '100ms', str(mtu)] if mtu else ([queue] if queue else [])
        r = subprocess.run([NETNS_SH, 'up', self.name, rate] + extra,
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise RigError('netns.sh up failed: %s' % r.stderr.strip())
        self._up = True
        _cleanups.append(self.down)

    def _stat(self, side, what):
        ns, dev = (self.ns_a, self.veth_a) if side == 'a' else (self.ns_b, self.veth_b)
        r = subprocess.run(['ip', 'netns', 'exec', ns, 'cat',
                            '/sys/class/net/%s/statistics/%s' % (dev, what)],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            raise RigError('cannot read %s of %s: %s' % (what, dev, r.stderr.strip()))
        return int(r.stdout)

    def tx_bytes(self, side='a'):
        return self._stat(side, 'tx_bytes')

    def qdisc_drops(self, side='a'):
        """Packets tbf dropped on that side's veth (its queue was full)."""
        ns, dev = (self.ns_a, self.veth_a) if side == 'a' else (self.ns_b, self.veth_b)
        r = subprocess.run(['ip', 'netns', 'exec', ns, 'tc', '-s', 'qdisc', 'show', 'dev', dev],
                           capture_output=True, text=True, timeout=10)
        m = re.search(r'dropped (\d+)', r.stdout)
        if r.returncode != 0 or not m:
            raise RigError('cannot read the qdisc of %s: %s' % (dev, r.stderr.strip()))
        return int(m.group(1))

    def rx_bytes(self, side='a'):
        return self._stat(side, 'rx_bytes')

    def run(self, side, argv, **kw):
        """subprocess.run inside one namespace."""
        ns = self.ns_a if side == 'a' else self.ns_b
        return subprocess.run(['ip', 'netns', 'exec', ns] + list(argv), **kw)

    def spawn(self, side, argv, **kw):
        """A registered child (killed at exit) inside one namespace."""
        return spawn(argv, netns=self.ns_a if side == 'a' else self.ns_b, **kw)

    def down(self):
        if self._up:
            subprocess.run([NETNS_SH, 'down', self.name], check=False, timeout=30)
            self._up = False

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        self.down()
        return False


# --------------------------------------------------------------------------------------------

def run_ferry(args, timeout=120, input_bytes=None, check=False):
    """Runs build/apps/ferry (see find_ferry) and returns the CompletedProcess (bytes)."""
    ferry = find_ferry()
    if ferry is None:
        raise RigError('ferry binary not found (build it; or set FERRY_BIN / FERRY_BUILD_DIR)')
    p = subprocess.run([ferry] + list(args), capture_output=True, timeout=scaled(timeout),
                       input=input_bytes, preexec_fn=_child_setup)
    if check and p.returncode != 0:
        raise RigError('ferry %s failed (%d): %s' % (' '.join(args), p.returncode,
                                                     p.stderr.decode(errors='replace')[-2000:]))
    return p
