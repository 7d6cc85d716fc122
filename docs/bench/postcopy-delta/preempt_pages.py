# The preempt link's pages and the faults at the switch, per ferry run of an A/B directory:
#   python3 docs/bench/postcopy-delta/preempt_pages.py DIR > preempt-pages.txt
import glob
import json
import sys

for f in sorted(glob.glob(sys.argv[1] + '/runs/*ferry*.json')):
    d = json.load(open(f))
    ps = d.get('postcopy_source') or {}
    s = d.get('switch_ms') or {}
    n = ps.get('preempt_pages_encoded', 0)
    print('%-42s preempt pages %6d  against base %5.1f %%  bytes/page %5.0f  faults before first '
          'tick %3s, wait %5.1f ms (%.2f per fault), QEMU downtime %s ms, source stop -> dst '
          'resume %s ms' % (
              f.split('/')[-1], n, 100 * ps.get('preempt_pages_against_base', 0) / max(n, 1),
              ps.get('preempt_record_bytes', 0) / max(n, 1), s.get('faults'),
              s.get('fault_wait_sum_ms'), s.get('fault_wait_sum_ms') / s.get('faults'),
              d.get('downtime_ms'), s.get('dst_resume')))
