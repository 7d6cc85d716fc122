# Captures TCP headers on the source side's veth of the bench netns (tcpdump), and the
# realtime-monotonic clock offset, for lining packets up with ferry's monotonic timelines.
import subprocess, time, sys
out, secs = sys.argv[1], float(sys.argv[2])
end = time.time() + secs
while time.time() < end:
    ns = [l.split()[0] for l in subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True).stdout.splitlines() if l.split() and l.split()[0].endswith('-a')]
    if ns: break
    time.sleep(0.2)
n = ns[0]
open(out + '.clock', 'w').write('%.6f\n' % (time.time() - time.monotonic()))
p = subprocess.Popen(['ip', 'netns', 'exec', n, 'tcpdump', '-i', n[:-2] + '-va', '-s', '96', '-w', out, '-B', '16384', 'tcp'])
time.sleep(max(0, end - time.time()))
p.terminate(); p.wait()
