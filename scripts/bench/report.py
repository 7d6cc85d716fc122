"""Renders a benchmark results folder: summary.md and plots/*.png from runs.csv.

    render(out_dir, matrix)

summary.md: one table per link (a row per workload x method: successes over repetitions,
outcomes, time, the guest's longest pause and stalled time, QEMU's downtime, bytes on the link,
guest throughput before / during / after and its ratio, CPU, memory check; medians with
min-max over repetitions), ratios of ferry against native and against the best QEMU option of
the same cell, the success ratio per method, and ferry migrate's decisions. Plots (matplotlib,
Agg), one colour per method in every figure: total time, the guest's longest pause and link
bytes per method per workload (one panel per link; min-max as error bars; hatched: did not
complete; cross-hatched: completed but not a success), success ratio per method, and for the
matrix's timeseries_cell one time-series figure per method (link rate and the guest's rate
through the migration, the switch to post-copy marked).
"""

import csv
import json
import os
import sys

FERRY_POLICY = 'ferry-migrate'
# One colour per method in every figure (matplotlib's tab10, in this order).
METHOD_COLORS = ['native', 'xbzrle', 'multifd-zstd', 'auto-converge', 'postcopy-timeout',
                 'ferry-migrate', 'ferry-none', 'ferry-fast', 'ferry-max', 'ferry-auto']
DONE = ('completed', 'over limit')  # the migration finished (in time or not)


def _color(plt, m):
    i = METHOD_COLORS.index(m) if m in METHOD_COLORS else len(METHOD_COLORS)
    return plt.get_cmap('tab10')(i % 10) if i < 10 else 'grey'


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
    """Medians (and k + '_range': (min, max)) over repetitions of one (link, workload,
    method): a dict or None. Times, pauses and bytes of finished runs only (a run that did
    not finish has none of its own: time to the limit, bytes until cancelled)."""
    rs = [r for r in rows if r['link'] == link and r['workload'] == wl and r['method'] == method]
    if not rs:
        return None
    c = {'n': len(rs), 'ok': sum(_ok(r) for r in rs),
         'outcomes': sorted(set(r['outcome'] for r in rs))}
    for k in ('total_s', 'downtime_ms', 'guest_max_pause_ms', 'guest_stalled_ms', 'link_mb',
              'tput_before', 'tput_during', 'tput_after', 'app_rate_ratio',
              'src_qemu_mig_cpu_s', 'ferry_send_cpu_s', 'ferry_recv_cpu_s'):
        vals = [_f(r.get(k)) for r in rs if r['outcome'] in DONE or
                k.startswith('tput') or k.endswith('cpu_s') or k == 'app_rate_ratio']
        vals = [v for v in vals if v is not None]
        c[k] = _median(vals)
        c[k + '_range'] = (min(vals), max(vals)) if vals else None
    done = [r for r in rs if r['outcome'] in DONE]
    if done and all(r.get('verified_by') == 'none' for r in done):
        c['ram'] = 'not checked'  # the apps guest in post-copy: no RAM compare, no self-check
    else:
        c['ram'] = 'ok' if all(r['ram_verified'] == 'True' for r in done) else 'DIFFERS'
    c['postcopy_at_s'] = _median(_f(r['postcopy_at_s']) for r in rs)
    c['unit'] = rs[0]['tput_unit']
    return c


def _fmt(v, pat='%.1f', none='-'):
    return none if v is None else pat % v


def _fmt_range(c, k, pat='%.1f'):
    """median, with (min-max) when repetitions differ."""
    v, r = c[k], c.get(k + '_range')
    if v is None:
        return '-'
    if r is None or r[0] == r[1] or c['n'] < 2:
        return pat % v
    return (pat + ' (' + pat + '–' + pat + ')') % (v, r[0], r[1])


