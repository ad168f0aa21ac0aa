"""CPU latency and peak memory of the ZeroGrasp network, split by stage.

    python benchmarks/model_latency.py                 # default, about 3-5 min on 2 cores
    python benchmarks/model_latency.py --reps 3 --threads 2 --no-paper

Scenes: analytic box scenes (zerograsp_ros.model.synthetic) on a 640x480 D435-like
frame with 1, 5 and 10 objects. Wall time (median, p95) is what a caller waits on
this shared machine; `cpu_median_s` (process CPU time, one thread) is close to the
wall time on an idle core and is the steadier figure while other jobs run.
Weights are random (no trained checkpoint is needed for timing), so two decoding
modes are measured:
  gt_occupancy  the decoder follows the ground-truth octree's occupancy: the octree
                size of a well-trained model (the representative figure);
  predicted     the untrained model's own occupancy, bounded by the split cap
                (a worst case).
Also: the `cpu` preset's training step (forward + backward, 5 objects) that chose
the preset, and the `paper` preset (2.5 mm leaves, published widths) on one 5-object
scene in gt_occupancy mode. Every configuration runs in a fresh process, so peak
memory (ru_maxrss) is its own. Writes benchmarks/results/model_latency.json and .png.
"""
from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
from pathlib import Path
import platform
import resource
import statistics
import sys
import time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAGES = ('octree', 'image_encoder', 'encoder', 'occlusion', 'transformer', 'decoder',
          'grasp_decoding', 'meshing')


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _percentile(xs, q):
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def _run_case(case: dict, queue) -> None:
    """One configuration in its own process (peak memory is per case)."""
    import torch

    torch.set_num_threads(case['threads'])
    from zerograsp_ros.model.config import preset
    from zerograsp_ros.model.inference import ZeroGraspPredictor
    from zerograsp_ros.model.network import (
        ZeroGraspNet,
        ground_truth_octree,
        observe_samples,
        training_step,
    )
    from zerograsp_ros.model.synthetic import table_sample

    torch.manual_seed(0)
    cfg = preset(case['preset'])
    model = ZeroGraspNet(cfg)
    sample = table_sample(case['objects'], seed=case['objects'])
    base_rss = _rss_mb()
    result = {**case, 'parameters': sum(p.numel() for p in model.parameters())}
    if case['mode'] == 'train_step':
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        totals, cpu = [], []
        for step in range(case['reps'] + 1):
            t, c = time.perf_counter(), time.process_time()
            loss, _ = training_step(model, [sample], step, 'cpu')
            opt.zero_grad()
            loss.backward()
            opt.step()
            totals.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        totals, cpu = totals[1:], cpu[1:]   # first step warms caches
        result['stages'] = {}
    else:
        predictor = ZeroGraspPredictor(model, cfg, device='cpu')
        guide = None
        if case['mode'] == 'gt_occupancy':
            scenes = observe_samples([sample], cfg)
            guide = ground_truth_octree([sample], scenes, cfg, 'cpu')[0]
        totals, cpu, per_stage = [], [], {s: [] for s in STAGES}
        for rep in range(case['reps'] + 1):
            t, c = time.perf_counter(), time.process_time()
            pred = predictor.predict(sample.frame, occupancy_guide=guide)
            total, cpu_s = time.perf_counter() - t, time.process_time() - c
            if rep == 0:
                continue
            totals.append(total)
            cpu.append(cpu_s)
            for s in STAGES:
                per_stage[s].append(pred.timings.get(s, 0.0))
        result['stages'] = {s: statistics.median(v) for s, v in per_stage.items()}
        result['leaves'] = int(sum(len(o.points) for o in pred.objects))
        result['grasps'] = len(pred.grasps)
    result['median_s'] = statistics.median(totals)
    result['p95_s'] = _percentile(totals, 0.95)
    result['runs_s'] = [round(x, 4) for x in totals]
    # process CPU time: with one thread, about the wall time on an idle core
    result['cpu_median_s'] = statistics.median(cpu)
    result['peak_rss_mb'] = _rss_mb()
    result['peak_rss_above_model_mb'] = _rss_mb() - base_rss
    queue.put(result)


