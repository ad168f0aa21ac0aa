"""Pick-sequence benchmark on the simulated cell: does the execution stack lift objects?

    python benchmarks/pick_execution.py                  # 15 seeded pile scenes, 2 grasp sources
    python benchmarks/pick_execution.py --seeds 40 --methods highest_point

For each seeded scene and grasp source (the sim's model-free baselines on the rendered
view; object ids from the rendered instance labels), the full pick sequence of
zerograsp_ros.execution.pick runs in-process on the SimCell (reachability-checked
pre-grasp, open to width + margin, straight approach, close, lift 10 cm, re-check the
hold) and is compared, on the same scene and the same grasps, with the VGN-style trial
of SimCell.execute_grasp on the best grasp (gripper spawned at the pre-grasp, no arm).
Writes benchmarks/results/pick_execution.json and .png (success with 95 % Wilson
intervals; time per stage).
"""
from __future__ import annotations

import argparse
from collections import Counter
import datetime
import json
import os
from pathlib import Path
import platform
import sys
import time

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerograsp_ros.execution.backends import CollisionBox  # noqa: E402
from zerograsp_ros.execution.pick import (  # noqa: E402
    PickConfig,
    PickSequence,
    PickTarget,
    ReconstructedObject,
)
from zerograsp_ros.execution.robot import load_robot_preset  # noqa: E402
from zerograsp_ros.execution.sim_backend import SimCellApiBackend  # noqa: E402

METHODS = ('highest_point', 'antipodal')
# The execution node's default table (config/execution.yaml): top at z = 0 of the base.
TABLE = CollisionBox('table', np.array([0.80, 1.20, 0.04]),
                     np.array([[1, 0, 0, 0.55], [0, 1, 0, 0], [0, 0, 1, -0.02], [0, 0, 0, 1.0]]))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def grasp_target(cell, method: str, seed: int) -> tuple[PickTarget, float]:
    from scipy.spatial import cKDTree

    from zerograsp_ros.geometry.camera import unproject
    from zerograsp_ros.sim import baselines
    frame = cell.capture()
    start = time.perf_counter()
    if method == 'highest_point':
        grasps = baselines.highest_point_grasps(frame)
    else:
        grasps = baselines.antipodal_grasps(frame, rng=np.random.default_rng(seed))
    seconds = time.perf_counter() - start
    pts, pix = unproject(frame.depth, frame.intrinsics, mask=frame.labels > 0,
                         return_pixels=True)
    labels = frame.labels[pix[:, 0], pix[:, 1]]
    if len(grasps):
        grasps.object_ids = labels[cKDTree(pts).query(grasps.translations)[1]].astype(np.int32)
    objects = [ReconstructedObject(int(i), None, None, pts[labels == i])
               for i in np.unique(labels) if (labels == i).sum() >= 4]
    return PickTarget(grasps, frame.frame_id, objects), seconds


