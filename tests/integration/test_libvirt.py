#!/usr/bin/env python3
"""`virsh migrate --live --p2p` of a libvirt domain through ferry (issue 20).

    test_libvirt.py precopy|postcopy|parallel|policy_postcopy

Two private libvirtd (libvirt_rig.Daemon), the source in namespace a and the destination in
namespace b of a rig.Link, peers over qemu+tcp on the veth. The domain is the rig's TCG
guest with its workload; its console is a unix socket the test reads. The migration URI is
unix:///WD/mig/vm.sock: on the source that is ferry send's listening socket (`ferry send
--listen unix:WD/mig/vm.sock --vm vm`), on the destination (whose libvirtd mounts WD/mig-dst
over WD/mig) the destination QEMU's incoming socket, which ferry recv reaches as
WD/mig-dst/vm.sock. ferry send and ferry recv authenticate with a PSK across the veth.

precopy:  plain `ferry recv --qemu unix:WD/mig-dst/vm.sock`; `virsh migrate --live --p2p`
          completes.
postcopy: `ferry recv --serve --qemu-dir WD/mig-dst`; `virsh migrate --live --p2p
          --postcopy --bandwidth 8` (a pre-copy that cannot finish soon), then
          `virsh migrate-postcopy` once it runs; it completes in post-copy.
parallel: as precopy with `--parallel --parallel-connections 2` (multifd: the source QEMU
          opens three connections to ferry send's socket, the destination QEMU accepts
          three on its own).
Each: the domain runs on the destination and is gone from the source, its heartbeats
advance on the destination console, the workload's self-check of its working set passes
there, and ferry send and ferry recv report the migration completed.
policy_postcopy: `ferry migrate --libvirt vm --dest-uri ... --allow-postcopy` over a
          100 Mbit/s link, the guest dirtying 49 MB/s of a 128 MiB working set: pre-copy
          cannot finish, the policy switches to post-copy through libvirt (one start-postcopy
          decision with its numbers) and the migration completes; progress comes from
          libvirt's job statistics; the lifecycle events show the post-copy; as above on the
          destination.
"""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402
import libvirt_rig  # noqa: E402
from test_proxy import Ferries, check, read_text  # noqa: E402

VM = 'vm'
UUID_SRC = '6f1f0a52-8d3c-4c56-9a31-000000000a01'
UUID_DST = '6f1f0a52-8d3c-4c56-9a31-000000000b02'
WORKLOAD = {'ws': '32M', 'pattern': 'mix', 'rate': 2000}


