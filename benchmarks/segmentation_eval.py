"""Instance segmentation of every segmenter on held-out scenes, piles and packed apart.

    python benchmarks/segmentation_eval.py                 # test split, the final numbers
    python benchmarks/segmentation_eval.py --split val --out runs/segeval_val.json \
        --voting-grid                                     # choose settings (val only)

Scenes: `generate_scene(seed, --objects, layout, split)` for seeds
--first-seed.. (--scenes per layout), objects of the split only (the test meshes
are never seen in training). Each is rendered from the simulated cell's camera
(config/sim_cell.yaml) with the cell's full depth noise, then depth-scale tared
against the table plane known from the cell's extrinsics, as the camera node
does. Every segmenter sees the same frames; metrics are defined in
zerograsp_ros/perception/segmentation_metrics.py. Times: wall and process CPU
seconds per 640x480 frame with one thread everywhere (OMP_NUM_THREADS=1,
torch.set_num_threads(1)); on a shared machine the CPU time is the one-core figure.

Writes benchmarks/results/segmentation_eval.json and .png (a few scenes: colour,
ground truth, each segmenter). `--voting-grid` (val split only) also scores the
learned segmenter's clustering settings on the same network outputs.
"""
from __future__ import annotations

import os

os.environ.setdefault('OMP_NUM_THREADS', '1')   # before numpy/torch/open3d load: one core

import argparse  # noqa: E402
import datetime  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerograsp_ros.data.segmentation_views import render_cell_view  # noqa: E402
from zerograsp_ros.errors import InputError  # noqa: E402
from zerograsp_ros.perception.segmentation_metrics import (  # noqa: E402
    SegmentationCounts,
    frame_counts,
)

LAYOUTS = ('pile', 'packed')
FIGURE_SCENES = 4


def cached_cell_view(cache: str, seed: int, layout: str, split: str, objects: int):
    """render_cell_view, kept in `cache` (a directory, '' = none) for the next run."""
    from zerograsp_ros.geometry.camera import CameraIntrinsics
    from zerograsp_ros.geometry.rgbd import RGBDFrame

    path = Path(cache) / f'{split}_{layout}_{objects}obj_seed{seed}.npz' if cache else None
    if path is not None and path.is_file():
        d = np.load(path)
        intr = CameraIntrinsics.from_matrix(d['K'], *d['size'])
        return RGBDFrame(rgb=d['rgb'], depth=d['depth'], intrinsics=intr,
                         labels=d['labels']), float(d['scale'])
    frame, scale = render_cell_view(seed, layout, split, objects)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, rgb=frame.rgb, depth=frame.depth, labels=frame.labels,
                            K=frame.intrinsics.K, scale=scale,
                            size=[frame.intrinsics.width, frame.intrinsics.height])
    return frame, scale


def timed(fn, *args):
    t, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t, time.process_time() - c


def time_summary(wall: list[float], cpu: list[float]) -> dict:
    return {'wall_median_s': round(statistics.median(wall), 4),
            'wall_p90_s': round(float(np.percentile(wall, 90)), 4),
            'cpu_median_s': round(statistics.median(cpu), 4),
            'cpu_p90_s': round(float(np.percentile(cpu, 90)), 4)}