def main(argv=None) -> int:
    from tqdm import tqdm

    from zerograsp_ros.sim.cell import SimCell
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--seeds', type=int, default=15)
    ap.add_argument('--first-seed', type=int, default=100)
    ap.add_argument('--methods', default=','.join(METHODS))
    ap.add_argument('--layout', default='pile')
    ap.add_argument('--robot', default='panda')
    ap.add_argument('--no-scene-check', action='store_true',
                    help="sim backend: skip the planning-scene collision check")
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'pick_execution'))
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(',') if m]
    robot = load_robot_preset(args.robot)
    cell = SimCell()
    rows = []
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    started = time.time()
    load_start = round(os.getloadavg()[0], 2)
    for method in methods:
        for seed in tqdm(seeds, desc=method):
            cell.reset(seed=seed, layout=args.layout)
            target, grasp_s = grasp_target(cell, method, seed)
            if len(target.grasps) == 0:
                rows.append({'method': method, 'seed': seed, 'grasps': 0, 'pick': False,
                             'failed_stage': 'perception', 'vgn': False})
                continue
            t0 = time.perf_counter()
            backend = SimCellApiBackend(cell, check_collisions=not args.no_scene_check)
            result = PickSequence(backend, robot, PickConfig(), TABLE).run(target)
            pick_s = time.perf_counter() - t0
            stage_s = Counter()
            for s in result.stages:
                stage_s[s.stage] += s.seconds
            # Paired VGN trial: same scene, the best grasp (the sequence's first candidate).
            cell.reset(seed=seed, layout=args.layout)
            best = target.grasps.sorted_by_score().subset([0]).transformed(cell.T_world_camera)
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = best.rotations[0], best.translations[0]
            vgn = cell.execute_grasp(T, width=float(best.widths[0]), depth=float(best.depths[0]))
            rows.append({'method': method, 'seed': seed, 'grasps': len(target.grasps),
                         'pick': bool(result.success), 'failed_stage': result.failed_stage,
                         'candidates_tried': result.candidates_tried,
                         'grasp_seconds': round(grasp_s, 3), 'pick_seconds': round(pick_s, 3),
                         'stage_seconds': {k: round(v, 3) for k, v in stage_s.items()},
                         'vgn': bool(vgn.success), 'vgn_reason': vgn.reason})
    cell.close()

    summary = {}
    for method in methods:
        mine = [r for r in rows if r['method'] == method]
        n = len(mine)
        k_pick, k_vgn = sum(r['pick'] for r in mine), sum(r['vgn'] for r in mine)
        stages = Counter()
        for r in mine:
            stages.update(r.get('stage_seconds', {}))
        summary[method] = {
            'scenes': n, 'pick_success': k_pick, 'pick_rate': k_pick / max(n, 1),
            'pick_wilson95': wilson(k_pick, n), 'vgn_success': k_vgn,
            'vgn_rate': k_vgn / max(n, 1), 'vgn_wilson95': wilson(k_vgn, n),
            'both': sum(r['pick'] and r['vgn'] for r in mine),
            'pick_only': sum(r['pick'] and not r['vgn'] for r in mine),
            'vgn_only': sum(r['vgn'] and not r['pick'] for r in mine),
            'failed_stages': dict(Counter(r['failed_stage'] for r in mine if not r['pick'])),
            'mean_pick_seconds': float(np.mean([r.get('pick_seconds', 0) for r in mine])),
            'mean_stage_seconds': {k: v / max(n, 1) for k, v in stages.items()},
            'mean_candidates_tried': float(np.mean([r.get('candidates_tried', 0)
                                                    for r in mine])),
        }
    results = {
        'machine': {'platform': platform.platform(), 'cpu_count': os.cpu_count(),
                    'python': platform.python_version()},
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': 'python ' + ' '.join([Path(sys.argv[0]).as_posix()]
                                        + list(argv if argv is not None else sys.argv[1:])),
        'wall_time_s': round(time.time() - started, 1),
        # The machine is shared: per-pick seconds scale with the load, success does not.
        'load_average_1min': {'start': load_start, 'end': round(os.getloadavg()[0], 2)},
        'setup': {'layout': args.layout, 'objects': 5, 'split': 'test', 'robot': args.robot,
                  'seeds': [seeds.start, seeds.stop - 1],
                  'object_ids': 'rendered instance labels (ground truth), not segmentation',
                  'pick': 'PickSequence on SimCellApiBackend, default PickConfig, table box',
                  'scene_check': not args.no_scene_check,
                  'vgn': 'SimCell.execute_grasp of the best grasp, same scene'},
        'summary': summary, 'rows': rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix('.json').write_text(json.dumps(results, indent=1))
    plot(summary, out.with_suffix('.png'))
    for method, s in summary.items():
        print(f"{method}: pick {s['pick_success']}/{s['scenes']} "
              f"(95% {s['pick_wilson95'][0]:.2f}-{s['pick_wilson95'][1]:.2f}), "
              f"VGN trial {s['vgn_success']}/{s['scenes']}, "
              f"{s['mean_pick_seconds']:.1f} s per pick, failures {s['failed_stages']}")
    return 0


def plot(summary: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    methods = list(summary)
    x = np.arange(len(methods))
    for offset, key, label in ((-0.18, 'pick', 'pick sequence'), (0.18, 'vgn', 'VGN trial')):
        rates = [summary[m][f'{key}_rate'] for m in methods]
        lo = [r - summary[m][f'{key}_wilson95'][0] for r, m in zip(rates, methods)]
        hi = [summary[m][f'{key}_wilson95'][1] - r for r, m in zip(rates, methods)]
        ax1.bar(x + offset, rates, 0.36, yerr=[lo, hi], capsize=4, label=label)
    ax1.set_xticks(x, methods)
    ax1.set_ylim(0, 1)
    ax1.set_ylabel('objects lifted / scenes (95 % Wilson)')
    ax1.legend()
    stages = ['pre_grasp', 'open_gripper', 'approach', 'grasp', 'lift']
    bottom = np.zeros(len(methods))
    for stage in stages:
        vals = np.array([summary[m]['mean_stage_seconds'].get(stage, 0.0) for m in methods])
        ax2.bar(x, vals, 0.5, bottom=bottom, label=stage)
        bottom += vals
    ax2.set_xticks(x, methods)
    ax2.set_ylabel('mean wall seconds per pick (simulated, 2 shared cores)')
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


if __name__ == '__main__':
    sys.exit(main())
