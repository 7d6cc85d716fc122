# Lines tcpdump's packets (source side) up with ferry recv's page requests around the switch.
import json, subprocess, sys, glob, re, collections
pcap, rundir = sys.argv[1], sys.argv[2]
span = float(sys.argv[3]) if len(sys.argv) > 3 else 300
off = float(open(pcap + '.clock').read())
run = json.load(open(glob.glob(rundir + '/runs/*.json')[0]))
reqs = run['postcopy_requests']  # [mono_ms, wait_ms, ?, offset]
t0 = reqs[0][0] / 1000 + off
sw = run['switch_ms']
print({k: v for k, v in sw.items() if not isinstance(v, list)})
lines = subprocess.run(['tcpdump', '-r', pcap, '-tt', '-nn'], capture_output=True, text=True).stdout.splitlines()
pk = []
syns = {}
for l in lines:
    m = re.match(r'(\d+\.\d+) IP (\S+)\.(\d+) > (\S+)\.(\d+): Flags \[([^\]]*)\].* length (\d+)', l)
    if not m: continue
    t = float(m.group(1)); sp, dp = int(m.group(3)), int(m.group(5)); fl = m.group(6); n = int(m.group(7))
    if fl == 'S': syns[sp] = t
    if n > 0 and m.group(2) == '10.77.0.1': pk.append((t, sp, n))
names = {}
for i, (p, t) in enumerate(sorted(syns.items(), key=lambda x: x[1])):
    names[p] = 'c%d@%.1f' % (i, (t - t0) * 1000)
print('connections:', names)
ev = [((t - t0) * 1000, 'PKT %-12s %6d' % (names.get(sp, sp), n)) for t, sp, n in pk if -span/3 < (t - t0) * 1000 < span]
ev += [((r[0] / 1000 + off - t0) * 1000, 'REQ wait=%s off=%d' % (r[1], r[3])) for r in reqs if (r[0] / 1000 + off - t0) * 1000 < span]
for t, s in sorted(ev):
    print('%8.2f %s' % (t, s))
