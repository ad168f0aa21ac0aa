"""Refinement's configuration, input checks and public per-grasp checks.

The public functions here (`check_collisions`, `contact_refinement`, `contact_quality`,
`seen_free_points`, `grasp_nms`, `invalid_grasp_mask`, `voxel_downsample`) validate their
inputs once and then call the checked-input versions (`collision_masks`,
`refined_width_depth`, `antipodal_quality`), which `refinement.refine_grasps` also calls
after its own single validation. The decisions are defined in the `refinement` module notes.
"""
from __future__ import annotations

from dataclasses import dataclass
import hashlib

import numpy as np
from scipy.spatial import cKDTree
import torch

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import project
from zerograsp_ros.grasp import DEFAULT_GRIPPER
from zerograsp_ros.grasp.gripper import GripperModel, gripper_preset
from zerograsp_ros.grasp.kernels import (
    GraspBatch,
    PointGrid,
    contacts,
    count_body_and_inner,
    finger_and_body_table_distance,
)
from zerograsp_ros.grasp.representation import (
    GraspSet,
    mu_from_antipodal_cosine,
    same_grasp_rotation,
    unit_normal_rows,
)
from zerograsp_ros.runtime import resolve_device

__all__ = ['RefinementConfig', 'antipodal_quality', 'as_normals', 'as_plane', 'as_points',
           'check_collisions', 'checked_model_and_config', 'collision_masks',
           'contact_quality', 'contact_refinement', 'forget_point_grids', 'grasp_nms',
           'invalid_grasp_mask',
           'paper_refinement_config', 'point_grid', 'refined_width_depth',
           'seen_free_points', 'voxel_downsample']

ROTATION_TOLERANCE = 1e-3
_GRIDS: dict[tuple[str, float], tuple[bytes, PointGrid]] = {}   # see point_grid


@dataclass
class RefinementConfig:
    """Parameters of refinement; the module docstring defines how each is used."""

    gamma_min: float = 0.005           # m, least clearance left on the tighter finger
    gamma_max: float = 0.02            # m, most clearance left (wider grasps are narrowed)
    contact_tolerance: float = 0.005   # m, gap slack when choosing the deepest contact
    collision_voxel: float = 0.005     # m, obstacle cloud downsampling (0 = off)
    # A grasp collides when MORE than this many obstacle points lie in the gripper body;
    # 0 = any point (the GraspNet model-free rule), raise it for noisy clouds.
    collision_tolerance_points: int = 0
    # A grasp is empty when FEWER than this many obstacle points lie between the fingers.
    empty_min_points: int = 3
    nms_distance: float = 0.03         # m
    nms_angle_deg: float = 30.0
    nms_symmetric: bool = True         # a 180-degree flip about the approach is the same grasp
    approach_cone_deg: float = 75.0    # max angle between approach and straight down
    table_tolerance: float = 0.0       # m, how far gripper corners may dip below the plane
    workspace_min: tuple[float, float, float] | None = None
    workspace_max: tuple[float, float, float] | None = None
    chunk_size: int = 1 << 22          # grasp-point pairs per batch (bounds memory)
    use_contact_constraints: bool = True
    use_collision_check: bool = True
    # Re-score with the force-closure quality of the refined grasp's contacts on the
    # reconstruction (needs object normals; decision 2b in the module notes).
    use_contact_quality: bool = True
    # Push each surviving grasp deeper while the gripper stays collision-free (decision 8b).
    use_depth_search: bool = True
    depth_search_max: float = 0.04     # m, deepest fingertip depth tried (GraspNet's largest)
    depth_search_step: float = 0.005   # m
    # Drop reconstructed points the camera sees through before anything else (needs the
    # depth image; decision 0 in the module notes).
    use_free_space_check: bool = True
    free_space_margin: float = 0.01    # m, observed depth must lie this far behind a point

    def validate(self) -> None:
        def finite_nonneg(name):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise InputError(f'RefinementConfig.{name} must be finite and >= 0, '
                                 f'got {value!r}')
        for name in ('gamma_min', 'gamma_max', 'contact_tolerance', 'collision_voxel',
                     'free_space_margin', 'depth_search_max', 'depth_search_step',
                     'nms_distance', 'nms_angle_deg', 'approach_cone_deg', 'table_tolerance'):
            finite_nonneg(name)
        if self.gamma_min > self.gamma_max:
            raise InputError(f'RefinementConfig: gamma_min ({self.gamma_min}) > gamma_max '
                             f'({self.gamma_max})')
        for name in ('collision_tolerance_points', 'empty_min_points'):
            if int(getattr(self, name)) < 0:
                raise InputError(f'RefinementConfig.{name} must be >= 0')
        if int(self.chunk_size) < 1:
            raise InputError('RefinementConfig.chunk_size must be >= 1')
        for name in ('workspace_min', 'workspace_max'):
            box = getattr(self, name)
            if box is not None and (np.shape(box) != (3,) or not np.all(np.isfinite(box))):
                raise InputError(f'RefinementConfig.{name} must be None or 3 finite numbers, '
                                 f'got {box!r}')