class Pair:
    """The two private libvirt daemons of one test, the migration directory on each side (the
    same path name inside the destination's mounts), and the domain booted on the source with
    its workload ticking: src, dst, mig, mig_dst, con_src, con_dst (the destination QEMU
    connects to its console when libvirt starts it), src_events, dst_events. On the way out
    it logs both daemons' and QEMUs' log tails if the test failed, and closes everything."""

    def __init__(self, wd, link, workload):
        self.mig, self.mig_dst = wd.path('mig'), wd.path('mig-dst')
        os.makedirs(self.mig)
        os.makedirs(self.mig_dst)
        self.src = libvirt_rig.Daemon(wd, 'src', link, 'a', UUID_SRC, wait=False)
        self.dst = libvirt_rig.Daemon(wd, 'dst', link, 'b', UUID_DST,
                                      overlays=[(self.mig_dst, self.mig)], wait=False)
        self.consoles = []
        try:
            self.src.wait_up()
            self.dst.wait_up()
            self.src_events = wd.path('src-events.txt')
            self.dst_events = wd.path('dst-events.txt')
            self.src.events(self.src_events)
            self.dst.events(self.dst_events)
            self.con_src = self._console('src', self.mig, wd)
            xml = wd.path(VM + '.xml')
            with open(xml, 'w') as f:
                f.write(libvirt_rig.domain_xml(VM, self.mig, workload))
            self.src.virsh('create', xml)
            self.con_src.wait_connected()
            self.con_src.wait_ready()
            self.con_src.wait_heartbeats(3)
            self.con_dst = self._console('dst', self.mig_dst, wd)
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise

    def _console(self, name, directory, wd):
        c = libvirt_rig.Console(name, os.path.join(directory, VM + '.console'), wd)
        self.consoles.append(c)
        return c

    def sock(self):
        """The migration socket's path (ferry send's on the source, the QEMU's on the
        destination, inside its mounts)."""
        return os.path.join(self.mig, VM + '.sock')

    def check_moved(self):
        """The domain runs on the destination, is gone from the (transient) source, its
        heartbeats advance there and its self-check passes. Returns (heartbeat, answer)."""
        check(self.dst.domstate(VM) == 'running (migrated)',
              'destination domain state %r' % self.dst.domstate(VM))
        check(VM not in self.src.domains(), 'the domain is still on the source: %s' %
              self.src.domains())
        self.con_dst.wait_connected(5)
        hb = self.con_dst.wait_heartbeats(5, timeout=30)
        ok, answer = self.con_dst.self_check()
        check(ok, 'the destination guest found bad memory: %s' % answer)
        return hb, answer

    def lifecycle_events(self):
        """libvirt's lifecycle events of both sides so far (source, destination)."""
        self.src.stop_events()
        self.dst.stop_events()
        return read_text(self.src_events), read_text(self.dst_events)

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        if et is not None:
            for d in (self.src, self.dst):
                rig.log('libvirtd %s log tail:\n%s' % (d.name, d.read_log()[-2000:]))
                rig.log('QEMU log on %s:\n%s' % (d.name, d.qemu_log(VM)[-1500:]))
        for c in self.consoles:
            c.close()
        self.consoles = []
        self.dst.close()
        self.src.close()


