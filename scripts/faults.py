#!/usr/bin/env python3
"""The fault matrix (issue 21, docs/RELIABILITY.md): faults x migration phases on real QEMU
guests, each cell checked against the outcome stated before it runs.

    sudo scripts/faults.py --out DIR                # every cell of the matrix (~9 min)
    sudo scripts/faults.py --cells link3@postcopy,dstkill@pass1 --out DIR
    scripts/faults.py --list                        # the cells and their expected outcomes

Every cell is a fresh migration of a 512 MiB guest dirtying 192 MiB at random (12000 pages/s:
pre-copy cannot finish, so ferry migrate's policy switches to post-copy after a few passes)
from namespace a to namespace b over a 100 Mbit/s tbf veth (tests/integration/rig.py), with
    ferry migrate --allow-postcopy --recover-uri unix:DIR/vm.sock --vm vm --link-timeout 4
(PSK credentials) into a `ferry recv --serve --qemu-dir DIR --link-timeout 4`.

Phases (when the fault strikes):
  setup     right after ferry migrate starts, before QEMU's first bytes cross (the link
            faults: just before it starts, so that its connect meets the outage)
  pass1     pre-copy's first pass, 24 MiB sent
  pass2     a later pre-copy pass (QEMU's dirty-sync-count >= 2). The workload above goes
            to post-copy within pass 1 (ferry migrate samples the dirty rate and predicts it
            early), so these cells run a guest dirtying 96 MiB at 1000 pages/s instead,
            which pre-copy finishes in a few passes
  postcopy  post-copy active, the destination running the guest
Faults:
  none      the control (post-copy only): what the guest's pauses are without a fault
  link3     the destination's veth down for 3 s (shorter than --link-timeout 4)
  link8     the destination's veth down for 8 s (past --link-timeout: both ferries declare
            the connection dead and ferry migrate reconnects once the link is back, within
            --resume-within; at setup, when no link is up yet, within ferry's 10 s connect
            timeout)
  abort     ferry's TCP connections aborted outright (ss -K on the source side: both ends
            get a reset, as from a middlebox); ferry reconnects at once
  recvkill  ferry recv --serve SIGKILLed and restarted at once (as systemd would)
  migkill   ferry migrate SIGKILLed (the source side of ferry runs inside it)
  srckill   the source QEMU SIGKILLed
  dstkill   the destination QEMU SIGKILLed
  garbage   512 random bytes inserted into ferry's TCP stream by a relay in the path
Outcomes:
  completed     the migration completed (no post-copy recovery: links that failed were
                resumed under QEMU, which never saw an error) and the guest's self-check of
                its working set passes on the destination
  recovered     post-copy paused, ferry migrate's recovery resumed it, then as completed
  failed-clean  the migration failed, the VM keeps running on the source (its heartbeats
                advance), ferry migrate exited 1 with a reason (unless it was the one
                killed) and ferry recv's session ended with a reason
  src-gone      the source QEMU (the VM) was killed in pre-copy: ferry migrate exited 1 with
                the reason, the destination never ran the VM
  paused        post-copy paused on both QEMUs and nothing left to recover it (ferry migrate
                was killed): an operator must recover it (QEMU's migrate-recover and migrate
                resume=true)
  lost          the VM is gone: a QEMU died in post-copy, when each side holds pages the
                other lacks (unavoidable); ferry migrate reports it
Each cell runs in a child process with a hard timeout (--cell-timeout); one progress line per
cell; --out DIR gets each cell's log and JSON, results.json and table.md. Exit 0 when every
cell observed its expected outcome, 1 otherwise, 77 when QEMU, the guest image or root is
missing.
"""
import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INTEG = os.path.join(HERE, '..', 'tests', 'integration')
sys.path.insert(0, INTEG)

