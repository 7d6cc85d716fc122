import json, sys, glob
d, q = sys.argv[1], sys.argv[2]
f = glob.glob(d + '/runs/*.json')[0]
r = json.load(open(f))
sm = r['switch_ms']; print({k: v for k, v in sm.items() if k != 'fault_offsets'})
pr = r['postcopy_requests']; t0 = pr[0][0]
rows = [l.split() for l in open(q)]
reqs = [(e[0] - t0, e[1], e[2]) for e in pr[:20]]
qs = [(float(x[0]) * 1000 - t0, x[1], x[2], x[3]) for x in rows]
ev = sorted([(t, 'REQ wait=%s pre=%d' % (w, p)) for t, w, p in reqs] +
            [(t, 'tbf backlog %s %sp drops %s' % (b, p, dr)) for t, b, p, dr in qs if -300 < t < 900])
for t, s in ev: print('%8.1f %s' % (t, s))
