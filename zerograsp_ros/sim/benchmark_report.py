"""Clutter-removal results: rates with Wilson intervals, paired McNemar tests, table, plot.

Works on the round dicts written by `zerograsp_ros.sim.benchmark.run_round`.
"""
from __future__ import annotations

from dataclasses import asdict
import math
from pathlib import Path

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (0, 1 when n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b and c."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def summarise(rounds: list[dict]) -> dict:
    att = [a for r in rounds for a in r['attempts']]
    n, k = len(att), sum(a['success'] for a in att)
    presented = sum(r['presented'] for r in rounds)
    times = np.array([a['planning_s'] for a in att]) if att else np.zeros(0)
    reasons: dict[str, int] = {}
    for a in att:
        if not a['success']:
            reasons[a['reason']] = reasons.get(a['reason'], 0) + 1
    per_round_dr = [r['successes'] / r['presented'] for r in rounds if r['presented']]
    scales = [a['tare_scale'] for a in att if a.get('tare_scale') is not None]
    return {
        'rounds': len(rounds), 'attempts': n, 'successes': k, 'objects_presented': presented,
        'gsr': k / n if n else 0.0, 'gsr_ci95': list(wilson_interval(k, n)),
        'dr': k / presented if presented else 0.0,
        'dr_ci95': list(wilson_interval(k, presented)),
        'dr_round_mean': float(np.mean(per_round_dr)) if per_round_dr else 0.0,
        'dr_round_std': float(np.std(per_round_dr)) if per_round_dr else 0.0,
        'planning_s_mean': float(times.mean()) if n else None,
        'planning_s_median': float(np.median(times)) if n else None,
        'planning_s_p95': float(np.percentile(times, 95)) if n else None,
        'failure_reasons': reasons,
        'round_ends': {e: sum(r['end'] == e for r in rounds) for e in {r['end'] for r in rounds}},
        'tare_correction_pct_mean_abs': (float(100 * np.mean(np.abs(np.subtract(scales, 1))))
                                         if scales else None),
        'tare_refusals': int(sum(r.get('tare_refusals', 0) for r in rounds)),
    }


def paired_first_attempts(per_method_rounds: dict[str, list[dict]]) -> list[dict]:
    """Exact McNemar comparison of every method pair on the first attempt of shared scenes."""
    first = {}
    for m, rounds in per_method_rounds.items():
        first[m] = {(r['layout'], r['scene_seed']): (bool(r['attempts'][0]['success'])
                                                    if r['attempts'] else False)
                    for r in rounds}
    out = []
    methods = list(first)
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            keys = sorted(set(first[a]) & set(first[b]))
            both = sum(first[a][k] and first[b][k] for k in keys)
            a_only = sum(first[a][k] and not first[b][k] for k in keys)
            b_only = sum(first[b][k] and not first[a][k] for k in keys)
            out.append({'a': a, 'b': b, 'scenes': len(keys), 'both': both, 'a_only': a_only,
                        'b_only': b_only, 'neither': len(keys) - both - a_only - b_only,
                        'mcnemar_p': mcnemar_exact(a_only, b_only)})
    return out


def results_dict(run) -> dict:
    """Summary per method and layout, paired tests and every round of a BenchmarkRun."""
    from zerograsp_ros.sim.benchmark import METHOD_LABELS
    out = {'config': asdict(run.config), 'methods': {}, 'skipped': run.skipped,
           'checkpoint': run.checkpoint, 'round_cache_key': run.cache_key,
           'code_version': run.cache_components.get('code_version', ''),
           'unfinished_rounds': run.unfinished}
    for m, rounds in run.rounds.items():
        entry = {'label': METHOD_LABELS[m], 'all': summarise(rounds),
                 'wall_s_per_round': float(np.mean([r.get('wall_s', np.nan) for r in rounds]))}
        for layout in run.config.layouts:
            entry[layout] = summarise([r for r in rounds if r['layout'] == layout])
        out['methods'][m] = entry
    out['paired_first_attempts'] = paired_first_attempts(run.rounds)
    out['rounds'] = run.rounds
    return out


def markdown_table(results: dict) -> str:
    rows = ['| Method | Layout | GSR % [95 % CI] | DR % [95 % CI] | attempts | '
            'planning ms (median) |', '|---|---|---|---|---|---|']
    for e in results['methods'].values():
        for layout in list(results['config']['layouts']) + ['all']:
            s = e[layout]
            ms = '-' if s['planning_s_median'] is None else f"{1000 * s['planning_s_median']:.0f}"
            rows.append(f"| {e['label']} | {layout} | {100 * s['gsr']:.1f} "
                        f"[{100 * s['gsr_ci95'][0]:.0f}, {100 * s['gsr_ci95'][1]:.0f}] | "
                        f"{100 * s['dr']:.1f} [{100 * s['dr_ci95'][0]:.0f}, "
                        f"{100 * s['dr_ci95'][1]:.0f}] | {s['attempts']} | {ms} |")
    from zerograsp_ros.sim.benchmark import METHOD_LABELS
    for m, why in results.get('skipped', {}).items():
        rows.append(f'| {METHOD_LABELS[m]} | - | {why} | | | |')
    return '\n'.join(rows) + '\n'


def plot_results(results: dict, path: str | Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    methods = list(results['methods'])
    layouts = list(results['config']['layouts'])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    width = 0.8 / max(len(layouts), 1)
    for ax, metric in zip(axes, ('gsr', 'dr')):
        for j, layout in enumerate(layouts):
            vals = [results['methods'][m][layout][metric] * 100 for m in methods]
            lo = [results['methods'][m][layout][f'{metric}_ci95'][0] * 100 for m in methods]
            hi = [results['methods'][m][layout][f'{metric}_ci95'][1] * 100 for m in methods]
            x = np.arange(len(methods)) + (j - (len(layouts) - 1) / 2) * width
            err = np.array([np.subtract(vals, lo), np.subtract(hi, vals)])
            ax.bar(x, vals, width, yerr=err, capsize=3, label=layout)
        ax.set_xticks(np.arange(len(methods)))
        ax.set_xticklabels(methods, rotation=25, ha='right', fontsize=8)
        ax.set_title({'gsr': 'Grasp success rate', 'dr': 'Declutter rate'}[metric])
        ax.set_ylim(0, 100)
        ax.grid(axis='y', alpha=0.3)
    axes[0].set_ylabel('% (95 % Wilson interval)')
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