def migrate(mode):
    if mode == 'policy_postcopy':
        return policy_postcopy()
    serve = mode == 'postcopy'
    with rig.Workdir('libvirt') as wd, rig.Link() as link, Pair(wd, link, WORKLOAD) as lv:
        src, dst = lv.src, lv.dst
        fr = Ferries(wd, 'lv', link=link, security='psk', send_args=['--vm', VM])
        try:
            if serve:
                fr.start_recv(qemu_dir=lv.mig_dst)
            else:
                fr.start_recv(qemu_sock=os.path.join(lv.mig_dst, VM + '.sock'))
            fr.send_sock = lv.sock()
            fr.start_send()
            if mode == 'precopy':
                # A tunnelled migration carries QEMU's stream inside libvirt's own connection:
                # there is no socket for ferry, and libvirt refuses a migration URI with it.
                r = src.virsh('migrate', '--live', '--p2p', '--tunnelled', VM, dst.peer_uri,
                              '--migrateuri', 'unix://' + lv.sock(),
                              check=False)
                check(r.returncode != 0 and src.domstate(VM) == 'running (booted)',
                      '--tunnelled with --migrateuri: exit %d, %s, source domain %r' % (
                          r.returncode, r.stderr.strip(), src.domstate(VM)))
                print('--tunnelled --migrateuri refused: %s' % r.stderr.strip())
            argv = ['migrate', '--live', '--p2p', '--verbose', VM, dst.peer_uri,
                    '--migrateuri', 'unix://' + fr.send_sock]
            if mode == 'postcopy':
                argv += ['--postcopy', '--bandwidth', '8']
            if mode == 'parallel':
                argv += ['--parallel', '--parallel-connections', '2']
            virsh_out = wd.path('virsh-migrate.out')
            t0 = time.monotonic()
            with open(virsh_out, 'wb') as out:
                mp = src.virsh_popen(*argv, stdout=out, stderr=subprocess.STDOUT)
            switched = None
            if mode == 'postcopy':
                # Pre-copy runs (bytes moving at the capped rate), then the switch.
                libvirt_rig.wait_job(src, VM, lambda i: int(i.get('Memory processed', '0')
                                                            .split()[0].split('.')[0]) > 0
                                     if i.get('Job type') == 'Unbounded' else False,
                                     60, 'the pre-copy under way')
                src.virsh('migrate-postcopy', VM)
                switched = time.monotonic()
                rig.log('post-copy started %.1f s into the migration' % (switched - t0))
            rc = mp.wait(timeout=rig.scaled(180))
            took = time.monotonic() - t0
            check(rc == 0, 'virsh migrate exited %d: %s\nsource libvirtd: %s\ndestination '
                  'libvirtd: %s\nferry send: %s\nferry recv: %s' % (
                      rc, read_text(virsh_out), src.read_log()[-1500:],
                      dst.read_log()[-1500:], read_text(fr.send_err)[-1500:],
                      read_text(fr.recv_err)[-1500:]))
            rig.log('virsh migrate completed in %.1f s' % took)

            hb, answer = lv.check_moved()

            # ferry carried it: both ends say completed, with the working set at least.
            check(fr.wait_exit('send') == 0, 'ferry send failed: %s' % read_text(fr.send_err))
            send = json.loads(read_text(fr.send_json))
            check(send['outcome'] == 'completed' and send['bytes_from_qemu'] > 32 << 20,
                  'ferry send stats: %s' % send)
            if mode == 'parallel':
                check(send['channels'] == 3, 'ferry send carried %d channels, not the main '
                      'one and 2 multifd' % send['channels'])
            if serve:
                srv_log = read_text(fr.recv_err)
                check('completed' in srv_log, 'ferry recv --serve logged no completed '
                      'session: %s' % srv_log)
            else:
                check(fr.wait_exit('recv') == 0, 'ferry recv failed: %s' %
                      read_text(fr.recv_err))
            job = dst.jobinfo(VM, completed=True)
            # libvirt's lifecycle events: the source suspended and the destination resumed
            # in post-copy (or, pre-copy, the destination resumed a migrated domain).
            evs, evd = lv.lifecycle_events()
            if mode == 'postcopy':
                check('Suspended Post-copy' in evs and 'Resumed Post-copy' in evd,
                      'no post-copy in the lifecycle events: source %r, destination %r' %
                      (evs, evd))
            else:
                check('Resumed Migrated' in evd and 'Post-copy' not in evs + evd,
                      'lifecycle events: source %r, destination %r' % (evs, evd))
            rig.log('lifecycle events: source %r, destination %r' % (evs, evd))
            print('%s: virsh migrate --live --p2p%s through ferry completed in %.1f s%s; '
                  'destination heartbeats advance (last %s), self-check: %s' % (
                      mode, {'postcopy': ' --postcopy', 'parallel': ' --parallel'}.get(mode, ''),
                      took, ' (post-copy from %.1f s)' % (switched - t0) if switched else '',
                      hb, answer))
            print('ferry send: %s' % json.dumps({k: send[k] for k in sorted(send)
                                                 if not isinstance(send[k], (dict, list))}))
            print('link bytes a->b: %d; libvirt job (destination, completed): %s' % (
                link.tx_bytes('a'), json.dumps(job)))
        except BaseException:
            rig.log('ferry send: %s' % read_text(fr.send_err)[-1500:])
            rig.log('ferry recv: %s' % read_text(fr.recv_err)[-1500:])
            raise
        finally:
            fr.close()


