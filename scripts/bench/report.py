"""Renders a benchmark results folder: summary.md and plots/*.png from runs.csv.

    render(out_dir, matrix)

summary.md: one table per link (a row per workload x method: outcome, time, downtime, bytes
on the link, guest throughput before / during / after, CPU, RAM), ratios of ferry against
native and against the best QEMU option of the same cell, the success ratio per method, and
ferry migrate's decisions. Plots (matplotlib, Agg): total time and link bytes per method per
workload, one panel per link; success ratio per method.
"""

import csv
import json
import os
import sys

FERRY_POLICY = 'ferry-migrate'


def _f(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _rows(out):
    with open(os.path.join(out, 'runs.csv')) as f:
        return list(csv.DictReader(f))


def _ok(r):
    return r.get('success') in ('True', True)


def _median(vals):
    vals = sorted(v for v in vals if v is not None)
    if not vals:
        return None
    n = len(vals)
    return vals[n // 2] if n % 2 else (vals[n // 2 - 1] + vals[n // 2]) / 2


def _cell(rows, link, wl, method):
    """Median over repetitions of one (link, workload, method): a dict or None."""
    rs = [r for r in rows if r['link'] == link and r['workload'] == wl and r['method'] == method]
    if not rs:
        return None
    c = {'n': len(rs), 'ok': sum(_ok(r) for r in rs),
         'outcomes': sorted(set(r['outcome'] for r in rs))}
    for k in ('total_s', 'downtime_ms', 'guest_max_pause_ms', 'guest_stalled_ms', 'link_mb',
              'tput_before', 'tput_during', 'tput_after',
              'src_qemu_mig_cpu_s', 'ferry_send_cpu_s', 'ferry_recv_cpu_s'):
        c[k] = _median(_f(r.get(k)) for r in rs if r['outcome'] == 'completed' or
                       k.startswith('tput') or k.endswith('cpu_s'))
    c['ram'] = 'ok' if all(r['ram_verified'] == 'True' for r in rs if r['outcome'] ==
                           'completed') else 'DIFFERS'
    c['postcopy_at_s'] = _median(_f(r['postcopy_at_s']) for r in rs)
    c['unit'] = rs[0]['tput_unit']
    return c


def _fmt(v, pat='%.1f', none='-'):
    return none if v is None else pat % v


def render(out, mx):
    rows = _rows(out)
    links = [l for l in mx['links'] if any(r['link'] == l for r in rows)]
    wls = [w for w in mx['workloads'] if any(r['workload'] == w for r in rows)]
    methods = [m for m in mx['methods'] if any(r['method'] == m for r in rows)]
    budget = mx['max_downtime_ms']
    qemu_methods = [m for m in methods if not m.startswith('ferry')]
    md = ['# Benchmark matrix `%s`' % mx['name'], '',
          'Command: `scripts/bench.sh --matrix %s` (matrix file `%s`); every number below is '
          'a row of `runs.csv` in this folder (medians when a cell has several repetitions).'
          % (mx['name'], mx['path']), '',
          'Per run: fresh guests, %d s of workload before the migration, deadline %d s '
          '(then "did not converge": cancelled, the guest keeps running on the source), '
          'post-copy after %d s for `postcopy-timeout`, downtime budget %d ms, cache %d MiB '
          '(xbzrle and ferry). A run succeeds when it completed, the RAM of both guests is '
          'identical page by page (post-copy-capable methods, whose destination runs at once: '
          'the workload\'s self-check passes) and the downtime is within the budget. Link '
          'bytes are counted on the veth (both directions). Guest pause: the longest gap '
          'between the guest\'s host-stamped 20 ms ticks over the migration, and the sum of '
          'gaps over 50 ms (docs/BENCHMARKS.md, "The pause the guest sees"). Throughput is '
          'the guest workload\'s own counter: before, during (start to end of the migration) '
          'and after (on the destination).' %
          (mx['window_s'], mx['deadline_s'], mx['postcopy_after_s'], budget,
           mx['cache_mib']), '']
    md += ['## Success ratio', '', '| method | succeeded | of |', '|---|---:|---:|']
    succ = {}
    for m in methods:
        rs = [r for r in rows if r['method'] == m]
        succ[m] = (sum(_ok(r) for r in rs), len(rs))
        md.append('| %s | %d | %d |' % (m, succ[m][0], succ[m][1]))
    md.append('')
    for link in links:
        md += ['## Link %s' % link, '',
               '| workload | method | outcome | time s | downtime ms | guest pause ms max / '
               'stalled | link MB | tput before / during / after | src QEMU mig CPU s | '
               'ferry CPU s | RAM |',
               '|---|---|---|---:|---:|---:|---:|---|---:|---:|---|']
        for wl in wls:
            for m in methods:
                c = _cell(rows, link, wl, m)
                if c is None:
                    continue
                outcome = '/'.join(c['outcomes'])
                if c['postcopy_at_s'] is not None:
                    outcome += ' (post-copy at %.0f s)' % c['postcopy_at_s']
                ferry_cpu = None
                if c['ferry_send_cpu_s'] is not None:
                    ferry_cpu = c['ferry_send_cpu_s'] + (c['ferry_recv_cpu_s'] or 0)
                md.append('| %s | %s | %s | %s | %s | %s / %s | %s | %s / %s / %s %s | %s | %s '
                          '| %s |' % (
                    wl, m, outcome, _fmt(c['total_s']), _fmt(c['downtime_ms'], '%.0f'),
                    _fmt(c['guest_max_pause_ms'], '%.0f'), _fmt(c['guest_stalled_ms'], '%.0f'),
                    _fmt(c['link_mb']), _fmt(c['tput_before'], '%.0f'),
                    _fmt(c['tput_during'], '%.0f'), _fmt(c['tput_after'], '%.0f'), c['unit'],
                    _fmt(c['src_qemu_mig_cpu_s'], '%.2f'), _fmt(ferry_cpu, '%.2f'),
                    c['ram'] if 'completed' in c['outcomes'] else '-'))
        md.append('')
    md += _ratios(rows, links, wls, methods, qemu_methods)
    md += _decisions(out, rows)
    plots = _plots(out, rows, links, wls, methods, succ)
    md += ['## Plots', '']
    if plots:
        md += ['![%s](plots/%s)' % (p, p) for p in plots] + ['']
    else:
        md += ['Not drawn: matplotlib is missing for %s (Debian: python3-matplotlib; '
               'scripts/bench.sh uses /usr/bin/python3).' % sys.executable, '']
    with open(os.path.join(out, 'summary.md'), 'w') as f:
        f.write('\n'.join(md))


def _ratios(rows, links, wls, methods, qemu_methods):
    ferry = [m for m in methods if m.startswith('ferry')]
    if not ferry or not qemu_methods:
        return []
    md = ['## ferry against QEMU, cell by cell', '',
          'Ratios of ferry to native pre-copy and to the best QEMU option of the same cell '
          '(the fastest successful one: completed, RAM identical, downtime within the '
          'budget; bytes of that same run). "-" where either side did not succeed.', '',
          '| link | workload | ferry method | time / native | bytes / native | '
          'best QEMU option | time / best | bytes / best |', '|---|---|---|---:|---:|---|---:|---:|']
    for link in links:
        for wl in wls:
            best, best_c = None, None
            for m in qemu_methods:
                c = _cell(rows, link, wl, m)
                if c and c['ok'] and c['total_s'] is not None and \
                        (best_c is None or c['total_s'] < best_c['total_s']):
                    best, best_c = m, c
            nat = _cell(rows, link, wl, 'native')
            for fm in ferry:
                fc = _cell(rows, link, wl, fm)
                if fc is None:
                    continue

                def ratio(a, b, k):
                    if not a or not b or not a['ok'] or not b['ok'] or not b.get(k):
                        return '-'
                    return '%.2f' % (a[k] / b[k])
                md.append('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
                    link, wl, fm, ratio(fc, nat, 'total_s'), ratio(fc, nat, 'link_mb'),
                    best or 'none succeeded', ratio(fc, best_c, 'total_s'),
                    ratio(fc, best_c, 'link_mb')))
    return md + ['']


def _decisions(out, rows):
    md = []
    for r in rows:
        if r['method'] != FERRY_POLICY:
            continue
        try:
            with open(os.path.join(out, 'runs', r['id'] + '.json')) as f:
                full = json.load(f)
        except (OSError, ValueError):
            continue
        ds = full.get('decisions') or []
        if not md:
            md = ['## ferry migrate decisions', '']
        md.append('- **%s / %s**: %s%s' % (r['link'], r['workload'], r['outcome'],
                                           (' (%s)' % r['reason']) if r.get('reason') else ''))
        for d in ds:
            md.append('  - %.1f s `%s`: %s' % (d['t_s'], d['action'], d['reason']))
    return md + [''] if md else []


def _plots(out, rows, links, wls, methods, succ):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    os.makedirs(os.path.join(out, 'plots'), exist_ok=True)
    names = []
    colors = plt.get_cmap('tab10')
    for key, label, fname in (('total_s', 'total migration time (s)', 'time.png'),
                              ('link_mb', 'bytes on the link (MB)', 'bytes.png')):
        fig, axes = plt.subplots(1, len(links), figsize=(5.5 * len(links), 5.2), squeeze=False)
        width = 0.8 / max(len(methods), 1)
        for ax, link in zip(axes[0], links):
            for i, m in enumerate(methods):
                xs, ys, hatches = [], [], []
                for j, wl in enumerate(wls):
                    c = _cell(rows, link, wl, m)
                    if c is None:
                        continue
                    v = c[key]
                    done = 'completed' in c['outcomes']
                    if not done:
                        # Not completed: drawn at the deadline / bytes sent until cancelled,
                        # hatched.
                        rs = [r for r in rows if r['link'] == link and r['workload'] == wl and
                              r['method'] == m]
                        v = _median(_f(r[key]) or _f(r['wall_s']) for r in rs)
                    if v is None:
                        continue
                    xs.append(j + (i - (len(methods) - 1) / 2) * width)
                    ys.append(v)
                    hatches.append('' if done else '//')
                bars = ax.bar(xs, ys, width, label=m, color=colors(i % 10))
                for b, h in zip(bars, hatches):
                    b.set_hatch(h)
            ax.set_xticks(range(len(wls)))
            ax.set_xticklabels(wls, rotation=20, ha='right')
            ax.set_ylabel(label)
            ax.set_title('link %s' % link)
            ax.grid(axis='y', alpha=0.3)
        # Below the panels, so no bar hides behind it.
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc='lower center', ncol=len(methods), fontsize=8,
                   title='method (hatched: did not complete: time to the deadline, bytes '
                   'sent until cancelled)', title_fontsize=8)
        fig.tight_layout(rect=(0, 0.12, 1, 1))
        fig.savefig(os.path.join(out, 'plots', fname), dpi=90)
        plt.close(fig)
        names.append(fname)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ratios = [100.0 * succ[m][0] / succ[m][1] if succ[m][1] else 0 for m in methods]
    bars = ax.bar(range(len(methods)), ratios, color=[colors(i % 10) for i in range(len(methods))])
    for b, m in zip(bars, methods):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 1, '%d/%d' % succ[m],
                ha='center', fontsize=8)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=20, ha='right')
    ax.set_ylabel('successful migrations (%)')
    ax.set_ylim(0, 110)
    ax.set_title('success ratio per method (completed, RAM identical, downtime in budget)',
                 fontsize=9)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'plots', 'success.png'), dpi=90)
    plt.close(fig)
    names.append('success.png')
    return names
