"""Grasp refinement on the reconstruction: contacts, collision check, NMS and top-k.

How each decision is defined
----------------------------
Everything is in one frame (the grasps' frame, e.g. the camera frame). For a grasp with
rotation R = [x y z] (x = approach, y = closing), TCP t, width w and depth d, a point p is
expressed in the gripper frame as q = R^T (p - t). The gripper model
(`zerograsp_ros.grasp.gripper`, finger length L, finger width W along z) defines:

- closing region: d - L <= q_x <= d, |q_y| < w/2 and |q_z| <= W/2 (between the fingers)
- gripper body: the model's boxes (fingers, width-following back box, housing), swept
  back along x by its approach_distance (the pick's straight approach from the pre-grasp
  pose), minus the closing region

0. Free-space carving (`use_free_space_check`, only when the depth image of the camera
   whose optical frame the grasps are in is given): a reconstructed point is dropped when
   its pixel has a valid depth more than `free_space_margin` behind it, i.e. the camera
   looked through it. The network may complete shape where the camera sees empty space;
   such points would make contacts, collisions and the emptiness test below believe in
   geometry that is not there. Points outside the image or behind an invalid pixel stay.

A grasp is rejected for the first reason that applies, in this order (the keys of
`RefinementResult.rejection_counts`):

1. ``invalid``: a non-finite rotation, TCP, width, depth or score; a rotation that is not
   orthonormal with determinant +1 (max |R^T R - I| or |det R - 1| above 1e-3); width <= 0;
   depth < 0 or depth > L.
2. Contact constraints (paper section 3.2; `use_contact_constraints`) then refine w and d
   using the object (reconstruction) points inside the closing region: the gaps to the
   left and right fingers are D_L = min(q_y + w/2) and D_R = min(w/2 - q_y);
   dw = min(D_L, D_R) and w <- w + 2 (clamp(dw, gamma_min, gamma_max) - dw), which leaves
   a clearance between gamma_min and gamma_max on the tighter side. The contact depth of a
   side, Z, is the largest q_x among that side's points whose gap is within
   `contact_tolerance` of its minimum (a flat face gives many equally close points; the
   deepest keeps the whole face between the fingers), and d <- clip(max(Z_L, Z_R), 0, d):
   the fingertips stop at the deeper contact instead of reaching past the object. A grasp
   with no object point in its closing region keeps w and d (and is later "empty").
2b. Contact quality (`use_contact_quality`, only when object normals are given): on the
   refined grasp, each side's contact patch (the points within `contact_tolerance` of
   that side's tightest gap whose normals face the finger) gives a mean outward normal;
   the smaller of the two cosines between it and the direction towards its finger is the
   antipodal cosine c, mu = tan(arccos c) the least friction coefficient at which the
   contacts hold, and quality = `quality_from_mu(mu)` (the training labels' scale). The
   grasp's predicted quality is replaced by it and score = graspness * quality: the
   network's quality head ranks poorly on a small CPU-trained model, while the
   reconstructed surface and normals it also predicts measure contact geometry directly.
   Nothing is rejected here; a grasp with no facing contact gets quality 0.
3. ``stroke``: the (refined) width exceeds the gripper's max_stroke.
4. ``approach_cone`` (only with a table plane n.p + d0 = 0, n up): the angle between the
   approach x and -n (straight down onto the table) exceeds `approach_cone_deg`.
5. ``below_table`` (only with a table plane): the TCP or a corner of a finger box lies
   below the plane (signed distance < -table_tolerance), or the approach points upward
   (x.n > 0: coming from under the table).
6. ``workspace``: the TCP lies outside [workspace_min, workspace_max] (per axis, the grasps'
   frame; None = no limit).
7. ``collision`` (`use_collision_check`): more than `collision_tolerance_points` points of
   the obstacle cloud lie in the gripper body, or (with a table plane) a corner of the
   swept back box or housing lies below the plane by more than `table_tolerance`. The obstacle
   cloud is every object's reconstruction plus the visible scene points, voxel-downsampled
   at `collision_voxel` (centroid per voxel; 0 disables it).
8. ``empty`` (`use_collision_check`): fewer than `empty_min_points` obstacle points lie in
   the closing region.
8b. Depth search (`use_depth_search`): a surviving grasp's depth is raised in steps of
   `depth_search_step` up to `depth_search_max` (at most the finger length) for as long
   as the gripper body at the deeper pose is collision-free by decision 7 (the same
   obstacle cloud and table); the fingers pass through every intermediate depth, so the
   search stops at the first colliding one. Contact refinement (2.) stops the fingertips
   at the deeper contact, which on a box or cylinder side is often only 1-2 cm below the
   top edge; measured in the simulated cell, a deeper grasp that still clears
   everything slips less (README, clutter removal).
9. ``nms``: greedy in score order: a grasp is dropped when a better-scored survivor lies
   within `nms_distance` (TCP distance) and `nms_angle_deg` (rotation angle, with the
   180-degree flip about the approach treated as the same grasp when `nms_symmetric`).
10. ``top_k``: beyond `max_grasps` after sorting by score.

Survivors keep their object ids; with `object_point_ids`, a grasp whose id is negative
takes the id of the nearest object point. `RefinementResult.source_indices` maps each
survivor back to its input row.

Boundaries: a point exactly on a finger's inner face counts as gripper body, not as
closing region. All pairwise work runs batched in torch (CPU or CUDA,
`zerograsp_ros.grasp.kernels`), in blocks of about `chunk_size` grasp-point pairs: the
points are sorted into a grid once per cloud, and each grasp meets only the points of the
grid cells its oriented gripper box can reach.

Layout: this module holds the definitions above and the `refine_grasps` orchestration;
`grasp.checks` the config, the input checks and the single-purpose public checks;
`grasp.kernels` the batched torch kernels. Inputs are validated once, at the public entry;
the inner steps take checked tensors.
(A scipy cKDTree ball query for the contact search was measured as well: the query alone
costs about as much CPU time as the whole torch contact pass, so torch is used throughout.)
"""
from __future__ import annotations

