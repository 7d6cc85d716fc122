# The switch to post-copy inside both QEMUs, per run of a bench directory whose QEMUs ran
# under qemu-traced.sh (FERRY_QEMU), in ms from the source's stop:
#   python3 docs/bench/postcopy-backlog/qemu_trace_timeline.py DIR QTRACE_DIR
# src: its bitmap sync (start-end), the discard bitmap sent, the package's LISTEN and RUN
# written into it, post-copy's RUN sent (postcopy_start_set_run); dst: the package's RUN
# handled, its vCPUs running.
import datetime
import glob
import json
import os
import re
import sys

LINE = re.compile(r'^\d+@(\d+\.\d+):(\S+)(.*)$')


def events(path):
    out = []
    for line in open(path, errors='replace'):
        m = LINE.match(line.strip())
        if m:
            out.append((float(m.group(1)), m.group(2), m.group(3).strip()))
    return out


def traces(qdir, name, t0):
    """The trace of the QEMU `name` started first after t0 (the run's start, whole seconds)."""
    best = None
    for p in glob.glob(os.path.join(qdir, name + '-*.log')):
        started = int(os.path.basename(p).split('-')[-1].split('.')[0]) / 1e9
        if started >= t0 - 1 and (best is None or started < best[0]):
            best = (started, p)
    return events(best[1]) if best else []


for path in sorted(glob.glob(sys.argv[1] + '/runs/*.json')):
    d = json.load(open(path))
    t0 = datetime.datetime.fromisoformat(d['started']).replace(
        tzinfo=datetime.timezone.utc).timestamp()
    src, dst = traces(sys.argv[2], 'src', t0), traces(sys.argv[2], 'dst', t0)
    stop = next((t for t, e, a in src if e == 'vm_state_notify' and a.startswith('running 0')
                 and 'postcopy' not in a), None)
    start = next((t for t, e, a in src if e == 'postcopy_start'), None)
    if start is None:
        print('%-48s no switch to post-copy traced' % os.path.basename(path))
        continue
    stop = next((t for t, e, a in src if e == 'vm_state_notify' and a.startswith('running 0')
                 and t >= start), stop)

    def ms(t):
        return '%6.1f' % ((t - stop) * 1000) if t is not None else '     -'

    def first(evs, name, after=stop):
        return next((t for t, e, a in evs if e == name and t >= after), None)
    print('%-48s stop-start %s  sync %s-%s  discard %s  listen %s  run %s  set_run %s  |  '
          'dst run %s  running %s' % (
              os.path.basename(path), ms(start), ms(first(src, 'migration_bitmap_sync_start')),
              ms(first(src, 'migration_bitmap_sync_end')),
              ms(first(src, 'ram_postcopy_send_discard_bitmap')),
              ms(first(src, 'savevm_send_postcopy_listen')),
              ms(first(src, 'savevm_send_postcopy_run')),
              ms(first(src, 'postcopy_start_set_run')),
              ms(first(dst, 'loadvm_postcopy_handle_run')),
              ms(next((t for t, e, a in dst if e == 'vm_state_notify' and
                       a.startswith('running 1') and t >= stop), None))))
