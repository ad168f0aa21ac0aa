"""Clutter-removal benchmark (VGN/GIGA protocol) in the simulated cell; one command.

    python benchmarks/clutter_removal.py            # default: 10 rounds/layout
    python benchmarks/clutter_removal.py --rounds 50 --zerograsp-rounds 50
    python benchmarks/clutter_removal.py --methods random,highest_point --rounds 20
    python benchmarks/clutter_removal.py --no-depth-tare \
        --out benchmarks/results/clutter_removal_no_tare      # the tare's effect
    python benchmarks/clutter_removal.py --no-depth-noise --methods oracle,zerograsp_full \
        --out benchmarks/results/clutter_removal_no_noise     # how much is the sensor

Writes benchmarks/results/clutter_removal.json (+ .md table, + .png plot with 95 %
Wilson intervals). Rounds already run with the same objects, code, configs and
checkpoint are reused from <out>.partial.json (delete it to start afresh).
Protocol and what each method is given: zerograsp_ros/sim/benchmark.py.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
import platform
import sys
import time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerograsp_ros.sim import benchmark as bm  # noqa: E402


def _segmenter_kind() -> str:
    try:
        return bm.node_default_segmenter().kind
    except Exception as exc:  # informative only
        return f'unavailable: {exc}'


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--methods', default=','.join(bm.METHODS),
                    help=f'comma-separated subset of {",".join(bm.METHODS)}')
    ap.add_argument('--rounds', type=int, default=bm.BenchmarkConfig.rounds,
                    help='rounds per layout (each round = one fresh 5-object scene)')
    ap.add_argument('--zerograsp-rounds', type=int,
                    default=bm.BenchmarkConfig.zerograsp_rounds,
                    help='rounds per layout for the ZeroGrasp methods (at most --rounds; '
                         'they are paired with the baselines on those first scenes)')
    ap.add_argument('--grasps-per-object', type=int,
                    default=bm.BenchmarkConfig.grasps_per_object,
                    help='ZeroGrasp grasps decoded per object before refinement')
    ap.add_argument('--layouts', default='pile,packed')
    ap.add_argument('--objects', type=int, default=5)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--checkpoint', default=str(ROOT / 'checkpoints' / 'zerograsp_cpu.pt'))
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'clutter_removal'),
                    help='output path without extension (.json, .md, .png are written)')
    ap.add_argument('--no-depth-tare', action='store_true',
                    help='do not correct the depth scale against the known table (ablation)')
    ap.add_argument('--no-depth-noise', action='store_true',
                    help='render depth without noise (diagnostic: how much is the sensor)')
    ap.add_argument('--note', default='', help='free text stored in the results (run context)')
    ap.add_argument('--no-resume', action='store_true')
    ap.add_argument('--merge-partials', default='',
                    help='comma-separated partial files of parallel shards to read rounds from')
    ap.add_argument('--stop-at', default='',
                    help='UTC time HH:MM after which no new round starts (results then cover '
                         'the rounds finished, noted in the output)')
    ap.add_argument('--only-cached', action='store_true',
                    help='run no round: summarise the rounds already cached')
    ap.add_argument('--quiet', action='store_true', help='no progress bar')
    args = ap.parse_args(argv)
    methods = tuple(m.strip() for m in args.methods.split(',') if m.strip())
    cfg = bm.BenchmarkConfig(methods=methods, layouts=tuple(args.layouts.split(',')),
                             rounds=args.rounds, num_objects=args.objects, seed=args.seed,
                             checkpoint=args.checkpoint,
                             zerograsp_rounds=min(args.zerograsp_rounds, args.rounds),
                             grasps_per_object=args.grasps_per_object,
                             depth_tare=not args.no_depth_tare,
                             depth_noise=not args.no_depth_noise)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + '.partial.json')
    if args.no_resume and partial.exists():
        partial.unlink()
    start = time.time()
    deadline = None
    if args.stop_at:
        now = datetime.datetime.now(datetime.timezone.utc)
        hh, mm = (int(x) for x in args.stop_at.split(':'))
        stop = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        deadline = (stop if stop > now else stop + datetime.timedelta(days=1)).timestamp()
    merge = [Path(p) for p in args.merge_partials.split(',') if p.strip()]
    run = bm.run_benchmark(cfg, partial_path=partial, progress=not args.quiet,
                           merge_partials=merge, deadline=deadline,
                           only_cached=args.only_cached)
    results = bm.results_dict(run)
    results.update({
        'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                    'cpu_count': os.cpu_count(), 'python': platform.python_version()},
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': 'python ' + ' '.join([Path(sys.argv[0]).as_posix()] + (argv or sys.argv[1:])),
        'wall_time_s': round(time.time() - start, 1),
        # Sum of the per-round wall times of the default size (rounds < default, all
        # methods run here), i.e. what `python benchmarks/clutter_removal.py` costs.
        'default_size_wall_s_estimate': round(sum(
            r.get('wall_s', 0.0) for m, rounds in run.rounds.items() for r in rounds
            if r['scene_seed'] - 1000 * cfg.seed < (
                bm.BenchmarkConfig.zerograsp_rounds if m in bm.ZEROGRASP_METHODS
                else bm.BenchmarkConfig.rounds)), 1),
        'notes': ('Simulated cell (pybullet); held-out test objects; every method gets the '
                  'frame after the depth-scale tare (unless depth_tare is false) and the '
                  'table plane from the known extrinsics; zerograsp_pipeline segments with '
                  'the nodes\' default segmenter (no ground truth), the other ZeroGrasp rows '
                  'use the rendered ground-truth instance labels; oracle plans on the true '
                  'meshes. Not comparable to the GIGA paper figures (different objects and '
                  'simulator).'),
        'segmenter': _segmenter_kind() if 'zerograsp_pipeline' in methods else None,
        'run_note': args.note,
    })
    out.with_suffix('.json').write_text(json.dumps(results, indent=1))
    table = bm.markdown_table(results)
    out.with_suffix('.md').write_text(table)
    if results['methods']:
        bm.plot_results(results, out.with_suffix('.png'))
    print(table)
    for pair in results['paired_first_attempts']:
        print(f"first attempts {pair['a']} vs {pair['b']}: {pair['scenes']} scenes, "
              f"{pair['a_only']} vs {pair['b_only']} discordant, "
              f"McNemar p={pair['mcnemar_p']:.3f}")
    for m, why in results['skipped'].items():
        print(f'{m}: {why}')
    for m, n in results['unfinished_rounds'].items():
        print(f'{m}: {n} rounds not run (stopped early / not cached)')
    print(f"wrote {out.with_suffix('.json')} in {results['wall_time_s']} s")
    return 0


if __name__ == '__main__':
    sys.exit(main())