from dataclasses import dataclass, field
import math

import numpy as np
from scipy.spatial import cKDTree
import torch

from zerograsp_ros.errors import InputError
from zerograsp_ros.grasp.checks import (
    RefinementConfig,
    antipodal_quality,
    as_normals,
    as_plane,
    as_points,
    check_collisions,
    checked_model_and_config,
    collision_masks,
    contact_quality,
    contact_refinement,
    grasp_nms,
    invalid_grasp_mask,
    paper_refinement_config,
    point_grid,
    refined_width_depth,
    seen_free_points,
    voxel_downsample,
)
from zerograsp_ros.grasp.gripper import GripperModel
from zerograsp_ros.grasp.kernels import GraspBatch, PointGrid, finger_and_body_table_distance
from zerograsp_ros.grasp.representation import GraspSet, quality_from_mu
from zerograsp_ros.runtime import resolve_device

# The public API of refinement, also re-exported from its parts for existing imports.
__all__ = ['REJECTION_REASONS', 'RefinementConfig', 'RefinementResult', 'check_collisions',
           'contact_quality', 'contact_refinement', 'grasp_nms', 'invalid_grasp_mask',
           'paper_refinement_config', 'refine_grasps', 'seen_free_points', 'voxel_downsample']

REJECTION_REASONS = ('invalid', 'stroke', 'approach_cone', 'below_table', 'workspace',
                     'collision', 'empty', 'nms', 'top_k')


@dataclass
class RefinementResult:
    grasps: GraspSet                   # survivors, refined, sorted by score, <= max_grasps
    rejection_counts: dict[str, int]   # one count per REJECTION_REASONS key
    source_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class _Scene:
    """refine_grasps' checked inputs: object points (carved) with ids/normals, obstacles."""

    objects: np.ndarray
    ids: np.ndarray | None
    normals: np.ndarray | None
    scene: np.ndarray
    plane: np.ndarray | None
    device: torch.device


class _Verdicts:
    """The first rejection reason of every input grasp (-1 while it survives)."""

    def __init__(self, n: int):
        self.reason = np.full(n, -1, np.int64)

    def reject(self, rows: np.ndarray, mask: np.ndarray, name: str) -> None:
        """Reject input rows[mask] for `name` unless they were rejected before."""
        hit = rows[np.asarray(mask, bool)]
        self.reason[hit[self.reason[hit] < 0]] = REJECTION_REASONS.index(name)

    def alive(self, rows: np.ndarray) -> np.ndarray:
        return self.reason[rows] < 0

    def counts(self) -> dict[str, int]:
        return {name: int((self.reason == i).sum()) for i, name in enumerate(REJECTION_REASONS)}