def policy_postcopy():
    """ferry migrate --libvirt: a guest dirtying 49 MB/s over a 100 Mbit/s link, which pre-copy
    cannot finish; the policy switches to post-copy through libvirt and it completes."""
    workload = {'ws': '128M', 'pattern': 'random', 'rate': 12000}
    with rig.Workdir('libvirt') as wd, rig.Link('100mbit') as link, \
            Pair(wd, link, workload) as lv:
        src, dst = lv.src, lv.dst
        fr = Ferries(wd, 'lv', link=link, security='psk')
        out_path, err_path = wd.path('migrate.out'), wd.path('migrate.err')
        try:
            fr.start_recv(qemu_dir=lv.mig_dst)
            argv = [rig.find_ferry(), 'migrate', '--libvirt', VM, '--connect', src.uri,
                    '--dest-uri', dst.peer_uri, '--sock', lv.sock(),
                    '--peer', fr.peer, '--allow-postcopy', '--max-downtime', '500',
                    '--deadline', '300', '--json'] + fr.security_args
            t0 = time.monotonic()
            mp = link.spawn('a', argv, stdout=open(out_path, 'wb'), stderr=open(err_path, 'wb'))
            rig.wait_until(lambda: mp.poll() is not None, rig.scaled(300), 'ferry migrate')
            t1 = time.monotonic()
            took = t1 - t0
            lines = [json.loads(x) for x in read_text(out_path).splitlines() if x.strip()]
            reports = [x for x in lines if x.get('event') == 'report']
            check(len(reports) == 1, 'expected one report, stderr: %s' % read_text(err_path))
            rep = reports[0]
            print('report: %s' % {k: v for k, v in rep.items() if k != 'decisions'})
            for d in rep['decisions']:
                print('  [%6.1f s] %s: %s' % (d['t_s'], d['action'], d['reason']))
            check(mp.returncode == 0 and rep['outcome'] == 'completed',
                  'ferry migrate exit %d, outcome %s: %s' % (mp.returncode, rep['outcome'],
                                                             read_text(err_path)))
            pc = [d for d in rep['decisions'] if d['action'] == 'start-postcopy']
            check(len(pc) == 1 and any(ch.isdigit() for ch in pc[0]['reason']),
                  'expected one switch to post-copy, with its numbers: %s' % rep['decisions'])
            check('refused' not in pc[0]['reason'], 'libvirt refused post-copy: %s' % pc[0])
            progress = [x for x in lines if x.get('event') == 'progress']
            check(len(progress) >= 5 and any(x['pass'] >= 1 and x['remaining_bytes'] > 0
                                             for x in progress),
                  'no progress from libvirt\'s job statistics: %s' % progress[-3:])
            hb, answer = lv.check_moved()
            evs, evd = lv.lifecycle_events()
            check('Suspended Post-copy' in evs and 'Resumed Post-copy' in evd,
                  'no post-copy in the lifecycle events: source %r, destination %r' %
                  (evs, evd))
            # What the guest saw (libvirt reports no pause after post-copy): its heartbeats.
            pauses = rig.guest_pauses(lv.con_src, lv.con_dst, t0, t1)
            print('policy_postcopy: ferry migrate --libvirt completed in %.1f s, post-copy at '
                  '%.1f s; the guest\'s longest pause %.0f ms (heartbeats; %.0f ms before the '
                  'migration); destination heartbeats advance (last %s), self-check: %s' % (
                      took, pc[0]['t_s'], pauses['guest_max_pause_ms'],
                      pauses['guest_baseline_ms'], hb, answer))
        except BaseException:
            rig.log('ferry migrate: %s' % read_text(err_path)[-2000:])
            rig.log('ferry recv: %s' % read_text(fr.recv_err)[-1500:])
            raise
        finally:
            fr.close()


SCENARIOS = ('precopy', 'postcopy', 'parallel', 'policy_postcopy')


def main(argv):
    rig.require_qemu_and_guest()
    rig.require_root_netns()
    libvirt_rig.require_libvirt()
    which = argv[1] if len(argv) > 1 else 'precopy'
    if which not in SCENARIOS:
        print('unknown scenario %s; one of %s' % (which, ', '.join(SCENARIOS)))
        return 2
    t0 = time.monotonic()
    migrate(which)
    print('PASS %s (%.0f s)' % (which, time.monotonic() - t0))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