def paper_refinement_config(**changes) -> RefinementConfig:
    """The paper's refinement: no contact quality, carving or depth search."""
    return RefinementConfig(**{'use_contact_quality': False, 'use_free_space_check': False,
                               'use_depth_search': False, **changes})


# ----------------------------------------------------------------------------- validation

def as_points(points, name: str, allow_empty: bool) -> np.ndarray:
    if points is None:
        return np.zeros((0, 3), np.float32)
    try:
        arr = np.asarray(points, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputError(f'{name} is not a numeric array: {exc}') from None
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f'{name} must have shape (N, 3), got {arr.shape}')
    if not allow_empty and len(arr) == 0:
        raise InputError(f'{name} is empty: no points to refine the grasps against')
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise InputError(f'{name} has {int(bad.sum())} non-finite (NaN/inf) points of '
                         f'{len(arr)}')
    return arr


def as_plane(table_plane) -> np.ndarray | None:
    if table_plane is None:
        return None
    plane = np.asarray(table_plane, dtype=np.float64).reshape(-1)
    if plane.shape != (4,) or not np.isfinite(plane).all():
        raise InputError(f'table_plane must be 4 finite numbers (a, b, c, d), got {table_plane!r}')
    norm = np.linalg.norm(plane[:3])
    if norm < 1e-6:
        raise InputError('table_plane has a zero normal')
    return plane / norm  # unit normal; the plane itself is unchanged


def check_types(grasps, gripper) -> None:
    if not isinstance(grasps, GraspSet):
        raise InputError(f'grasps must be a GraspSet, got {type(grasps).__name__}')
    if not isinstance(gripper, GripperModel):
        raise InputError(f'gripper must be a GripperModel, got {type(gripper).__name__}')


def invalid_grasp_mask(grasps: GraspSet, gripper: GripperModel) -> np.ndarray:
    """Grasps that cannot be evaluated (decision 1 in the module notes)."""
    if len(grasps) == 0:
        return np.zeros(0, bool)
    bad = ~grasps.finite_mask()
    R = np.where(np.isfinite(grasps.rotations), grasps.rotations, 0.0).astype(np.float64)
    gram_error = np.abs(np.einsum('nji,njk->nik', R, R) - np.eye(3)).max(axis=(1, 2))
    det_error = np.abs(np.linalg.det(R) - 1.0)
    bad |= (gram_error > ROTATION_TOLERANCE) | (det_error > ROTATION_TOLERANCE)
    with np.errstate(invalid='ignore'):
        bad |= ~(grasps.widths > 0) | ~(grasps.depths >= 0)
        bad |= grasps.depths > gripper.finger_length
    return bad


