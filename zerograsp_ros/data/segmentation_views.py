"""Training views for the learned segmenter: rendered RGB-D with instance labels, by seed.

    python -m zerograsp_ros.data.segmentation_views --out runs/segviews --split train \
        --scenes 300 --views 4

Scenes come from `zerograsp_ros.sim.scene` (objects split by id: a split only ever
sees its own meshes), 2-10 objects, pile (60 %) or packed (40 %). Physics settling
is the slow part, so each scene is rendered from several cameras: one near the
simulated cell's camera (config/sim_cell.yaml, eye jittered by up to 8 cm), the
others drawn like the grasp data set's (distance 0.45-0.75 m, elevation 40-80 deg,
any azimuth). Depth carries the full dex noise (whole-image scale error included).

Views are stored reduced to network resolution exactly as the segmenter reduces
frames at run time (`reduce_frame`: every 2nd pixel of 640x480, table plane fitted
on the noisy depth, heights above it), in `<out>/<split>/chunk_<k>.npz` of
`--chunk` scenes each. Scene i of a split has seed SeedSequence([seed, split, i]);
finished chunks are skipped on a re-run (resume). Never committed: regenerate.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import time

import numpy as np

from zerograsp_ros.errors import InputError

PILE_FRACTION = 0.6
OBJECTS_PER_SCENE = (2, 10)
CELL_EYE_JITTER_M = 0.08


def cell_camera_pose() -> np.ndarray:
    """T_world_camera of the simulated cell (config/sim_cell.yaml)."""
    from zerograsp_ros.sim.cell_config import load_sim_cell_config
    return np.asarray(load_sim_cell_config().T_world_camera, dtype=np.float64)


def render_cell_view(seed: int, layout: str, split: str, objects: int = 5):
    """(frame with GT labels, tare scale): a scene as the simulated cell's camera sees it.

    `generate_scene(seed, objects, layout, split)` rendered from the cell's camera with
    the cell's render stream and full depth noise, then depth-scale tared against the
    table plane known from the cell's extrinsics, as the camera node does.
    """
    from zerograsp_ros.perception.depth_tare import table_plane_in_camera, tare_frame
    from zerograsp_ros.sim.cell_config import load_sim_cell_config
    from zerograsp_ros.sim.scene import generate_scene, render_rgbd

    cfg = load_sim_cell_config()
    scene = generate_scene(seed, objects, layout, split)
    rng = np.random.default_rng([seed, 31337])   # SimCell.load_scene's stream for this seed
    frame = render_rgbd(scene, cfg.intrinsics, cfg.T_world_camera, rng, noise=True)
    known = table_plane_in_camera(cfg.T_world_camera, (0.0, 0.0, 1.0, 0.0))
    tared, result = tare_frame(frame, known)
    return tared, result.scale


def view_cameras(rng: np.random.Generator, views: int) -> list[np.ndarray]:
    """One camera near the cell's, the others on the grasp data set's sphere cap."""
    from zerograsp_ros.data.generate import (
        CAMERA_DISTANCE_M,
        CAMERA_ELEVATION_DEG,
        LOOK_AT_JITTER_M,
    )
    from zerograsp_ros.sim.scene import camera_look_at, sample_camera_pose

    cell = cell_camera_pose()
    eye = cell[:3, 3] + rng.uniform(-CELL_EYE_JITTER_M, CELL_EYE_JITTER_M, 3)
    target = np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(0, 0.04)])
    cams = [camera_look_at(eye, target)]
    for _ in range(views - 1):
        look_at = (rng.uniform(-LOOK_AT_JITTER_M, LOOK_AT_JITTER_M),
                   rng.uniform(-LOOK_AT_JITTER_M, LOOK_AT_JITTER_M), rng.uniform(0.0, 0.04))
        cams.append(sample_camera_pose(rng, CAMERA_DISTANCE_M, CAMERA_ELEVATION_DEG, look_at))
    return cams


def render_scene_views(seed: int, split: str, views: int = 4) -> list[dict]:
    """Reduced views (rgb, depth, height, valid, labels, layout) of one random scene."""
    from zerograsp_ros.geometry.camera import CameraIntrinsics
    from zerograsp_ros.perception.learned_segmentation import reduce_frame
    from zerograsp_ros.sim.scene import generate_scene, render_rgbd

    rng = np.random.default_rng(seed)
    n_obj = int(rng.integers(OBJECTS_PER_SCENE[0], OBJECTS_PER_SCENE[1] + 1))
    layout = 'pile' if rng.random() < PILE_FRACTION else 'packed'
    scene = generate_scene(seed, n_obj, layout, split)
    out = []
    for T in view_cameras(rng, views):
        frame = render_rgbd(scene, CameraIntrinsics.d435(), T, rng, noise=True)
        try:
            view = reduce_frame(frame)
        except InputError:   # no table plane in this view (rare): skip it
            continue
        s = view.stride
        out.append({'rgb': view.rgb, 'depth': view.depth.astype(np.float16),
                    'height': view.height.astype(np.float16), 'valid': view.valid,
                    'labels': frame.labels[::s, ::s].astype(np.uint8), 'layout': layout})
    return out


def write_chunk(path: Path, views: list[dict]) -> None:
    arrays = {k: np.stack([v[k] for v in views]) for k in ('rgb', 'depth', 'height', 'valid',
                                                          'labels')}
    arrays['layout'] = np.array([v['layout'] for v in views])
    tmp = path.with_name(path.name + f'.{os.getpid()}.tmp.npz')
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)


def load_views(directory: str | Path) -> dict[str, np.ndarray]:
    """All chunks of one split directory, concatenated (InputError when there are none)."""
    files = sorted(Path(directory).glob('chunk_*.npz'))
    files = [f for f in files if '.tmp' not in f.name]
    if not files:
        raise InputError(f'no segmentation views in {directory} (generate them with '
                         'python -m zerograsp_ros.data.segmentation_views)')
    parts = [dict(np.load(f)) for f in files]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def main(argv=None) -> None:
    from tqdm import tqdm

    from zerograsp_ros.data.generate import SPLITS, scene_seed

    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--out', default='runs/segviews')
    ap.add_argument('--split', default='train', choices=SPLITS)
    ap.add_argument('--scenes', type=int, default=300)
    ap.add_argument('--views', type=int, default=4, help='cameras per scene')
    ap.add_argument('--chunk', type=int, default=10, help='scenes per chunk file')
    ap.add_argument('--seed', type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out) / args.split
    out.mkdir(parents=True, exist_ok=True)
    chunks = range((args.scenes + args.chunk - 1) // args.chunk)
    todo = [k for k in chunks if not (out / f'chunk_{k:05d}.npz').is_file()]
    start = time.time()
    for k in tqdm(todo, desc=f'{args.split} chunks of {args.chunk} scenes'):
        views = []
        for i in range(k * args.chunk, min((k + 1) * args.chunk, args.scenes)):
            views += render_scene_views(scene_seed(args.seed, args.split, i), args.split,
                                        args.views)
        write_chunk(out / f'chunk_{k:05d}.npz', views)
    print(f'{len(todo)} chunks written to {out} in {time.time() - start:.0f} s')


if __name__ == '__main__':
    main()
