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

What the methods are given: the rendered frame after the depth-scale tare
(perception/depth_tare.py, against the table plane known from the cell's extrinsics;
`depth_tare=False` switches it off), and that table plane. `zerograsp_pipeline` is
what the nodes run: the segmentation node's default segmenter (config/perception.yaml)
on the frame, its fitted table plane, ZeroGrasp and the full refinement, with no
ground truth. The other ZeroGrasp rows use the rendered GT instance labels (an
ablation: grasping without segmentation errors). `oracle` plans on the true meshes
with the label judge (the cell's ceiling, it ignores the frame).

Rounds are cached in a partial file under a key of everything that changes a round
(`round_cache_key`): benchmark settings, object set, scene generator and package code,
cell and method configs, checkpoint content.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import json
from pathlib import Path
import time
from typing import Callable

import numpy as np

from zerograsp_ros.errors import CheckpointError, InputError
from zerograsp_ros.geometry.rgbd import RGBDFrame
from zerograsp_ros.grasp import DEFAULT_GRIPPER
from zerograsp_ros.grasp.representation import GraspSet
from zerograsp_ros.sim.benchmark_report import (  # noqa: F401  (re-exported)
    markdown_table,
    mcnemar_exact,
    paired_first_attempts,
    plot_results,
    results_dict,
    summarise,
    wilson_interval,
)

BASELINES = ('random', 'highest_point', 'antipodal')
ZEROGRASP_METHODS = ('zerograsp_raw', 'zerograsp_depth_cc', 'zerograsp_paper_refine',
                     'zerograsp_full', 'zerograsp_pipeline')
ORACLE = 'oracle'
METHODS = BASELINES + ZEROGRASP_METHODS + (ORACLE,)   # order seeds the rngs: append only
METHOD_LABELS = {
    'random': 'Random grasps',
    'highest_point': 'Highest point, top-down (SHAF-like)',
    'antipodal': 'Antipodal sampler (GPD-like)',
    'zerograsp_raw': 'ZeroGrasp, no refinement',
    'zerograsp_depth_cc': 'ZeroGrasp + depth-map collision check',
    'zerograsp_paper_refine': "ZeroGrasp + the paper's refinement",
    'zerograsp_full': 'ZeroGrasp + full refinement, GT instance labels (ablation)',
    'zerograsp_pipeline': 'ZeroGrasp pipeline as shipped (default segmenter, full refinement)',
    'oracle': 'Oracle: label judge on the true meshes (ceiling)',
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
    depth_tare: bool = True              # correct each frame's depth scale against the table
    depth_noise: bool = True             # the cell's depth noise (False: diagnostic run)


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


def workspace_filter(T_world_camera: np.ndarray):
    """Camera-frame points -> bool: inside the region where `select_grasp` accepts grasps."""
    from zerograsp_ros.sim.scene import WORKSPACE_HALF
    T = np.asarray(T_world_camera, dtype=np.float64)

    def inside(points: np.ndarray) -> np.ndarray:
        w = np.asarray(points, dtype=np.float64).reshape(-1, 3) @ T[:3, :3].T + T[:3, 3]
        return (np.abs(w[:, 0]) <= WORKSPACE_HALF - WALL_MARGIN) & \
            (np.abs(w[:, 1]) <= WORKSPACE_HALF - WALL_MARGIN) & (w[:, 2] >= MIN_GRASP_HEIGHT)
    return inside


def node_default_segmenter():
    """The segmenter the segmentation node runs by default (config/perception.yaml)."""
    import yaml

    from zerograsp_ros.perception.segmentation import make_segmenter
    from zerograsp_ros.resources import package_file
    params = yaml.safe_load(package_file('config', 'perception.yaml').read_text())
    params = params['/**']['ros__parameters']
    kind = params.get('segmenter', 'tabletop')
    tabletop = dict(params.get('tabletop', {}))
    if kind == 'tabletop':
        return make_segmenter('tabletop', config=tabletop)
    # no silent fallback to another segmenter here: the row must measure the default
    own = {k[len(kind) + 1:]: v for k, v in params.items() if k.startswith(kind + '_')}
    if isinstance(params.get(kind), dict):         # a section named like the segmenter
        own['config'] = dict(params[kind])
    return make_segmenter(kind, **own, tabletop=tabletop)


def make_planner(method: str, predictor=None, grasps_per_object: int = 256, cell=None,
                 segmenter=None) -> Planner:
    """A function (frame, table plane in camera frame, rng) -> GraspSet (camera frame).

    `cell` (the SimCell) is needed by `highest_point` (workspace) and `oracle` (true
    scene); `segmenter` by `zerograsp_pipeline` (default: the node's default).
    """
    from zerograsp_ros.sim import baselines
    if method == 'random':
        return lambda f, plane, rng: baselines.random_grasps(f, rng=rng, table_plane=plane)
    if method == 'highest_point':
        return lambda f, plane, rng: baselines.highest_point_grasps(
            f, table_plane=plane,
            in_workspace=None if cell is None else workspace_filter(cell.T_world_camera))
    if method == 'antipodal':
        return lambda f, plane, rng: baselines.antipodal_grasps(f, rng=rng, table_plane=plane)
    if method == ORACLE:
        if cell is None:
            raise InputError('the oracle plans on the true scene: make_planner needs the cell')
        return lambda f, plane, rng: baselines.oracle_grasps(cell.current_scene(),
                                                             cell.T_world_camera, rng)
    if method not in ZEROGRASP_METHODS:
        raise InputError(f"unknown method '{method}'; valid: {', '.join(METHODS)}")
    if predictor is None:
        raise CheckpointError(f'{method} needs a ZeroGrasp predictor (checkpoint)')
    from zerograsp_ros.grasp.refinement import (
        RefinementConfig,
        paper_refinement_config,
        refine_grasps,
    )
    from zerograsp_ros.perception.pipeline import (
        GraspPipeline,
        frame_scene_points,
        refine_on_reconstruction,
    )
    if method == 'zerograsp_pipeline':
        from zerograsp_ros.grasp.gripper import gripper_preset
        pipeline = GraspPipeline(predictor, segmenter or node_default_segmenter(),
                                 gripper=gripper_preset(DEFAULT_GRIPPER),
                                 refinement_config=RefinementConfig(), max_grasps=50,
                                 max_grasps_per_object=grasps_per_object)

        def plan_pipeline(frame: RGBDFrame, plane: np.ndarray, rng) -> GraspSet:
            # exactly the nodes' path: segment (no GT labels), fit the table, predict, refine
            unlabelled = RGBDFrame(rgb=frame.rgb, depth=frame.depth, intrinsics=frame.intrinsics,
                                   frame_id=frame.frame_id, stamp=frame.stamp, meta=frame.meta)
            return pipeline.run(unlabelled, labels=None, refine=True).grasps
        return plan_pipeline

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


def _sha256_files(paths) -> str:
    import hashlib
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path).encode())
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def _jsonable(obj):
    return json.loads(json.dumps(obj, sort_keys=True, default=lambda x: np.asarray(x).tolist()))