RAM_KIB = 524296  # 512 MiB + 8 KiB (never a multiple of 64 pages)
WORKLOAD = {'ws': '192M', 'pattern': 'random', 'rate': 12000}
# ferry migrate's policy samples the dirty rate (calc-dirty-rate) and switches WORKLOAD to
# post-copy within pass 1, so a later pre-copy pass needs a workload that pre-copy can finish,
# in several passes: the pass2 cells run this one (test_migrate.py converging).
WORKLOAD_PASS2 = {'ws': '96M', 'pattern': 'mix', 'rate': 1000}
LINK_TIMEOUT = 4
# ferry's default --resume-within: how long ferry recv waits for a broken connection to be
# replaced. A killed ferry migrate looks to it like a cut link (the kernel resets the
# connection either way), so its session ends only after this.
RESUME_WITHIN = 60
DEADLINE = 200  # ferry migrate --deadline: a normal run completes in about 60 s
PASS1_BYTES = 24 << 20

PHASES = ['setup', 'pass1', 'pass2', 'postcopy']
FAULTS = ['none', 'link3', 'link8', 'abort', 'recvkill', 'migkill', 'srckill', 'dstkill',
          'garbage']

# (fault, phase) -> expected outcome. Cells left out are listed in OMITTED with the reason.
EXPECTED = {
    ('link3', 'setup'): 'completed',
    # No link yet: ferry's connect waits out a missing route within its 10 s timeout.
    ('link8', 'setup'): 'completed',
    ('migkill', 'setup'): 'failed-clean',
    ('dstkill', 'setup'): 'failed-clean',
    ('link3', 'pass1'): 'completed',
    ('link8', 'pass1'): 'completed',  # resumed (--resume-within)
    ('abort', 'pass1'): 'completed',
    ('recvkill', 'pass1'): 'failed-clean',
    ('migkill', 'pass1'): 'failed-clean',
    ('srckill', 'pass1'): 'src-gone',
    ('dstkill', 'pass1'): 'failed-clean',
    ('garbage', 'pass1'): 'failed-clean',
    ('link3', 'pass2'): 'completed',
    ('link8', 'pass2'): 'completed',
    ('abort', 'pass2'): 'completed',
    ('dstkill', 'pass2'): 'failed-clean',
    ('garbage', 'pass2'): 'failed-clean',
    ('none', 'postcopy'): 'completed',  # the control: the guest's pauses without a fault
    ('link3', 'postcopy'): 'completed',
    ('link8', 'postcopy'): 'completed',
    ('abort', 'postcopy'): 'completed',
    ('recvkill', 'postcopy'): 'recovered',
    ('migkill', 'postcopy'): 'paused',
    ('srckill', 'postcopy'): 'lost',
    ('dstkill', 'postcopy'): 'lost',
    ('garbage', 'postcopy'): 'recovered',
}
OMITTED = {
    ('abort', 'setup'): 'no connection to abort yet (link3@setup and link8@setup cover a '
                        'link that fails while ferry connects)',
    ('recvkill', 'setup'): 'a race, not a property: ferry recv restarted before ferry migrate '
                           'connects is invisible, and killed while it connects is a refused '
                           'connection (proxy_recv_unreachable: fails cleanly)',
    ('srckill', 'setup'): 'the same as in pass 1: the VM dies with its QEMU before anything '
                          'depends on the link',
    ('garbage', 'setup'): 'garbage in the handshake is security_attacks / '
                          'proxy_garbage_handshake; before the first frame there is no stream',
    ('recvkill', 'pass2'): 'a process killed in pre-copy ends the same way whatever the pass: '
                           'pass 1 shows it',
    ('migkill', 'pass2'): 'as recvkill@pass2',
    ('srckill', 'pass2'): 'as recvkill@pass2',
    'switchover': 'not reachable on purpose: with this workload pre-copy never converges, and '
                  'the switch to post-copy takes QEMU well under 100 ms, shorter than a fault '
                  'can be aimed at from outside (the post-copy cells strike right after it)',
}
# Run in CI (tests/integration/meson.build); no other test covers them.
CI_CELLS = ['link3@postcopy', 'link8@postcopy', 'link8@pass1', 'dstkill@pass1', 'link3@setup']


