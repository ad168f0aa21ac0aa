"""Recorded refinement decisions: inputs and what every public refinement call returned.

    python test/support/refinement_decisions.py   # re-records the fixture below

Recorded once with the refinement before it was split into kernels / checks / orchestration
(#17), so test_refinement.py can check that the split code decides identically. Re-record
only on purpose (a decision rule changed), never to make that test pass.

The scene is in a camera's optical frame (z away from the camera, 0.6 m above a table):
box objects, table points, a few reconstructed points floating where the camera sees
through them (for the free-space check), grasps mostly from above with some invalid,
too wide, upward or unlabelled ones, so that every rejection reason occurs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / 'fixtures' / 'refinement_decisions.npz'
INTRINSICS = dict(fx=80.0, fy=80.0, cx=40.0, cy=30.0, width=80, height=60)
TABLE_DISTANCE = 0.6


def make_inputs(seed: int = 7) -> dict[str, np.ndarray]:
    from zerograsp_ros.grasp.representation import rotation_from_approach

    rng = np.random.default_rng(seed)
    objects, normals, ids = [], [], []
    for k, centre in enumerate(rng.uniform((-0.12, -0.12), (0.12, 0.12), (5, 2))):
        half = np.r_[rng.uniform(0.012, 0.035, 2), rng.uniform(0.015, 0.05)]
        p = rng.uniform(-1.0, 1.0, (500, 3))
        face = rng.integers(0, 3, len(p))
        sign = np.sign(p[np.arange(len(p)), face])
        p[np.arange(len(p)), face] = sign
        n = np.zeros_like(p)
        n[np.arange(len(p)), face] = sign
        p = p * half
        p[:, 2] -= half[2]                       # standing on the table, towards the camera
        p[:, :2] += centre
        p[:, 2] += TABLE_DISTANCE
        objects.append(p)
        normals.append(n)
        ids.append(np.full(len(p), k + 1))
    objects = np.concatenate(objects)
    normals = np.concatenate(normals)
    ids = np.concatenate(ids)
    ghosts = np.c_[rng.uniform(-0.1, 0.1, (60, 2)), rng.uniform(0.3, 0.4, 60)]
    ghost_normals = np.tile([0.0, 0.0, -1.0], (len(ghosts), 1))
    object_points = np.concatenate([objects, ghosts]).astype(np.float32)
    object_normals = np.concatenate([normals, ghost_normals]).astype(np.float32)
    object_ids = np.concatenate([ids, np.full(len(ghosts), 9)]).astype(np.int64)
    table = np.c_[rng.uniform(-0.25, 0.25, (1500, 2)), np.full(1500, TABLE_DISTANCE)]
    scene_points = np.concatenate([table, objects[::4]]).astype(np.float32)
    depth = _render_depth(np.concatenate([objects, table]))

    n = 500
    upper = np.flatnonzero(objects[:, 2] < TABLE_DISTANCE - 0.015)   # not at the table
    pick = upper[rng.integers(0, len(upper), n)]
    approach = np.c_[rng.normal(0.0, 0.35, (n, 2)), np.ones(n)]        # mostly along +z
    approach[:12, 2] = -1.0                                          # from under the table
    rotations = rotation_from_approach(approach, rng.uniform(0, np.pi, n)).astype(np.float32)
    translations = (objects[pick] + rng.normal(0.0, 0.008, (n, 3))).astype(np.float32)
    widths = rng.uniform(0.01, 0.1, n).astype(np.float32)
    depths = rng.uniform(-0.003, 0.058, n).astype(np.float32)
    scores = rng.uniform(size=n).astype(np.float32)
    grasp_ids = ids[pick].astype(np.float32)
    grasp_ids[rng.random(n) < 0.2] = -1
    translations[3] = np.nan
    rotations[5] *= 1.1                                              # not orthonormal
    return dict(rotations=rotations, translations=translations, widths=widths, depths=depths,
                scores=scores, qualities=scores.copy(), graspness=np.ones(n, np.float32),
                grasp_object_ids=grasp_ids, object_points=object_points,
                object_normals=object_normals, object_point_ids=object_ids,
                scene_points=scene_points, depth=depth,
                table_plane=np.array([0.0, 0.0, -1.0, TABLE_DISTANCE]))


def _render_depth(points: np.ndarray) -> np.ndarray:
    from zerograsp_ros.geometry.camera import CameraIntrinsics, project

    intr = CameraIntrinsics(**INTRINSICS)
    uv, z = project(points.astype(np.float64), intr)
    u, v = np.round(uv[:, 0]).astype(int), np.round(uv[:, 1]).astype(int)
    inside = (u >= 0) & (u < intr.width) & (v >= 0) & (v < intr.height) & (z > 0)
    depth = np.full((intr.height, intr.width), np.inf)
    np.minimum.at(depth, (v[inside], u[inside]), z[inside])
    depth[~np.isfinite(depth)] = 0.0                                   # invalid pixels
    return depth.astype(np.float32)


def grasp_set(inputs):
    from zerograsp_ros.grasp.representation import GraspSet

    return GraspSet(inputs['rotations'], inputs['translations'], inputs['widths'],
                    inputs['depths'], inputs['scores'], inputs['qualities'],
                    inputs['graspness'], inputs['grasp_object_ids'])


def decisions(inputs) -> dict[str, np.ndarray]:
    """Every public refinement call on the inputs, flattened to named arrays."""
    from zerograsp_ros.geometry.camera import CameraIntrinsics
    from zerograsp_ros.grasp.gripper import gripper_preset
    from zerograsp_ros.grasp.refinement import (
        REJECTION_REASONS,
        RefinementConfig,
        check_collisions,
        contact_quality,
        contact_refinement,
        grasp_nms,
        paper_refinement_config,
        refine_grasps,
        seen_free_points,
        voxel_downsample,
    )

    grasps = grasp_set(inputs)
    intr = CameraIntrinsics(**INTRINSICS)
    objects, scene = inputs['object_points'], inputs['scene_points']
    plane = inputs['table_plane']
    out: dict[str, np.ndarray] = {}
    runs = {
        'full': dict(config=RefinementConfig(workspace_min=(-0.15, -0.2, 0.3),
                                             workspace_max=(0.2, 0.2, 0.7)),
                     object_normals=inputs['object_normals'],
                     camera_depth=(inputs['depth'].astype(np.float64), intr)),
        'paper': dict(config=paper_refinement_config()),
        'graspnet': dict(gripper=gripper_preset('graspnet'),
                         config=RefinementConfig(collision_tolerance_points=3,
                                                 empty_min_points=10, chunk_size=997,
                                                 nms_symmetric=False)),
    }
    for name, kwargs in runs.items():
        res = refine_grasps(grasps, objects, object_point_ids=inputs['object_point_ids'],
                            scene_points=scene, table_plane=plane, max_grasps=8, **kwargs)
        out[f'{name}_counts'] = np.array([res.rejection_counts[r] for r in REJECTION_REASONS])
        out[f'{name}_source'] = res.source_indices
        for key in ('widths', 'depths', 'scores', 'qualities', 'object_ids'):
            out[f'{name}_{key}'] = getattr(res.grasps, key)
    valid = np.flatnonzero(grasps.finite_mask())
    valid = valid[(valid != 5) & (grasps.depths[valid] >= 0) & (grasps.depths[valid] <= 0.055)]
    good = grasps.subset(valid)
    masks = check_collisions(good, np.concatenate([objects, scene]), table_plane=plane)
    for key, value in masks.items():
        out[f'check_{key}'] = value
    out['contact_widths'], out['contact_depths'], out['contact_found'] = \
        contact_refinement(good, objects)
    out['quality_cosine'], out['quality_mu'] = contact_quality(good, objects,
                                                               inputs['object_normals'])
    out['nms_kept'] = grasp_nms(good)
    out['seen_free'] = seen_free_points(objects, inputs['depth'], intr)
    out['voxel'] = voxel_downsample(objects, 0.01)
    return out


def main() -> None:
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    inputs = make_inputs()
    recorded = decisions(inputs)
    np.savez_compressed(FIXTURE, **{f'in_{k}': v for k, v in inputs.items()},
                        **{f'out_{k}': v for k, v in recorded.items()})
    counts = {k: v.tolist() for k, v in recorded.items() if k.endswith('_counts')}
    print(f'wrote {FIXTURE} ({FIXTURE.stat().st_size // 1024} KiB): {counts}')


if __name__ == '__main__':
    main()
