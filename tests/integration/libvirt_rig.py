"""Two real libvirt daemons on one machine, for migrations through ferry (issue 20).

Each Daemon is Debian's monolithic libvirtd, run as root but with everything private:
  - its own network namespace (one side of a rig.Link), so the peer-to-peer connection
    between the daemons (qemu+tcp://ADDR/system) crosses the veth;
  - its own mount and UTS namespaces (`unshare -m -u`), in which directories of the workdir
    are bind-mounted over /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and
    /var/log/libvirt (a privileged libvirtd has those paths built in), and over any `overlays`
    given: the destination mounts its own directory over the migration directory, so that
    the source's ferry send and the destination QEMU each have a socket at the same path, as
    on two hosts;
  - its own host_uuid and hostname (libvirt refuses to migrate a domain to its own host).
Its unix socket is reachable from the host as <dir>/run/libvirt-sock (the bind mount's
source), so virsh runs outside the namespaces: Daemon.virsh(...).

The QEMUs libvirtd starts run as root, unconfined, in no cgroup and no private /dev
(qemu.conf: user/group root, security_driver none, cgroup_controllers [], namespaces []),
and write their stdio to /var/log/libvirt/qemu/NAME.log directly (no virtlogd). The daemons
talk over plain TCP without authentication (auth_tcp none): acceptable only on the test's
private veth; production uses qemu+tls:// or qemu+ssh:// (docs/OPERATIONS.md "libvirt").
"""

import os
import shlex
import signal
import subprocess
import threading

import rig

LIBVIRT_DIRS = (('etc', '/etc/libvirt'), ('run', '/run/libvirt'), ('lib', '/var/lib/libvirt'),
                ('cache', '/var/cache/libvirt'), ('log', '/var/log/libvirt'))


def require_libvirt():
    for tool in ('libvirtd', 'virsh', 'unshare'):
        if not any(os.access(os.path.join(d, tool), os.X_OK)
                   for d in os.environ.get('PATH', '').split(':') + ['/usr/sbin']):
            rig.skip('%s not found (scripts/setup.sh installs libvirt-daemon-system and '
                     'libvirt-clients)' % tool)


