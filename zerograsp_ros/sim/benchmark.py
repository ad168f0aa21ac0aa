"""Clutter-removal benchmark in the simulated cell (VGN / GIGA protocol).

Per round: a seeded scene (pile or packed, `num_objects` held-out test objects) is
put on the table; repeatedly the side camera is rendered, the method proposes
grasps (camera frame), the best one whose TCP lies 2 cm inside the workspace walls
and 5 mm above the table is executed physically (`SimCell.execute_grasp`), and a
held object is removed. A round ends when the table is clear, after 2 consecutive
failures, or when no grasp is proposed.

GSR = successes / attempts, DR = successes / objects presented; both with 95 %
Wilson intervals (for DR this treats objects as independent trials: approximate).
Every method sees the same scenes (scene seed = base seed * 1000 + round), so
first attempts are paired; they are compared with an exact McNemar test.

What the methods are given: the rendered frame; the table plane from the known
camera extrinsics; ZeroGrasp methods also the rendered GT instance labels (the
benchmark measures grasping, not segmentation).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import json
import math
from pathlib import Path
import time
from typing import Callable

import numpy as np

from zerograsp_ros.errors import CheckpointError, InputError
from zerograsp_ros.geometry.rgbd import RGBDFrame
from zerograsp_ros.grasp.representation import GraspSet

BASELINES = ('random', 'highest_point', 'antipodal')
ZEROGRASP_METHODS = ('zerograsp_raw', 'zerograsp_depth_cc', 'zerograsp_paper_refine',
                     'zerograsp_full')
METHODS = BASELINES + ZEROGRASP_METHODS
METHOD_LABELS = {
    'random': 'Random grasps',
    'highest_point': 'Highest point, top-down (SHAF-like)',
    'antipodal': 'Antipodal sampler (GPD-like)',
    'zerograsp_raw': 'ZeroGrasp, no refinement',
    'zerograsp_depth_cc': 'ZeroGrasp + depth-map collision check',
    'zerograsp_paper_refine': "ZeroGrasp + the paper's refinement",
    'zerograsp_full': 'ZeroGrasp + full refinement (+ quality, carving, depth search)',
}
WALL_MARGIN = 0.02
MIN_GRASP_HEIGHT = 0.005


@dataclass
class BenchmarkConfig:
    methods: tuple = BASELINES
    layouts: tuple = ('pile', 'packed')
    rounds: int = 10                     # rounds per layout (default size: 4.5 min measured)
    num_objects: int = 5
    seed: int = 0
    split: str = 'test'
    max_consecutive_failures: int = 2
    max_attempts: int = 12               # safety cap per round
    checkpoint: str = 'checkpoints/zerograsp_cpu.pt'
    # Optionally fewer rounds for the ZeroGrasp methods (e.g. a slow machine); they are
    # paired with the baselines on those first scenes. None = `rounds`.
    zerograsp_rounds: int | None = 10
    grasps_per_object: int = 256         # ZeroGrasp grasps decoded per object before refinement


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


def table_plane_in_camera(T_world_camera: np.ndarray) -> np.ndarray:
    """The table plane z = 0 (normal up) as (a, b, c, d) in the camera frame."""
    R, t = T_world_camera[:3, :3], T_world_camera[:3, 3]
    n = R.T @ np.array([0.0, 0.0, 1.0])
    return np.array([*n, t[2]])


# ----------------------------------------------------------------------------- planners

Planner = Callable[[RGBDFrame, np.ndarray, np.random.Generator], GraspSet]


def _observed_object_points(frame: RGBDFrame) -> tuple[np.ndarray, np.ndarray]:
    from zerograsp_ros.geometry.camera import unproject
    valid = frame.valid_depth() & (frame.labels > 0)
    pts, pix = unproject(frame.depth, frame.intrinsics, mask=valid, return_pixels=True)
    return pts, frame.labels[pix[:, 0], pix[:, 1]].astype(np.int32)


def make_planner(method: str, predictor=None, grasps_per_object: int = 256) -> Planner:
    """A function (frame, table plane in camera frame, rng) -> GraspSet (camera frame)."""
    from zerograsp_ros.sim import baselines
    if method == 'random':
        return lambda f, plane, rng: baselines.random_grasps(f, rng=rng, table_plane=plane)
    if method == 'highest_point':
        return lambda f, plane, rng: baselines.highest_point_grasps(f, table_plane=plane)
    if method == 'antipodal':
        return lambda f, plane, rng: baselines.antipodal_grasps(f, rng=rng, table_plane=plane)
    if method not in ZEROGRASP_METHODS:
        raise InputError(f"unknown method '{method}'; valid: {', '.join(METHODS)}")
    if predictor is None:
        raise CheckpointError(f'{method} needs a ZeroGrasp predictor (checkpoint)')
    from zerograsp_ros.grasp.refinement import (
        RefinementConfig,
        paper_refinement_config,
        refine_grasps,
    )
    from zerograsp_ros.perception.pipeline import frame_scene_points, refine_on_reconstruction

    def plan(frame: RGBDFrame, plane: np.ndarray, rng) -> GraspSet:
        pred = predictor.predict(frame, max_grasps_per_object=grasps_per_object)
        grasps = pred.grasps
        if method == 'zerograsp_raw' or len(grasps) == 0:
            return grasps.subset(grasps.finite_mask()).sorted_by_score()
        if method == 'zerograsp_depth_cc':   # the paper's ablation: observed points only
            obj_pts, obj_ids = _observed_object_points(frame)
            if len(obj_pts) == 0:
                return GraspSet.empty()
            return refine_grasps(grasps, obj_pts, object_point_ids=obj_ids,
                                 scene_points=frame_scene_points(frame), table_plane=plane,
                                 config=paper_refinement_config(use_contact_constraints=False),
                                 max_grasps=50).grasps
        recon = [o for o in pred.objects if len(o.points)]
        if not recon:
            return GraspSet.empty()
        # exactly what the refinement node runs (the frame adds depth points and carving)
        cfg = RefinementConfig() if method == 'zerograsp_full' else paper_refinement_config()
        return refine_on_reconstruction(grasps, recon, None, cfg, frame=frame,
                                        table_plane=plane, max_grasps=50).grasps
    return plan


def checkpoint_fingerprint(checkpoint: str) -> str:
    """Name, size and modification time: a retrained checkpoint invalidates cached rounds."""
    p = Path(checkpoint)
    if not p.is_file():
        return 'missing'
    st = p.stat()
    return f'{p.name}:{st.st_size}:{int(st.st_mtime)}'


def checkpoint_info(checkpoint: str) -> dict:
    """Path, fingerprint and the checkpoint's own `extra` record (e.g. training step)."""
    info = {'path': str(checkpoint), 'fingerprint': checkpoint_fingerprint(checkpoint)}
    try:
        import torch
        extra = torch.load(checkpoint, map_location='cpu', weights_only=True).get('extra', {})
        info['extra'] = json.loads(json.dumps(extra, default=str))
    except Exception as exc:  # informative only: never fail the benchmark on it
        info['extra_error'] = str(exc)
    return info


