#!/usr/bin/env python3
"""ferry throughput on loopback (issue 13): a captured live migration stream pushed through
`ferry send --stdio` -> `ferry recv` into a sink, against a plain TCP copy of the same bytes.

    throughput.py [--capture FILE] [--mib 800] [--recapture]
    throughput.py --ferry NAME=PATH [--ferry NAME=PATH ...] [--transports tcp,udp,rdma]
                  [--codecs none,fast] [--reps 3] [--out DIR] [--no-verify] [--capture FILE]

The stream (--capture, default .cache/throughput/live-800mib.stream): a rig guest
(tests/integration/rig.py; QEMU 7.2, TCG) with ~1 GiB RAM whose workload fills a working set
with the `mix` page patterns and keeps re-dirtying it, migrated live (pre-copy, several
passes) with `migrate "exec:cat > FILE"` until the stream reaches --mib MiB; then the downtime
limit is raised so the migration completes, a destination QEMU loads the file and its RAM is
compared page by page with the source's. FILE.json records how it was made; a complete
capture is reused (--recapture makes a new one). Without --ferry only the capture is made.

Each repetition runs, in a random order: the plain copy (`socat -b 1048576 -u OPEN:FILE
TCP:127.0.0.1:PORT` into `socat -b 1048576 -u TCP-LISTEN:PORT - > /dev/null`) and, for every
--ferry binary x transport x codec, `ferry send --stdio --peer T:127.0.0.1:PORT --codec C
--quiet` (stdin the file, stdout /dev/null) -> `ferry recv --listen T:127.0.0.1:PORT --qemu
unix:SOCK --quiet` (rdma: both with `--fabric-provider tcp`, libfabric's tcp provider), where a `socat -u UNIX-LISTEN:SOCK -` sink (stdout /dev/null) plays the
destination QEMU. Wall time: from starting the sender until every process exited (0 required);
CPU seconds per side: user+sys from wait4 (ferry send --stdio forks and its parent exits at
once: this script is a child subreaper, so the child carrying the stream is reaped here and
counted with the sender). A transport or codec a binary does not offer (its --help) is "n/a".

A transport named T+psk runs T with both ends authenticated by a pre-shared key and every
frame sealed (AES-256-GCM, docs/SECURITY.md); without +psk the links are unprotected
(loopback needs nothing; dpdk, whose addresses are not loopback, runs --insecure).

The dpdk transport (issue 14) is measured as two pseudo-transports: `dpdk-memif` (the two
ferries joined by a DPDK memif port pair over shared memory, ferry recv the memif server) and
`dpdk-afp` (DPDK af_packet ports on the two ends of a veth joining two network namespaces
made for the run, scripts/netns.sh, no shaping; ferry send in one, ferry recv in the other,
the sink in the root namespace). With `dpdk-afp` each repetition also measures the PMD's own
ceiling: dpdk-testpmd in txonly mode on the same af_packet port for --testpmd-s seconds
(1514-byte frames; bytes the far veth end received per second), recorded as binary
`testpmd`. Both ferries poll adaptively (the default). `dpdk-memif-jumbo` and
`dpdk-afp-jumbo` are the same with jumbo frames: both ferries at --dpdk-mtu 9000, memif
with 9216-byte buffers (bsize), af_packet with 9216-byte ring frames (framesz) on the veth,
whose MTU is 9000 for every run (at the default MTU ferry sends 1500-byte frames on it); with
`dpdk-afp-jumbo` testpmd's ceiling is measured with 9014-byte frames too (`testpmd-jumbo`).
`dpdk-xdp`: DPDK af_xdp ports on a veth of its own between two more namespaces (copy mode;
MTU 1500: a veth refuses XDP at 9000).

Each run waits first until the host is --idle % idle over a second (others share the machine;
at most --idle-wait s) and records that figure. Before the timed runs, once per binary x
transport x codec (untimed): the sink writes what it receives to a file; with --codec none it
must be byte-identical to the stream (sha256); other codecs rebuild a valid stream whose
RAM_SAVE_FLAG_CONTINUE bits (so block names, framing bytes) may differ, so `ferry inspect
--json` of both must agree on everything but framing/total bytes, and a paused QEMU loading
the received stream must hold the same RAM as one loading the capture (page by page).

Output (DIR, default results/throughput): runs.csv (one row per run), summary.md (median of
the repetitions, min-max; GB = 1e9 bytes; ratio = GB/s over the plain copy's of the same
repetition; CPU s/GB per side; for ferry also GB/s once its link was up, the wall time less
the sender's link_setup_s: a dpdk process spends ~0.3 s on the EAL first). Published runs go
to docs/bench/throughput/. Needs socat (installed with apt-get when missing and root). Keep the
machine otherwise idle.
"""
import argparse
import csv
import ctypes
import datetime
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, os.path.join(ROOT, 'tests', 'integration'))

DEFAULT_MIB = 800
BUF = 1048576
RUN_TIMEOUT_S = 180
GB = 1e9
HOLD_BANDWIDTH = 128 << 20  # QEMU max-bandwidth while the capture iterates
KERNEL_BYTES = 88e6  # non-zero guest RAM besides the working set (kernel, initramfs)
NONZERO = 0.867  # non-zero share of the mix working set's pages

_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

COLUMNS = ['rep', 'order', 'binary', 'transport', 'codec', 'outcome', 'stream_bytes',
           'link_bytes', 'wall_s', 'gbps', 'setup_s', 'gbps_after_setup', 'ratio_plain',
           'send_cpu_s', 'recv_cpu_s',
           'sink_cpu_s', 'send_cpu_s_per_gb', 'recv_cpu_s_per_gb', 'host_idle_pct',
           'others_cpu_s', 'loadavg1', 'started', 'note']