def code_version() -> str:
    """Hash of the package code the rounds run (nodes/ excluded), its configs and URDFs."""
    from zerograsp_ros.resources import SOURCE_ROOT
    root = SOURCE_ROOT
    files = sorted(f for f in (root / 'zerograsp_ros').rglob('*.py')
                   if 'nodes' not in f.relative_to(root).parts)
    files += sorted((root / 'config').rglob('*.yaml')) + sorted((root / 'urdf').glob('*.urdf'))
    return _sha256_files(f for f in files if f.is_file())[:16]


def round_cache_components(config: BenchmarkConfig) -> dict:
    """Everything that changes a round, by name (the cache key hashes this)."""
    import pybullet

    from zerograsp_ros.grasp.refinement import RefinementConfig, paper_refinement_config
    from zerograsp_ros.perception.depth_tare import DepthTareConfig
    from zerograsp_ros.sim import scene as scn
    from zerograsp_ros.sim.cell_config import load_sim_cell_config
    settings = {k: v for k, v in asdict(config).items()
                if k not in ('methods', 'rounds', 'layouts', 'zerograsp_rounds', 'checkpoint')}
    cell = asdict(load_sim_cell_config())
    cell.pop('parameters', None)
    objects = scn.object_split(config.split)
    return _jsonable({
        'settings': settings,
        'object_set': {'names': objects, 'pybullet': getattr(pybullet, '__version__', '?'),
                       'api': pybullet.getAPIVersion()},
        'scene_generator': _sha256_files([Path(scn.__file__)])[:16],
        'cell_config': cell,
        'method_config': {'refinement': asdict(RefinementConfig()),
                          'paper_refinement': asdict(paper_refinement_config()),
                          'depth_tare': asdict(DepthTareConfig())},
        'checkpoint': checkpoint_fingerprint(config.checkpoint),
        'code_version': code_version(),
    })


