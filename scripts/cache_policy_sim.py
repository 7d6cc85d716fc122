#!/usr/bin/env python3
"""Replacement policies for ferry's mirrored page cache, compared on QEMU-like passes (each
pass re-sends its pages in address order). Keys only, no page contents: a hit is a page that
could go as same/delta. Prints, per scenario and policy, the share of re-sent pages that hit,
per pass (%). The candidates of issue 18; aged-clock is what encoders/page_cache.cc does (its
unit test, tests/unit/encoders/page_cache_sweep_test.cc, measures the real one).

    python3 scripts/cache_policy_sim.py
"""
from collections import OrderedDict

C = 1024  # cache pages


class Lru:
    name = 'lru'

    def __init__(self):
        self.d = OrderedDict()

    def access(self, k):
        if k in self.d:
            self.d.move_to_end(k)
            return True
        if len(self.d) >= C:
            self.d.popitem(last=False)
        self.d[k] = 1
        return False


class Bip(Lru):
    """LRU, but a miss on a full cache is inserted at the LRU end, at MRU every 32nd time."""
    name = 'bip-1/32'

    def __init__(self):
        super().__init__()
        self.n = 0

    def access(self, k):
        if k in self.d:
            self.d.move_to_end(k)
            return True
        if len(self.d) >= C:
            self.d.popitem(last=False)
            self.n += 1
            self.d[k] = 1
            if self.n % 32 != 0:
                self.d.move_to_end(k, last=False)
            return False
        self.d[k] = 1
        return False


class Xbzrle:
    """QEMU's xbzrle cache: slot = page index mod cache size, replaced on collision."""
    name = 'xbzrle-dm'

    def __init__(self):
        self.slots = [None] * C

    def access(self, k):
        s = k % C
        if self.slots[s] == k:
            return True
        self.slots[s] = k
        return False


class ClockAdmit:
    """CLOCK with second-chance admission: a miss replaces the slot under the hand only if
    its reference bit is clear (clearing it otherwise and refusing the page)."""
    name = 'clock-2nd'

    def __init__(self):
        self.keys, self.ref, self.where, self.hand = [], [], {}, 0

    def access(self, k):
        s = self.where.get(k)
        if s is not None:
            self.ref[s] = True
            return True
        if len(self.keys) < C:
            self.where[k] = len(self.keys)
            self.keys.append(k)
            self.ref.append(False)
            return False
        s = self.hand
        self.hand = (self.hand + 1) % C
        if self.ref[s]:
            self.ref[s] = False
            return False
        del self.where[self.keys[s]]
        self.keys[s], self.where[k] = k, s
        return False


class AgedClock:
    """encoders/page_cache.cc's kAgedClock (without zero-page removal)."""
    name = 'aged-clock'

    def __init__(self):
        self.keys, self.last, self.where, self.ghost = [], [], {}, {}
        self.hand, self.now, self.r, self.v = 0, 0, C, 0

    def note(self, d):
        e = abs(d - self.r)
        self.v += int((e - self.v) / 4)
        self.r += int((d - self.r) / 8)

    def access(self, k):
        s = self.where.get(k)
        if s is not None:
            self.note(self.now - self.last[s])
            self.last[s] = self.now
            self.now += 1
            return True
        g = self.ghost.pop(k % (2 * C), None)
        if g is not None and g[0] == k:
            self.note(self.now - g[1])
        if len(self.keys) < C:
            self.where[k] = len(self.keys)
            self.keys.append(k)
            self.last.append(self.now)
            self.now += 1
            return False
        limit = self.r + max(self.r // 8, 4 * self.v)
        for _ in range(8):
            s = self.hand
            self.hand = (self.hand + 1) % C
            if self.now - self.last[s] > limit:
                old = self.keys[s]
                self.ghost[old % (2 * C)] = (old, self.last[s])
                del self.where[old]
                self.keys[s], self.where[k], self.last[s] = k, s, self.now
                self.now += 1
                return False
        self.ghost[k % (2 * C)] = (k, self.now)
        self.now += 1
        return False


def run(policy, passes):
    p, seen, out = policy(), set(), []
    for keys in passes:
        resent = hit = 0
        for k in keys:
            h = p.access(k)
            if k in seen:
                resent += 1
                hit += h
            seen.add(k)
        out.append(round(100 * hit / resent) if resent else 0)
    return out


def main():
    ws125, ws2 = C * 5 // 4, 2 * C
    scenarios = {
        'sweep 1.25x': [list(range(ws125))] * 10,
        'sweep 2x': [list(range(ws2))] * 10,
        'moved 0.75x': [list(range(768))] * 5 + [list(range(5000, 5768))] * 5,
        'moved 1.25x': [list(range(ws125))] * 5 + [list(range(5000, 5000 + ws125))] * 5,
        'small 0.9x': [list(range(C * 9 // 10))] * 6,
    }
    for name, passes in scenarios.items():
        print(name)
        for pol in (Lru, Bip, Xbzrle, ClockAdmit, AgedClock):
            print('  %-11s %s' % (pol.name, ' '.join('%3d' % v for v in run(pol, passes))))


if __name__ == '__main__':
    main()