def log(*a):
    print('[throughput]', *a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# capture

def default_stream(mib):
    return os.path.join(ROOT, '.cache', 'throughput', 'live-%dmib.stream' % mib)


def stream_meta(path):
    try:
        with open(path + '.json') as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    if not os.path.exists(path) or os.path.getsize(path) != meta.get('bytes'):
        return None
    return meta


def inspect_json(ferry, path):
    r = subprocess.run([ferry, 'inspect', '--json', path], capture_output=True, text=True,
                       timeout=600)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise SystemExit('throughput: ferry inspect --json %s failed (%d): %s' %
                         (path, r.returncode, r.stderr.strip()[-500:]))


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            b = f.read(BUF * 4)
            if not b:
                return h.hexdigest()
            h.update(b)


def capture(path, mib, ferry):
    """Captures a complete live pre-copy stream of about `mib` MiB into path (+ path.json)."""
    import rig
    rig.require_qemu_and_guest()
    target = mib << 20
    # Sizing (measured on this guest): the first pass carries the kernel's ~88 MB plus the
    # mix working set's non-zero pages (~87 %: a third of the sparse fifth stays zero); make
    # it ~80 % of the target. The workload re-dirties pages uniformly at a rate that, over the
    # first pass at HOLD_BANDWIDTH, dirties the other ~20 %: pass 2 (and the final stop-and-
    # copy) re-send them. RAM: never a multiple of 64 pages (QEMU 7.2 TCG dirty-sync bug).
    first = 0.8 * target
    ws = max(16 << 20, int((first - KERNEL_BYTES) / NONZERO) >> 20 << 20)
    ram_kib = max(1 << 20, (ws >> 10) + (384 << 10)) + 8
    frac = min(0.9, (target - first) / (NONZERO * ws))
    t_first = first / HOLD_BANDWIDTH
    rate = max(500, int(-math.log(1 - frac) * (ws // rig.PAGE) / t_first))
    workload = {'ws': '%dM' % (ws >> 20), 'pattern': 'mix', 'mode': 'uniform', 'rate': rate}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    part = path + '.part'
    for p in (path, path + '.json', part):
        if os.path.exists(p):
            os.unlink(p)
    t0 = time.monotonic()
    with rig.Workdir('tp-capture') as wd, \
            rig.Guest('src', ram_kib=ram_kib, workload=workload, workdir=wd) as src:
        src.wait_ready(timeout=600)
        src.wait_heartbeats(3, timeout=120)
        # A 1 ms downtime limit keeps pre-copy iterating while the re-dirtied pages pile up;
        # once what was sent plus what is dirty reaches the target, a 20 s limit lets it
        # complete (stop-and-copy of what is dirty). Should pre-copy converge first anyway,
        # the stream is complete, just smaller.
        src.set_parameters({'max-bandwidth': HOLD_BANDWIDTH, 'downtime-limit': 1})
        src.migrate('exec:cat > %s' % part)
        deadline = time.monotonic() + rig.scaled(900)
        first_pass = None
        while True:
            info = src.query_migrate()
            st = info.get('status')
            if st in ('failed', 'cancelled'):
                raise SystemExit('throughput: capture migration %s: %s' %
                                 (st, info.get('error-desc')))
            if st == 'completed':
                log('pre-copy converged before the target size')
                break
            ram = info.get('ram', {})
            size = os.path.getsize(part) if os.path.exists(part) else 0
            if first_pass is None and ram.get('dirty-sync-count', 0) >= 2:
                first_pass = ram.get('transferred')
            if ram.get('dirty-sync-count', 0) >= 2 and size + ram.get('remaining', 0) >= target:
                src.set_parameters({'max-bandwidth': 1 << 30, 'downtime-limit': 20000})
                break
            if time.monotonic() > deadline:
                raise SystemExit('throughput: capture reached only %d bytes' % size)
            time.sleep(0.05)
        info = src.wait_migration(timeout=600)
        src.wait_status('postmigrate')
        ram = info['ram']
        log('captured %d bytes: total-time %d ms, downtime %s ms, dirty-sync-count %d, '
            'normal %d, duplicate %d' % (os.path.getsize(part), info['total-time'],
                                         info.get('downtime'), ram['dirty-sync-count'],
                                         ram['normal'], ram['duplicate']))
        # Valid and complete: a destination QEMU loads it and holds the source's RAM.
        with rig.Guest.destination(src, 'dst', 'exec:cat %s' % part) as dst:
            dst.wait_incoming_done(timeout=600)
            diff = rig.compare_ram(src, dst)
            if not diff.ok:
                raise SystemExit('throughput: the captured stream does not reproduce the '
                                 'source RAM: %r' % diff)
        meta = {
            'bytes': os.path.getsize(part), 'target_mib': mib, 'sha256': sha256_file(part),
            'captured': datetime.datetime.now().isoformat(timespec='seconds'),
            'qemu': subprocess.run([rig.QEMU, '--version'], capture_output=True,
                                   text=True).stdout.splitlines()[0],
            'ram_kib': ram_kib, 'workload': workload, 'hold_max_bandwidth': HOLD_BANDWIDTH,
            'total_time_ms': info['total-time'], 'downtime_ms': info.get('downtime'),
            'dirty_sync_count': ram['dirty-sync-count'], 'qemu_normal': ram['normal'],
            'qemu_duplicate': ram['duplicate'], 'ram_verified_pages': diff.pages,
            'first_pass_bytes': first_pass, 'capture_s': round(time.monotonic() - t0, 1),
        }
    if ferry:
        doc = inspect_json(ferry, part)
        meta['inspect'] = {k: doc.get(k) for k in ('pages', 'page_payload', 'sections')
                           if k in doc}
    os.rename(part, path)
    with open(path + '.json', 'w') as f:
        json.dump(meta, f, indent=1)
        f.write('\n')
    return meta


# --------------------------------------------------------------------------------------------
# processes: fork/exec with PDEATHSIG, reaped with wait4 (rusage) as a child subreaper

def _open_for(spec, write):
    if spec is None:
        return os.open(os.devnull, os.O_WRONLY if write else os.O_RDONLY)
    if write:
        return os.open(spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    return os.open(spec, os.O_RDONLY)


def spawn(argv, stdin=None, stdout=None, stderr=None):
    fds = [_open_for(stdin, False), _open_for(stdout, True), _open_for(stderr, True)]
    pid = os.fork()
    if pid == 0:
        try:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            for i, fd in enumerate(fds):
                os.dup2(fd, i)
            os.closerange(3, 1024)
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    for fd in fds:
        os.close(fd)
    return pid


def my_children():
    kids = set()
    for tid in os.listdir('/proc/self/task'):
        try:
            with open('/proc/self/task/%s/children' % tid) as f:
                kids.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return kids


def kill_children():
    for pid in my_children():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while True:
        try:
            os.wait4(-1, 0)
        except ChildProcessError:
            return


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def reap_all(timeout):
    """Waits for every child (also orphans reparented here). Returns {pid: (status, cpu_s,
    t_exit)}; raises _Timeout."""
    out = {}
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        while True:
            try:
                pid, status, ru = os.wait4(-1, 0)
            except ChildProcessError:
                return out
            out[pid] = (os.waitstatus_to_exitcode(status), ru.ru_utime + ru.ru_stime,
                        time.monotonic())
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def free_port():
    for _ in range(50):
        s = socket.socket()
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
        s.close()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(('127.0.0.1', port))
            return port
        except OSError:
            continue
        finally:
            u.close()
    raise SystemExit('throughput: no free port')


def bound(port, proto):
    """True when something listens (tcp) or is bound (udp) on 127.0.0.1/any:port."""
    if proto == 'rdma':
        proto = 'tcp'  # libfabric's tcp provider: a listening socket
    for name in ('/proc/net/%s' % proto, '/proc/net/%s6' % proto):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    local, state = parts[1], parts[3]
                    if int(local.rsplit(':', 1)[1], 16) == port and \
                            (proto == 'udp' or state == '0A'):
                        return True
        except OSError:
            pass
    return False


def wait_for(cond, what, timeout=10):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError('timed out waiting for ' + what)
        time.sleep(0.002)


def _cpu_times():
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[3] + v[4], sum(v[:8])  # idle + iowait, total (without guest time)


def others_cpu(c0, done):
    """CPU seconds the rest of the machine used while a run went on: busy time from
    /proc/stat (10 ms ticks) minus this run's processes (which also count their start-up
    before the window: slightly low, never above the truth by more than a few ticks)."""
    i1, t1 = _cpu_times()
    busy = ((t1 - c0[1]) - (i1 - c0[0])) / os.sysconf('SC_CLK_TCK')
    return max(0.0, busy - sum(v[1] for v in done.values()))


def host_idle(interval=1.0):
    """Fraction of the machine's CPU time idle over `interval` (this script sleeps)."""
    i0, t0 = _cpu_times()
    time.sleep(interval)
    i1, t1 = _cpu_times()
    return (i1 - i0) / max(1, t1 - t0)


def wait_idle(threshold, max_wait):
    """Waits until the host is at least `threshold` idle over a 1 s sample (others' builds
    share the machine), at most max_wait seconds. Returns the last idle fraction."""
    deadline = time.monotonic() + max_wait
    announced = False
    while True:
        idle = host_idle()
        if idle >= threshold or time.monotonic() >= deadline:
            return idle
        if not announced:
            log('host only %.0f %% idle: waiting (up to %.0f s) for >= %.0f %%' %
                (idle * 100, max(0, deadline - time.monotonic()), threshold * 100))
            announced = True


def loadavg1():
    with open('/proc/loadavg') as f:
        return float(f.read().split()[0])


# --------------------------------------------------------------------------------------------
# runs

class Binary:
    def __init__(self, name, path):
        self.name = name
        self.path = os.path.abspath(path)
        if not os.access(self.path, os.X_OK):
            raise SystemExit('throughput: --ferry %s=%s: not an executable' % (name, path))
        send = subprocess.run([self.path, 'send', '--help'], capture_output=True,
                              text=True).stdout
        recv = subprocess.run([self.path, 'recv', '--help'], capture_output=True,
                              text=True).stdout
        m = re.search(r'transports in this build: ([^\n]*)', send)
        self.transports = {t.strip() for t in m.group(1).split(',')} if m else {'tcp'}
        m = re.search(r'--codec ([a-z|]+)', send)
        self.codecs = set(m.group(1).split('|')) if m else set()
        self.quiet = '--quiet' in send and '--quiet' in recv
        v = subprocess.run([self.path, '--version'], capture_output=True, text=True)
        self.version = (v.stdout or v.stderr).strip().splitlines()[0] if (v.stdout or
                                                                           v.stderr) else '?'

    def supports(self, transport, codec):
        transport = transport.split('+')[0]
        if transport.startswith('dpdk-'):
            transport = 'dpdk'
        return transport in self.transports and codec in self.codecs


JUMBO_MTU = 9000
JUMBO_FRAME = 9216  # memif's bsize and af_packet's framesz at the jumbo MTU (docs/DPDK.md)


DPDK_ADDR_A, DPDK_ADDR_B = '10.77.0.101', '10.77.0.102'  # ferry's own, not the kernel's


class AfpLink:
    """Two namespaces joined by an unshaped veth for dpdk-afp (scripts/netns.sh)."""

    def __init__(self, prefix='tp', mtu=JUMBO_MTU):
        self.name = '%s%05d' % (prefix, os.getpid() % 100000)
        self.ns_a, self.ns_b = self.name + '-a', self.name + '-b'
        self.veth_a, self.veth_b = self.name + '-va', self.name + '-vb'
        subprocess.run([os.path.join(ROOT, 'scripts', 'netns.sh'), 'up', self.name, 'none',
                        '100ms', str(mtu)], check=True, stdout=subprocess.DEVNULL)

    def rx_bytes_b(self):
        return int(subprocess.run(['ip', 'netns', 'exec', self.ns_b, 'cat',
                                   '/sys/class/net/%s/statistics/rx_bytes' % self.veth_b],
                                  capture_output=True, text=True, check=True).stdout)

    def down(self):
        subprocess.run([os.path.join(ROOT, 'scripts', 'netns.sh'), 'down', self.name],
                       check=False)


AFP = None
XDP = None  # its own veth pair: a veth refuses XDP at MTU 9000 (the peer's MTU must fit a page)


def afp_args(iface, jumbo=False):
    frames = ',framesz=%d,blocksz=%d' % (JUMBO_FRAME, 4 * JUMBO_FRAME) if jumbo else ''
    return '--no-pci --vdev net_af_packet0,iface=%s,qdisc_bypass=0%s' % (iface, frames)


def xdp_args(iface):
    return '--no-pci --vdev net_af_xdp0,iface=%s' % iface


def xdp_attached(ns, iface):
    """An XDP program is attached to iface in namespace ns (an af_xdp port on it is up)."""
    r = subprocess.run(['ip', '-n', ns, 'link', 'show', iface], capture_output=True, text=True)
    return r.returncode == 0 and 'prog/xdp' in r.stdout


def unix_listening(path):
    with open('/proc/net/unix') as f:
        return any(line.split()[-1] == path for line in f.readlines()[1:]
                   if len(line.split()) >= 8)


def has_packet_socket(pid):
    """pid holds an AF_PACKET socket (its DPDK af_packet port is up)."""
    try:
        with open('/proc/%d/net/packet' % pid) as f:
            inodes = {ln.split()[8] for ln in f.readlines()[1:] if len(ln.split()) > 8}
        return any(os.readlink('/proc/%d/fd/%s' % (pid, fd))[8:-1] in inodes
                   for fd in os.listdir('/proc/%d/fd' % pid))
    except OSError:
        return False


def run_testpmd(seconds, wd, jumbo=False):
    """The af_packet PMD's own ceiling: dpdk-testpmd txonly on AFP's a end, 1514-byte
    frames (jumbo: 9014); what the b end received per second."""
    # Two lcores: testpmd forwards on a core other than its main one (it busy-polls it).
    # Jumbo: mbufs that hold a whole ring frame (af_packet's rx queue wants that).
    frames = ['--mbuf-size=%d' % (JUMBO_FRAME + 128), '--txpkts=%d' % (JUMBO_MTU + 14)] \
        if jumbo else ['--txpkts=1514']
    argv = ['ip', 'netns', 'exec', AFP.ns_a, 'dpdk-testpmd', '-l', '0,1', '--no-huge', '-m', '512',
            '--no-pci', '--no-telemetry', '--file-prefix=tp%d' % os.getpid(),
            '--vdev', afp_args(AFP.veth_a, jumbo).split('--vdev ')[1], '--',
            '--forward-mode=txonly'] + frames + ['--total-num-mbufs=8192',
                                                 '--stats-period=%d' % seconds]
    p = subprocess.Popen(argv, stdout=open(os.path.join(wd, 'testpmd.out'), 'w'),
                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    # --stats-period keeps it running; the measuring window is the point, not a wait for an
    # event. Bytes the b end counted between two reads, over the time between them.
    time.sleep(1)
    rx1, t1 = AFP.rx_bytes_b(), time.monotonic()
    time.sleep(seconds)
    rx2, t2 = AFP.rx_bytes_b(), time.monotonic()
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    if rx2 <= rx1:
        return {'outcome': 'failed', 'note': 'testpmd sent nothing (see %s)' % 'testpmd.out'}
    return {'outcome': 'ok', 'wall_s': (t2 - t1), 'bytes': rx2 - rx1,
            'gbps_direct': (rx2 - rx1) / (t2 - t1) / GB}


def run_plain(stream, wd, timeout):
    port = free_port()
    sink = spawn(['socat', '-b', str(BUF), '-u', 'TCP-LISTEN:%d,reuseaddr' % port, '-'],
                 stdout=None, stderr=os.path.join(wd, 'sink.err'))
    wait_for(lambda: bound(port, 'tcp'), 'the plain-copy sink')
    c0 = _cpu_times()
    t0 = time.monotonic()
    src = spawn(['socat', '-b', str(BUF), '-u', 'OPEN:%s' % stream,
                 'TCP:127.0.0.1:%d' % port], stderr=os.path.join(wd, 'src.err'))
    done = reap_all(timeout)
    wall = max(t for _, _, t in done.values()) - t0
    bad = {k: v[0] for k, v in done.items() if v[0] != 0}
    if bad:
        return {'outcome': 'failed', 'note': 'exit %s' % bad}
    return {'outcome': 'ok', 'wall_s': wall, 'send_cpu_s': done[src][1],
            'recv_cpu_s': done[sink][1], 'sink_cpu_s': done[sink][1],
            'link_bytes': os.path.getsize(stream), 'others_cpu_s': others_cpu(c0, done)}


def run_ferry(binary, transport, codec, stream, wd, timeout, sink_out=None):
    port = free_port()
    sock = os.path.join(wd, 'sink.sock')
    if os.path.exists(sock):
        os.unlink(sock)
    stats = os.path.join(wd, 'send.json')
    if os.path.exists(stats):
        os.unlink(stats)
    errs = {k: os.path.join(wd, k + '.err') for k in ('sink', 'recv', 'send')}
    quiet = ['--quiet'] if binary.quiet else []
    sink = spawn(['socat', '-b', str(BUF), '-u', 'UNIX-LISTEN:%s' % sock, '-'],
                 stdout=sink_out, stderr=errs['sink'])
    wait_for(lambda: os.path.exists(sock), 'the sink socket')
    # TRANSPORT+psk: both ends authenticate with a pre-shared key and seal every frame
    # (docs/SECURITY.md); without it a link off loopback (dpdk) runs --insecure.
    transport, _, security = transport.partition('+')
    peer = '%s:127.0.0.1:%d' % (transport, port)
    send_pre, recv_pre, send_extra, recv_extra = [], [], [], []
    if transport == 'rdma':
        # libfabric's tcp provider here (no RDMA device): named, not a fallback.
        send_extra, recv_extra = ['--fabric-provider', 'tcp'], ['--fabric-provider', 'tcp']
    jumbo = transport.endswith('-jumbo')
    if jumbo:
        transport = transport[:-len('-jumbo')]
    if transport.startswith('dpdk-'):
        peer = 'dpdk:%s:%d' % (DPDK_ADDR_B, port)
        send_extra = ['--dpdk-local', DPDK_ADDR_A]
        if jumbo:
            send_extra += ['--dpdk-mtu', str(JUMBO_MTU)]
            recv_extra += ['--dpdk-mtu', str(JUMBO_MTU)]
    if transport == 'dpdk-memif':
        memif = 'net_memif0,socket=%s,bsize=%d' % (os.path.join(wd, 'memif.sock'),
                                                   JUMBO_FRAME if jumbo else 2048)
        recv_extra += ['--dpdk-args', '--no-pci --vdev %s,role=server' % memif]
        send_extra += ['--dpdk-args', '--no-pci --vdev %s,role=client' % memif]
    elif transport == 'dpdk-afp':
        recv_pre, send_pre = ['ip', 'netns', 'exec', AFP.ns_b], ['ip', 'netns', 'exec', AFP.ns_a]
        recv_extra += ['--dpdk-args', afp_args(AFP.veth_b, jumbo)]
        send_extra += ['--dpdk-args', afp_args(AFP.veth_a, jumbo)]
    elif transport == 'dpdk-xdp':
        recv_pre, send_pre = ['ip', 'netns', 'exec', XDP.ns_b], ['ip', 'netns', 'exec', XDP.ns_a]
        recv_extra += ['--dpdk-args', xdp_args(XDP.veth_b)]
        send_extra += ['--dpdk-args', xdp_args(XDP.veth_a)]
    if security == 'psk':
        psk = os.path.join(wd, 'keys.psk')
        with open(psk, 'w') as f:
            f.write('ferry:%s\n' % os.urandom(32).hex())
        send_extra += ['--tls-psk-file', psk]
        recv_extra += ['--tls-psk-file', psk]
    elif transport.startswith('dpdk-'):
        send_extra += ['--insecure']
        recv_extra += ['--insecure']
    recv = spawn(recv_pre + [binary.path, 'recv', '--listen', peer,
                             '--qemu', 'unix:' + sock] + quiet + recv_extra, stderr=errs['recv'])
    if transport == 'dpdk-memif':
        wait_for(lambda: unix_listening('@' + os.path.join(wd, 'memif.sock')),
                 'ferry recv\'s memif socket')
    elif transport == 'dpdk-afp':
        wait_for(lambda: has_packet_socket(recv), 'ferry recv\'s af_packet port')
    elif transport == 'dpdk-xdp':
        wait_for(lambda: xdp_attached(XDP.ns_b, XDP.veth_b), 'ferry recv\'s af_xdp port')
    else:
        wait_for(lambda: bound(port, transport), 'ferry recv on %s port %d' % (transport, port))
    c0 = _cpu_times()
    t0 = time.monotonic()
    send = spawn(send_pre + [binary.path, 'send', '--stdio', '--peer', peer, '--codec', codec,
                             '--stats-json', stats] + quiet + send_extra,
                 stdin=stream, stderr=errs['send'])
    done = reap_all(timeout)
    wall = max(t for _, _, t in done.values()) - t0
    # Every pid that is not sink/recv/send is send's --stdio child (the only forking side).
    send_cpu = sum(v[1] for k, v in done.items() if k not in (sink, recv))
    bad = {k: v[0] for k, v in done.items() if v[0] != 0}
    if bad:
        names = {sink: 'sink', recv: 'recv', send: 'send'}
        tails = []
        for n in ('send', 'recv', 'sink'):
            with open(errs[n], errors='replace') as f:
                t = f.read().strip()
            if t:
                tails.append('%s: %s' % (n, t.splitlines()[-1][:200]))
        return {'outcome': 'failed', 'note': 'exit %s; %s' % (
            {names.get(k, 'send-child'): v for k, v in bad.items()}, ' | '.join(tails))}
    res = {'outcome': 'ok', 'wall_s': wall, 'send_cpu_s': send_cpu,
           'recv_cpu_s': done[recv][1], 'sink_cpu_s': done[sink][1],
           'others_cpu_s': others_cpu(c0, done)}
    try:
        with open(stats) as f:
            st = json.load(f)
        res['link_bytes'] = st.get('link_tx_bytes')
        # The sender's set-up before its link was up (the EAL, ARP, handshakes): a cost per
        # process, not per byte.
        if st.get('link_setup_s') is not None:
            res['setup_s'] = st['link_setup_s']
        if st.get('outcome') != 'completed' or st.get('bytes_from_qemu') != \
                os.path.getsize(stream):
            res['outcome'] = 'failed'
            res['note'] = 'send stats: outcome %s, %s of %d bytes read' % (
                st.get('outcome'), st.get('bytes_from_qemu'), os.path.getsize(stream))
    except (OSError, ValueError) as e:
        res['note'] = 'no send stats: %s' % e
    return res


def comparable(doc):
    """inspect --json without what a re-encoded stream may change: the framing bytes (block
    names the rebuilder writes where the source used RAM_SAVE_FLAG_CONTINUE, or back) and so
    the total and the offset of the device state."""
    doc = dict(doc)
    doc['bytes'] = {k: v for k, v in doc.get('bytes', {}).items()
                    if k not in ('framing', 'total')}
    doc.pop('passthrough_from', None)
    return doc


def stream_ram(stream, meta, dump):
    """Loads a stream into a paused destination QEMU (the capture's RAM size and kernel
    command line) and dumps its RAM to `dump`."""
    import rig
    with rig.Workdir('tp-load') as lwd:
        g = rig.Guest('load', ram_kib=meta['ram_kib'], workload=meta['workload'],
                      incoming='exec:cat %s' % stream, workdir=lwd)
        try:
            g.wait_incoming_done(timeout=600)
            g.pmemsave(dump)
        finally:
            g.close()


class Verifier:
    """One untimed run per binary x transport x codec whose sink keeps the bytes."""

    def __init__(self, stream, meta, wd, timeout):
        self.stream, self.meta, self.wd, self.timeout = stream, meta, wd, timeout
        self.docs = {}
        self.ref_dump = None

    def ref_ram(self):
        if self.ref_dump is None:
            self.ref_dump = os.path.join(self.wd, 'ref.ram')
            stream_ram(self.stream, self.meta, self.ref_dump)
        return self.ref_dump

    def close(self):
        if self.ref_dump and os.path.exists(self.ref_dump):
            os.unlink(self.ref_dump)

    def check(self, binary, transport, codec):
        out = os.path.join(self.wd, 'received.stream')
        dump = os.path.join(self.wd, 'received.ram')
        size = os.path.getsize(self.stream)
        try:
            r = run_ferry(binary, transport, codec, self.stream, self.wd, self.timeout,
                          sink_out=out)
            if r['outcome'] != 'ok':
                return False, 'run %s: %s' % (r['outcome'], r.get('note', ''))
            got_size = os.path.getsize(out)
            if sha256_file(out) == self.meta['sha256']:
                return True, 'byte-identical (sha256, %d bytes)' % got_size
            if codec == 'none':
                return False, 'received %d bytes that differ from the stream' % got_size
            if binary.path not in self.docs:
                self.docs[binary.path] = inspect_json(binary.path, self.stream)
            got = comparable(inspect_json(binary.path, out))
            want = comparable(self.docs[binary.path])
            if got != want:
                diff = [k for k in set(got) | set(want) if got.get(k) != want.get(k)]
                return False, 'inspect --json differs in %s' % diff
            import rig
            stream_ram(out, self.meta, dump)
            diff = rig.compare_files(self.ref_ram(), dump)
            if not diff.ok:
                return False, 'a QEMU loading it holds other RAM than from the stream: %r' % diff
            return True, ('not byte-identical (%d bytes vs %d: block names vs CONTINUE), but '
                          '`ferry inspect --json` agrees on every page, section and command '
                          'and a QEMU loading it holds the same RAM (%d pages)' % (
                              got_size, size, diff.pages))
        finally:
            for p in (out, dump):
                if os.path.exists(p):
                    os.unlink(p)


# --------------------------------------------------------------------------------------------
# report

def fnum(x, fmt='%.2f'):
    return '' if x is None or x == '' else fmt % float(x)


def med_range(vals, fmt):
    vals = [float(v) for v in vals if v not in (None, '')]
    if not vals:
        return '–'
    m = statistics.median(vals)
    if len(vals) == 1:
        return fmt % m
    return '%s (%s–%s)' % (fmt % m, fmt % min(vals), fmt % max(vals))


def idle_range(rows):
    v = [float(r['host_idle_pct']) for r in rows if r['host_idle_pct'] not in (None, '')]
    o = [float(r['others_cpu_s']) for r in rows if r['others_cpu_s'] not in (None, '')]
    return ('%.0f–%.0f %%; CPU the rest of the machine used during a run: at most %.2f s' %
            (min(v), max(v), max(o))) if v and o else 'not measured'


def summarise(rows, header):
    cells = []
    for r in rows:
        key = (r['binary'], r['transport'], r['codec'])
        if key not in cells:
            cells.append(key)
    cells.sort(key=lambda k: (k[0] != 'plain', k[0], k[1], k[2]))
    lines = header + [
        '| method | transport | codec | GB/s | × plain copy | GB/s after the link was up '
        '| send CPU s/GB | recv CPU s/GB | link bytes / stream | runs |',
        '|---|---|---|---|---|---|---|---|---|---|']
    for key in cells:
        rs = [r for r in rows if (r['binary'], r['transport'], r['codec']) == key]
        ok = [r for r in rs if r['outcome'] == 'ok']
        label = 'plain copy (socat -b 1048576)' if key[0] == 'plain' else \
            'dpdk-testpmd txonly, %d B (the PMD\'s ceiling)' % (
                JUMBO_MTU + 14 if key[1].endswith('-jumbo') else 1514) if key[0] == 'testpmd' else \
            'ferry ' + key[0]
        if not ok:
            outcome = sorted({r['outcome'] for r in rs})
            lines.append('| %s | %s | %s | %s | | | | | | 0/%d |' % (
                label, key[1], key[2], '/'.join(outcome), len(rs)))
            continue
        link = [float(r['link_bytes']) / float(r['stream_bytes']) for r in ok
                if r['link_bytes'] not in (None, '')]
        after = [r['gbps_after_setup'] for r in ok if r.get('gbps_after_setup') not in (None, '')]
        lines.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %d/%d |' % (
            label, key[1], key[2], med_range([r['gbps'] for r in ok], '%.2f'),
            med_range([r['ratio_plain'] for r in ok], '%.2f×') if key[0] != 'plain' else '1',
            med_range(after, '%.2f') if after else '',
            med_range([r['send_cpu_s_per_gb'] for r in ok], '%.2f'),
            med_range([r['recv_cpu_s_per_gb'] for r in ok], '%.2f'),
            med_range(link, '%.3f'), len(ok), len(rs)))
    failed = [r for r in rows if r['outcome'] not in ('ok', 'n/a')]
    if failed:
        lines.append('')
        lines.append('Failed runs:')
        for r in failed:
            lines.append('- rep %s %s %s %s: %s %s' % (r['rep'], r['binary'], r['transport'],
                                                       r['codec'], r['outcome'], r['note']))
    return '\n'.join(lines) + '\n'


# --------------------------------------------------------------------------------------------

def ensure_socat():
    if shutil.which('socat'):
        return
    if os.geteuid() != 0:
        raise SystemExit('throughput: socat is missing (apt-get install socat)')
    log('installing socat')
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    subprocess.run(['apt-get', 'update', '-qq'], check=True, env=env)
    subprocess.run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', 'socat'],
                   check=True, env=env)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--capture', metavar='FILE',
                    help='the stream (default .cache/throughput/live-<mib>mib.stream); '
                         'captured when missing')
    ap.add_argument('--mib', type=int, default=DEFAULT_MIB, help='stream size to capture')
    ap.add_argument('--recapture', action='store_true', help='capture again even if cached')
    ap.add_argument('--ferry', action='append', default=[], metavar='NAME=PATH',
                    help='a ferry binary to measure (repeatable)')
    ap.add_argument('--transports', default='tcp,udp')
    ap.add_argument('--codecs', default='none,fast')
    ap.add_argument('--testpmd-s', type=float, default=5,
                    help='seconds of dpdk-testpmd per repetition with dpdk-afp (the ceiling)')
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--out', default=os.path.join(ROOT, 'results', 'throughput'))
    ap.add_argument('--no-verify', action='store_true', help='skip the correctness runs')
    ap.add_argument('--seed', type=int, help='seed of the run order (default: random)')
    ap.add_argument('--timeout', type=float, default=RUN_TIMEOUT_S, help='per run, seconds')
    ap.add_argument('--idle', type=float, default=90,
                    help='before each run wait until the host is this %% idle over 1 s '
                         '(default 90; 0 = do not wait)')
    ap.add_argument('--idle-wait', type=float, default=900,
                    help='wait at most this many seconds for --idle (then run anyway)')
    args = ap.parse_args()

    binaries = []
    for spec in args.ferry:
        name, sep, path = spec.partition('=')
        if not sep or not name or name == 'plain':
            raise SystemExit('throughput: --ferry wants NAME=PATH (NAME not "plain")')
        binaries.append(Binary(name, path))
    stream = os.path.abspath(args.capture or default_stream(args.mib))
    meta = None if args.recapture else stream_meta(stream)
    if meta is None:
        log('capturing a ~%d MiB live stream into %s' % (args.mib, stream))
        meta = capture(stream, args.mib, binaries[0].path if binaries else None)
    log('stream %s: %d bytes (%.1f MiB), dirty-sync-count %s' % (
        stream, meta['bytes'], meta['bytes'] / 2**20, meta.get('dirty_sync_count')))
    if not binaries:
        return 0

    ensure_socat()
    if _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit('throughput: prctl(PR_SET_CHILD_SUBREAPER) failed')
    transports = [t for t in args.transports.split(',') if t]
    global AFP
    global XDP
    if {'dpdk-afp', 'dpdk-afp-jumbo'} & set(transports):
        AFP = AfpLink()
    if 'dpdk-xdp' in transports:
        XDP = AfpLink('tx', 1500)
    codecs = [c for c in args.codecs.split(',') if c]
    size = os.path.getsize(stream)
    os.makedirs(args.out, exist_ok=True)
    wd = tempfile.mkdtemp(prefix='ferry-tp-', dir='/tmp')
    rows = []
    csv_path = os.path.join(args.out, 'runs.csv')
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rnd = random.Random(seed)
    started = datetime.datetime.now().isoformat(timespec='seconds')
    verified = []
    try:
        # Warm the page cache: every run reads the stream from memory.
        with open(stream, 'rb') as f:
            while f.read(BUF * 8):
                pass
        if not args.no_verify:
            v = Verifier(stream, meta, wd, args.timeout)
            try:
                for b in binaries:
                    for t in transports:
                        for c in codecs:
                            if not b.supports(t, c):
                                continue
                            ok, why = v.check(b, t, c)
                            verified.append((b.name, t, c, ok, why))
                            log('verify %s %s %s: %s: %s' % (b.name, t, c,
                                                             'ok' if ok else 'FAILED', why))
            finally:
                v.close()
        cells = [('plain', 'tcp', '-')] + [(b.name, t, c) for b in binaries
                                           for t in transports for c in codecs]
        if 'dpdk-afp' in transports:
            cells.append(('testpmd', 'dpdk-afp', '-'))
        if 'dpdk-afp-jumbo' in transports:
            cells.append(('testpmd', 'dpdk-afp-jumbo', '-'))
        by_name = {b.name: b for b in binaries}
        for rep in range(1, args.reps + 1):
            order = cells[:]
            rnd.shuffle(order)
            rep_rows = []
            for i, (name, t, c) in enumerate(order):
                row = {k: '' for k in COLUMNS}
                row.update(rep=rep, order=i + 1, binary=name, transport=t, codec=c,
                           stream_bytes=size, loadavg1='%.2f' % loadavg1(),
                           started=datetime.datetime.now().isoformat(timespec='seconds'))
                if name == 'testpmd':
                    r = run_testpmd(args.testpmd_s, wd, jumbo=t.endswith('-jumbo'))
                    row.update(outcome=r['outcome'], note=r.get('note', 'ceiling: %d bytes '
                               'in %.2f s' % (r.get('bytes', 0), r.get('wall_s', 0))))
                    if r['outcome'] == 'ok':
                        row.update(gbps='%.4f' % r['gbps_direct'])
                elif name != 'plain' and not by_name[name].supports(t, c):
                    row.update(outcome='n/a', note='%s offers transports %s, codecs %s' % (
                        name, ','.join(sorted(by_name[name].transports)),
                        ','.join(sorted(by_name[name].codecs))))
                else:
                    idle = wait_idle(args.idle / 100, args.idle_wait) if args.idle > 0 \
                        else host_idle(0.5)
                    row.update(host_idle_pct='%.0f' % (idle * 100),
                               loadavg1='%.2f' % loadavg1(),
                               started=datetime.datetime.now().isoformat(timespec='seconds'))
                    try:
                        r = run_plain(stream, wd, args.timeout) if name == 'plain' else \
                            run_ferry(by_name[name], t, c, stream, wd, args.timeout)
                    except _Timeout:
                        kill_children()
                        r = {'outcome': 'timeout', 'note': '> %.0f s' % args.timeout}
                    except RuntimeError as e:
                        kill_children()
                        r = {'outcome': 'failed', 'note': str(e)}
                    row.update(r)
                    if row['outcome'] == 'ok':
                        w = row['wall_s']
                        if row.get('setup_s') not in (None, ''):
                            s = row['setup_s']
                            row.update(setup_s='%.4f' % s,
                                       gbps_after_setup='%.4f' % (size / (w - s) / GB))
                        row.update(wall_s='%.4f' % w, gbps='%.4f' % (size / w / GB),
                                   send_cpu_s='%.3f' % row['send_cpu_s'],
                                   recv_cpu_s='%.3f' % row['recv_cpu_s'],
                                   sink_cpu_s='%.3f' % row['sink_cpu_s'],
                                   others_cpu_s='%.2f' % row['others_cpu_s'],
                                   send_cpu_s_per_gb='%.3f' % (row['send_cpu_s'] * GB / size),
                                   recv_cpu_s_per_gb='%.3f' % (row['recv_cpu_s'] * GB / size))
                log('rep %d/%d %-6s %-4s %-5s %s %s %s' % (
                    rep, args.reps, name, t, c, row['outcome'],
                    ('%s GB/s' % fnum(row['gbps'])) if row['gbps'] else '',
                    ('cpu s/GB send %s recv %s' % (row['send_cpu_s_per_gb'],
                                                   row['recv_cpu_s_per_gb']))
                    if row['gbps'] else row['note']))
                rep_rows.append(row)
            plain = [r for r in rep_rows if r['binary'] == 'plain' and r['outcome'] == 'ok']
            for r in rep_rows:
                if plain and r['outcome'] == 'ok':
                    r['ratio_plain'] = '%.4f' % (float(r['gbps']) / float(plain[0]['gbps']))
            rows += rep_rows
            with open(csv_path, 'w', newline='') as f:
                w = csv.DictWriter(f, fieldnames=COLUMNS)
                w.writeheader()
                w.writerows(rows)
    finally:
        kill_children()
        shutil.rmtree(wd, ignore_errors=True)
        if AFP:
            AFP.down()
        if XDP:
            XDP.down()

    cmd = 'scripts/bench/throughput.py ' + ' '.join(
        a if not a.startswith(ROOT + '/') else os.path.relpath(a, ROOT) for a in sys.argv[1:])
    header = [
        '# ferry throughput on loopback',
        '',
        'Command: `%s` (started %s, order seed %d, %d repetitions, %d cores; host idle over '
        'the second before each run: %s).' % (
            cmd, started, seed, args.reps, os.cpu_count(), idle_range(rows)),
        '',
        'Stream: `%s`, %d bytes (%.1f MiB; first pass %s bytes, the rest re-sent re-dirtied '
        'pages), a live pre-copy migration of a %d KiB guest (workload %s; dirty-sync-count '
        '%s), captured with `migrate "exec:cat > FILE"`; a QEMU loading it holds the '
        'source\'s RAM.' % (
            os.path.basename(stream), size, size / 2**20, meta.get('first_pass_bytes'),
            meta.get('ram_kib', 0), json.dumps(meta.get('workload')),
            meta.get('dirty_sync_count')),
        '',
        'Binaries: ' + '; '.join('%s = `%s` (%s, sha256 %s…)' % (
            b.name, b.path, b.version, sha256_file(b.path)[:12]) for b in binaries) + '.',
        '',
        'GB = 1e9 bytes; GB/s = stream bytes / wall time (sender start until every process '
        'exited); × plain copy = over the plain copy of the same repetition; GB/s after the '
        'link was up = stream bytes / (wall time - the sender\'s link_setup_s from its '
        '--stats-json: EAL set-up, ARP, handshake); median (min–max).',
        '']
    if verified:
        header += ['Correctness (untimed run per binary × transport × codec):', '']
        header += ['- %s %s %s: %s — %s' % (n, t, c, 'ok' if ok else 'FAILED', why)
                   for n, t, c, ok, why in verified]
        header += ['']
    text = summarise(rows, header)
    with open(os.path.join(args.out, 'summary.md'), 'w') as f:
        f.write(text)
    print(text)
    return 0 if all(v[3] for v in verified) and all(
        r['outcome'] in ('ok', 'n/a') for r in rows) else 1


if __name__ == '__main__':
    sys.exit(main())