def checked_model_and_config(grasps, gripper, config):
    """Defaults filled in, types and the config checked: the prologue of every public call."""
    gripper = gripper if gripper is not None else gripper_preset(DEFAULT_GRIPPER)
    config = config if config is not None else RefinementConfig()
    check_types(grasps, gripper)
    config.validate()
    return gripper, config


def as_normals(normals, points: np.ndarray) -> np.ndarray:
    """(M, 3) float32 unit normals, one per point; InputError otherwise."""
    normals = as_points(normals, 'object_normals', allow_empty=True)
    if normals.shape != points.shape:
        raise InputError(f'object_normals has shape {normals.shape}, object_points '
                         f'{points.shape}: one normal per point is needed')
    not_unit = int((~unit_normal_rows(normals)).sum())
    if not_unit:
        raise InputError(f'object_normals must be unit vectors: {not_unit} of {len(normals)} '
                         'are not (e.g. a reconstruction without normals)')
    return normals


def point_grid(points: np.ndarray, cell: float, device: torch.device,
               normals: np.ndarray | None = None) -> PointGrid:
    """The `PointGrid` of checked (N, 3) float32 points (and normals) on `device`.

    The last grid per (device, cell) is kept and reused while the same cloud comes back
    (same bytes, by digest): callers check one cloud many times (per depth bin, per
    planned pose), and sorting it is a fixed cost of every call.
    """
    digest = hashlib.blake2b(points.tobytes(), digest_size=16)
    if normals is not None:
        digest.update(normals.tobytes())
    key = (str(device), float(cell))
    cached = _GRIDS.get(key)
    if cached is not None and cached[0] == digest.digest():
        return cached[1]
    grid = PointGrid(torch.as_tensor(points, device=device), cell,
                     None if normals is None else torch.as_tensor(normals, device=device))
    _GRIDS[key] = (digest.digest(), grid)
    return grid


def forget_point_grids() -> None:
    """Drop the grids `point_grid` keeps (e.g. to time a cold call)."""
    _GRIDS.clear()


def voxel_downsample(points: np.ndarray, voxel: float) -> np.ndarray:
    """Centroid of the points in each occupied voxel (open3d's rule), (K, 3) float32."""
    points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    if voxel <= 0 or len(points) == 0:
        return points
    keys = np.floor(points / voxel).astype(np.int64)
    keys -= keys.min(axis=0)
    span = keys.max(axis=0) + 1
    flat = (keys[:, 0] * span[1] + keys[:, 1]) * span[2] + keys[:, 2]
    _, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    sums = np.zeros((len(counts), 3), np.float64)
    np.add.at(sums, inverse, points)
    return (sums / counts[:, None]).astype(np.float32)


# ----------------------------------------------------------------------------- checks

def check_collisions(grasps: GraspSet, obstacle_points: np.ndarray,
                     gripper: GripperModel | None = None,
                     config: RefinementConfig | None = None, table_plane=None,
                     device: str = 'cpu') -> dict[str, np.ndarray]:
    """Model-free collision / emptiness check of every grasp against a point cloud.

    Returns bool masks 'collision' (gripper body hits more than
    `config.collision_tolerance_points` points, or its boxes dip below the table plane)
    and 'empty' (fewer than `config.empty_min_points` points between the fingers), plus
    the int counts 'body_points' and 'inner_points'. The cloud is voxel-downsampled at
    `config.collision_voxel`. Invalid grasps (see `invalid_grasp_mask`) raise InputError.
    """
    gripper, config = checked_model_and_config(grasps, gripper, config)
    points = as_points(obstacle_points, 'obstacle_points', allow_empty=True)
    plane = as_plane(table_plane)
    invalid = invalid_grasp_mask(grasps, gripper)
    if invalid.any():
        first = np.flatnonzero(invalid)[:5].tolist()
        raise InputError(f'{int(invalid.sum())} of {len(grasps)} grasps are invalid (non-finite, '
                         f'non-orthonormal rotation, width <= 0 or depth outside [0, '
                         f'finger_length]); first indices {first}')
    dev = resolve_device(device)
    if len(grasps) == 0:
        return {'collision': np.zeros(0, bool), 'empty': np.zeros(0, bool),
                'body_points': np.zeros(0, np.int64), 'inner_points': np.zeros(0, np.int64)}
    points = voxel_downsample(points, config.collision_voxel)
    grid = point_grid(points, GraspBatch.cell_for(gripper), dev)
    return collision_masks(grasps, grid, gripper, config, plane, dev)


