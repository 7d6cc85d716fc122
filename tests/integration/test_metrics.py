#!/usr/bin/env python3
"""Prometheus metrics (--metrics) during a real `ferry migrate`, on real QEMU guests across a
100 Mbit/s tbf veth: the source QEMU, ferry migrate and a real Prometheus in namespace a,
ferry recv and the destination QEMU in namespace b.

    test_metrics.py migrate | send_recv_udp

migrate: a real Prometheus (scrape_interval 1s) watches ferry migrate's endpoint from before the
migration starts. While the migration runs: both ferries' /metrics answer with Prometheus's
content type and pass `promtool check metrics`; between two scrapes of ferry migrate its
counters grow (none shrinks) and the phase gauge says active; other paths get 404. Then
Prometheus's HTTP API shows that ferry's samples arrived, scraped during the active phase.
The migration completes with RAM identical (the metrics must not disturb it).

send_recv_udp: ferry send and ferry recv by hand (QEMU's migrate) over udp on a lossy link:
both endpoints pass promtool live, ferry send's counters only grow, and the retransmits it
shows live stay within what its --stats-json reports at the end.
"""
import json
import os
import shutil
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402
from test_proxy import Ferries, check, check_ferry_counts, free_port, read_text  # noqa: E402

RAM_KIB = 524296  # 512 MiB + 8 KiB (never a multiple of 64 pages)

# Fetches a URL from inside a network namespace (python3 -c CODE URL): prints the status
# code, the Content-Type, then the body.
FETCH = ('import sys, urllib.request, urllib.error\n'
         'try:\n'
         '    r = urllib.request.urlopen(sys.argv[1], timeout=10)\n'
         'except urllib.error.HTTPError as e:\n'
         '    r = e\n'
         'body = r.read()\n'
         'sys.stdout.write("%d\\n%s\\n" % (r.status, r.headers.get("Content-Type")))\n'
         'sys.stdout.flush()\n'
         'sys.stdout.buffer.write(body)\n')


def http_get(lk, side, url):
    """(status, content type, body) of GET url from namespace side; (0, '', '') when nothing
    answers."""
    r = lk.run(side, [sys.executable, '-c', FETCH, url], capture_output=True, timeout=20)
    if r.returncode != 0:
        return 0, '', ''
    status, ctype, body = r.stdout.decode(errors='replace').split('\n', 2)
    return int(status), ctype, body


def samples(text):
    """{'name{labels}': value} of an exposition."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith('#'):
            key, value = line.rsplit(' ', 1)
            out[key] = float(value)
    return out


def promtool_check(text, what):
    r = subprocess.run(['promtool', 'check', 'metrics'], input=text.encode(),
                       capture_output=True, timeout=30)
    out = (r.stdout + r.stderr).decode(errors='replace').strip()
    check(r.returncode == 0 and not out,
          'promtool check metrics on %s: exit %d: %s' % (what, r.returncode, out))
    print('promtool check metrics: %s passes (%d samples)' % (what, len(samples(text))))


def start_prometheus(lk, wd, target):
    """A real Prometheus in namespace a scraping target every second; returns (process,
    base URL) once it is ready."""
    port = free_port()
    cfg = wd.path('prometheus.yml')
    with open(cfg, 'w') as f:
        f.write('global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n'
                'scrape_configs:\n  - job_name: ferry\n    static_configs:\n'
                '      - targets: ["%s"]\n' % target)
    data = wd.path('prometheus-data')
    os.makedirs(data, exist_ok=True)
    log = wd.path('prometheus.log')
    p = lk.spawn('a', ['prometheus', '--config.file=' + cfg, '--storage.tsdb.path=' + data,
                       '--web.listen-address=127.0.0.1:%d' % port, '--log.level=warn'],
                 stdout=open(log, 'wb'), stderr=subprocess.STDOUT)
    base = 'http://127.0.0.1:%d' % port
    rig.wait_until(lambda: p.poll() is not None or http_get(lk, 'a', base + '/-/ready')[0] == 200,
                   rig.scaled(30), 'prometheus ready')
    check(p.poll() is None, 'prometheus exited %s: %s' % (p.poll(), read_text(log)))
    return p, base


def prom_query(lk, base, query):
    """The instant vector of query from Prometheus's HTTP API: [(labels, value)]."""
    status, _, body = http_get(lk, 'a', base + '/api/v1/query?query=' + urllib.parse.quote(query))
    if status != 200:
        return []
    doc = json.loads(body)
    check(doc.get('status') == 'success', 'prometheus query %s: %s' % (query, body))
    return [(r['metric'], float(r['value'][1])) for r in doc['data']['result']]