class Daemon:
    """One private libvirtd in namespace `side` ('a' or 'b') of `link`, listening for peers
    on that side's address (tcp 16509, no auth) and on <dir>/run/libvirt-sock."""

    def __init__(self, wd, name, link, side, host_uuid, overlays=(), wait=True):
        self.name, self.link, self.side = name, link, side
        self.dir = wd.path('lv-' + name)
        self.addr = link.addr_a if side == 'a' else link.addr_b
        for sub, _ in LIBVIRT_DIRS:
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.log_path = os.path.join(self.dir, 'libvirtd.log')
        with open(os.path.join(self.dir, 'etc', 'libvirtd.conf'), 'w') as f:
            f.write('listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "%s"\ntcp_port = "16509"\n'
                    'auth_tcp = "none"\nauth_unix_rw = "none"\nauth_unix_ro = "none"\n'
                    'host_uuid = "%s"\nlog_outputs = "3:file:%s"\n' %
                    (self.addr, host_uuid, self.log_path))
        with open(os.path.join(self.dir, 'etc', 'qemu.conf'), 'w') as f:
            f.write('user = "root"\ngroup = "root"\ndynamic_ownership = 0\nremember_owner = 0\n'
                    'security_driver = "none"\nnamespaces = [ ]\ncgroup_controllers = [ ]\n'
                    'stdio_handler = "file"\n')
        self.sock = os.path.join(self.dir, 'run', 'libvirt-sock')
        self.uri = 'qemu+unix:///system?socket=' + self.sock
        self.peer_uri = 'qemu+tcp://%s/system' % self.addr
        mounts = [(os.path.join(self.dir, sub), target) for sub, target in LIBVIRT_DIRS]
        mounts += list(overlays)
        script = 'set -e; hostname lv-%s; ' % name
        for src, target in mounts:
            os.makedirs(target, exist_ok=True)  # /run/libvirt on a host that never ran libvirt
            script += 'mount --bind %s %s; ' % (shlex.quote(src), shlex.quote(target))
        script += 'exec libvirtd --listen -f %s -p %s' % (
            shlex.quote(os.path.join(self.dir, 'etc', 'libvirtd.conf')),
            shlex.quote(os.path.join(self.dir, 'libvirtd.pid')))
        self._out = open(os.path.join(self.dir, 'libvirtd.out'), 'wb')
        # ip netns exec execs unshare, which execs sh, which execs libvirtd: one pid.
        self.proc = link.spawn(side, ['unshare', '-m', '-u', '--propagation', 'private',
                                      'sh', '-c', script],
                               stdout=self._out, stderr=subprocess.STDOUT)
        rig._cleanups.append(self._kill_qemus)
        if wait:
            self.wait_up()

    def wait_up(self):
        """Waits until virsh gets an answer. The first start probes QEMU's capabilities (a
        few seconds per emulator binary): start both daemons, then wait for both."""
        def up():
            if self.proc.poll() is not None:
                raise rig.RigError('libvirtd %s exited %s: %s' % (
                    self.name, self.proc.returncode, self.read_log()[-1500:]))
            return os.path.exists(self.sock) and self.virsh('version', check=False).returncode == 0
        rig.wait_until(up, rig.scaled(60), 'libvirtd %s up' % self.name, interval=0.2)
        rig.log('libvirtd %s: pid %d, %s, peers at %s' % (self.name, self.proc.pid, self.uri,
                                                          self.peer_uri))
        return self

    def read_log(self):
        out = ''
        for p in (os.path.join(self.dir, 'libvirtd.out'), self.log_path):
            try:
                with open(p, errors='replace') as f:
                    out += f.read()
            except OSError:
                pass
        return out

    def qemu_log(self, domain):
        try:
            with open(os.path.join(self.dir, 'log', 'qemu', domain + '.log'),
                      errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def virsh(self, *args, check=True, timeout=120):
        r = subprocess.run(['virsh', '-c', self.uri] + list(args), capture_output=True,
                           text=True, timeout=rig.scaled(timeout))
        if check and r.returncode != 0:
            raise rig.RigError('virsh %s on %s failed (%d): %s' % (
                ' '.join(args), self.name, r.returncode, (r.stderr or r.stdout).strip()))
        return r

    def virsh_popen(self, *args, **kw):
        return rig.spawn(['virsh', '-c', self.uri] + list(args), **kw)

    def domains(self):
        return self.virsh('list', '--name').stdout.split()

    def domstate(self, domain):
        r = self.virsh('domstate', domain, '--reason', check=False)
        return r.stdout.strip() if r.returncode == 0 else None

    def jobinfo(self, domain, completed=False):
        """virsh domjobinfo as a dict (keys as virsh prints them, values as strings)."""
        args = ['domjobinfo', domain] + (['--completed'] if completed else [])
        r = self.virsh(*args, check=False)
        info = {}
        for line in r.stdout.splitlines():
            if ':' in line:
                k, v = line.split(':', 1)
                info[k.strip()] = v.strip()
        return info

    def events(self, path):
        """`virsh event --loop --event lifecycle` of every domain into path, until
        stop_events() (SIGINT: virsh flushes and exits)."""
        self._events_out = open(path, 'wb')
        self._events = self.virsh_popen('event', '--loop', '--event', 'lifecycle',
                                        stdout=self._events_out, stderr=subprocess.STDOUT)
        return self._events

    def stop_events(self):
        p = getattr(self, '_events', None)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if p is not None:
            self._events_out.close()

    def _kill_qemus(self):
        # libvirtd daemonizes its QEMUs: they outlive libvirtd unless killed by pid.
        qdir = os.path.join(self.dir, 'run', 'qemu')
        try:
            names = os.listdir(qdir)
        except OSError:
            return
        for n in names:
            if not n.endswith('.pid'):
                continue
            try:
                with open(os.path.join(qdir, n)) as f:
                    os.kill(int(f.read().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass

    def close(self):
        self.stop_events()
        if self.proc.poll() is None:
            for d in self.domains():
                self.virsh('destroy', d, check=False)
        self._kill_qemus()
        rig.reap(self.proc)
        self._out.close()


def domain_xml(name, mig_dir, workload, ram_kib=rig.DEFAULT_RAM_KIB):
    """A TCG domain booting the rig's guest kernel and initramfs (its workload on the kernel
    command line, as rig.Guest does), console on a unix socket mig_dir/NAME.console that QEMU
    connects to (the test listens there: rig.SerialReader).

    RAM: libvirt rounds <memory> up to whole MiB, always a multiple of 64 pages, which the
    QEMU 7.2 TCG dirty-bitmap bug corrupts (docs/DESIGN.md). So the guest's RAM is a backend
    of ram_kib given on QEMU's command line (qemu:commandline), which overrides libvirt's
    -m and -machine memory-backend; libvirt's own backend stays unused, and unregistered for
    migration. Both sides get the same command line from the migrated XML."""
    append = ['console=ttyS0', 'quiet', 'panic=-1'] + \
        ['ferry.%s=%s' % kv for kv in dict(workload).items()]
    args = ['-object', 'memory-backend-ram,id=ferry.ram,size=%dK' % ram_kib,
            '-machine', 'memory-backend=ferry.ram', '-m', '%dK' % ram_kib]
    return """<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='KiB'>{ram}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{qemu}</emulator>
    <serial type='unix'>
      <source mode='connect' path='{console}'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <qemu:commandline>
{args}
  </qemu:commandline>
</domain>
""".format(name=name, ram=ram_kib, kernel=rig.KERNEL, initrd=rig.INITRD,
           cmdline=' '.join(append), qemu=rig.QEMU,
           console=os.path.join(mig_dir, name + '.console'),
           args='\n'.join("    <qemu:arg value='%s'/>" % a for a in args))


class Console(rig.Guest):
    """The guest as its console shows it (heartbeats, self_check), for a libvirt domain: a
    rig.Guest that launches no QEMU, with the rig's SerialReader listening at `sock` and
    accepting the domain's QEMU on a thread (libvirt starts the destination QEMU during the
    migration's prepare phase)."""

    def __init__(self, name, sock, wd, daemon=None, domain=None):
        super().__init__(name, workdir=wd, start=False)
        self.daemon, self.domain = daemon, domain
        self.serial_sock = sock
        self.serial = rig.SerialReader(sock, self.serial_log)
        self._accepted = threading.Event()
        self._error = None
        threading.Thread(target=self._accept, daemon=True, name='accept-' + name).start()

    def _accept(self):
        try:
            self.serial.accept(rig.scaled(300), lambda: False)
            self._accepted.set()
        except rig.RigError as e:
            self._error = e

    def wait_connected(self, timeout=60):
        if not self._accepted.wait(rig.scaled(timeout)):
            raise rig.RigError('%s: QEMU did not connect to the console %s (%s)' % (
                self.name, self.serial_sock, self._error))

    def _check_alive(self):
        return False

    def kill(self):
        if self.serial is not None:
            self.serial.close()
            self.serial = None

    def close(self):
        self.kill()


def wait_job(daemon, domain, pred, timeout, what):
    """Polls virsh domjobinfo until pred(info) holds."""
    return rig.wait_until(lambda: (lambda i: pred(i) and i)(daemon.jobinfo(domain)),
                          rig.scaled(timeout), what, interval=0.1)
