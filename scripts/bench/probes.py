"""Measurement probes for one benchmark run: guest heartbeats with host timestamps, CPU seconds
of processes (split into vCPU and other threads), and throughput over a time window.

Python 3 standard library only."""

import os
import re
import threading
import time

CLK_TCK = os.sysconf('SC_CLK_TCK')

# The synthetic workload prints `FERRY-HB <seq> <pages_written_total>`; the app guest prints
# `FERRY-HB <seq> <ops_total>` (scripts/guest/apps-init). Both counters live in guest memory, so
# the destination continues the source's count after a migration.
_HB_RE = re.compile(rb'FERRY-HB (\d+) (\d+)\r?\n')


class HeartbeatMonitor:
    """Tails a guest's serial log on a thread and stamps each heartbeat with the host's
    monotonic clock at the poll that saw it (poll period 50 ms, so a stamp is at most ~50 ms
    late plus the guest's console latency)."""

    def __init__(self, path, period=0.05):
        self.path = path
        self.period = period
        self.points = []  # [(t_monotonic, seq, counter)]
        self._off = 0
        self._partial = b''
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _poll(self):
        try:
            with open(self.path, 'rb') as f:
                f.seek(self._off)
                data = f.read()
        except OSError:
            return
        if not data:
            return
        now = time.monotonic()
        self._off += len(data)
        buf = self._partial + data
        end = buf.rfind(b'\n') + 1
        self._partial = buf[end:]
        pts = [(now, int(a), int(b)) for a, b in _HB_RE.findall(buf[:end])]
        if pts:
            with self._lock:
                self.points.extend(pts)

    def _loop(self):
        while not self._stop.is_set():
            self._poll()
            self._stop.wait(self.period)

    def snapshot(self):
        with self._lock:
            return list(self.points)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self._poll()


def counter_at(points, t):
    """The guest counter at host time t: the last heartbeat at or before t (None if none)."""
    last = None
    for (pt, _, c) in points:
        if pt > t:
            break
        last = c
    return last


def rate_between(points, t0, t1):
    """Counter increase per second over [t0, t1], from heartbeats (sorted by time). The counter
    at an instant is the last heartbeat at or before it, so a paused guest adds nothing.
    Returns None when the window holds no heartbeat before t0 or is empty."""
    if t1 <= t0:
        return None
    c0 = counter_at(points, t0)
    c1 = counter_at(points, t1)
    if c0 is None or c1 is None:
        return None
    return max(c1 - c0, 0) / (t1 - t0)


def merge_points(*lists):
    """Heartbeats of several guests (source, then destination) on one time line."""
    out = [p for lst in lists for p in lst]
    out.sort(key=lambda p: p[0])
    # The counter is carried across the migration; keep it monotonic in case a destination
    # heartbeat is stamped before the source's last one was read.
    best = None
    mono = []
    for (t, s, c) in out:
        best = c if best is None else max(best, c)
        mono.append((t, s, best))
    return mono


# --------------------------------------------------------------------------------------------

def _stat_ticks(path):
    """utime + stime (clock ticks) from a /proc/.../stat file, or None."""
    try:
        with open(path) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rfind(')') + 2:].split()
    # rest[0] is field 3 (state): utime is field 14, stime field 15.
    return int(rest[11]) + int(rest[12])


def _comm(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ''


class CpuSample:
    """CPU seconds of one process at one instant: total (all threads, including threads that
    already exited) and the part spent in vCPU threads (QEMU names them 'CPU n/TCG' when
    started with -name ...,debug-threads=on)."""

    def __init__(self, pid):
        self.pid = pid
        self.t = time.monotonic()
        total = _stat_ticks('/proc/%d/stat' % pid) if pid else None
        self.alive = total is not None
        self.total = (total or 0) / CLK_TCK
        vcpu = 0
        if self.alive:
            try:
                tids = os.listdir('/proc/%d/task' % pid)
            except OSError:
                tids = []
            for tid in tids:
                if _comm('/proc/%d/task/%s/comm' % (pid, tid)).startswith('CPU '):
                    vcpu += _stat_ticks('/proc/%d/task/%s/stat' % (pid, tid)) or 0
        self.vcpu = vcpu / CLK_TCK


class CpuTracker:
    """Samples a process regularly so that its CPU time is known even if it exits before the
    end of the run (ferry processes exit when the migration ends)."""

    def __init__(self, pid, period=0.2):
        self.pid = pid
        self.first = CpuSample(pid)
        self.last = self.first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(period,), daemon=True)
        self._thread.start()

    def _loop(self, period):
        while not self._stop.wait(period):
            s = CpuSample(self.pid)
            if not s.alive:
                break
            self.last = s

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        s = CpuSample(self.pid)
        if s.alive:
            self.last = s
        return round(self.last.total - self.first.total, 2)


class LinkSampler:
    """Bytes through a network interface every `period` s on a thread, read from
    /proc/PID/net/dev of a process inside the interface's namespace (no process spawned per
    sample). Both directions of the veth: its tx and rx are the two ends' tx."""

    def __init__(self, pid, dev, period=0.5):
        self.path = '/proc/%d/net/dev' % pid
        self.dev = dev
        self.points = []  # [(t_monotonic, bytes both ways)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(period,), daemon=True)
        self._sample()
        self._thread.start()

    def _sample(self):
        try:
            with open(self.path) as f:
                for line in f:
                    name, _, rest = line.partition(':')
                    if name.strip() == self.dev:
                        v = rest.split()
                        self.points.append((time.monotonic(), int(v[0]) + int(v[8])))
                        return
        except OSError:
            pass  # the process exited: the series ends there

    def _loop(self, period):
        while not self._stop.wait(period):
            self._sample()

    def stop(self):
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=2)
            self._sample()

    def series(self, t0, heartbeats):
        """{'t_s', 'link_mbit_s', 'guest_rate'}: per sample interval, seconds after t0 (its
        end), the link's rate (Mbit/s, both directions) and the guest's counter rate (per s,
        from heartbeats [(t, seq, counter)] on one time line: None where no tick came)."""
        out = {'t_s': [], 'link_mbit_s': [], 'guest_rate': []}
        for (a, ba), (b, bb) in zip(self.points, self.points[1:]):
            if b - a <= 0:
                continue
            out['t_s'].append(round(b - t0, 2))
            out['link_mbit_s'].append(round((bb - ba) * 8 / 1e6 / (b - a), 2))
            r = rate_between(heartbeats, a, b)
            out['guest_rate'].append(None if r is None else round(r, 1))
        return out
