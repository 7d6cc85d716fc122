#!/usr/bin/env python3
"""ferry benchmark matrix: every method side by side on the same guests and links.

    bench.py [--matrix quick|full|FILE.json] [--out DIR] [--fresh] [--retry-errors]
             [--only SUBSTR] [--list]
    bench.py --report DIR            (re-render summary.md and plots from DIR/runs.csv)

A matrix file (scripts/bench/matrix/*.json) names links (tbf rates: 30mbit, 100mbit, 1gbit,
or none), workloads (scripts/bench/workloads.py), methods (scripts/bench/runner.py) and
repetitions, plus per-run settings (deadline_s, postcopy_after_s, max_downtime_ms, cache_mib,
window_s, run_timeout_s) and optionally workload_links ({workload: [links]}: a workload runs
only on those links, e.g. a 4 GiB guest only where its migration can finish) and
timeseries_cell ("link.workload": the cell whose runs get a time-series figure). Runs go cell
by cell (link x workload), the repetitions of a cell back to back and, within each, every
method once in an order shuffled per repetition (seed `order_seed`, kept in DIR/matrix.json so
a resumed invocation keeps it; the `order` column is the position), so each comparison is made
within minutes on the same machine and no method always runs first or last.

Equal rules for every method (runner.py): deadline_s is one wall-clock limit over the whole
migration, post-copy included; max_downtime_ms is every method's budget (QEMU's downtime-limit,
ferry migrate's --max-downtime) and a run meets it when the longest pause the guest saw (its
host-stamped ticks) is within it.

Each run is a child process (runner.py) with a hard timeout: a run that hangs is killed, its
guests and namespaces cleaned up, and recorded as "run timeout". Results go to DIR (default
results/bench-<matrix>): runs/<id>.json (every metric and ferry's decisions), runs.csv,
summary.md and plots/*.png. Resumable: runs already in DIR are not run again (--fresh starts
over, --retry-errors runs the failed-to-measure ones again). One progress line per run.
FERRY_BENCH_KEEP=1 keeps the workdir (/tmp/ferry-bench-*) of a run that failed.
"""
import argparse
import csv
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, '..', '..'))
sys.path.insert(0, HERE)
from runner import METHODS  # noqa: E402
import rig  # noqa: E402  (runner.py puts tests/integration on the path)
from workloads import WORKLOADS  # noqa: E402
import report  # noqa: E402

DEFAULTS = {'repetitions': 1, 'deadline_s': 90, 'postcopy_after_s': 30,
            'max_downtime_ms': 300, 'cache_mib': 128, 'window_s': 5, 'run_timeout_s': 600}
COLUMNS = ['id', 'link', 'workload', 'method', 'rep', 'order', 'outcome', 'success', 'total_s',
           'downtime_ms', 'guest_max_pause_ms', 'guest_stalled_ms', 'guest_baseline_ms',
           'guest_held_ms', 'dst_vcpu_blocktime_ms', 'app_rate_ratio', 'within_budget',
           'downtime_within_budget',
           'link_mb', 'ram_verified', 'verified_by',
           'guest_check', 'passes',
           'postcopy_at_s', 'tput_unit', 'tput_before', 'tput_during', 'tput_after',
           'src_qemu_cpu_s', 'src_qemu_mig_cpu_s', 'dst_qemu_cpu_s', 'ferry_send_cpu_s',
           'ferry_recv_cpu_s', 'ferry_ratio', 'wall_s', 'reason', 'error', 'started',
           'commit', 'ferry_bin']


def load_matrix(arg):
    path = arg if arg.endswith('.json') else os.path.join(HERE, 'matrix', arg + '.json')
    try:
        with open(path) as f:
            mx = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit('bench: cannot read matrix %s: %s' % (path, e))
    for k in ('links', 'workloads', 'methods'):
        if not mx.get(k):
            sys.exit('bench: matrix %s: "%s" must be a non-empty list' % (path, k))
    for w in mx['workloads']:
        if w not in WORKLOADS:
            sys.exit('bench: matrix %s: unknown workload %r (known: %s)' %
                     (path, w, ', '.join(WORKLOADS)))
    for m in mx['methods']:
        if m not in METHODS:
            sys.exit('bench: matrix %s: unknown method %r (known: %s)' %
                     (path, m, ', '.join(METHODS)))
    mx.setdefault('name', os.path.splitext(os.path.basename(path))[0])
    for w, links in (mx.get('workload_links') or {}).items():
        if w not in mx['workloads'] or not set(links) & set(mx['links']):
            sys.exit('bench: matrix %s: workload_links[%r] must name a workload of the matrix '
                     'and some of its links' % (path, w))
    for k, v in DEFAULTS.items():
        mx.setdefault(k, v)
    mx['path'] = os.path.relpath(path, ROOT)
    return mx


