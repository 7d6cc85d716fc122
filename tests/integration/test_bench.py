#!/usr/bin/env python3
"""The benchmark matrix runner end to end (scripts/bench/bench.py, issue 4), on a small
matrix: 1 Gbit/s link, the mix-calm workload, native QEMU and ferry (--codec fast).

Checks: both runs complete with RAM verified and land in runs.csv with their metrics (the
guest's longest pause, which decides the budget, and its rate ratio; their positions in the
shuffled order); the summary has the link table and the ferry/native ratios; the plots,
time series of the chosen cell included, exist and are PNGs; a second invocation resumes (runs
nothing, keeps the order seed); a run that outlives run_timeout_s is killed, recorded as "run
timeout", and leaves no QEMU or namespace behind.
"""
import csv
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rig  # noqa: E402
from test_proxy import check  # noqa: E402

BENCH = os.path.join(rig.ROOT, 'scripts', 'bench', 'bench.py')
# Debian's python (python3-matplotlib), as scripts/bench.sh runs it.
PYTHON = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable


def bench(wd, matrix, out, timeout):
    path = wd.path(matrix['name'] + '.json')
    with open(path, 'w') as f:
        json.dump(matrix, f)
    p = subprocess.run([PYTHON, BENCH, '--matrix', path, '--out', out], capture_output=True,
                       text=True, timeout=rig.scaled(timeout))
    print(p.stdout + p.stderr)
    return p


def rows_of(out):
    with open(os.path.join(out, 'runs.csv')) as f:
        return list(csv.DictReader(f))


def processes_using(path):
    """pids whose command line mentions path."""
    r = subprocess.run(['pgrep', '-f', path], capture_output=True, text=True)
    return r.stdout.split()


def netns_names():
    r = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True)
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def main():
    rig.require_qemu_and_guest()
    rig.require_root_netns()
    base = {'links': ['1gbit'], 'workloads': ['mix-calm'], 'repetitions': 1,
            'deadline_s': 60, 'postcopy_after_s': 20, 'max_downtime_ms': 300,
            'cache_mib': 64, 'window_s': 2}
    with rig.Workdir('benchtest') as wd:
        out = wd.path('results')
        mx = dict(base, name='smoke', methods=['native', 'ferry-fast'], run_timeout_s=240,
                  timeseries_cell='1gbit.mix-calm')
        p = bench(wd, mx, out, 600)
        check(p.returncode == 0, 'bench.py exited %d' % p.returncode)
        check(p.stdout.count('] 1gbit') == 2, 'expected one progress line per run')
        rows = {r['method']: r for r in rows_of(out)}
        check(set(rows) == {'native', 'ferry-fast'}, 'runs.csv rows: %s' % list(rows))
        for m, r in rows.items():
            check(r['outcome'] == 'completed' and r['ram_verified'] == 'True', '%s: %s' % (m, r))
            # A completed, verified run succeeds exactly when the guest's pause was in budget.
            check(r['success'] == r['within_budget'], '%s: success %s, within budget %s' %
                  (m, r['success'], r['within_budget']))
            for k in ('total_s', 'downtime_ms', 'link_mb', 'tput_before', 'tput_after',
                      'src_qemu_cpu_s'):
                check(r[k] not in ('', None) and float(r[k]) >= 0, '%s: no %s' % (m, k))
            check(float(r['link_mb']) > 5, '%s: %s MB on the link' % (m, r['link_mb']))
            check(float(r['tput_before']) > 100, '%s: workload not measured: %s' %
                  (m, r['tput_before']))
        check(rows['ferry-fast']['ferry_send_cpu_s'] not in ('', None), 'no ferry CPU')
        check(sorted(int(r['order']) for r in rows.values()) == [1, 2], 'order column')
        for m, r in rows.items():
            pause = float(r['guest_max_pause_ms'])
            # The budget is the guest's own pause, not QEMU's downtime figure.
            check(r['within_budget'] == str(pause <= base['max_downtime_ms']),
                  '%s: within_budget %s with a %s ms pause' % (m, r['within_budget'], pause))
            check(0.5 < float(r['app_rate_ratio']) < 1.5, '%s: app_rate_ratio %s' %
                  (m, r['app_rate_ratio']))
            with open(os.path.join(out, 'runs', r['id'] + '.json')) as f:
                series = json.load(f)['series']
            check(len(series['t_s']) >= 2 and max(series['link_mbit_s']) > 10,
                  '%s: link time series %s' % (m, series))
        with open(os.path.join(out, 'matrix.json')) as f:
            seed = json.load(f)['order_seed']
        with open(os.path.join(out, 'summary.md')) as f:
            summary = f.read()
        # "ok" counts the runs within the pause budget, which the guest's setup pause alone
        # can exceed under TCG: the table must agree with the run, whichever it was.
        ok = 1 if rows['ferry-fast']['success'] == 'True' else 0
        check('## Link 1gbit' in summary and
              '| mix-calm | ferry-fast | %d/1 | completed' % ok in summary,
              'summary lacks the link table')
        check('| 1gbit | mix-calm | ferry-fast |' in summary, 'summary lacks the ratios')
        for png in ('time.png', 'pause.png', 'bytes.png', 'success.png', 'series-native.png',
                    'series-ferry-fast.png'):
            with open(os.path.join(out, 'plots', png), 'rb') as f:
                check(f.read(8) == b'\x89PNG\r\n\x1a\n', '%s is not a PNG' % png)

        # Resume: nothing left to run, the rows stay.
        p = bench(wd, mx, out, 120)
        check(p.returncode == 0 and '2 already done, 0 to run' in p.stdout, 'no resume')
        check(len(rows_of(out)) == 2, 'resume changed runs.csv')
        with open(os.path.join(out, 'matrix.json')) as f:
            check(json.load(f)['order_seed'] == seed, 'resume changed the order seed')

        # A run that outlives its timeout is killed and recorded; nothing is left behind.
        before_ns = set(netns_names())
        out2 = wd.path('results-timeout')
        mx2 = dict(base, name='timeout', methods=['native'], run_timeout_s=6)
        t0 = time.monotonic()
        p = bench(wd, mx2, out2, 120)
        check(p.returncode == 1, 'bench.py should report the unmeasured run (exit %d)' %
              p.returncode)
        check(time.monotonic() - t0 < 60, 'the run was not killed at its timeout')
        (row,) = rows_of(out2)
        check(row['outcome'] == 'run timeout' and row['success'] == 'False', str(row))
        with open(os.path.join(out2, 'logs', row['id'] + '.log')) as f:
            log = f.read()
        m = re.search(r'-chardev socket,id=ser0,path=(\S+)/src\.ser\b', log)
        check(m is not None, 'the run log does not show the source QEMU:\n' + log[-2000:])
        rig.wait_until(lambda: not processes_using(m.group(1)), rig.scaled(20),
                       'the killed run\'s QEMUs to exit')
        left = [n for n in set(netns_names()) - before_ns if n.startswith('b')]
        check(not left, 'namespaces left behind: %s' % left)
    print('bench runner: 2 runs measured, resumed, a hung run killed and recorded')
    return 0


if __name__ == '__main__':
    sys.exit(main())