def refine_grasps(grasps: GraspSet, object_points: np.ndarray,
                  object_point_ids: np.ndarray | None = None,
                  scene_points: np.ndarray | None = None, table_plane: np.ndarray | None = None,
                  gripper: GripperModel | None = None,
                  config: RefinementConfig | None = None,
                  max_grasps: int = 50, device: str = 'cpu',
                  object_normals: np.ndarray | None = None,
                  camera_depth: tuple | None = None) -> RefinementResult:
    """Refine, filter, de-duplicate and rank grasps on the reconstruction (module notes).

    object_points: (M, 3) all objects' reconstructed points; object_point_ids: (M,) their
    object ids, used to give grasps with a negative object id the id of the nearest object
    point; scene_points: (K, 3) visible depth points (table included) added to the
    obstacle cloud; table_plane: (a, b, c, d) with the normal pointing up;
    object_normals: (M, 3) unit outward normals of the object points, for the contact
    quality (without them the predicted scores are kept); camera_depth: (depth (H, W) in
    metres, CameraIntrinsics) of the camera whose optical frame the grasps are in, for
    the free-space check.
    """
    gripper, config = checked_model_and_config(grasps, gripper, config)
    if isinstance(max_grasps, bool) or not isinstance(max_grasps, (int, np.integer)) \
            or max_grasps < 1:
        raise InputError(f'max_grasps must be an integer >= 1, got {max_grasps!r}')
    scene = _checked_scene(object_points, object_point_ids, scene_points, table_plane,
                           object_normals, camera_depth, config, device)
    verdicts = _Verdicts(len(grasps))
    verdicts.reject(np.arange(len(grasps)), invalid_grasp_mask(grasps, gripper), 'invalid')
    alive = np.flatnonzero(verdicts.reason < 0)
    work = grasps.subset(alive)
    if len(work):
        _assign_object_ids(work, scene)
        _refine_on_contacts(work, scene, gripper, config)
        _reject_by_pose(work, alive, verdicts, scene, gripper, config)
    obstacles = None
    if len(work) and (config.use_collision_check or config.use_depth_search):
        cloud = np.concatenate([scene.objects, scene.scene]) if len(scene.scene) \
            else scene.objects
        obstacles = point_grid(voxel_downsample(cloud, config.collision_voxel),
                               GraspBatch.cell_for(gripper), scene.device)
    if len(work) and config.use_collision_check:
        todo = np.flatnonzero(verdicts.alive(alive))
        masks = collision_masks(work.subset(todo), obstacles, gripper, config, scene.plane,
                                scene.device)
        verdicts.reject(alive[todo], masks['collision'], 'collision')
        verdicts.reject(alive[todo], masks['empty'], 'empty')
    survivors = np.flatnonzero(verdicts.alive(alive))
    if config.use_depth_search and len(survivors):
        work.depths[survivors] = _deepest_free_depths(work.subset(survivors), obstacles,
                                                      gripper, config, scene)
    candidates = work.subset(survivors)
    kept = grasp_nms(candidates, config.nms_distance, config.nms_angle_deg,
                     config.nms_symmetric)
    duplicate = np.ones(len(candidates), bool)
    duplicate[kept] = False
    verdicts.reject(alive[survivors], duplicate, 'nms')
    beyond = survivors[kept[max_grasps:]]
    verdicts.reject(alive[beyond], np.ones(len(beyond), bool), 'top_k')
    top = kept[:max_grasps]
    return RefinementResult(grasps=candidates.subset(top), rejection_counts=verdicts.counts(),
                            source_indices=alive[survivors[top]].astype(np.int64))


def _checked_scene(object_points, object_point_ids, scene_points, table_plane,
                   object_normals, camera_depth, config: RefinementConfig, device) -> _Scene:
    """Validate refine_grasps' point inputs once and apply the free-space carving (0.)."""
    objects = as_points(object_points, 'object_points', allow_empty=False)
    scene = as_points(scene_points, 'scene_points', allow_empty=True)
    plane = as_plane(table_plane)
    dev = resolve_device(device)
    ids = None
    if object_point_ids is not None:
        ids = np.asarray(object_point_ids).reshape(-1)
        if len(ids) != len(objects):
            raise InputError(f'object_point_ids has {len(ids)} entries for {len(objects)} '
                             'object points')
    normals = None
    if object_normals is not None:
        normals = np.asarray(object_normals, dtype=np.float32).reshape(-1, 3)
        if len(normals) != len(objects):
            raise InputError(f'object_normals has {len(normals)} rows for '
                             f'{len(objects)} object points')
        if config.use_contact_quality:
            normals = as_normals(normals, objects)
    if config.use_free_space_check and camera_depth is not None:
        keep = ~seen_free_points(objects, camera_depth[0], camera_depth[1],
                                 config.free_space_margin)
        objects = objects[keep]
        ids = ids[keep] if ids is not None else None
        normals = normals[keep] if normals is not None else None
    return _Scene(objects, ids, normals, scene, plane, dev)