def load_predictor(checkpoint: str):
    """ZeroGraspPredictor from a checkpoint; CheckpointError naming why it is unavailable."""
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} not found')
    try:
        from zerograsp_ros.model.inference import ZeroGraspPredictor
    except ImportError as exc:
        raise CheckpointError(f'zerograsp_ros.model.inference is unavailable: {exc}') from exc
    return ZeroGraspPredictor.from_checkpoint(str(path), device='cpu')


# ----------------------------------------------------------------------------- rounds

def select_grasp(grasps: GraspSet, T_world_camera: np.ndarray) -> tuple[int, np.ndarray] | None:
    """Index and world pose of the best-scored grasp inside the valid workspace region."""
    from zerograsp_ros.sim.scene import WORKSPACE_HALF
    if len(grasps) == 0:
        return None
    ok = grasps.finite_mask()
    world = grasps.transformed(T_world_camera)
    t = world.translations.astype(np.float64)
    ok &= (np.abs(t[:, 0]) <= WORKSPACE_HALF - WALL_MARGIN) & \
        (np.abs(t[:, 1]) <= WORKSPACE_HALF - WALL_MARGIN) & (t[:, 2] >= MIN_GRASP_HEIGHT)
    if not ok.any():
        return None
    idx = np.flatnonzero(ok)
    best = idx[np.argmax(grasps.scores[idx])]
    T = np.eye(4)
    T[:3, :3] = world.rotations[best]
    T[:3, 3] = world.translations[best]
    return int(best), T