def render(out, mx):
    rows = _rows(out)
    links = [l for l in mx['links'] if any(r['link'] == l for r in rows)]
    wls = [w for w in mx['workloads'] if any(r['workload'] == w for r in rows)]
    methods = [m for m in mx['methods'] if any(r['method'] == m for r in rows)]
    budget = mx['max_downtime_ms']
    qemu_methods = [m for m in methods if not m.startswith('ferry')]
    md = ['# Benchmark matrix `%s`' % mx['name'], '',
          'Command: `scripts/bench.sh --matrix %s` (matrix file `%s`, method order seed %s); '
          'every number below is a row of `runs.csv` in this folder: medians over repetitions, '
          'min–max in brackets where they differ.'
          % (mx['name'], mx['path'], mx.get('order_seed', '-')), '',
          'Per run: fresh guests, %d s of workload before the migration. The same rules for '
          'every method: one wall-clock limit of %d s from the migrate command to the end of '
          'the migration, post-copy included (a pre-copy still running then is cancelled: "did '
          'not converge", the guest keeps running on the source; a post-copy cannot be '
          'cancelled: it is waited out and counted as "over limit"); one budget of %d ms for '
          'the pause (QEMU\'s downtime-limit, ferry migrate\'s --max-downtime); post-copy '
          'after %d s for `postcopy-timeout`; cache %d MiB (xbzrle and ferry). Methods run in '
          'a random order within each repetition of a cell (`order` in runs.csv). A run '
          'succeeds when it completed within the limit, memory was verified (pre-copy: both '
          'guests\' RAM identical page by page; post-copy-capable methods, whose destination '
          'runs at once: the workload\'s self-check) and **the longest pause the guest saw** '
          'is within the budget: the longest gap between the guest\'s host-stamped 20 ms '
          'ticks (docs/BENCHMARKS.md, "The pause the guest sees"); "stalled" sums the gaps '
          'over 50 ms. QEMU\'s own downtime is shown beside it. Link bytes are counted on the '
          'veth (both directions). Throughput is the workload\'s own counter: before, during '
          '(start to end of the migration; ratio = during / before) and after (on the '
          'destination).' %
          (mx['window_s'], mx['deadline_s'], budget, mx['postcopy_after_s'],
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
               '| workload | method | ok | outcome | time s | guest pause ms | stalled ms | '
               'QEMU downtime ms | link MB | tput before / during / after | during / before | '
               'src QEMU mig CPU s | ferry CPU s | memory |',
               '|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|']
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
                md.append('| %s | %s | %d/%d | %s | %s | %s | %s | %s | %s | %s / %s / %s %s | '
                          '%s | %s | %s | %s |' % (
                    wl, m, c['ok'], c['n'], outcome, _fmt_range(c, 'total_s'),
                    _fmt_range(c, 'guest_max_pause_ms', '%.0f'),
                    _fmt_range(c, 'guest_stalled_ms', '%.0f'),
                    _fmt_range(c, 'downtime_ms', '%.0f'), _fmt_range(c, 'link_mb'),
                    _fmt(c['tput_before'], '%.0f'), _fmt(c['tput_during'], '%.0f'),
                    _fmt(c['tput_after'], '%.0f'), c['unit'],
                    _fmt_range(c, 'app_rate_ratio', '%.2f'),
                    _fmt(c['src_qemu_mig_cpu_s'], '%.2f'), _fmt(ferry_cpu, '%.2f'),
                    c['ram'] if set(c['outcomes']) & set(DONE) else '-'))
        md.append('')
    md += _ratios(rows, links, wls, methods, qemu_methods)
    md += _goals(out, rows, links, wls, methods, qemu_methods, budget)
    md += _misses(out, rows, wls, methods, budget)
    md += _decisions(out, rows)
    plots = _plots(out, rows, links, wls, methods, succ, budget)
    plots += _timeseries(out, rows, mx.get('timeseries_cell'), methods)
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
          '(the fastest with a success in every repetition; medians). "-" where either side '
          'did not succeed in every repetition.', '',
          '| link | workload | ferry method | time / native | bytes / native | '
          'best QEMU option | time / best | bytes / best |', '|---|---|---|---:|---:|---|---:|---:|']
    for link in links:
        for wl in wls:
            best, best_c = None, None
            for m in qemu_methods:
                c = _cell(rows, link, wl, m)
                if c and c['ok'] == c['n'] and c['total_s'] is not None and \
                        (best_c is None or c['total_s'] < best_c['total_s']):
                    best, best_c = m, c
            nat = _cell(rows, link, wl, 'native')
            for fm in ferry:
                fc = _cell(rows, link, wl, fm)
                if fc is None:
                    continue

                def ratio(a, b, k):
                    if not a or not b or a['ok'] < a['n'] or b['ok'] < b['n'] or not b.get(k):
                        return '-'
                    return '%.2f' % (a[k] / b[k])
                md.append('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
                    link, wl, fm, ratio(fc, nat, 'total_s'), ratio(fc, nat, 'link_mb'),
                    best or 'none succeeded', ratio(fc, best_c, 'total_s'),
                    ratio(fc, best_c, 'link_mb')))
    return md + ['']


