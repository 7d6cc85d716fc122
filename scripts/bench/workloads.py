"""The benchmark's workloads: what runs in the guest while it migrates.

Two guests share one kernel (scripts/guest/build.sh):
  synthetic  the small busybox guest with scripts/guest/workload.c; pages look like real memory
             (random, text, sparse, structured, each page different) and the dirty rate is set
  apps       a debootstrap-built Debian root (scripts/guest/build-apps.sh) running a real
             application under its own load generator; the application's throughput is the
             heartbeat counter, so the guest's slowdown during migration is measured

Guest RAM is never a multiple of 64 pages (QEMU 7.2 TCG dirty-bitmap bug): +8 KiB.
"""

import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
APPS_INITRD = os.path.join(ROOT, '.cache', 'guest-apps', 'initramfs.cpio.gz')


class Workload:
    def __init__(self, name, guest, ram_mib, params, unit, about):
        self.name = name
        self.guest = guest          # 'synthetic' | 'apps'
        self.ram_kib = ram_mib * 1024 + 8
        self.params = params        # kernel command line ferry.<k>=<v>
        self.unit = unit            # what the heartbeat counter counts
        self.about = about

    @property
    def initrd(self):
        return APPS_INITRD if self.guest == 'apps' else None


WORKLOADS = {w.name: w for w in [
    Workload('mix-calm', 'synthetic', 512, {'ws': '96M', 'pattern': 'mix', 'rate': 1000},
             'pages', '96 MiB of mixed pages (random, text, sparse, structured), 1000 pages/s '
             'dirtied at random: native pre-copy converges on 100 Mbit/s'),
    Workload('mix-busy', 'synthetic', 512, {'ws': '96M', 'pattern': 'mix', 'rate': 6000},
             'pages', 'the same set dirtied at 6000 pages/s (23 MiB/s, above a 100 Mbit/s link): '
             'native pre-copy does not converge below 1 Gbit/s'),
    Workload('text-hot', 'synthetic', 512,
             {'ws': '192M', 'pattern': 'text', 'rate': 20000, 'mode': 'hot'},
             'pages', '192 MiB of text-like pages, 20000 pages/s, 90 % of writes on the hottest '
             '10 % (a cache-like hot set)'),
    Workload('random-seq', 'synthetic', 512,
             {'ws': '128M', 'pattern': 'random', 'rate': 2500, 'mode': 'seq'},
             'pages', '128 MiB of random (incompressible) pages swept in order at 2500 pages/s: '
             'no codec helps, only skipping and timing do'),
    Workload('big-calm', 'synthetic', 4096, {'ws': '1536M', 'pattern': 'mix', 'rate': 3000},
             'pages', 'a 4 GiB guest with 1.5 GiB of mixed pages, 3000 pages/s (12 MiB/s) '
             'dirtied at random: a 1 Gbit/s migration takes tens of seconds'),
    Workload('big-busy', 'synthetic', 4096, {'ws': '2048M', 'pattern': 'mix', 'rate': 25000},
             'pages', 'a 4 GiB guest with 2 GiB of mixed pages, 25000 pages/s (98 MiB/s) '
             'dirtied at random: near what 1 Gbit/s carries'),
    Workload('redis', 'apps', 768, {'app': 'redis'}, 'commands',
             'redis-server 7.0 (256 MiB maxmemory) under kvload: 3 of 4 commands SET JSON-like '
             'records of 0.2-1.8 KB on 300k keys, 1 of 4 GET; pipelined'),
    Workload('pgbench', 'apps', 768, {'app': 'pgbench'}, 'transactions',
             'PostgreSQL 15 (64 MiB shared buffers, data in RAM) under pgbench scale 4, '
             'TPC-B-like read-write, 2 clients'),
    Workload('compress', 'apps', 768, {'app': 'compress'}, 'KiB',
             'zstd -6 over the root filesystem\'s files, the last 256 outputs kept in RAM'),
]}