def run_ids(mx):
    """[(id, link, workload, method, rep, order)] in the order they run: methods shuffled
    within each repetition of a cell by the matrix's order_seed."""
    rng = random.Random(mx['order_seed'])
    only = mx.get('workload_links') or {}
    out = []
    for link in mx['links']:
        for wl in mx['workloads']:
            if wl in only and link not in only[wl]:
                continue
            for rep in range(1, mx['repetitions'] + 1):
                methods = list(mx['methods'])
                rng.shuffle(methods)
                for pos, method in enumerate(methods, 1):
                    out.append(('%s.%s.%s.%d' % (link, wl, method, rep), link, wl, method, rep,
                                pos))
    return out


def earlier_order_seed(out, fresh):
    """The order seed of the invocation whose runs are in `out` (a resumed matrix keeps its
    order), or None."""
    if fresh:
        return None
    try:
        with open(os.path.join(out, 'matrix.json')) as f:
            return json.load(f).get('order_seed')
    except (OSError, ValueError):
        return None


def git_commit():
    r = subprocess.run(['git', '-C', ROOT, 'rev-parse', '--short', 'HEAD'],
                       capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ''


def ferry_binary():
    """'PATH sha256:PREFIX' of the ferry binary the runs use (the rig's choice: $FERRY_BIN,
    else the build's): `commit` names the checkout the scripts ran from, which may have moved
    on (docs commits during a long invocation) while every run used one pinned binary."""
    path = rig.find_ferry()
    if not path:
        return ''
    try:
        with open(path, 'rb') as f:
            return '%s sha256:%s' % (path, hashlib.sha256(f.read()).hexdigest()[:12])
    except OSError:
        return ''


def kill_group(p):
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_child(mx, rid, link, wl, method, rep, order, index, out):
    """Runs one spec in runner.py; returns its row (or one describing how it failed)."""
    netns = 'b%07d' % ((os.getpid() * 1000 + index) % 10000000)  # netns.sh: <= 8 chars
    spec = {'link': link, 'workload': wl, 'method': method, 'rep': rep, 'netns': netns}
    for k in ('deadline_s', 'postcopy_after_s', 'max_downtime_ms', 'cache_mib', 'window_s'):
        spec[k] = mx[k]
    row_path = os.path.join(out, 'runs', rid + '.json')
    log_path = os.path.join(out, 'logs', rid + '.log')
    env = dict(os.environ, MALLOC_PERTURB_='0')
    if os.environ.get('FERRY_BENCH_KEEP'):
        env['FERRY_KEEP'] = 'fail'
    started = time.strftime('%Y-%m-%dT%H:%M:%S')
    timed_out = False
    with open(log_path, 'wb') as log:
        p = subprocess.Popen([sys.executable, os.path.join(HERE, 'runner.py'), json.dumps(spec),
                              row_path], stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env, cwd=ROOT)
        try:
            p.wait(timeout=mx['run_timeout_s'])
        except subprocess.TimeoutExpired:
            timed_out = True
            kill_group(p)
        finally:
            if p.poll() is None:  # interrupted (^C): take the run's guests down with it
                kill_group(p)
    subprocess.run([os.path.join(ROOT, 'scripts', 'netns.sh'), 'down', netns],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with open(row_path) as f:
            row = json.load(f)
    except (OSError, ValueError):
        tail = ''
        try:
            with open(log_path, 'rb') as f:
                tail = f.read()[-400:].decode(errors='replace')
        except OSError:
            pass
        row = {'link': link, 'workload': wl, 'method': method, 'rep': rep,
               'outcome': 'run timeout' if timed_out else 'error', 'success': False,
               'error': ('killed after %d s' % mx['run_timeout_s']) if timed_out else
               'runner exited %s: %s' % (p.returncode, tail)}
    row['id'] = rid
    row['order'] = order
    row['started'] = started
    row['commit'] = git_commit()
    row['ferry_bin'] = ferry_binary()
    with open(row_path, 'w') as f:
        json.dump(row, f, indent=1)
    return row


def load_rows(out):
    rows = {}
    d = os.path.join(out, 'runs')
    if os.path.isdir(d):
        for name in sorted(os.listdir(d)):
            if name.endswith('.json'):
                try:
                    with open(os.path.join(d, name)) as f:
                        r = json.load(f)
                    rows[r['id']] = r
                except (OSError, ValueError, KeyError):
                    pass
    return rows


def write_csv(out, rows, order):
    path = os.path.join(out, 'runs.csv')
    with open(path + '.tmp', 'w', newline='') as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction='ignore')
        w.writeheader()
        for rid in order:
            if rid in rows:
                w.writerow({k: ('' if rows[rid].get(k) is None else rows[rid].get(k))
                            for k in COLUMNS})
    os.replace(path + '.tmp', path)
    return path


def fmt_duration(s):
    s = int(s)
    return '%d:%02d:%02d' % (s // 3600, s // 60 % 60, s % 60)


def progress_line(i, n, row, elapsed, left):
    size = '%.1f MB' % row['link_mb'] if row.get('link_mb') is not None else '-'
    t = '%.1f s' % row['total_s'] if row.get('total_s') is not None else '-'
    dt = '%s ms' % row['downtime_ms'] if row.get('downtime_ms') is not None else '-'
    ram = {True: 'RAM ok', False: 'RAM DIFFERS', None: '-'}[row.get('ram_verified')]
    extra = (' [%s]' % row['error'][:120]) if row.get('error') else ''
    return '[%3d/%d] %-8s %-11s %-17s %-17s %8s %8s %10s  %-7s elapsed %s, ~%s left%s' % (
        i, n, row['link'], row['workload'], row['method'], row['outcome'], t, dt, size, ram,
        fmt_duration(elapsed), fmt_duration(left), extra)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--matrix', default='quick',
                    help='quick | full | policy | a matrix .json file (default quick)')
    ap.add_argument('--out', help='results folder (default results/bench-<matrix name>)')
    ap.add_argument('--fresh', action='store_true', help='discard earlier runs in --out')
    ap.add_argument('--retry-errors', action='store_true',
                    help='run again the runs that ended in "error" or "run timeout"')
    ap.add_argument('--only', help='run only the runs whose id contains this (link.workload.'
                    'method.rep, e.g. 100mbit.redis)')
    ap.add_argument('--list', action='store_true', help='list the runs and exit')
    ap.add_argument('--report', metavar='DIR', help='only re-render DIR/summary.md and plots')
    args = ap.parse_args(argv)

    if args.report:
        mx = json.load(open(os.path.join(args.report, 'matrix.json')))
        report.render(args.report, mx)
        return 0
    mx = load_matrix(args.matrix)
    out = os.path.abspath(args.out or os.path.join(ROOT, 'results', 'bench-' + mx['name']))
    mx['order_seed'] = earlier_order_seed(out, args.fresh) or random.randrange(1, 1 << 31)
    ids = run_ids(mx)
    if args.list:
        for rid in ids:
            print(rid[0])
        print('%d runs' % len(ids))
        return 0
    if os.geteuid() != 0:
        sys.exit('bench: needs root (network namespaces, tc)')
    if args.fresh and os.path.isdir(out):
        for sub in ('runs', 'logs'):
            d = os.path.join(out, sub)
            if os.path.isdir(d):
                for name in os.listdir(d):
                    os.unlink(os.path.join(d, name))
    for sub in ('runs', 'logs', 'plots'):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    with open(os.path.join(out, 'matrix.json'), 'w') as f:
        json.dump(mx, f, indent=1)

    rows = load_rows(out)
    order = [r[0] for r in ids]
    todo = []
    selected = [r for r in ids if not args.only or args.only in r[0]]
    for r in selected:
        done = rows.get(r[0])
        if done and not (args.retry_errors and done['outcome'] in ('error', 'run timeout')):
            continue
        todo.append(r)
    print('bench: matrix %s (%s): %d runs, %d already done, %d to run; results in %s' %
          (mx['name'], mx['path'], len(selected), len(selected) - len(todo), len(todo), out),
          flush=True)
    t_start = time.monotonic()
    for i, (rid, link, wl, method, rep, pos) in enumerate(todo, 1):
        row = run_child(mx, rid, link, wl, method, rep, pos, i, out)
        rows[rid] = row
        write_csv(out, rows, order)
        elapsed = time.monotonic() - t_start
        left = elapsed / i * (len(todo) - i)
        print(progress_line(i, len(todo), row, elapsed, left), flush=True)
    write_csv(out, rows, order)
    report.render(out, mx)
    print('bench: %d runs in %s; %s' % (len(todo), fmt_duration(time.monotonic() - t_start),
                                       os.path.join(out, 'summary.md')))
    errors = [r for r in rows.values() if r['outcome'] in ('error', 'run timeout')]
    if errors:
        print('bench: %d runs could not be measured (outcome error / run timeout): see %s' %
              (len(errors), os.path.join(out, 'logs')))
    return 1 if errors else 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