# A gap that starts this close to the migrate command is QEMU's migration setup (dirty logging
# switched on): every method pays it, and on this host it takes 215-350 ms for the small guests
# (docs/BENCHMARKS.md, "The pause the guest sees").
SETUP_GAP_START_S = 0.25
LONG_GAP_MS = 50.0  # runs/<id>.json lists only gaps longer than this


def _long_gaps(out, r):
    try:
        with open(os.path.join(out, 'runs', r['id'] + '.json')) as f:
            return json.load(f).get('guest_long_gaps')
    except (OSError, ValueError):
        return None


def _pause_after_setup(out, r):
    """The longest pause apart from the one at the migrate command (LONG_GAP_MS when no other
    gap was long), or None when the run's gaps were not kept."""
    gaps = _long_gaps(out, r)
    if gaps is None:
        return None
    rest = [ms for start_s, ms in gaps if start_s >= SETUP_GAP_START_S]
    return max(rest) if rest else LONG_GAP_MS


def _verified(r):
    return r['ram_verified'] == 'True' or r.get('verified_by') == 'none'


def _percentile(vals, p):
    """Nearest rank: with n values, p99 is the highest unless n >= 100."""
    vals = sorted(vals)
    if not vals:
        return None
    k = max(0, min(len(vals) - 1, -(-len(vals) * p // 100) - 1))
    return vals[int(k)]


def _goals(out, rows, links, wls, methods, qemu_methods, budget):
    """The numbers docs/BENCHMARKS.md judges the goals by: success under three criteria,
    ferry's time and bytes against QEMU where both completed, the distribution of the guest's
    longest pause, and the post-copy cells."""
    if FERRY_POLICY not in methods:
        return []
    done = {r['id'] for r in rows if r['outcome'] == 'completed' and _verified(r)}
    after = {r['id']: _pause_after_setup(out, r) for r in rows}
    md = ['## Goals', '',
          'A run **completed** when the migration ended within the limit with memory verified. '
          'It **succeeded** when, in addition, the longest pause the guest saw was within the '
          '%d ms budget. Two more views of the same runs: the longest pause apart from the '
          'gap that starts at the migrate command (QEMU switching on dirty logging, paid by '
          'every method; a gap starting within %.2f s of the command), and QEMU\'s own '
          'downtime.' % (budget, SETUP_GAP_START_S), '',
          '| method | runs | completed | succeeded (guest pause) | succeeded apart from the '
          'setup pause | succeeded by QEMU downtime | guest pause p50 / p99 ms | apart from '
          'setup p50 / p99 ms | stalled p50 / p99 ms |',
          '|---|---:|---:|---:|---:|---:|---|---|---|']
    for m in methods:
        rs = [r for r in rows if r['method'] == m]
        comp = [r for r in rs if r['id'] in done]
        pauses = [_f(r['guest_max_pause_ms']) for r in comp if _f(r['guest_max_pause_ms'])]
        stalls = [_f(r['guest_stalled_ms']) for r in comp if _f(r['guest_stalled_ms']) is not None]
        rest = [after[r['id']] for r in comp if after[r['id']] is not None]

        def pp(vals):
            if not vals:
                return '-'
            return '%.0f / %.0f' % (_percentile(vals, 50), _percentile(vals, 99))
        md.append('| %s | %d | %d | %d | %d | %d | %s | %s | %s |' % (
            m, len(rs), len(comp), sum(_ok(r) for r in rs),
            sum(1 for r in comp if after[r['id']] is not None and after[r['id']] <= budget),
            sum(1 for r in comp if _f(r['downtime_ms']) is not None and
                _f(r['downtime_ms']) <= budget),
            pp(pauses), pp(rest), pp(stalls)))
    md += ['', 'Pause percentiles are over the completed runs of each method (nearest rank: '
           'with fewer than 100 runs p99 is the highest). They pool different cells, so they '
           'compare methods only where the methods completed the same cells. Apart from the '
           'setup pause, %.0f means no other gap was longer than that.' % LONG_GAP_MS, '']
    # Time and bytes where both completed in every repetition, whatever the pause.
    md += ['### ferry migrate against QEMU where both completed', '',
           'Medians over repetitions; only cells where both methods completed (within the '
           'limit, memory verified) in every repetition, whatever the pause. "Best" is the '
           'fastest QEMU method that did so in the cell.', '',
           '| link | workload | time / native | bytes / native | best QEMU method | time / best '
           '| bytes / best |', '|---|---|---:|---:|---|---:|---:|']
    slower, n_best, fast_vs_native = [], 0, []

    def all_done(link, wl, m):
        rs = [r for r in rows if r['link'] == link and r['workload'] == wl and r['method'] == m]
        return bool(rs) and all(r['id'] in done for r in rs)
    for link in links:
        for wl in wls:
            if not all_done(link, wl, FERRY_POLICY):
                continue
            fc = _cell(rows, link, wl, FERRY_POLICY)
            best, best_c = None, None
            for m in qemu_methods:
                c = _cell(rows, link, wl, m)
                if c and all_done(link, wl, m) and \
                        (best_c is None or c['total_s'] < best_c['total_s']):
                    best, best_c = m, c
            nat = _cell(rows, link, wl, 'native') if all_done(link, wl, 'native') else None

            def ratio(c, k):
                return '%.2f' % (fc[k] / c[k]) if c and c.get(k) else '-'
            if nat:
                fast_vs_native.append(fc['total_s'] / nat['total_s'])
            if best_c:
                n_best += 1
                if fc['total_s'] > best_c['total_s']:
                    slower.append('%s %s' % (link, wl))
            md.append('| %s | %s | %s | %s | %s | %s | %s |' % (
                link, wl, ratio(nat, 'total_s'), ratio(nat, 'link_mb'),
                best or 'none completed', ratio(best_c, 'total_s'), ratio(best_c, 'link_mb')))
    md += ['', 'ferry migrate slower than the best QEMU method in %d of %d such cells%s; time '
           'against native where both completed: %s.' % (
               len(slower), n_best, (' (%s)' % ', '.join(slower)) if slower else '',
               ', '.join('%.2f' % v for v in fast_vs_native) or 'no cell'), '']
    md += _postcopy_cells(out, rows, links, wls, budget, after)
    return md


def _postcopy_cells(out, rows, links, wls, budget, after):
    """Cells where QEMU's post-copy after a timeout switched: ferry migrate's pauses there and
    its stalled time against post-copy's, repetition by repetition."""
    md = ['### Post-copy cells', '',
          'Cells where `postcopy-timeout` switched to post-copy in every repetition. Per '
          'repetition: ferry migrate\'s longest pause (apart from the setup pause in brackets) '
          'and its stalled time over post-copy-after-a-timeout\'s in the same repetition.', '',
          '| link | workload | ferry migrate longest pause ms | ferry stalled / post-copy '
          'stalled |', '|---|---|---|---|']
    n = 0
    for link in links:
        for wl in wls:
            pc = {r['rep']: r for r in rows if r['link'] == link and r['workload'] == wl and
                  r['method'] == 'postcopy-timeout'}
            fm = {r['rep']: r for r in rows if r['link'] == link and r['workload'] == wl and
                  r['method'] == FERRY_POLICY}
            if not pc or not all(_f(r['postcopy_at_s']) is not None for r in pc.values()):
                continue
            pauses, stalls = [], []
            for rep in sorted(fm, key=int):
                r = fm[rep]
                p, a = _f(r['guest_max_pause_ms']), after.get(r['id'])
                pauses.append('-' if p is None else
                              ('%.0f' % p) + ('' if a is None else ' (%.0f)' % a))
                s, ps = _f(r['guest_stalled_ms']), _f(pc.get(rep, {}).get('guest_stalled_ms'))
                stalls.append('%.2f' % (s / ps) if s is not None and ps else '-')
            n += 1
            md.append('| %s | %s | %s | %s |' % (link, wl, ', '.join(pauses), ', '.join(stalls)))
    return md + [''] if n else []


def _miss_reason(out, r, budget):
    """Why a run that did not succeed missed: not completed, memory not verified, or the gap
    over the budget: the setup pause alone, else a later gap in post-copy or in pre-copy (the
    switchover or a pass's bitmap sync). None for a success; 'gaps not kept' when
    runs/<id>.json has no gaps."""
    if _ok(r):
        return None
    if r['outcome'] != 'completed':
        return 'not completed'
    gaps = _long_gaps(out, r)
    if gaps is None:
        return 'gaps not kept'
    later = [(start_s, ms) for start_s, ms in gaps if start_s >= SETUP_GAP_START_S]
    worst = max(later, key=lambda g: g[1], default=None)
    if worst is None or worst[1] <= budget:
        return 'setup pause only' if _verified(r) else 'memory not verified'
    pc = _f(r.get('postcopy_at_s'))
    return ('a gap in post-copy' if pc is not None and worst[0] >= pc - SETUP_GAP_START_S
            else 'a gap in pre-copy')


MISS_REASONS = ('not completed', 'memory not verified', 'setup pause only', 'a gap in post-copy',
                'a gap in pre-copy', 'gaps not kept')


def _misses(out, rows, wls, methods, budget):
    """Why runs missed the budget, per method, and the setup pause (the gap at the migrate
    command) per method and workload: min, median, max over the runs that had one."""
    md = ['### Why runs missed', '',
          'Runs that did not succeed, by the first reason that applies: not completed within '
          'the limit; the longest pause apart from the setup pause within the %d ms budget '
          '(so the setup pause alone was over it, or memory was not verified); else the '
          'longest later gap, in post-copy (it started after the switch) or in pre-copy (the '
          'switchover, or a pass\'s dirty-bitmap sync mid-migration). Where each gap was: '
          '`guest_long_gaps` in runs/<id>.json ([start s after the migrate command, ms]).' % budget, '',
          '| method | missed | ' + ' | '.join(MISS_REASONS) + ' |',
          '|---|---:|' + '---:|' * len(MISS_REASONS)]
    for m in methods:
        reasons = [_miss_reason(out, r, budget) for r in rows if r['method'] == m]
        reasons = [x for x in reasons if x]
        md.append('| %s | %d | %s |' % (m, len(reasons), ' | '.join(
            str(reasons.count(k)) for k in MISS_REASONS)))
    md += ['', '### The setup pause', '',
           'The gap between the guest\'s ticks that starts within %.2f s of the migrate '
           'command (QEMU switching on dirty logging), ms: min / median / max (runs).'
           % SETUP_GAP_START_S, '', '| workload | ' + ' | '.join(methods) + ' |',
           '|---|' + '---|' * len(methods)]
    for wl in wls:
        cells = []
        for m in methods:
            setup = []
            for r in rows:
                if r['workload'] != wl or r['method'] != m:
                    continue
                gaps = _long_gaps(out, r) or []
                at_start = [ms for start_s, ms in gaps if start_s < SETUP_GAP_START_S]
                if at_start:
                    setup.append(max(at_start))
            cells.append('%.0f / %.0f / %.0f (%d)' % (min(setup), _median(setup), max(setup),
                                                      len(setup)) if setup else '-')
        md.append('| %s | %s |' % (wl, ' | '.join(cells)))
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


def _plots(out, rows, links, wls, methods, succ, budget):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        return []
    os.makedirs(os.path.join(out, 'plots'), exist_ok=True)
    names = []
    for key, label, fname, log in (
            ('total_s', 'total migration time (s)', 'time.png', False),
            ('guest_max_pause_ms', 'longest pause the guest saw (ms, log scale)', 'pause.png',
             True),
            ('link_mb', 'bytes on the link (MB)', 'bytes.png', False)):
        # Each panel shows only the workloads run on its link, its width in proportion.
        link_wls = [[wl for wl in wls if any(r['link'] == link and r['workload'] == wl
                                             for r in rows)] or wls for link in links]
        slots = sum(len(w) + 1 for w in link_wls)
        fig, axes = plt.subplots(1, len(links), figsize=(max(0.7 * slots + 1.5, 9), 5.2),
                                 squeeze=False,
                                 gridspec_kw={'width_ratios': [len(w) + 1 for w in link_wls]})
        width = 0.8 / max(len(methods), 1)
        for ax, link, panel_wls in zip(axes[0], links, link_wls):
            for i, m in enumerate(methods):
                xs, ys, errs, hatches = [], [], [[], []], []
                for j, wl in enumerate(panel_wls):
                    c = _cell(rows, link, wl, m)
                    if c is None:
                        continue
                    v, rng = c[key], c[key + '_range']
                    done = bool(set(c['outcomes']) & set(DONE))
                    if not done:
                        if key == 'guest_max_pause_ms':
                            continue  # no migration to the destination: no pause of its own
                        # Drawn at the limit / bytes sent until cancelled.
                        rs = [r for r in rows if r['link'] == link and r['workload'] == wl and
                              r['method'] == m]
                        v, rng = _median(_f(r[key]) or _f(r['wall_s']) for r in rs), None
                    if v is None:
                        continue
                    xs.append(j + (i - (len(methods) - 1) / 2) * width)
                    ys.append(v)
                    errs[0].append(v - rng[0] if rng else 0)
                    errs[1].append(rng[1] - v if rng else 0)
                    hatches.append('//' if not done else ('' if c['ok'] == c['n'] else 'xx'))
                bars = ax.bar(xs, ys, width, label=m, color=_color(plt, m), yerr=errs,
                              error_kw={'elinewidth': 0.8, 'capsize': 1.5})
                for b, h in zip(bars, hatches):
                    b.set_hatch(h)
            if key == 'guest_max_pause_ms':
                ax.axhline(budget, color='red', linewidth=1, linestyle='--')
                ax.text(-0.5, budget, ' budget %d ms' % budget, color='red', fontsize=7,
                        ha='left', va='bottom')
            if log:
                ax.set_yscale('log')
                ax.set_ylim(bottom=10)
            ax.set_xticks(range(len(panel_wls)))
            ax.set_xticklabels(panel_wls, rotation=20, ha='right')
            ax.set_xlim(-0.6, len(panel_wls) - 0.4)
            ax.set_ylabel(label)
            ax.set_title('link %s' % link)
            ax.grid(axis='y', alpha=0.3)
        # Below the panels, so no bar hides behind it.
        # Made here, not from a panel: a method with no bar in the first panel has no colour.
        handles = [Patch(facecolor=_color(plt, m)) for m in methods]
        fig.legend(handles, methods, loc='lower center', ncol=len(methods), fontsize=8,
                   title='method; medians, min–max bars\nhatched //: did not complete (time to '
                   'the limit, bytes until cancelled); xx: completed, not every run a success',
                   title_fontsize=8)
        fig.tight_layout(rect=(0, 0.12, 1, 1))
        fig.savefig(os.path.join(out, 'plots', fname), dpi=90)
        plt.close(fig)
        names.append(fname)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ratios = [100.0 * succ[m][0] / succ[m][1] if succ[m][1] else 0 for m in methods]
    bars = ax.bar(range(len(methods)), ratios, color=[_color(plt, m) for m in methods])
    for b, m in zip(bars, methods):
        ax.text(b.get_x() + b.get_width() / 2, b.get_height() + 1, '%d/%d' % succ[m],
                ha='center', fontsize=8)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=20, ha='right')
    ax.set_ylabel('successful migrations (%)')
    ax.set_ylim(0, 110)
    ax.set_title('success ratio per method\n(completed within the limit, memory verified, '
                 'the guest\'s longest pause within the budget)', fontsize=8)
    ax.grid(axis='y', alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, 'plots', 'success.png'), dpi=90)
    plt.close(fig)
    names.append('success.png')
    return names


def _timeseries(out, rows, cell, methods):
    """One figure per method for the cell "link.workload": the link's rate and the guest's
    own rate through the migration of its first repetition, the switch to post-copy and the
    end marked. Returns the file names."""
    if not cell:
        return []
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    names = []
    for m in methods:
        rs = sorted((r for r in rows if '%s.%s' % (r['link'], r['workload']) == cell and
                     r['method'] == m), key=lambda r: int(r['rep']))
        if not rs:
            continue
        try:
            with open(os.path.join(out, 'runs', rs[0]['id'] + '.json')) as f:
                full = json.load(f)
        except (OSError, ValueError):
            continue
        ser = full.get('series')
        if not ser or not ser.get('t_s'):
            continue
        fig, ax = plt.subplots(figsize=(7.5, 3.4))
        ax.plot(ser['t_s'], ser['link_mbit_s'], color='grey', linewidth=1,
                label='link (Mbit/s, both ways)')
        ax.set_xlabel('seconds after the migrate command')
        ax.set_ylabel('link Mbit/s')
        ax2 = ax.twinx()
        gx = [t for t, v in zip(ser['t_s'], ser['guest_rate']) if v is not None]
        gy = [v for v in ser['guest_rate'] if v is not None]
        ax2.plot(gx, gy, color=_color(plt, m), linewidth=1.5,
                 label='guest (%s)' % full.get('tput_unit', ''))
        ax2.set_ylabel('guest %s' % full.get('tput_unit', ''))
        ax2.set_ylim(bottom=0)
        ax.set_ylim(bottom=0)
        if full.get('postcopy_at_s') is not None:
            ax.axvline(full['postcopy_at_s'], color='red', linestyle='--', linewidth=1)
            ax.text(full['postcopy_at_s'], ax.get_ylim()[1], ' post-copy', color='red',
                    fontsize=7, va='top')
        if full.get('total_s') is not None:
            ax.axvline(full['total_s'], color='black', linestyle=':', linewidth=1)
        ax.set_title('%s, %s rep %s: %s, %s s, longest guest pause %s ms' % (
            cell, m, full.get('rep'), full.get('outcome'), full.get('total_s'),
            full.get('guest_max_pause_ms')), fontsize=8)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc='upper right')
        fig.tight_layout()
        fname = 'series-%s.png' % m
        fig.savefig(os.path.join(out, 'plots', fname), dpi=90)
        plt.close(fig)
        names.append(fname)
    return names
