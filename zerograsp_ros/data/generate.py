"""Synthetic training data: settled tabletop scenes, one noisy RGB-D view each, full labels.

    python -m zerograsp_ros.data.generate --out datasets/v1 --split train \
        --scenes 400 --seed 0 --workers 2

Scenes come from `zerograsp_ros.sim.scene` (object splits by object id: test
objects are never seen in training; pybullet settling; Open3D ray-cast
rendering with dex depth noise and edge dropout). Per scene:
  * 1-10 objects, layout 'pile' (65 %) or 'packed' (35 %);
  * camera: D435-like intrinsics at 640x480 (fx = fy = 615), position drawn
    on a sphere cap around the workspace: distance 0.45-0.75 m, elevation
    40-80 deg, any azimuth, looking at a point within 4 cm of the table
    centre (x, y) and 0-4 cm above it;
  * per visible object (>= MIN_VISIBLE_PIXELS labelled pixels), in the camera
    frame: complete surface (points + normals), SDF samples, grasp labels at
    sampled surface points (see `labels.py` for the candidate set and judge).
    Meshes of every object (world frame) are stored too, so evaluation can
    judge predicted grasps with the same check.
  * opt-in `--dense-labels` (see `dense_labels.py`): per visible object, dense
    targets over GraspNet's 300 camera views at `DenseLabelConfig.points` surface
    points: `dense_points`, `dense_graspness`, `dense_angle_bin`, `dense_depth_bin`,
    `dense_width`, `dense_quality`, and each point's exact best grasp
    `dense_best_{approach,closing,width,depth,quality}` and `dense_has_grasp`. The
    sparse grasp labels are then skipped (they took two thirds of a scene's time and
    training reads the dense ones) unless `--keep-sparse-labels`. Object sizes are then
    quantised to `--size-levels` (default 3) so meshes repeat and the per-mesh label
    cache is reused; without the switch scenes are drawn as before.

Storage: `<out>/<split>/shard_00000.npz` (np.savez_compressed), a fixed number
of scenes per shard, schema version in every shard and in `manifest.json`.
Scene i of a split uses seed SeedSequence([seed, split, i]), so the data set is
identical for identical arguments regardless of workers; finished shards are
skipped on a re-run (resume).

Several machines: run the same command on each with `--part I --parts N`
(I = 0..N-1); machine I writes the shards whose number is I modulo N. The
shard files are those of a one-machine run (same names, same scenes), so
copying every machine's `<out>/<split>/shard_*.npz` into one directory (or
writing to a shared one) gives the identical data set.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict
import datetime
import json
import multiprocessing as mp
import os
from pathlib import Path
import platform
import sys
import time

import numpy as np

from zerograsp_ros.data.dense_labels import DenseLabelConfig, scene_dense_targets
from zerograsp_ros.data.labels import (
    LabelConfig,
    ObjectShape,
    build_scene_geometry,
    label_object_grasps,
)
from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import CameraIntrinsics, transform_points

SCHEMA_VERSION = 1   # dense labels only add keys: old readers still read the shards
DEFAULT_DENSE_SIZE_LEVELS = 3
SPLITS = ('train', 'val', 'test')
MIN_VISIBLE_PIXELS = 50
PACKED_FRACTION = 0.35
CAMERA_DISTANCE_M = (0.45, 0.75)
CAMERA_ELEVATION_DEG = (40.0, 80.0)
LOOK_AT_JITTER_M = 0.04
OBJECTS_PER_SCENE = (1, 10)


def scene_seed(seed: int, split: str, index: int) -> int:
    if split not in SPLITS:
        raise InputError(f"unknown split '{split}': expected one of {SPLITS}")
    return int(np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)])
               .generate_state(1)[0])


def generate_scene_record(seed: int, split: str, config: LabelConfig | None = None,
                          num_objects: int | None = None,
                          dense: DenseLabelConfig | None = None, size_levels: int | None = None,
                          dense_cache: str | Path | None = None,
                          sparse_labels: bool = True) -> dict[str, np.ndarray]:
    """Generate and label one scene; returns flat arrays (see `dataset.py` for the keys).

    dense: also write dense targets (module doc), with the per-mesh stage cached in
    dense_cache (default `dense_labels.default_cache_dir()`). size_levels quantises
    object sizes (`sim.scene.generate_scene`); None keeps them continuous.
    sparse_labels False skips the sparse `grasp_*` labels (dense runs).
    """
    from zerograsp_ros.sim.scene import generate_scene, render_rgbd, sample_camera_pose

    config = config or LabelConfig()
    rng = np.random.default_rng(seed)
    n_obj = int(num_objects or rng.integers(OBJECTS_PER_SCENE[0], OBJECTS_PER_SCENE[1] + 1))
    layout = 'packed' if rng.random() < PACKED_FRACTION else 'pile'
    scene = generate_scene(seed, n_obj, layout, split, size_levels=size_levels)
    look_at = (rng.uniform(-LOOK_AT_JITTER_M, LOOK_AT_JITTER_M),
               rng.uniform(-LOOK_AT_JITTER_M, LOOK_AT_JITTER_M), rng.uniform(0.0, 0.04))
    T_wc = sample_camera_pose(rng, CAMERA_DISTANCE_M, CAMERA_ELEVATION_DEG, look_at)
    intr = CameraIntrinsics.d435()
    frame = render_rgbd(scene, intr, T_wc, rng, noise=True)
    T_cw = np.linalg.inv(T_wc)

    shapes = [ObjectShape(o.mesh_world(), [_posed(p, o.pose) for p in o.parts])
              for o in scene.objects]
    ids = np.array([o.object_id for o in scene.objects], dtype=np.int64)
    geometry = (build_scene_geometry(shapes, ids, config, rng, table_z=0.0)
                if sparse_labels else None)
    pixels = np.array([(frame.labels == i).sum() for i in ids], dtype=np.int64)

    depth = np.nan_to_num(frame.depth, nan=0.0)
    rec = {
        'schema_version': np.array(SCHEMA_VERSION),
        'seed': np.array(seed, dtype=np.int64),
        'split': np.array(split),
        'layout': np.array(layout),
        'rgb': frame.rgb,
        'depth_mm': np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16),
        'labels': frame.labels.astype(np.uint8),
        'K': intr.K.astype(np.float64),
        'image_size': np.array([intr.width, intr.height]),
        'T_world_camera': T_wc,
        'object_ids': ids,
        'object_names': np.array([o.name for o in scene.objects]),
        'object_pixels': pixels,
    }
    dense_targets = None
    if dense is not None:
        dense_targets, _ = scene_dense_targets([(o.mesh, o.parts) for o in scene.objects],
                                               [o.pose for o in scene.objects], T_cw, dense,
                                               dense_cache, table_z=0.0)
        rec['dense_num_views'] = np.array(dense_targets[0].graspness.shape[1]
                                          if dense_targets else 0)
    for j, (obj, shape) in enumerate(zip(scene.objects, shapes)):
        k = f'obj{obj.object_id}_'
        rec[k + 'mesh_vertices'] = np.asarray(shape.mesh.vertices, dtype=np.float32)  # world
        rec[k + 'mesh_faces'] = np.asarray(shape.mesh.faces, dtype=np.int32)
        rec[k + 'part_sizes'] = np.array([len(p.faces) for p in shape.parts], dtype=np.int64)
        if pixels[j] < MIN_VISIBLE_PIXELS:
            continue
        pts, nrm = shape.sample_surface(config.surface_points, rng)
        sdf_q, sdf_v = shape.sample_sdf(config.sdf_points, config.sdf_sigma, rng)
        R = T_cw[:3, :3]
        rec[k + 'surface_points'] = transform_points(T_cw, pts).astype(np.float32)
        rec[k + 'surface_normals'] = (nrm @ R.T).astype(np.float32)
        rec[k + 'sdf_points'] = transform_points(T_cw, sdf_q).astype(np.float32)
        rec[k + 'sdf_values'] = sdf_v.astype(np.float32)
        if dense_targets is not None:
            d = dense_targets[j]
            rec[k + 'dense_points'] = d.points
            rec[k + 'dense_graspness'] = d.graspness.astype(np.float16)
            rec[k + 'dense_angle_bin'] = d.angle_bin
            rec[k + 'dense_depth_bin'] = d.depth_bin
            rec[k + 'dense_width'] = d.width.astype(np.float16)
            rec[k + 'dense_quality'] = d.quality.astype(np.float16)
            for name in ('approach', 'closing', 'width', 'depth', 'quality'):
                rec[k + f'dense_best_{name}'] = getattr(d, f'best_{name}')
            rec[k + 'dense_has_grasp'] = d.has_grasp
        if geometry is None:
            continue
        above = np.nonzero(pts[:, 2] > 0.004)[0]  # points touching the table cannot be grasped
        pick = rng.choice(above, size=min(config.grasp_points, len(above)), replace=False)
        g = label_object_grasps(pts[pick], nrm[pick], j, geometry, config)
        rec[k + 'grasp_points'] = transform_points(T_cw, g.points).astype(np.float32)
        rec[k + 'grasp_graspness_raw'] = g.graspness
        rec[k + 'grasp_quality'] = g.quality
        rec[k + 'grasp_mu'] = g.mu_min
        rec[k + 'grasp_approach'] = (g.approach @ R.T).astype(np.float32)
        rec[k + 'grasp_closing'] = (g.closing @ R.T).astype(np.float32)
        rec[k + 'grasp_width'] = g.width
        rec[k + 'grasp_depth'] = g.depth
        rec[k + 'grasp_valid'] = g.valid
    return rec


def _posed(part, pose: np.ndarray):
    m = part.copy()
    m.apply_transform(pose)
    return m


def shard_path(out: Path, split: str, shard: int) -> Path:
    return Path(out) / split / f'shard_{shard:05d}.npz'


def shard_is_complete(path: Path, expected_scenes: int) -> bool:
    """A finished shard loads, has the current schema and the expected scene count."""
    try:
        with np.load(path) as data:
            return (int(data['schema_version']) == SCHEMA_VERSION
                    and int(data['num_scenes']) == expected_scenes)
    except Exception:  # noqa: BLE001 - any unreadable file means "redo this shard"
        return False


def _write_shard(job) -> tuple[int, int, float]:
    out, split, seed, shard, first, count, config, num_objects, dense = job
    t0 = time.perf_counter()
    arrays = {'schema_version': np.array(SCHEMA_VERSION), 'num_scenes': np.array(count)}
    for s in range(count):
        rec = generate_scene_record(scene_seed(seed, split, first + s), split, config,
                                    num_objects, **dense)
        arrays.update({f's{s}_{k}': v for k, v in rec.items()})
    path = shard_path(out, split, shard)
    tmp = path.with_name(path.stem + f'.tmp{os.getpid()}.npz')
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)   # atomic: a shard file either is complete or does not exist
    return shard, count, time.perf_counter() - t0


def generate_split(out: str | Path, split: str, scenes: int, seed: int, workers: int = 1,
                   scenes_per_shard: int = 4, config: LabelConfig | None = None,
                   progress: bool = True, command: str | None = None,
                   num_objects: int | None = None, part: int = 0, parts: int = 1,
                   dense: DenseLabelConfig | None = None, size_levels: int | None = None,
                   dense_cache: str | Path | None = None, sparse_labels: bool = True) -> dict:
    """Generate (or finish) `scenes` scenes of a split; returns the manifest.

    num_objects fixes the object count (default: drawn from OBJECTS_PER_SCENE).
    part/parts: this process writes only the shards with number % parts == part.
    dense / size_levels / dense_cache / sparse_labels: see `generate_scene_record`.
    """
    from tqdm import tqdm

    if scenes <= 0:
        raise InputError(f'--scenes must be positive, got {scenes}')
    if not 0 <= part < parts:
        raise InputError(f'--part must lie in 0..{parts - 1} (--parts {parts}), got {part}')
    config = config or LabelConfig()
    out = Path(out)
    (out / split).mkdir(parents=True, exist_ok=True)
    n_shards = (scenes + scenes_per_shard - 1) // scenes_per_shard
    jobs, done = [], []
    for shard in range(part, n_shards, parts):
        first = shard * scenes_per_shard
        count = min(scenes_per_shard, scenes - first)
        if shard_is_complete(shard_path(out, split, shard), count):
            done.append(shard)
        else:
            jobs.append((out, split, seed, shard, first, count, config, num_objects,
                         {'dense': dense, 'size_levels': size_levels,
                          'dense_cache': None if dense_cache is None else str(dense_cache),
                          'sparse_labels': sparse_labels}))
    t0 = time.perf_counter()
    mine = sum(min(scenes_per_shard, scenes - s * scenes_per_shard)
               for s in range(part, n_shards, parts))
    bar = tqdm(total=mine, initial=mine - sum(j[5] for j in jobs), unit='scene',
               desc=f'{split} scenes', disable=not progress, file=sys.stdout)
    if workers > 1 and len(jobs) > 1:
        with mp.get_context('spawn').Pool(workers) as pool:
            for _shard, count, _dt in pool.imap_unordered(_write_shard, jobs):
                bar.update(count)
    else:
        for job in jobs:
            _shard, count, _dt = _write_shard(job)
            bar.update(count)
    bar.close()
    manifest = {
        'schema_version': SCHEMA_VERSION,
        'split': split,
        'seed': seed,
        'scenes': scenes,
        'scenes_per_shard': scenes_per_shard,
        'shards': [shard_path(out, split, s).name for s in range(n_shards)],
        'label_config': _jsonable(asdict(config)),
        'dense_label_config': None if dense is None else _jsonable(asdict(dense)),
        'sparse_labels': sparse_labels,
        'size_levels': size_levels,
        'generator': {'objects_per_scene': num_objects or OBJECTS_PER_SCENE,
                      'packed_fraction': PACKED_FRACTION,
                      'camera_distance_m': CAMERA_DISTANCE_M,
                      'camera_elevation_deg': CAMERA_ELEVATION_DEG,
                      'look_at_jitter_m': LOOK_AT_JITTER_M,
                      'min_visible_pixels': MIN_VISIBLE_PIXELS,
                      'intrinsics': 'CameraIntrinsics.d435() 640x480'},
        'command': command or ' '.join(sys.argv),
        'part': [part, parts],
        'generated_shards_this_run': len(jobs),
        'seconds_this_run': round(time.perf_counter() - t0, 1),
        'machine': f'{platform.platform()} ({os.cpu_count()} cpus)',
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
    }
    (out / split / 'manifest.json').write_text(json.dumps(manifest, indent=2))
    return manifest


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description='Generate labelled synthetic tabletop scenes.')
    ap.add_argument('--out', required=True, help='data set directory (e.g. datasets/v1)')
    ap.add_argument('--split', required=True, choices=SPLITS)
    ap.add_argument('--scenes', type=int, required=True)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--workers', type=int, default=1)
    ap.add_argument('--scenes-per-shard', type=int, default=4)
    ap.add_argument('--objects', type=int, default=None,
                    help='objects per scene (default: random in 1..10)')
    ap.add_argument('--grasp-points', type=int, default=LabelConfig.grasp_points,
                    help='labelled grasp points per object')
    ap.add_argument('--part', type=int, default=0,
                    help='this machine writes shards number %% parts == part')
    ap.add_argument('--parts', type=int, default=1, help='machines sharing the split')
    ap.add_argument('--dense-labels', action='store_true',
                    help='write dense targets (data/dense_labels.py) instead of the sparse '
                         'grasp labels; quantises sizes')
    ap.add_argument('--keep-sparse-labels', action='store_true',
                    help='with --dense-labels, also write the sparse grasp labels')
    ap.add_argument('--dense-points', type=int, default=DenseLabelConfig.points,
                    help='labelled surface points per object for --dense-labels')
    ap.add_argument('--dense-cache', default=None,
                    help='per-mesh dense label cache (default ~/.cache/zerograsp_ros/'
                         'dense_labels or $ZEROGRASP_DENSE_LABEL_CACHE)')
    ap.add_argument('--size-levels', type=int, default=None,
                    help='quantise object sizes to this many levels (default: '
                         f'{DEFAULT_DENSE_SIZE_LEVELS} with --dense-labels, else continuous)')
    args = ap.parse_args(argv)
    config = LabelConfig(grasp_points=args.grasp_points)
    dense = DenseLabelConfig(points=args.dense_points) if args.dense_labels else None
    size_levels = args.size_levels
    if size_levels is None and dense is not None:
        size_levels = DEFAULT_DENSE_SIZE_LEVELS
    cmd = 'python -m zerograsp_ros.data.generate ' + ' '.join(sys.argv[1:] if argv is None
                                                            else argv)
    m = generate_split(args.out, args.split, args.scenes, args.seed, args.workers,
                       args.scenes_per_shard, config, command=cmd, num_objects=args.objects,
                       part=args.part, parts=args.parts, dense=dense,
                       size_levels=size_levels, dense_cache=args.dense_cache,
                       sparse_labels=dense is None or args.keep_sparse_labels)
    print(f"{args.split}: {m['scenes']} scenes in {len(m['shards'])} shards at "
          f"{Path(args.out) / args.split} ({m['seconds_this_run']} s this run)")


if __name__ == '__main__':
    main()