def collision_masks(grasps: GraspSet, grid: PointGrid, gripper: GripperModel,
                    config: RefinementConfig, plane,
                    device: torch.device) -> dict[str, np.ndarray]:
    """`check_collisions` on checked input: valid grasps, the downsampled cloud's grid."""
    batch = GraspBatch(grasps, gripper, device)
    widths = torch.as_tensor(grasps.widths, device=device)
    depths = torch.as_tensor(grasps.depths, device=device)
    body, inner = count_body_and_inner(batch, grid, widths, depths, config.chunk_size)
    collision = body > int(config.collision_tolerance_points)
    if plane is not None:
        fingers, back = finger_and_body_table_distance(batch.R, batch.t, widths, depths,
                                                       gripper, plane)
        collision |= torch.minimum(fingers, back) < -config.table_tolerance
    empty = inner < int(config.empty_min_points)
    return {'collision': collision.cpu().numpy(), 'empty': empty.cpu().numpy(),
            'body_points': body.cpu().numpy(), 'inner_points': inner.cpu().numpy()}


def contact_refinement(grasps: GraspSet, object_points: np.ndarray,
                       gripper: GripperModel | None = None,
                       config: RefinementConfig | None = None,
                       device: str = 'cpu') -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refined (widths, depths) and a mask of grasps that had contacts (module notes, 2.)."""
    gripper, config = checked_model_and_config(grasps, gripper, config)
    points = as_points(object_points, 'object_points', allow_empty=True)
    dev = resolve_device(device)
    if len(grasps) == 0:
        return grasps.widths.copy(), grasps.depths.copy(), np.zeros(0, bool)
    grid = point_grid(points, GraspBatch.cell_for(gripper, closing_only=True), dev)
    return refined_width_depth(grasps, grid, gripper, config, dev)


def refined_width_depth(grasps: GraspSet, grid: PointGrid, gripper: GripperModel,
                        config: RefinementConfig, device: torch.device):
    """`contact_refinement` on checked input (the object points' grid)."""
    batch = GraspBatch(grasps, gripper, device)
    widths = torch.as_tensor(grasps.widths, device=device)
    depths = torch.as_tensor(grasps.depths, device=device)
    gap_l, gap_r, z_l, z_r = contacts(batch, grid, widths, depths,
                                      float(config.contact_tolerance), config.chunk_size)
    found = torch.isfinite(gap_l) & torch.isfinite(gap_r)
    dw = torch.minimum(gap_l, gap_r)
    clearance = dw.clamp(min=float(config.gamma_min), max=float(config.gamma_max))
    new_w = torch.where(found, widths + 2 * (clearance - dw), widths)
    new_d = torch.where(found, torch.minimum(torch.maximum(z_l, z_r).clamp(min=0.0), depths),
                        depths)
    return new_w.cpu().numpy(), new_d.cpu().numpy(), found.cpu().numpy()


def contact_quality(grasps: GraspSet, object_points: np.ndarray, object_normals: np.ndarray,
                    gripper: GripperModel | None = None,
                    config: RefinementConfig | None = None,
                    device: str = 'cpu') -> tuple[np.ndarray, np.ndarray]:
    """Antipodal cosine and least force-closure mu of each grasp's contacts (notes, 2b.).

    object_normals: (M, 3) unit outward normals, one per object point. A grasp with no
    contact facing one of its fingers gets cosine -1 and mu inf.
    """
    gripper, config = checked_model_and_config(grasps, gripper, config)
    points = as_points(object_points, 'object_points', allow_empty=True)
    normals = as_normals(object_normals, points)
    dev = resolve_device(device)
    if len(grasps) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float64)
    grid = point_grid(points, GraspBatch.cell_for(gripper, closing_only=True), dev, normals)
    return antipodal_quality(grasps, grid, gripper, config, dev)


