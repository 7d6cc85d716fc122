#!/usr/bin/env python3
"""The pause QEMU's migration setup gives the guest, by RAM size: the longest gap between the
guest's host-stamped ticks in the first 3 s after `migrate exec:cat > /dev/null` on a rig guest
(QEMU alone: no ferry, no network), against the longest gap of the 100 ticks before.

    scripts/bench/setup_pause.py        (root not needed; about 2 minutes)
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..',
                                'tests', 'integration'))
import rig  # noqa: E402
for ram_mib, ws in ((512, '96M'), (2048, '768M'), (4096, '1536M')):
    with rig.Workdir('setup') as wd:
        with rig.Guest('src', ram_kib=ram_mib * 1024 + 8, workdir=wd,
                       workload={'ws': ws, 'pattern': 'mix', 'rate': 3000}) as g:
            g.wait_ready(timeout=600)
            g.wait_heartbeats(50)
            t0 = time.monotonic()
            g.migrate('exec:cat > /dev/null')
            rig.wait_until(lambda: time.monotonic() > t0 + 3, 10, 'window', interval=0.2)
            t = [x[0] for x in g.ticks()]
            before = [b - a for a, b in zip(t, t[1:]) if b < t0]
            after = [(b - a, a - t0) for a, b in zip(t, t[1:]) if b > t0 and a < t0 + 3]
            m = max(after)
            print('RAM %5d MiB: longest gap after migrate %.0f ms (starting %.2f s after it); '
                  'before: %.0f ms' % (ram_mib, m[0] * 1000, m[1], max(before[-100:]) * 1000),
                  flush=True)
            g.qmp('migrate_cancel')
