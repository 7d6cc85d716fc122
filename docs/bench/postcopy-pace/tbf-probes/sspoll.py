import subprocess, time, sys
out = open(sys.argv[1], 'w'); end = time.time() + float(sys.argv[2])
while time.time() < end:
    ns = [l.split()[0] for l in subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True).stdout.splitlines() if l.split() and l.split()[0].endswith('-a')]
    if not ns: time.sleep(0.2); continue
    r = subprocess.run(['ip', 'netns', 'exec', ns[0], 'ss', '-tinm', 'state', 'established'], capture_output=True, text=True).stdout
    out.write('@ %.3f\n%s\n' % (time.monotonic(), r)); out.flush(); time.sleep(0.05)