def antipodal_quality(grasps: GraspSet, grid: PointGrid, gripper: GripperModel,
                      config: RefinementConfig, device: torch.device):
    """`contact_quality` on checked input (the object points' grid with unit normals)."""
    batch = GraspBatch(grasps, gripper, device)
    *_, cos_l, cos_r = contacts(batch, grid, torch.as_tensor(grasps.widths, device=device),
                                torch.as_tensor(grasps.depths, device=device),
                                float(config.contact_tolerance), config.chunk_size,
                                with_normals=True)
    cosine = torch.minimum(cos_l, cos_r).cpu().numpy().astype(np.float32)
    return cosine, mu_from_antipodal_cosine(cosine)


def seen_free_points(points: np.ndarray, depth: np.ndarray, intrinsics,
                     margin: float = 0.01) -> np.ndarray:
    """Which camera-frame points the depth image sees through (notes, 0.).

    depth is (H, W) metres, 0 or NaN where invalid; a point is seen free when its pixel
    is valid and more than `margin` behind it.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2 or depth.shape != (intrinsics.height, intrinsics.width):
        raise InputError(f'depth image has shape {depth.shape}, the intrinsics '
                         f'{intrinsics.height}x{intrinsics.width}')
    uv, z = project(np.asarray(points, dtype=np.float64).reshape(-1, 3), intrinsics)
    u, v = np.round(uv[:, 0]), np.round(uv[:, 1])
    with np.errstate(invalid='ignore'):
        inside = (z > 0) & (u >= 0) & (u < intrinsics.width) & (v >= 0) \
            & (v < intrinsics.height)
    observed = np.full(len(z), np.nan)
    observed[inside] = depth[v[inside].astype(np.int64), u[inside].astype(np.int64)]
    with np.errstate(invalid='ignore'):
        return inside & np.isfinite(observed) & (observed > 0) & (observed > z + margin)


def grasp_nms(grasps: GraspSet, distance: float = 0.03, angle_deg: float = 30.0,
              symmetric: bool = True) -> np.ndarray:
    """Greedy grasp NMS; indices of the kept grasps, best score first.

    Two grasps are duplicates when their TCPs are within `distance` and their rotations
    within `angle_deg` (with `symmetric`, also comparing against the other grasp flipped by
    180 degrees about its approach, which is the same physical grasp for two fingers).
    """
    if not isinstance(grasps, GraspSet):
        raise InputError(f'grasps must be a GraspSet, got {type(grasps).__name__}')
    n = len(grasps)
    if n == 0:
        return np.zeros(0, np.int64)
    if not grasps.finite_mask().all():
        raise InputError('grasp_nms: grasps contain non-finite values; filter them first')
    order = np.argsort(-grasps.scores, kind='stable')
    pairs = cKDTree(grasps.translations.astype(np.float64)).query_pairs(
        float(distance), output_type='ndarray')
    if len(pairs):
        Ri = grasps.rotations[pairs[:, 0]].astype(np.float64)
        Rj = grasps.rotations[pairs[:, 1]].astype(np.float64)
        duplicate = same_grasp_rotation(Ri, Rj, angle_deg, symmetric)
        pairs = pairs[duplicate]
    both = np.concatenate([pairs, pairs[:, ::-1]]) if len(pairs) else np.zeros((0, 2), np.int64)
    both = both[np.argsort(both[:, 0], kind='stable')]
    starts = np.searchsorted(both[:, 0], np.arange(n + 1))
    suppressed = np.zeros(n, bool)
    kept = []
    for i in order:  # greedy suppression is inherently sequential
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed[both[starts[i]:starts[i + 1], 1]] = True
    return np.asarray(kept, dtype=np.int64)