def voting_grid() -> list[dict]:
    grid = {'foreground_threshold': (0.4, 0.5, 0.6), 'min_density': (2.0, 3.0, 5.0, 8.0),
            'min_pixels': (25, 40)}
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def make_figure(path: Path, shown: list, names: list[str]) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    cols = 2 + len(names)
    fig, axes = plt.subplots(len(shown), cols, figsize=(3.2 * cols, 2.5 * len(shown)),
                             squeeze=False)
    palette = np.random.default_rng(3).uniform(0.15, 1.0, size=(256, 3))
    palette[0] = 0.0

    def paint(labels):
        return palette[np.asarray(labels) % 256]

    for row, (title, frame, preds, recalls) in zip(axes, shown):
        row[0].imshow(frame.rgb)
        row[0].set_title(title, fontsize=8)
        row[1].imshow(paint(frame.labels))
        row[1].set_title(f'ground truth ({len(np.unique(frame.labels)) - 1} objects)',
                         fontsize=8)
        for ax, name in zip(row[2:], names):
            ax.imshow(paint(preds[name]))
            ax.set_title(f'{name}: {len(np.unique(preds[name])) - 1} segments, '
                         f'recall {recalls[name]:.2f}', fontsize=8)
        for ax in row:
            ax.axis('off')
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> None:
    import torch
    from tqdm import tqdm

    from zerograsp_ros.perception.learned_segmentation import VotingConfig, cluster_votes
    from zerograsp_ros.perception.segmentation import make_segmenter

    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--split', default='test', choices=('val', 'test'))
    ap.add_argument('--scenes', type=int, default=20, help='scenes per layout')
    ap.add_argument('--first-seed', type=int, default=0)
    ap.add_argument('--objects', type=int, default=5)
    ap.add_argument('--segmenters', nargs='+', default=['tabletop', 'learned'])
    ap.add_argument('--checkpoint', default='', help="learned: '' = checkpoints/segnet.pt")
    ap.add_argument('--frame-cache', default='',
                    help='directory keeping rendered frames between runs (never committed)')
    ap.add_argument('--frames-only', action='store_true', help='only render (fill the cache)')
    ap.add_argument('--voting-grid', action='store_true',
                    help='score clustering settings of the learned segmenter (val split only)')
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' /
                                         'segmentation_eval.json'))
    args = ap.parse_args(argv)
    if args.voting_grid and args.split != 'val':
        raise SystemExit('--voting-grid chooses settings: run it on the val split only')
    torch.set_num_threads(1)
    segmenters = {}
    for name in args.segmenters:
        params = {'checkpoint': args.checkpoint} if name == 'learned' and args.checkpoint else {}
        segmenters[name] = make_segmenter(name, **params)
    counts = {n: {lay: SegmentationCounts() for lay in LAYOUTS} for n in segmenters}
    times = {n: ([], []) for n in segmenters}
    grid = voting_grid() if args.voting_grid else []
    grid_counts = [{lay: SegmentationCounts() for lay in LAYOUTS} for _ in grid]
    shown, scales, load_start = [], [], os.getloadavg()
    jobs = [(lay, s) for lay in LAYOUTS
            for s in range(args.first_seed, args.first_seed + args.scenes)]
    for layout, seed in tqdm(jobs, desc=f'{args.split} scenes'):
        frame, scale = cached_cell_view(args.frame_cache, seed, layout, args.split, args.objects)
        if args.frames_only:
            continue
        scales.append(scale)
        preds, recalls = {}, {}
        for name, seg in segmenters.items():
            try:
                out, wall, cpu = timed(seg.segment, frame)
                labels = out.labels
            except InputError as exc:   # counted as finding nothing, and said so
                tqdm.write(f'{name} on {layout} seed {seed}: {exc}')
                labels, wall, cpu = np.zeros_like(frame.labels), float('nan'), float('nan')
            if np.isfinite(wall):
                times[name][0].append(wall)
                times[name][1].append(cpu)
            c = frame_counts(frame.labels, labels)
            counts[name][layout].add(c)
            preds[name] = labels
            recalls[name] = c.matched_objects / max(c.objects, 1)
        if grid:
            learned = segmenters['learned']
            from zerograsp_ros.perception.learned_segmentation import reduce_frame
            view = reduce_frame(frame, learned.tabletop)
            prob, offsets = learned.predict_maps(view)
            for params, gc in zip(grid, grid_counts):
                cfg = VotingConfig(**params)
                small, _ = cluster_votes(prob > cfg.foreground_threshold, offsets, prob, cfg)
                s = view.stride
                full = np.repeat(np.repeat(small, s, 0), s, 1)[:frame.labels.shape[0],
                                                              :frame.labels.shape[1]]
                gc[layout].add(frame_counts(frame.labels, full))
        already = sum(t.startswith(layout) for t, *_ in shown)
        if already < (FIGURE_SCENES - 1 if layout == 'pile' else 1):
            shown.append((f'{layout}, seed {seed} ({args.split} split)', frame, preds, recalls))
    if args.frames_only:
        print(f'{len(jobs)} frames in {args.frame_cache}')
        return
    results = {}
    for name in segmenters:
        both = SegmentationCounts()
        for lay in LAYOUTS:
            both.add(counts[name][lay])
        results[name] = {'all': both.summary(),
                         **{lay: counts[name][lay].summary() for lay in LAYOUTS},
                         'seconds_per_frame': time_summary(*times[name])
                         if times[name][0] else None}
        print(f"{name:9s} recall {results[name]['all']['object_recall_iou50']} "
              f"(pile {results[name]['pile']['object_recall_iou50']}, packed "
              f"{results[name]['packed']['object_recall_iou50']}) precision "
              f"{results[name]['all']['precision']} under {both.under_segmented} over "
              f"{both.over_segmented}; {results[name]['seconds_per_frame']}")
    report = {
        'benchmark': 'segmentation_eval',
        'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                    'cpu_count': os.cpu_count(), 'load_average_at_start': load_start,
                    'load_average_at_end': os.getloadavg()},
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': 'python ' + ' '.join([sys.argv[0]] + (argv if argv is not None
                                                         else sys.argv[1:])),
        'scenes': {'split': args.split, 'per_layout': args.scenes, 'objects': args.objects,
                   'seeds': [args.first_seed, args.first_seed + args.scenes - 1],
                   'camera': 'sim cell camera (config/sim_cell.yaml), 640x480, full depth '
                             'noise, depth-scale tared against the known table',
                   'tare_scale_range': [round(min(scales), 4), round(max(scales), 4)]},
        'definitions': 'zerograsp_ros/perception/segmentation_metrics.py (visible object: '
                       '>= 50 labelled pixels; IoU over all pixels of the frame)',
        'threads': 1,
        'segmenters': results,
    }
    if 'learned' in segmenters:
        learned = segmenters['learned']
        report['learned_checkpoint'] = {'path': os.path.relpath(learned.checkpoint, ROOT),
                                        'voting': vars(learned.config),
                                        'training': learned.extra}
    if grid:
        rows = []
        for params, gc in zip(grid, grid_counts):
            both = SegmentationCounts().add(gc['pile']).add(gc['packed'])
            rows.append({**params, 'recall': both.summary()['object_recall_iou50'],
                         'pile': gc['pile'].summary()['object_recall_iou50'],
                         'packed': gc['packed'].summary()['object_recall_iou50'],
                         'precision': both.summary()['precision']})
        rows.sort(key=lambda r: (-(r['recall'] or 0), -(r['precision'] or 0)))
        report['voting_grid'] = rows
        for r in rows[:5]:
            print('grid', r)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + '\n')
    make_figure(out.with_suffix('.png'), shown, list(segmenters))
    print(f'wrote {out} and {out.with_suffix(".png")}')


if __name__ == '__main__':
    main()
