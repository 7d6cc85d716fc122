# Polls the tbf backlog on the source side's veth of any bench netns, every 10 ms.
import subprocess, time, re, sys, os
out = open(sys.argv[1], 'w')
end = time.time() + float(sys.argv[2])
while time.time() < end:
    ns = [l.split()[0] for l in subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True).stdout.splitlines() if l.split() and l.split()[0].endswith('-a')]
    if not ns:
        time.sleep(0.2); continue
    n = ns[0]
    r = subprocess.run(['ip', 'netns', 'exec', n, 'tc', '-s', 'qdisc', 'show', 'dev', n[:-2] + '-va'], capture_output=True, text=True).stdout
    m = re.search(r'backlog (\S+) (\d+)p', r)
    d = re.search(r'dropped (\d+)', r)
    out.write('%.3f %s %s %s\n' % (time.monotonic(), m.group(1) if m else '-', m.group(2) if m else '-', d.group(1) if d else '-'))
    out.flush()
    time.sleep(0.01)