def round_cache_key(config: BenchmarkConfig) -> str:
    import hashlib
    blob = json.dumps(round_cache_components(config), sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def checkpoint_fingerprint(checkpoint: str) -> str:
    """Name and content hash: a retrained checkpoint invalidates cached rounds."""
    p = Path(checkpoint)
    if not p.is_file():
        return 'missing'
    return f'{p.name}:{_sha256_files([p])[:16]}'


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


def capture_tared(cell, plane: np.ndarray, tare: bool, retries: int = 3):
    """A frame from the cell, depth-scale tared against `plane` (camera frame) when `tare`.

    A frame the tare refuses is dropped and another captured (as the camera node drops
    it and the next frame comes), up to `retries` times; returns (frame, scale, refusals).
    """
    from zerograsp_ros.perception.depth_tare import DepthTareConfig, tare_frame
    refusals = []
    for _ in range(retries):
        frame = cell.capture()
        if not tare:
            return frame, None, refusals
        try:
            tared, result = tare_frame(frame, plane, DepthTareConfig())
            return tared, result.scale, refusals
        except InputError as exc:
            refusals.append(str(exc))
    raise InputError(f'{retries} frames in a row refused by the depth tare: {refusals[-1]}')


def run_round(cell, planner: Planner, scene_seed: int, layout: str, num_objects: int,
              split: str, rng: np.random.Generator, max_consecutive_failures: int = 2,
              max_attempts: int = 12, depth_tare: bool = True) -> dict:
    """One clutter-removal round; returns its attempts and counts."""
    round_start = time.perf_counter()
    ids = cell.reset(seed=scene_seed, num_objects=num_objects, layout=layout, split=split)
    presented = len(ids)
    names = [o.name for o in cell.scene.objects if o.object_id in ids]
    attempts, failures_in_row, end = [], 0, 'cleared'
    plane = table_plane_in_camera(cell.T_world_camera)
    tare_refusals = 0
    while cell.object_ids():
        if failures_in_row >= max_consecutive_failures:
            end = 'consecutive_failures'
            break
        if len(attempts) >= max_attempts:
            end = 'attempt_cap'
            break
        start = time.perf_counter()
        scale = None
        try:
            frame, scale, refused = capture_tared(cell, plane, depth_tare)
            tare_refusals += len(refused)
            start = time.perf_counter()
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
                         'objects_left': len(cell.object_ids()), 'tare_scale': scale})
        failures_in_row = 0 if outcome.success else failures_in_row + 1
    return {'scene_seed': scene_seed, 'layout': layout, 'presented': presented,
            'objects': names, 'successes': sum(a['success'] for a in attempts),
            'attempts': attempts, 'end': end, 'tare_refusals': tare_refusals,
            'wall_s': time.perf_counter() - round_start}


# ----------------------------------------------------------------------------- driver

@dataclass
class BenchmarkRun:
    config: BenchmarkConfig
    rounds: dict = field(default_factory=dict)     # method -> list of round dicts
    skipped: dict = field(default_factory=dict)    # method -> reason
    checkpoint: dict = field(default_factory=dict)  # path, fingerprint, training info
    cache_key: str = ''
    unfinished: dict = field(default_factory=dict)  # method -> rounds not run (deadline)
    cache_components: dict = field(default_factory=dict)


def _load_partial(partial_path) -> dict:
    """{key: {'components': ..., 'rounds': {tag: round}}}; rounds of other keys are kept."""
    if partial_path is None or not Path(partial_path).is_file():
        return {}
    saved = json.loads(Path(partial_path).read_text())
    return saved.get('keys', {}) if saved.get('format') == 2 else {}


