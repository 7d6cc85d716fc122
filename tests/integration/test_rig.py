#!/usr/bin/env python3
"""Rig self-tests, proving the rig before any ferry test relies on it.

  test_rig.py precopy   native QEMU pre-copy of a live guest over a unix socket; guest RAM
                        compared page by page, destination heartbeats checked
  test_rig.py netns     the same over TCP between two network namespaces joined by a veth
                        shaped with tc tbf: link bytes measured, QEMU's throughput bounded
                        by the shaped rate
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402


def report(info):
    ram = info['ram']
    print('native precopy: total-time %d ms, downtime %d ms, dirty-syncs %d, normal %d, '
          'duplicate %d, transferred %d, mbps %.1f' %
          (info['total-time'], info['downtime'], ram['dirty-sync-count'], ram['normal'],
           ram['duplicate'], ram['transferred'], ram['mbps']))


def precopy():
    wl = {'ws': '64M', 'pattern': 'mix', 'rate': 20000}
    with rig.Workdir('rig') as wd, \
            rig.Guest('src', workload=wl, workdir=wd) as src, \
            rig.Guest.destination(src, 'dst', 'unix:' + wd.path('in.sock')) as dst:
        src.wait_ready()
        src.wait_heartbeats(3)
        src.migrate('unix:' + wd.path('in.sock'))
        info = src.wait_migration(timeout=120)
        report(info)
        dst.wait_incoming_done()
        src.wait_status('postmigrate')
        # The workload dirtied memory during the migration: more than one pass happened.
        if info['ram']['dirty-sync-count'] < 2:
            raise rig.RigError('expected a live migration with several dirty syncs: %r' %
                               info['ram'])
        diff = rig.check_ram_and_resume(src, dst)
        print('RAM identical over %d pages; destination heartbeats advance' % diff.pages)


def netns():
    rig.require_root_netns()
    rate_bit = 400e6
    wl = {'ws': '32M', 'pattern': 'mix', 'rate': 5000}
    with rig.Workdir('rignet') as wd, rig.Link('400mbit') as link, \
            rig.Guest('src', workload=wl, workdir=wd, netns=link.ns_a) as src, \
            rig.Guest.destination(src, 'dst', 'tcp:%s:4444' % link.addr_b,
                                  netns=link.ns_b) as dst:
        src.wait_ready()
        src.wait_heartbeats(2)
        tx0 = link.tx_bytes('a')
        t0 = time.monotonic()
        src.migrate('tcp:%s:4444' % link.addr_b)
        info = src.wait_migration(timeout=150)
        wall = time.monotonic() - t0
        # QEMU counts bytes written to its socket; the tail may still sit in socket buffers
        # and the tbf queue, so read the link once the destination has everything.
        dst.wait_incoming_done()
        tx = link.tx_bytes('a') - tx0
        report(info)
        ram = info['ram']
        print('link: %d bytes on %s in %.2f s wall; QEMU transferred %d' %
              (tx, link.veth_a, wall, ram['transferred']))
        if tx < ram['transferred']:
            raise rig.RigError('veth carried %d bytes, less than QEMU sent (%d)' %
                               (tx, ram['transferred']))
        # tbf must hold the rate: the stream cannot have gone faster than the link (+10 %
        # for the token bucket's burst and QEMU's own time measurement).
        if ram['mbps'] * 1e6 > rate_bit * 1.1:
            raise rig.RigError('QEMU measured %.1f Mbit/s over a %d Mbit/s link' %
                               (ram['mbps'], rate_bit / 1e6))
        src.wait_status('postmigrate')
        diff = rig.check_ram_and_resume(src, dst)
        print('RAM identical over %d pages; destination heartbeats advance' % diff.pages)


def main(argv):
    rig.require_qemu_and_guest()
    which = argv[1] if len(argv) > 1 else 'precopy'
    {'precopy': precopy, 'netns': netns}[which]()
    print('PASS %s' % which)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