def run_case(case: dict) -> dict:
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    proc = ctx.Process(target=_run_case, args=(case, queue))
    proc.start()
    while True:   # poll, so a child that dies (error, out of memory) cannot hang the run
        try:
            result = queue.get(timeout=2.0)
            break
        except Exception:
            if not proc.is_alive():
                raise RuntimeError(f'benchmark case {case} died with exit code '
                                   f'{proc.exitcode}') from None
    proc.join()
    return result


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rows = [r for r in results if r['mode'] in ('gt_occupancy', 'predicted')]
    labels = [f"{r['preset']}\n{r['objects']} obj\n{r['mode'].replace('_', ' ')}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4.5))
    bottom = [0.0] * len(rows)
    for stage in STAGES:
        # stage shares of the wall time, scaled to the CPU time: on a shared machine the
        # wall time mostly measures waiting for a core
        vals = [r['stages'].get(stage, 0.0) / r['median_s'] * r['cpu_median_s'] for r in rows]
        ax.bar(range(len(rows)), vals, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel('median CPU seconds per frame (1 thread)')
    ax.set_title('ZeroGrasp inference latency by stage, 640x480 box scenes')
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--reps', type=int, default=7, help='timed repetitions per case')
    ap.add_argument('--threads', type=int, default=1,
                    help='torch intra-op threads (1: on a shared 2-core machine OpenMP with 2 '
                         'threads spins against other jobs and runs 2-5x slower)')
    ap.add_argument('--objects', type=int, nargs='+', default=[1, 5, 10])
    ap.add_argument('--no-paper', action='store_true', help='skip the paper preset case')
    ap.add_argument('--out', type=Path, default=ROOT / 'benchmarks' / 'results')
    ap.add_argument('--plot-only', action='store_true',
                    help='redraw the PNG from an existing model_latency.json')
    args = ap.parse_args(argv)
    from tqdm import tqdm

    if args.plot_only:
        saved = json.loads((args.out / 'model_latency.json').read_text())
        plot(saved['results'], args.out / 'model_latency.png')
        return 0

    cases = [dict(preset='cpu', objects=n, mode=m, reps=args.reps, threads=args.threads)
             for m in ('gt_occupancy', 'predicted') for n in args.objects]
    cases.append(dict(preset='cpu', objects=5, mode='train_step', reps=args.reps,
                      threads=args.threads))
    if not args.no_paper:
        cases.append(dict(preset='paper', objects=5, mode='gt_occupancy',
                          reps=max(2, args.reps // 3), threads=args.threads))
    results = []
    for case in tqdm(cases, desc='model latency cases'):
        results.append(run_case(case))
        r = results[-1]
        tqdm.write(f"{r['preset']:5s} {r['objects']:2d} obj {r['mode']:12s} median "
                   f"{r['median_s']:.3f} s p95 {r['p95_s']:.3f} s cpu {r['cpu_median_s']:.3f} s "
                   f"peak {r['peak_rss_mb']:.0f} MB")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        'benchmark': 'model_latency',
        'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                    'cpu_count': os.cpu_count(), 'load_average_at_start': os.getloadavg()},
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': 'python ' + ' '.join([sys.argv[0]] + (argv if argv is not None
                                                         else sys.argv[1:])),
        'threads': args.threads,
        'frame': '640x480, D435-like intrinsics, analytic boxes 5-9 cm at 0.5-0.7 m',
        'weights': 'random init (timing only)',
        'results': results,
    }
    (args.out / 'model_latency.json').write_text(json.dumps(report, indent=2))
    plot(results, args.out / 'model_latency.png')
    print(f"wrote {args.out / 'model_latency.json'}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