def migrate():
    rig.require_root_netns()
    for tool in ('promtool', 'prometheus'):
        if shutil.which(tool) is None:
            rig.skip('%s not found (scripts/setup.sh installs Debian\'s prometheus)' % tool)

    def qmp2(wd, name):
        return ['-qmp', 'unix:%s,server=on,wait=off' % wd.path(name + '-m.qmp')]
    # Dirties 64 MiB at random, 4 MB/s: a first pass of a few seconds over the link, then it
    # converges (the link carries 12.5 MB/s).
    workload = {'ws': '64M', 'pattern': 'random', 'rate': 1000}
    with rig.Workdir('metrics') as wd, rig.Link('100mbit') as lk, \
            rig.Guest('src', ram_kib=RAM_KIB, workload=workload, workdir=wd,
                      netns=lk.ns_a, extra_args=qmp2(wd, 'src')) as src, \
            rig.Guest.destination(src, 'dst', 'unix:' + wd.path('in.sock'),
                                  netns=lk.ns_b, extra_args=qmp2(wd, 'dst')) as dst:
        recv_metrics = 'http://127.0.0.1:%d/metrics' % free_port()
        mig_port = free_port()
        mig_metrics = 'http://127.0.0.1:%d/metrics' % mig_port
        fr = Ferries(wd, link=lk, recv_args=['--metrics', 'tcp:' + recv_metrics[7:-8]])
        mig = prom = None
        try:
            src.wait_ready()
            src.wait_heartbeats(3)
            fr.start_recv(wd.path('in.sock'))
            prom, prom_base = start_prometheus(lk, wd, '127.0.0.1:%d' % mig_port)
            argv = [rig.find_ferry(), 'migrate', '--src-qmp', 'unix:' + wd.path('src-m.qmp'),
                    '--dst-qmp', 'unix:' + wd.path('dst-m.qmp'), '--peer', fr.peer,
                    '--max-downtime', '500', '--deadline', '120', '--sock', wd.path('mig.sock'),
                    '--json', '--metrics', 'tcp:127.0.0.1:%d' % mig_port] + fr.security_args
            out_path, err_path = wd.path('migrate.out'), wd.path('migrate.err')
            mig = lk.spawn('a', argv, stdout=open(out_path, 'wb'), stderr=open(err_path, 'wb'))

            # 1. Live scrapes of ferry migrate: once bytes flow in the active phase, then
            # again until they grew.
            read_key = 'ferry_qemu_read_bytes_total{side="send"}'
            active_key = 'ferry_migration_phase{phase="active"}'
            rate_key = 'ferry_link_rate_bytes_per_second{side="send"}'
            first = {}

            def flowing():
                check(mig.poll() is None, 'ferry migrate exited %s early: %s' %
                      (mig.poll(), read_text(err_path)))
                status, ctype, body = http_get(lk, 'a', mig_metrics)
                if status != 200:
                    return False
                s = samples(body)
                if s.get(read_key, 0) > 0 and s.get(active_key) == 1:
                    first.update(text=body, ctype=ctype, s=s)
                    return True
                return False
            rig.wait_until(flowing, rig.scaled(60), 'ferry migrate metrics with bytes flowing')
            check(first['ctype'].startswith('text/plain; version=0.0.4'),
                  'content type %r' % first['ctype'])
            promtool_check(first['text'], 'ferry migrate (live)')
            second = {}

            def grew():
                _, _, body = http_get(lk, 'a', mig_metrics)
                s = samples(body)
                if s.get(read_key, 0) > first['s'][read_key] and s.get(rate_key, 0) > 0:
                    second.update(text=body, s=s)
                    return True
                return False
            rig.wait_until(grew, rig.scaled(30), 'ferry migrate counters and link rate to grow')
            a, b = first['s'], second['s']
            check(b.get(active_key) == 1, 'the migration left the active phase between scrapes')
            shrunk = ['%s %s -> %s' % (k, a[k], b.get(k)) for k in a
                      if '_total' in k and not b.get(k, -1) >= a[k]]
            check(not shrunk, 'counters went down between scrapes: %s' % shrunk)
            for k in ('ferry_link_sent_bytes_total{side="send"}',
                      'ferry_qemu_pages_total{side="send",class="normal"}',
                      'ferry_encode_input_bytes_total'):
                check(b.get(k, 0) > 0, '%s is %s during the migration' % (k, b.get(k)))
            print('ferry migrate scrapes: %s %d -> %d; link %d bytes; rate %.0f B/s' %
                  (read_key, a[read_key], b[read_key], b['ferry_link_sent_bytes_total{side="send"}'],
                   b[rate_key]))
            check(http_get(lk, 'a', mig_metrics[:-len('metrics')] + 'nothing')[0] == 404,
                  'another path did not get 404')

            # 2. ferry recv's endpoint, live, in the destination's namespace.
            status, ctype, body = http_get(lk, 'b', recv_metrics)
            check(status == 200, 'ferry recv /metrics: status %d' % status)
            promtool_check(body, 'ferry recv (live)')
            r = samples(body)
            check(r.get('ferry_sessions_active{side="recv"}') == 1 and
                  r.get('ferry_qemu_written_bytes_total{side="recv"}', 0) > 0,
                  'ferry recv metrics do not show its running session: %s' %
                  {k: v for k, v in r.items() if 'recv' in k})

            # 3. A real Prometheus got ferry's samples while the migration was active.
            def arrived():
                got = prom_query(lk, prom_base, 'max_over_time(%s[5m])' % read_key)
                phase = prom_query(lk, prom_base, 'max_over_time(%s[5m])' % active_key)
                return got and got[0][1] > 0 and phase and phase[0][1] == 1 and got
            got = rig.wait_until(arrived, rig.scaled(30), 'ferry samples in prometheus')
            up = prom_query(lk, prom_base, 'count_over_time(up{job="ferry"}[5m])')
            print('prometheus: %s max %d, %d scrapes so far' %
                  (read_key, got[0][1], up[0][1] if up else 0))

            # 4. The migration completes, undisturbed.
            rig.wait_until(lambda: mig.poll() is not None, rig.scaled(120), 'ferry migrate')
            lines = [json.loads(x) for x in read_text(out_path).splitlines() if x.strip()]
            rep = [x for x in lines if x.get('event') == 'report']
            check(mig.returncode == 0 and rep and rep[0]['outcome'] == 'completed',
                  'ferry migrate exit %s: %s' % (mig.returncode, read_text(err_path)))
            print('migration completed in %.1f s, %d passes' % (rep[0]['wall_s'],
                                                                  rep[0]['passes']))
            dst.wait_incoming_done()
            src.wait_status('postmigrate')
            check(fr.wait_exit('recv', 60) == 0, 'ferry recv failed: %s' %
                  read_text(fr.recv_err))
            diff = rig.check_ram_and_resume(src, dst)
            print('RAM identical over %d pages' % diff.pages)
        finally:
            rig.reap(mig)
            rig.reap(prom)
            fr.close()


