# The switch to post-copy per run of a bench directory, in ms from the source's STOP:
#   python3 docs/bench/postcopy-backlog/switch_timeline.py DIR > switch-timeline.txt
# discard: ferry send saw QEMU's first post-copy discard; framed: the package went into
# frames; sent: all of it had left ferry (was in the kernel); ahead: bytes ferry had for the
# link when the package was framed (the package's included); resume: the destination's
# RESUME; tick: its first tick after; pause: the longest pause after the migrate command's
# own gap.
import glob
import json
import sys


def f(v, w=6):
    return ('%*.1f' % (w, v)) if isinstance(v, (int, float)) else '%*s' % (w, '-')


for path in sorted(glob.glob(sys.argv[1] + '/runs/*.json')):
    d = json.load(open(path))
    s = d.get('switch_ms') or {}
    ps = d.get('postcopy_source') or {}
    gaps = d.get('guest_long_gaps') or []
    after = max([ms for t, ms in gaps if t >= 0.25] or [0])
    print('%-48s downtime %s  discard %s  framed %s  sent %s  ahead %7s  resume %s  tick %s  '
          'pause %s  faults %3s wait %s' % (
              path.split('/')[-1], f(d.get('downtime_ms'), 4), f(s.get('ferry_discard_seen')),
              f(s.get('ferry_package_framed')), f(s.get('ferry_package_sent')),
              ps.get('package_ahead_bytes', '-'), f(s.get('dst_resume')),
              f(s.get('dst_first_tick')), f(after), s.get('faults'), f(s.get('fault_wait_sum_ms'))))