def cell_names():
    return ['%s@%s' % (f, p) for p in PHASES for f in FAULTS if (f, p) in EXPECTED]


def parse_cell(name):
    f, _, p = name.partition('@')
    if (f, p) not in EXPECTED:
        raise SystemExit('unknown cell %r (scripts/faults.py --list)' % name)
    return f, p


# ------------------------------------------------------------------------------------------
# The garbage relay: runs inside namespace b between ferry migrate and ferry recv; SIGUSR1
# arms it, and the next chunk from the sender on any connection gets 512 random bytes before
# it.

def relay_main(listen, target):
    lh, lp = listen.rsplit(':', 1)
    th, tp = target.rsplit(':', 1)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((lh, int(lp)))
    srv.listen(16)
    armed = threading.Event()
    once = threading.Lock()
    fired = []
    signal.signal(signal.SIGUSR1, lambda *_: armed.set())

    def pump(index, src, dst, forward):
        seen = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if forward and armed.is_set() and not fired:
                    with once:
                        if not fired:
                            fired.append(index)
                            data = os.urandom(512) + data
                            print('injected 512 random bytes into connection %d at byte %d' %
                                  (index, seen), file=sys.stderr, flush=True)
                seen += len(data)
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    print('listening', flush=True)
    n = 0
    while True:
        a, _ = srv.accept()
        try:
            b = socket.create_connection((th, int(tp)), timeout=10)
            b.settimeout(None)
        except OSError:
            a.close()
            continue
        for args in ((n, a, b, True), (n, b, a, False)):
            threading.Thread(target=pump, args=args, daemon=True).start()
        n += 1


def _json_or_none(line):
    try:
        return json.loads(line)
    except ValueError:
        return None


# ------------------------------------------------------------------------------------------
# One cell, in its own process (the parent enforces the hard timeout).

