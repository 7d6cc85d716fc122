import json,glob,sys
out=sys.argv[1]
rows=[]
for f in sorted(glob.glob(out+'/runs/*.json')):
    d=json.load(open(f))
    sw=d.get('switch_ms') or {}
    ps=d.get('postcopy_source') or {}
    g=d.get('guest_long_gaps') or []
    after=max([ms for s,ms in g if s>=0.25] or [50])
    print('%-42s %-10s t=%6s pause=%7s after=%7.1f stalled=%8s app=%5s pc=%5s first_tick=%6s faults=%3s fsum=%6s src=%6s held=%s promo=%s onpre=%s%s' % (
        f.split('/')[-1], d['outcome'], d.get('total_s'), d.get('guest_max_pause_ms'), after, d.get('guest_stalled_ms'),
        d.get('app_rate_ratio'), d.get('postcopy_at_s'), sw.get('dst_first_tick'), sw.get('faults'), sw.get('fault_wait_sum_ms'),
        sw.get('fault_source_wait_sum_ms'), round((ps.get('held_peak_bytes') or 0)/1e6,1), ps.get('held_pages_promoted'), ps.get('held_pages_on_preempt'),
        # the main link's pacing in post-copy (runs since it exists)
        ' paced=%.2f' % (ps['paced_bytes_per_s'] / 1e6) if 'paced_bytes_per_s' in ps else ''))