def run_round(cell, planner: Planner, scene_seed: int, layout: str, num_objects: int,
              split: str, rng: np.random.Generator, max_consecutive_failures: int = 2,
              max_attempts: int = 12) -> dict:
    """One clutter-removal round; returns its attempts and counts."""
    round_start = time.perf_counter()
    ids = cell.reset(seed=scene_seed, num_objects=num_objects, layout=layout, split=split)
    presented = len(ids)
    attempts, failures_in_row, end = [], 0, 'cleared'
    plane = table_plane_in_camera(cell.T_world_camera)
    while cell.object_ids():
        if failures_in_row >= max_consecutive_failures:
            end = 'consecutive_failures'
            break
        if len(attempts) >= max_attempts:
            end = 'attempt_cap'
            break
        frame = cell.capture()
        start = time.perf_counter()
        try:
            grasps = planner(frame, plane, rng)
            error = None
        except InputError as exc:   # e.g. nothing segmentable left: counts as no proposal
            grasps, error = GraspSet.empty(), str(exc)
        planning_s = time.perf_counter() - start
        chosen = select_grasp(grasps, cell.T_world_camera)
        if chosen is None:
            end = 'no_grasp' if error is None else f'no_grasp ({error})'
            break
        idx, T = chosen
        outcome = cell.execute_grasp(T, width=float(grasps.widths[idx]),
                                     depth=float(grasps.depths[idx]))
        attempts.append({'success': bool(outcome.success), 'reason': outcome.reason,
                         'object_id': int(outcome.object_id), 'planning_s': planning_s,
                         'score': float(grasps.scores[idx]),
                         'objects_left': len(cell.object_ids())})
        failures_in_row = 0 if outcome.success else failures_in_row + 1
    return {'scene_seed': scene_seed, 'layout': layout, 'presented': presented,
            'successes': sum(a['success'] for a in attempts), 'attempts': attempts, 'end': end,
            'wall_s': time.perf_counter() - round_start}


# ----------------------------------------------------------------------------- summary

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


# ----------------------------------------------------------------------------- driver

@dataclass
class BenchmarkRun:
    config: BenchmarkConfig
    rounds: dict = field(default_factory=dict)     # method -> list of round dicts
    skipped: dict = field(default_factory=dict)    # method -> reason
    checkpoint: dict = field(default_factory=dict)  # path, fingerprint, training info


def run_benchmark(config: BenchmarkConfig, cell=None, partial_path: str | Path | None = None,
                  progress: bool = True) -> BenchmarkRun:
    """Run every method on the same seeded scenes; resumes from `partial_path` per round."""
    from tqdm import tqdm

    from zerograsp_ros.sim.cell import SimCell
    for m in config.methods:
        if m not in METHODS:
            raise InputError(f"unknown method '{m}'; valid: {', '.join(METHODS)}")
    run = BenchmarkRun(config=config)
    # Rounds are cached per (method, layout, round): a run with more rounds, fewer
    # methods or another layout reuses them; ZeroGrasp rounds also key on the checkpoint
    # and the grasps decoded per object.
    key = json.dumps({k: v for k, v in asdict(config).items()
                      if k not in ('methods', 'rounds', 'layouts', 'checkpoint',
                                   'zerograsp_rounds', 'grasps_per_object')},
                     sort_keys=True, default=list)
    done: dict = {}
    if partial_path is not None and Path(partial_path).is_file():
        saved = json.loads(Path(partial_path).read_text())
        if saved.get('key') == key:
            done = saved.get('rounds', {})
    predictor, predictor_error = None, None
    if any(m in ZEROGRASP_METHODS for m in config.methods):
        try:
            predictor = load_predictor(config.checkpoint)
            run.checkpoint = checkpoint_info(config.checkpoint)
        except CheckpointError as exc:
            predictor_error = str(exc)
    cell = cell if cell is not None else SimCell()
    zg_rounds = config.rounds if config.zerograsp_rounds is None else config.zerograsp_rounds
    jobs = [(m, layout, r) for m in config.methods for layout in config.layouts
            for r in range(zg_rounds if m in ZEROGRASP_METHODS else config.rounds)]
    bar = tqdm(jobs, disable=not progress, desc='clutter removal', unit='round')
    planners = {}
    for m, layout, r in bar:
        if m in ZEROGRASP_METHODS and predictor is None:
            run.skipped[m] = f'skipped: {predictor_error}'
            continue
        tag = f'{m}/{layout}/{r}'
        if m in ZEROGRASP_METHODS:
            tag += f'/{checkpoint_fingerprint(config.checkpoint)}/g{config.grasps_per_object}'
        bar.set_postfix_str(tag)
        if tag in done:
            result = done[tag]
        else:
            if m not in planners:
                planners[m] = make_planner(m, predictor, config.grasps_per_object)
            scene_seed = config.seed * 1000 + r
            rng = np.random.default_rng([config.seed, r, METHODS.index(m)])
            result = run_round(cell, planners[m], scene_seed, layout, config.num_objects,
                               config.split, rng, config.max_consecutive_failures,
                               config.max_attempts)
            done[tag] = result
            if partial_path is not None:
                Path(partial_path).parent.mkdir(parents=True, exist_ok=True)
                Path(partial_path).write_text(json.dumps({'key': key, 'rounds': done}))
        run.rounds.setdefault(m, []).append(result)
    return run


def results_dict(run: BenchmarkRun) -> dict:
    out = {'config': asdict(run.config), 'methods': {}, 'skipped': run.skipped,
           'checkpoint': run.checkpoint}
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