def run_cell(name, out_dir):
    import rig
    from test_proxy import Ferries, free_port, read_text

    fault, phase = parse_cell(name)
    expected = EXPECTED[(fault, phase)]
    res = {'cell': name, 'fault': fault, 'phase': phase, 'expected': expected,
           'observed': None, 'notes': [], 'detect_s': None, 'guest_max_pause_ms': None}
    notes = res['notes']
    print('cell %s: expected %s' % (name, expected), flush=True)
    t_start = time.monotonic()
    rig.require_root_netns()

    def qmp2(wd, n):
        return ['-qmp', 'unix:%s,server=on,wait=off' % wd.path(n + '-m.qmp')]

    workload = WORKLOAD_PASS2 if phase == 'pass2' else WORKLOAD
    wd = rig.Workdir('faults')
    os.makedirs(wd.path('q'))
    incoming = wd.path('q', 'vm.sock')
    with wd, rig.Link('100mbit') as lk, \
            rig.Guest('src', ram_kib=RAM_KIB, workload=workload, workdir=wd,
                      netns=lk.ns_a, extra_args=qmp2(wd, 'src')) as src, \
            rig.Guest.destination(src, 'dst', 'unix:' + incoming,
                                  netns=lk.ns_b, extra_args=qmp2(wd, 'dst')) as dst:
        res['workload'] = workload
        fr = Ferries(wd, link=lk, recv_args=['--link-timeout', str(LINK_TIMEOUT)])
        mig = relay = None
        try:
            src.wait_ready()
            src.wait_heartbeats(3)
            fr.start_recv(qemu_dir=wd.path('q'))
            peer = fr.peer
            if fault == 'garbage':
                rport = free_port()
                relay = lk.spawn('b', [sys.executable, os.path.abspath(__file__), '--relay',
                                       '%s:%d' % (lk.addr_b, rport),
                                       '%s:%d' % (lk.addr_b, fr.port)],
                                 stdout=subprocess.PIPE, stderr=open(wd.path('relay.err'), 'wb'))
                line = relay.stdout.readline()
                if b'listening' not in line:
                    raise rig.RigError('the relay did not start: %r %s' %
                                       (line, read_text(wd.path('relay.err'))))
                peer = 'tcp:%s:%d' % (lk.addr_b, rport)
            argv = [rig.find_ferry(), 'migrate', '--src-qmp', 'unix:' + wd.path('src-m.qmp'),
                    '--dst-qmp', 'unix:' + wd.path('dst-m.qmp'), '--peer', peer,
                    '--max-downtime', '500', '--deadline', str(DEADLINE),
                    '--sock', wd.path('mig.sock'), '--json', '--allow-postcopy',
                    '--recover-uri', 'unix:' + incoming, '--vm', 'vm',
                    '--link-timeout', str(LINK_TIMEOUT)] + fr.security_args
            out_path, err_path = wd.path('migrate.out'), wd.path('migrate.err')
            lines_before = len(read_text(fr.recv_err).splitlines())
            outage = None

            def link_up_after(seconds):
                time.sleep(seconds)  # the fault's length, not a wait for an event
                lk.run('b', ['ip', 'link', 'set', lk.veth_b, 'up'], check=True, timeout=10)

            def start_outage():
                lk.run('b', ['ip', 'link', 'set', lk.veth_b, 'down'], check=True, timeout=10)
                # Up again from a thread: the watch below times the detection meanwhile.
                t = threading.Thread(target=link_up_after, args=(3 if fault == 'link3' else 8,))
                t.start()
                return t
            t_fault = None
            if phase == 'setup' and fault in ('link3', 'link8'):
                # Down before ferry migrate starts, so that its connect always meets the
                # outage (down just after, the connect may or may not have been quicker).
                t_fault = time.monotonic()
                outage = start_outage()
            t_mig = time.monotonic()
            mig = lk.spawn('a', argv, stdout=open(out_path, 'wb'), stderr=open(err_path, 'wb'))
            state = {'dst_conted': False, 'postcopy_seen': False}

            def src_mig():
                try:
                    return src.query_migrate() if src.alive() else {}
                except (OSError, rig.RigError):
                    return {}

            def tend_dst(info):
                # Post-copy: the destination (-S) has the devices; let the guest run there.
                if info.get('status') == 'postcopy-active':
                    state['postcopy_seen'] = True
                    if not state['dst_conted'] and dst.alive():
                        try:
                            if dst.status() == 'paused':
                                dst.cont()
                                state['dst_conted'] = True
                        except (OSError, rig.RigError):
                            pass

            # 1. Reach the phase.
            def reached():
                if mig.poll() is not None:
                    raise rig.RigError('ferry migrate exited %d before phase %s: %s' %
                                       (mig.returncode, phase, read_text(err_path)[-500:]))
                info = src_mig()
                tend_dst(info)
                st = info.get('status')
                if phase == 'pass1' and st == 'active':
                    return info.get('ram', {}).get('transferred', 0) > PASS1_BYTES and info
                if phase == 'pass2' and st == 'active':
                    return info.get('ram', {}).get('dirty-sync-count', 0) >= 2 and info
                if phase in ('pass1', 'pass2') and st and st.startswith('postcopy'):
                    raise rig.RigError('phase %s missed: already in %s' % (phase, st))
                if phase == 'postcopy' and st == 'postcopy-active':
                    return state['dst_conted'] and info
                return False
            if phase == 'setup':
                at = {}
            else:
                at = rig.wait_until(reached, rig.scaled(200), 'phase %s' % phase, interval=0.1)

            # 2. The fault.
            recv_lines_before = lines_before if outage else \
                len(read_text(fr.recv_err).splitlines())
            if outage is None:
                t_fault = time.monotonic()
            if fault in ('link3', 'link8'):
                if outage is None:
                    outage = start_outage()
            elif fault == 'recvkill':
                fr.recv_p.kill()
                fr.recv_p.wait()
                fr.start_recv(qemu_dir=wd.path('q'))
            elif fault == 'migkill':
                mig.kill()
            elif fault == 'srckill':
                src.proc.kill()
            elif fault == 'dstkill':
                dst.proc.kill()
            elif fault == 'garbage':
                relay.send_signal(signal.SIGUSR1)
            elif fault == 'abort':
                r = lk.run('a', ['ss', '-K', 'dst', lk.addr_b, 'dport', '=', ':%d' % fr.port],
                           capture_output=True, text=True, timeout=10)
                if r.returncode != 0 or str(fr.port) not in r.stdout:
                    raise rig.RigError('ss -K found no ferry connection: %r %r' %
                                       (r.stdout, r.stderr))
            after = src_mig() if phase == 'setup' and src.alive() else at
            res['at_fault'] = {'status': after.get('status', 'setup' if phase == 'setup' else
                                                    None),
                               'transferred_mib': round(after.get('ram', {}).get(
                                   'transferred', 0) / 1048576, 1),
                               'dirty_sync_count': after.get('ram', {}).get('dirty-sync-count'),
                               's_after_migrate_start': round(t_fault - t_mig, 2)}
            print('fault %s at %s' % (fault, res['at_fault']), flush=True)

            # 3. Watch until the cell resolves.
            t_detect = None
            sigterms = []

            def recv_ended():
                new = read_text(fr.recv_err).splitlines()[recv_lines_before:]
                return [x for x in new if ': failed' in x or 'VM vm' in x and 'completed' in x]

            def decisions():
                out = []
                for x in read_text(out_path).splitlines():
                    try:
                        j = json.loads(x)
                    except ValueError:
                        continue
                    if j.get('event') == 'decision':
                        out.append(j)
                return out

            def resolved():
                nonlocal t_detect
                now = time.monotonic()
                info = src_mig()
                tend_dst(info)
                st = info.get('status')
                rc = mig.poll()
                detected = (st in ('failed', 'cancelled', 'postcopy-paused') or
                            (rc is not None and rc != 0 and fault != 'migkill') or
                            (not src.alive() and rc is not None) or
                            any(d['action'] == 'recover' for d in decisions()) or
                            bool([x for x in recv_ended() if ': failed' in x]))
                if detected and t_detect is None:
                    t_detect = now
                if rc is not None:
                    return True
                if fault == 'migkill' and st in ('failed', 'cancelled', 'postcopy-paused'):
                    return True
                if fault == 'dstkill' and st == 'postcopy-paused':
                    # The VM cannot run anywhere: ferry migrate retries recovery into a dead
                    # QEMU until --deadline; stop it as an operator would (a second signal
                    # forces it in post-copy).
                    if any(d['action'] == 'recover' for d in decisions()):
                        if len(sigterms) < 2 and (not sigterms or now - sigterms[-1] > 1.0):
                            mig.send_signal(signal.SIGTERM)
                            sigterms.append(now)
                return False
            rig.wait_until(resolved, rig.scaled(DEADLINE + 30), 'the cell to resolve',
                           interval=0.1)
            t_resolved = time.monotonic()
            if outage:
                outage.join()
            holds = []
            res['detect_s'] = None if t_detect is None else round(t_detect - t_fault, 1)
            if sigterms:
                notes.append('ferry migrate stopped with two SIGTERMs (post-copy, the VM lost)')

            # 4. What happened.
            rep = None
            for x in read_text(out_path).splitlines():
                try:
                    j = json.loads(x)
                except ValueError:
                    continue
                if j.get('event') == 'report':
                    rep = j
            res['migrate_rc'] = mig.returncode
            errors = [j['message'] for j in map(_json_or_none, read_text(out_path).splitlines())
                      if j and j.get('event') == 'error']
            if errors:
                notes.append('ferry migrate: %s' % errors[-1])
            if rep:
                res['report'] = {k: v for k, v in rep.items() if k != 'decisions'}
                res['decisions'] = rep.get('decisions', [])
                notes.append('ferry migrate: %s%s' % (rep['outcome'], (': ' + rep['reason'])
                                                      if rep.get('reason') else ''))
                if rep.get('link_resumes'):
                    notes.append('links resumed: %d' % rep['link_resumes'])
            elif fault != 'migkill' and not errors:
                notes.append('ferry migrate left no report: %s' %
                             read_text(err_path).strip()[-300:])
            dst_ran = state['dst_conted']
            observed = 'other'
            if rep and rep['outcome'] == 'completed' and mig.returncode == 0:
                dst.wait_incoming_done()
                if dst.status() == 'paused' and dst_ran:
                    dst.cont()
                if dst.status() == 'paused' and not dst_ran:
                    # Pre-copy completed into the -S destination: its RAM can be compared. The
                    # comparison's time is not the guest's pause (holds).
                    diff = rig.compare_ram(src, dst)
                    notes.append('RAM %s over %d pages' % (
                        'identical' if diff.ok else 'DIFFERENT (%d)' % diff.differing,
                        diff.pages))
                    holds.append((t_resolved, time.monotonic()))
                    dst.cont()
                    dst.wait_heartbeats(3)
                    dst_ran = True
                    if not diff.ok:
                        raise rig.RigError('RAM differs: %r' % diff)
                ok, line = dst.self_check()
                notes.append('destination self-check: %s' % line)
                observed = ('recovered' if rep.get('postcopy_recoveries', 0) > 0
                            else 'completed') if ok else 'corrupted'
            elif src.alive() and src.status() == 'running' and \
                    src_mig().get('status') in ('failed', 'cancelled', None):
                src.wait_heartbeats(3)
                notes.append('the VM keeps running on the source (heartbeats advance), its '
                             'migration %s' % (src_mig().get('status') or 'never started'))
                why = (rep or {}).get('reason') or (errors[-1] if errors else '')
                ok_mig = fault == 'migkill' or (mig.returncode == 1 and why)
                started = 'VM vm' in '\n'.join(read_text(fr.recv_err).splitlines())
                if fault == 'recvkill':
                    ended = ['(killed and restarted)']
                elif not started:
                    ended = ['no session was started']
                else:
                    ended = rig.wait_until(lambda: recv_ended() or None,
                                           rig.scaled(30) + RESUME_WITHIN,
                                           "ferry recv's session to end", interval=0.2)
                notes.append('ferry recv: %s' % ended[-1].strip())
                observed = 'failed-clean' if ok_mig and ended else 'failed-unclear'
            elif not src.alive() and not state['postcopy_seen']:
                gone = mig.returncode == 1 and rep and rep.get('reason')
                ended = rig.wait_until(lambda: recv_ended() or None, rig.scaled(30),
                                       "ferry recv's session to end", interval=0.2)
                notes.append('ferry recv: %s' % ended[-1].strip())
                dst_state = dst.status() if dst.alive() else 'exited'
                notes.append('destination QEMU: %s' % dst_state)
                observed = 'src-gone' if gone and dst_state != 'running' else 'other'
            elif src.alive() and src_mig().get('status') == 'postcopy-paused' and \
                    dst.alive() and fault == 'migkill':
                def dst_state():
                    try:
                        return dst.qmp('query-migrate', timeout=5).get('status'), False
                    except (OSError, rig.RigError):
                        # Its main loop may wait for a missing page: QEMU's log says it paused.
                        paused = 'Migration paused' in dst.stderr_text()
                        return ('postcopy-paused' if paused else 'not answering QMP'), True
                # ferry recv holds the destination's stream open for --resume-within (a killed
                # sender looks like a cut link), then ends the session: QEMU pauses.
                dq, silent = rig.wait_until(
                    lambda: (lambda q: q if q[0] == 'postcopy-paused' else None)(dst_state()),
                    rig.scaled(30) + RESUME_WITHIN, 'the destination to pause')
                if silent:
                    notes.append('destination QMP not answering (its main loop waits for a '
                                 'page); its log: "Migration paused"')
                notes.append('source postcopy-paused, destination %s' % dq)
                observed = 'paused' if dq == 'postcopy-paused' else 'other'
            elif state['postcopy_seen'] and (not src.alive() or not dst.alive()):
                notes.append('source QEMU %s, destination QEMU %s' %
                             ('alive' if src.alive() else 'killed',
                              'alive' if dst.alive() else 'killed'))
                if dst.alive():
                    try:
                        dq = dst.qmp('query-migrate', timeout=5).get('status')
                    except (OSError, rig.RigError):
                        # Its main loop waits for a page that only the dead source had.
                        dq = 'not answering QMP'
                    notes.append('destination: %s' % dq)
                observed = 'lost' if mig.returncode == 1 else 'other'
            res['observed'] = observed
            ticks_dst = dst if dst_ran else None
            # After the checks above, which waited for heartbeats where the guest runs.
            p = rig.guest_pauses(src, ticks_dst, t_fault, t_resolved, baseline_s=2.0,
                                 holds=holds)
            res['guest'] = p
            res['guest_max_pause_ms'] = p['guest_max_pause_ms'] if p['guest_resumed'] else None
            if not p['guest_resumed']:
                notes.append('the guest never ran again after the fault')
            res['recv_log'] = read_text(fr.recv_err).splitlines()[-6:]
            res['src_stderr'] = src.stderr_text().splitlines()[-4:]
            res['dst_stderr'] = dst.stderr_text().splitlines()[-4:]
            res['migrate_err'] = read_text(err_path).splitlines()[-6:]
            if relay:
                res['relay_log'] = read_text(wd.path('relay.err')).splitlines()
        except Exception as e:  # noqa: BLE001 - any failure is the cell's error
            res['observed'] = res['observed'] or 'error'
            notes.append('error: %s' % e)
        finally:
            rig.reap(mig)
            rig.reap(relay)
            fr.close()
    res['pass'] = res['observed'] == expected
    res['duration_s'] = round(time.monotonic() - t_start, 1)
    with open(os.path.join(out_dir, name + '.json'), 'w') as f:
        json.dump(res, f, indent=1)
    print('cell %s: expected %s, observed %s: %s' % (name, expected, res['observed'],
                                                      'PASS' if res['pass'] else 'FAIL'))
    for n in notes:
        print('  ' + n)
    return 0 if res['pass'] else 1