def run_benchmark(config: BenchmarkConfig, cell=None, partial_path: str | Path | None = None,
                  progress: bool = True, segmenter=None, merge_partials=(),
                  deadline: float | None = None, only_cached: bool = False) -> BenchmarkRun:
    """Run every method on the same seeded scenes; resumes from `partial_path` per round.

    Rounds are cached per (method, layout, round) under `round_cache_key(config)`: a run
    with more rounds, fewer methods or another layout reuses them; a change of objects,
    scene generator, code, configs or checkpoint does not (those rounds stay in the
    file under their own key). Rounds run round-major (every method on scene r before
    scene r + 1), so a run stopped early is still paired. `merge_partials`: more partial
    files to read rounds from (e.g. shards run in parallel); `deadline` (time.time()):
    start no round after it; `only_cached`: run nothing, summarise the cached rounds.
    """
    from tqdm import tqdm

    from zerograsp_ros.sim.cell import SimCell, load_sim_cell_config
    for m in config.methods:
        if m not in METHODS:
            raise InputError(f"unknown method '{m}'; valid: {', '.join(METHODS)}")
    run = BenchmarkRun(config=config)
    components = round_cache_components(config)
    key = round_cache_key(config)
    saved = _load_partial(partial_path)
    done: dict = saved.setdefault(key, {'components': components, 'rounds': {}})['rounds']
    for extra in merge_partials:
        done.update(_load_partial(extra).get(key, {}).get('rounds', {}))
    predictor, predictor_error = None, None
    if any(m in ZEROGRASP_METHODS for m in config.methods):
        try:
            predictor = load_predictor(config.checkpoint)
            run.checkpoint = checkpoint_info(config.checkpoint)
        except CheckpointError as exc:
            predictor_error = str(exc)
    if cell is None:
        cell_config = load_sim_cell_config()
        cell_config.depth_noise = config.depth_noise
        cell = SimCell(cell_config)
    elif bool(cell.config.depth_noise) != bool(config.depth_noise):
        raise InputError(f'the given cell has depth_noise={cell.config.depth_noise} but the '
                         f'benchmark config asks for {config.depth_noise}')
    zg_rounds = config.rounds if config.zerograsp_rounds is None else config.zerograsp_rounds
    jobs = [(m, layout, r) for r in range(config.rounds) for layout in config.layouts
            for m in config.methods if r < (zg_rounds if m in ZEROGRASP_METHODS
                                            else config.rounds)]
    bar = tqdm(jobs, disable=not progress, desc='clutter removal', unit='round')
    planners = {}
    for m, layout, r in bar:
        if m in ZEROGRASP_METHODS and predictor is None:
            run.skipped[m] = f'skipped: {predictor_error}'
            continue
        if m in run.skipped:
            continue
        tag = f'{m}/{layout}/{r}'
        bar.set_postfix_str(tag)
        if tag in done:
            result = done[tag]
        elif only_cached or (deadline is not None and time.time() > deadline):
            run.unfinished.setdefault(m, 0)
            run.unfinished[m] += 1
            continue
        else:
            if m not in planners:
                try:
                    planners[m] = make_planner(m, predictor, config.grasps_per_object,
                                               cell=cell, segmenter=segmenter)
                except CheckpointError as exc:     # e.g. the default segmenter's weights
                    run.skipped[m] = f'skipped: {exc}'
                    continue
            scene_seed = config.seed * 1000 + r
            rng = np.random.default_rng([config.seed, r, METHODS.index(m)])
            result = run_round(cell, planners[m], scene_seed, layout, config.num_objects,
                               config.split, rng, config.max_consecutive_failures,
                               config.max_attempts, depth_tare=config.depth_tare)
            done[tag] = result
            if partial_path is not None:
                Path(partial_path).parent.mkdir(parents=True, exist_ok=True)
                tmp = Path(str(partial_path) + '.tmp')
                tmp.write_text(json.dumps({'format': 2, 'keys': saved}))
                tmp.replace(partial_path)
        run.rounds.setdefault(m, []).append(result)
    run.cache_key = key
    run.cache_components = components
    return run