def send_recv_udp():
    """ferry send and ferry recv (no policy) over udp on a 100 Mbit/s link whose 5 ms queue
    drops what ferry pushes beyond the rate: both endpoints pass promtool live, ferry send's
    counters grow between scrapes, and the retransmits it shows live never exceed what its
    --stats-json reports at the end (the same counter, copied live from reliable/)."""
    rig.require_root_netns()
    if shutil.which('promtool') is None:
        rig.skip('promtool not found (scripts/setup.sh installs Debian\'s prometheus)')
    wl = {'ws': '96M', 'pattern': 'random', 'rate': 100}
    with rig.Workdir('metricsu') as wd, rig.Link('100mbit', queue='5ms') as lk, \
            rig.Guest('src', ram_kib=RAM_KIB, workload=wl, workdir=wd, netns=lk.ns_a) as src, \
            rig.Guest.destination(src, 'dst', 'unix:' + wd.path('in.sock'),
                                  netns=lk.ns_b) as dst:
        send_port, recv_port = free_port(), free_port()
        send_url = 'http://127.0.0.1:%d/metrics' % send_port
        recv_url = 'http://127.0.0.1:%d/metrics' % recv_port
        fr = Ferries(wd, link=lk, transport='udp',
                     send_args=['--metrics', 'tcp:127.0.0.1:%d' % send_port],
                     recv_args=['--metrics', 'tcp:127.0.0.1:%d' % recv_port])
        try:
            src.wait_ready()
            src.wait_heartbeats(2)
            fr.start_recv(wd.path('in.sock'))
            src.migrate(fr.start_send())
            read_key = 'ferry_qemu_read_bytes_total{side="send"}'
            retrans_key = 'ferry_link_retransmits_total{side="send"}'
            seen = []

            def scrape_send():
                status, _, body = http_get(lk, 'a', send_url)
                if status != 200:
                    return None
                s = samples(body)
                if s.get(read_key, 0) > 0:
                    seen.append((body, s))
                return s
            rig.wait_until(lambda: (scrape_send() or {}).get(read_key, 0) > 0, rig.scaled(60),
                           'ferry send metrics with bytes flowing')
            promtool_check(seen[0][0], 'ferry send (live, udp)')
            check(seen[0][1].get('ferry_sessions_active{side="send"}') == 1,
                  'ferry send shows no running session')
            status, _, body = http_get(lk, 'b', recv_url)
            check(status == 200, 'ferry recv /metrics: status %d' % status)
            promtool_check(body, 'ferry recv (live, udp)')
            rig.wait_until(lambda: (scrape_send() or {}).get(read_key, 0) > seen[0][1][read_key],
                           rig.scaled(30), 'ferry send counters to grow')
            # Scrape on until the migration ends (each scrape is the wait's event).
            rig.wait_until(lambda: scrape_send() is None or
                           src.query_migrate().get('status') == 'completed',
                           rig.scaled(120), 'the migration to complete')
            info = src.wait_migration(timeout=rig.scaled(60))
            dst.wait_incoming_done()
            src.wait_status('postmigrate')
            s, _ = check_ferry_counts(fr, info, 1)
            final = s['per_channel'][0]['link']['retransmits']
            live = max(x[1].get(retrans_key, 0) for x in seen)
            shrunk = [(k, a[1][k], b[1][k]) for a, b in zip(seen, seen[1:])
                      for k in a[1] if '_total' in k and b[1].get(k, -1) < a[1][k]]
            check(not shrunk, 'ferry send counters went down between scrapes: %s' % shrunk[:5])
            print('%d live scrapes of ferry send; retransmits live up to %d, %d at the end; '
                  'tbf dropped %d' % (len(seen), live, final, lk.qdisc_drops('a')))
            check(live <= final, 'live retransmits %d above the final %d' % (live, final))
            # Losses come while pacing searches for the rate, early in the transfer: scraped
            # every few hundred ms, they show up live.
            check(final == 0 or live > 0,
                  '%d retransmits at the end but none seen live in %d scrapes' %
                  (final, len(seen)))
            diff = rig.check_ram_and_resume(src, dst)
            print('RAM identical over %d pages' % diff.pages)
        finally:
            fr.close()


def main(argv):
    rig.require_qemu_and_guest()
    which = argv[1] if len(argv) > 1 else 'migrate'
    {'migrate': migrate, 'send_recv_udp': send_recv_udp}[which]()
    print('PASS metrics %s' % which)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv))