# ------------------------------------------------------------------------------------------
# The matrix: each cell in a child process with a hard timeout.

def fmt_pause(ms):
    return '-' if ms is None else ('%.2f s' % (ms / 1000.0))


def table(results):
    rows = ['| Cell | Expected | Observed | Check | Detected after | Longest guest pause | '
            'What happened |', '|---|---|---|---|---|---|---|']
    for r in results:
        rows.append('| %s | %s | %s | %s | %s | %s | %s |' % (
            r['cell'], r['expected'], r['observed'], 'pass' if r.get('pass') else 'FAIL',
            '-' if r.get('detect_s') is None else '%.1f s' % r['detect_s'],
            fmt_pause(r.get('guest_max_pause_ms')),
            '; '.join(r.get('notes', [])).replace('|', '/')[:400]))
    return '\n'.join(rows) + '\n'


def run_matrix(cells, out_dir, cell_timeout):
    results = []
    t0 = time.monotonic()
    for i, name in enumerate(cells):
        print('[%2d/%d] %-18s expect %-13s' % (i + 1, len(cells), name,
                                               EXPECTED[parse_cell(name)]), end='', flush=True)
        log = open(os.path.join(out_dir, name + '.log'), 'wb')
        t = time.monotonic()
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--one', name, '--out',
                              out_dir], stdout=log, stderr=subprocess.STDOUT)
        try:
            p.wait(timeout=cell_timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if p.poll() is None:  # the hard timeout, or this runner stopped
                p.send_signal(signal.SIGTERM)  # the rig tears down its QEMUs and namespaces
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        log.close()
        path = os.path.join(out_dir, name + '.json')
        fault, phase = parse_cell(name)
        if os.path.exists(path) and p.returncode in (0, 1):
            with open(path) as f:
                r = json.load(f)
        else:
            r = {'cell': name, 'fault': fault, 'phase': phase, 'expected': EXPECTED[(fault,
                                                                                     phase)],
                 'observed': 'timeout' if p.returncode in (-9, -15, 143) else
                 'error (exit %s)' % p.returncode, 'pass': False,
                 'notes': ['hard timeout of %d s' % cell_timeout if p.returncode in
                           (-9, -15, 143) else 'see %s.log' % name]}
            if p.returncode == 77:
                r['observed'], r['skipped'] = 'skipped', True
        results.append(r)
        print(' observed %-13s %s  detect %-6s pause %-8s (%3.0f s)' % (
            r['observed'], 'PASS' if r.get('pass') else 'FAIL',
            '-' if r.get('detect_s') is None else '%.1fs' % r['detect_s'],
            fmt_pause(r.get('guest_max_pause_ms')), time.monotonic() - t), flush=True)
    total = time.monotonic() - t0
    with open(os.path.join(out_dir, 'results.json'), 'w') as f:
        json.dump({'command': ' '.join(sys.argv), 'total_s': round(total, 1),
                   'cells': results}, f, indent=1)
    with open(os.path.join(out_dir, 'table.md'), 'w') as f:
        f.write(table(results))
    print('%d cells, %d passed, %.0f s; results in %s' % (
        len(results), sum(1 for r in results if r.get('pass')), total, out_dir))
    if results and all(r.get('skipped') for r in results):
        return 77
    return 0 if all(r.get('pass') for r in results) else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--cells', help='comma-separated cells FAULT@PHASE (default: all; '
                    '"ci" for the CI subset: %s)' % ','.join(CI_CELLS))
    ap.add_argument('--out', help='directory for the raw results (default: a temporary one, '
                    'removed when every cell passed)')
    ap.add_argument('--cell-timeout', type=int, default=300, help='seconds per cell (300)')
    ap.add_argument('--list', action='store_true', help='print the cells and what each expects')
    ap.add_argument('--one', help=argparse.SUPPRESS)
    ap.add_argument('--relay', nargs=2, metavar=('LISTEN', 'TARGET'), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.relay:
        relay_main(*a.relay)
        return 0
    if a.list:
        for n in cell_names():
            print('%-18s %s' % (n, EXPECTED[parse_cell(n)]))
        for k, why in OMITTED.items():
            print('omitted %-12s %s' % (k if isinstance(k, str) else '@'.join(k), why))
        return 0
    import rig
    rig.require_qemu_and_guest()
    rig.require_root_netns()
    if rig.find_ferry() is None:
        print('ferry binary not found (build it, or set FERRY_BIN / FERRY_BUILD_DIR)')
        return 1
    out = a.out or tempfile.mkdtemp(prefix='ferry-faults-')
    os.makedirs(out, exist_ok=True)
    if a.one:
        return run_cell(a.one, out)
    cells = cell_names() if not a.cells else CI_CELLS if a.cells == 'ci' else \
        [c.strip() for c in a.cells.split(',') if c.strip()]
    for c in cells:
        parse_cell(c)
    rc = run_matrix(cells, out, a.cell_timeout)
    if not a.out and rc == 0:
        shutil.rmtree(out, ignore_errors=True)  # a temporary directory is kept on failure only
    return rc


if __name__ == '__main__':
    random.seed()
    sys.exit(main())