def _assign_object_ids(work: GraspSet, scene: _Scene) -> None:
    """Grasps with a negative object id take the id of the nearest object point."""
    if scene.ids is None or not len(scene.objects) or not (work.object_ids < 0).any():
        return
    unknown = work.object_ids < 0
    _, nearest = cKDTree(scene.objects).query(work.translations[unknown])
    work.object_ids[unknown] = scene.ids[nearest]


def _refine_on_contacts(work: GraspSet, scene: _Scene, gripper: GripperModel,
                        config: RefinementConfig) -> None:
    """Contact constraints (2.) and contact quality (2b.), in place."""
    quality = config.use_contact_quality and scene.normals is not None
    if not (config.use_contact_constraints or quality):
        return
    # one grid of the object points (with normals when the quality needs them) for both
    objects = point_grid(scene.objects, GraspBatch.cell_for(gripper, closing_only=True),
                         scene.device, scene.normals if quality else None)
    if config.use_contact_constraints:
        work.widths, work.depths, _ = refined_width_depth(work, objects, gripper, config,
                                                          scene.device)
    if quality:
        _, mu = antipodal_quality(work, objects, gripper, config, scene.device)
        work.qualities = quality_from_mu(mu)
        work.scores = work.graspness * work.qualities


def _reject_by_pose(work: GraspSet, alive: np.ndarray, verdicts: _Verdicts, scene: _Scene,
                    gripper: GripperModel, config: RefinementConfig) -> None:
    """Stroke, approach cone, below table and workspace (3.-6.)."""
    verdicts.reject(alive, work.widths > gripper.max_stroke, 'stroke')
    approach = work.rotations[:, :, 0].astype(np.float64)
    plane = scene.plane
    if plane is not None:
        cos_down = -(approach @ plane[:3])
        verdicts.reject(alive, cos_down < math.cos(math.radians(config.approach_cone_deg))
                        - 1e-9, 'approach_cone')
        dev = scene.device
        fingers, _ = finger_and_body_table_distance(
            torch.as_tensor(work.rotations, device=dev),
            torch.as_tensor(work.translations, device=dev),
            torch.as_tensor(work.widths, device=dev), torch.as_tensor(work.depths, device=dev),
            gripper, plane)
        tcp_height = work.translations.astype(np.float64) @ plane[:3] + plane[3]
        verdicts.reject(alive, (tcp_height < -config.table_tolerance)
                        | (fingers.cpu().numpy() < -config.table_tolerance)
                        | (approach @ plane[:3] > 0), 'below_table')
    if config.workspace_min is not None:
        verdicts.reject(alive, (work.translations < np.asarray(config.workspace_min)).any(1),
                        'workspace')
    if config.workspace_max is not None:
        verdicts.reject(alive, (work.translations > np.asarray(config.workspace_max)).any(1),
                        'workspace')


def _deepest_free_depths(grasps: GraspSet, obstacles: PointGrid, gripper: GripperModel,
                         config: RefinementConfig, scene: _Scene) -> np.ndarray:
    """Depth search (notes, 8b.): deepest collision-free depth reached step by step."""
    depths = grasps.depths.astype(np.float32).copy()
    limit = min(float(config.depth_search_max), gripper.finger_length)
    step = float(config.depth_search_step)
    if step <= 0:
        return depths
    active = depths < limit - 1e-6
    while active.any():
        idx = np.flatnonzero(active)
        trial = grasps.subset(idx)
        trial.depths = np.minimum(depths[idx] + step, limit).astype(np.float32)
        hit = collision_masks(trial, obstacles, gripper, config, scene.plane,
                              scene.device)['collision']
        depths[idx[~hit]] = trial.depths[~hit]
        active[idx[hit]] = False
        active &= depths < limit - 1e-6
    return depths
