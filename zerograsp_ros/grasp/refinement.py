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
closing region. All pairwise work runs batched in torch (CPU or CUDA), in chunks of at most
`chunk_size` grasp-point pairs, on the points inside the chunk's gripper bounding box only.
(A scipy cKDTree ball query for the contact search was measured as well: the query alone
costs about as much CPU time as the whole torch contact pass, so torch is used throughout.)
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
import math

import numpy as np
from scipy.spatial import cKDTree
import torch

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import project
from zerograsp_ros.grasp.gripper import GripperModel, gripper_preset
from zerograsp_ros.grasp.representation import (
    GraspSet,
    mu_from_antipodal_cosine,
    quality_from_mu,
    same_grasp_rotation,
    unit_normal_rows,
)

REJECTION_REASONS = ('invalid', 'stroke', 'approach_cone', 'below_table', 'workspace',
                     'collision', 'empty', 'nms', 'top_k')
ROTATION_TOLERANCE = 1e-3
# Small spatially sorted chunks cull most points per chunk (CPU: 32 measured best of
# 8-64); a GPU prefers fewer, larger launches.
MAX_GRASPS_PER_CHUNK = {'cpu': 32, 'cuda': 512}


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


@dataclass
class RefinementResult:
    grasps: GraspSet                   # survivors, refined, sorted by score, <= max_grasps
    rejection_counts: dict[str, int]   # one count per REJECTION_REASONS key
    source_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


# ----------------------------------------------------------------------------- validation

def _as_points(points, name: str, allow_empty: bool) -> np.ndarray:
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


def _as_plane(table_plane) -> np.ndarray | None:
    if table_plane is None:
        return None
    plane = np.asarray(table_plane, dtype=np.float64).reshape(-1)
    if plane.shape != (4,) or not np.isfinite(plane).all():
        raise InputError(f'table_plane must be 4 finite numbers (a, b, c, d), got {table_plane!r}')
    norm = np.linalg.norm(plane[:3])
    if norm < 1e-6:
        raise InputError('table_plane has a zero normal')
    return plane / norm  # unit normal; the plane itself is unchanged


def _check_types(grasps, gripper) -> None:
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


def _resolve_device(device) -> torch.device:
    if device in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f'unknown device {device!r}: {exc}') from None
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise InputError(f'device {device!r} requested but CUDA is not available')
    if dev.type == 'cuda' and (dev.index or 0) >= torch.cuda.device_count():
        raise InputError(f'device {device!r}: only {torch.cuda.device_count()} CUDA devices')
    return dev


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


# ----------------------------------------------------------------------------- batched core

class _Batch:
    """Grasp poses on a torch device and the gripper-frame scan over point chunks."""

    def __init__(self, grasps: GraspSet, gripper: GripperModel, device: torch.device):
        self.gripper = gripper
        self.device = device
        self.R = torch.as_tensor(grasps.rotations, device=device)
        self.t = torch.as_tensor(grasps.translations, device=device)
        # Sorting grasps along a Morton curve keeps each chunk's bounding box (and so the
        # set of points it has to test) close to a single gripper's.
        centre = grasps.translations + grasps.rotations[:, :, 0] * (
            grasps.depths - gripper.length_behind_tip / 2)[:, None]
        self.order = np.argsort(_morton_codes(centre, 0.01), kind='stable')

    def scan(self, points: torch.Tensor, widths: torch.Tensor, depths: torch.Tensor,
             chunk_size: int, closing_only: bool = False):
        """Yield (grasp index tensor, point index tensor, q_x, q_y, q_z as (m, n)) per chunk.

        Only the m points inside the chunk's world-frame bounding box of the gripper body
        (with `closing_only`, of the closing region between the fingers) are passed on
        (their indices into `points`); the others cannot touch any of the chunk's boxes.
        """
        g = self.gripper
        n_total = len(self.order)
        if n_total == 0 or len(points) == 0:
            return
        per_chunk = min(MAX_GRASPS_PER_CHUNK.get(self.device.type, 32),
                        max(1, int(chunk_size) // max(1, len(points))))
        order = torch.as_tensor(self.order, device=self.device)
        # World bounding boxes of every chunk in one batched op (small per-chunk reductions
        # are dominated by call overhead).
        n_chunks = -(-n_total // per_chunk)
        padded = torch.cat([order, order[-1:].expand(n_chunks * per_chunk - n_total)])
        R_all, d_all = self.R[padded], depths[padded]
        if closing_only:
            corners = _box_corners(d_all - g.finger_length, d_all, widths[padded] / 2,
                                   g.finger_width / 2)
        else:
            corners = _box_corners(d_all - g.length_behind_tip, d_all,
                                   g.half_extent_y(widths[padded]), g.half_extent_z)
        world = torch.einsum('nij,nkj->nki', R_all, corners) + self.t[padded][:, None, :]
        world = world.reshape(n_chunks, per_chunk * 8, 3)
        chunk_lo, chunk_hi = world.amin(1).cpu(), world.amax(1).cpu()
        for c in range(n_chunks):
            idx = order[c * per_chunk:(c + 1) * per_chunk]
            R, t = self.R[idx], self.t[idx]
            lo, hi = chunk_lo[c].to(self.device), chunk_hi[c].to(self.device)
            keep = ((points >= lo) & (points <= hi)).all(dim=1).nonzero(as_tuple=True)[0]
            pts = points[keep]
            if len(pts) == 0:
                yield idx, keep, None, None, None
                continue
            offset = torch.einsum('nj,njk->nk', t, R)
            qx = pts @ R[:, :, 0].T - offset[:, 0]
            qy = pts @ R[:, :, 1].T - offset[:, 1]
            qz = pts @ R[:, :, 2].T - offset[:, 2]
            yield idx, keep, qx, qy, qz


def _morton_codes(points: np.ndarray, cell: float) -> np.ndarray:
    """Z-order codes of points quantised to `cell` (10 bits per axis)."""
    if len(points) == 0:
        return np.zeros(0, np.int64)
    finite = np.where(np.isfinite(points), points, 0.0)
    q = np.floor((finite - finite.min(axis=0)) / cell).astype(np.int64).clip(0, 1023)
    code = np.zeros(len(q), np.int64)
    for bit in range(10):
        for axis in range(3):
            code |= ((q[:, axis] >> bit) & 1) << (3 * bit + axis)
    return code


def _box_corners(x_lo, x_hi, y_half, z_half) -> torch.Tensor:
    """Corners (n, 8, 3) of boxes [x_lo, x_hi] x [-y_half, y_half] x [-z_half, z_half]."""
    n = x_lo.shape[0]
    z_half = torch.full_like(x_lo, float(z_half))
    xs = torch.stack([x_lo, x_hi], 1)
    ys = torch.stack([-y_half, y_half], 1)
    zs = torch.stack([-z_half, z_half], 1)
    i = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1], device=x_lo.device)
    j = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1], device=x_lo.device)
    k = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1], device=x_lo.device)
    return torch.stack([xs[:, i], ys[:, j], zs[:, k]], dim=2).reshape(n, 8, 3)


def _count_body_and_inner(batch: _Batch, points: torch.Tensor, widths, depths, chunk_size):
    """Per grasp: obstacle points in the gripper body and in the closing region."""
    g = batch.gripper
    n = len(widths)
    body = torch.zeros(n, dtype=torch.int64, device=batch.device)
    inner = torch.zeros(n, dtype=torch.int64, device=batch.device)
    for idx, _, qx, qy, qz in batch.scan(points, widths, depths, chunk_size):
        if qx is None:
            continue
        w, d = widths[idx], depths[idx]
        y_abs, z_abs = qy.abs(), qz.abs()
        in_outer = ((z_abs <= g.finger_width / 2) & (y_abs <= w / 2 + g.finger_thickness)
                    & (qx >= d - g.finger_length - g.back_length) & (qx <= d))
        between = (y_abs < w / 2) & (qx >= d - g.finger_length)
        hit = in_outer & ~between
        if g.has_housing:
            x_lo, x_hi = g.housing_x_range
            hit |= ((z_abs <= g.housing_height / 2) & (y_abs <= g.housing_width / 2)
                    & (qx >= d + x_lo) & (qx <= d + x_hi))
        inner[idx] = (in_outer & between).sum(0)
        body[idx] = hit.sum(0)
    return body, inner


def _contacts(batch: _Batch, points: torch.Tensor, widths, depths, tolerance, chunk_size,
              normals: torch.Tensor | None = None):
    """Per grasp: gaps to the left/right finger and contact depths (inf / -inf if none).

    With `normals` (unit, one per point) also the antipodal cosine of each side: the
    mean outward normal of the side's contact patch (points within `tolerance` of the
    tightest gap that face that finger) dotted with the direction towards the finger
    (-1 when no patch point faces it).
    """
    g = batch.gripper
    n = len(widths)
    dev = batch.device
    gap_left = torch.full((n,), float('inf'), device=dev)
    gap_right = gap_left.clone()
    z_left = torch.full((n,), -float('inf'), device=dev)
    z_right = z_left.clone()
    cos_left = torch.full((n,), -1.0, device=dev)
    cos_right = cos_left.clone()
    for idx, point_index, qx, qy, qz in batch.scan(points, widths, depths, chunk_size,
                                                    closing_only=True):
        if qx is None:
            continue
        w, d = widths[idx], depths[idx]
        region = ((qz.abs() <= g.finger_width / 2) & (qy.abs() < w / 2)
                  & (qx >= d - g.finger_length) & (qx <= d))
        # Few pairs fall between the fingers: finish on the sparse pairs.
        point_i, grasp_i = region.nonzero(as_tuple=True)
        if len(point_i) == 0:
            continue
        x, y, half = qx[point_i, grasp_i], qy[point_i, grasp_i], w[grasp_i] / 2
        chunk = len(idx)
        if normals is not None:
            # normal component along the closing axis, in each pair's gripper frame
            n_y = (normals[point_index[point_i]] * batch.R[idx][grasp_i, :, 1]).sum(1)
        # The left finger sits at y = -w/2 (gap w/2 + y), the right one at y = +w/2.
        for gap, gap_out, z_out, cos_out, sign in (
                (half + y, gap_left, z_left, cos_left, -1.0),
                (half - y, gap_right, z_right, cos_right, 1.0)):
            best = torch.full((chunk,), float('inf'), device=dev).scatter_reduce(
                0, grasp_i, gap, 'amin')
            near = gap <= best[grasp_i] + tolerance
            gap_out[idx] = best
            z_out[idx] = torch.full((chunk,), -float('inf'), device=dev).scatter_reduce(
                0, grasp_i[near], x[near], 'amax')
            if normals is not None:
                facing = near & (sign * n_y > 0)
                mean = torch.zeros((chunk, 3), device=dev).index_add_(
                    0, grasp_i[facing], normals[point_index[point_i[facing]]])
                length = mean.norm(dim=1)
                along = sign * (mean * batch.R[idx][:, :, 1]).sum(1)
                cos_out[idx] = torch.where(length > 0, along / length.clamp(min=1e-12),
                                           torch.full_like(length, -1.0))
    if normals is None:
        return gap_left, gap_right, z_left, z_right
    return gap_left, gap_right, z_left, z_right, cos_left, cos_right


def _table_signed_corners(R, t, x_lo, x_hi, y_lo, y_hi, z_half, plane):
    """Lowest signed plane distance over the corners of boxes in the gripper frame, (n,)."""
    n = x_lo.shape[0]
    xs = torch.stack([x_lo, x_hi], 1)
    ys = torch.stack([y_lo, y_hi], 1)
    zs = torch.tensor([-z_half, z_half], device=R.device, dtype=R.dtype).expand(n, 2)
    corners = torch.stack([xs[:, [0, 0, 0, 0, 1, 1, 1, 1]], ys[:, [0, 0, 1, 1, 0, 0, 1, 1]],
                           zs[:, [0, 1, 0, 1, 0, 1, 0, 1]]], dim=2)
    world = torch.einsum('nij,nkj->nki', R, corners) + t[:, None, :]
    normal = torch.as_tensor(plane[:3], dtype=R.dtype, device=R.device)
    return (world @ normal + float(plane[3])).min(dim=1).values


def _finger_and_body_table_distance(R, t, widths, depths, gripper, plane):
    """Lowest signed distance of (finger boxes, rest of the swept body) corners to the plane."""
    g = gripper
    tip_root = depths - g.finger_length
    outer = widths / 2 + g.finger_thickness
    left = _table_signed_corners(R, t, tip_root, depths, -outer, -widths / 2,
                                 g.finger_width / 2, plane)
    right = _table_signed_corners(R, t, tip_root, depths, widths / 2, outer,
                                  g.finger_width / 2, plane)
    back = _table_signed_corners(R, t, tip_root - g.back_length, tip_root, -outer, outer,
                                 g.finger_width / 2, plane)
    if g.has_housing:
        x_lo, x_hi = g.housing_x_range
        half = torch.full_like(widths, g.housing_width / 2)
        back = torch.minimum(back, _table_signed_corners(
            R, t, depths + x_lo, depths + x_hi, -half, half, g.housing_height / 2, plane))
    return torch.minimum(left, right), back


# ----------------------------------------------------------------------------- public API

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
    gripper = gripper if gripper is not None else gripper_preset('robotiq_2f85')
    config = config if config is not None else RefinementConfig()
    _check_types(grasps, gripper)
    config.validate()
    points = _as_points(obstacle_points, 'obstacle_points', allow_empty=True)
    plane = _as_plane(table_plane)
    invalid = invalid_grasp_mask(grasps, gripper)
    if invalid.any():
        first = np.flatnonzero(invalid)[:5].tolist()
        raise InputError(f'{int(invalid.sum())} of {len(grasps)} grasps are invalid (non-finite, '
                         f'non-orthonormal rotation, width <= 0 or depth outside [0, '
                         f'finger_length]); first indices {first}')
    dev = _resolve_device(device)
    n = len(grasps)
    if n == 0:
        return {'collision': np.zeros(0, bool), 'empty': np.zeros(0, bool),
                'body_points': np.zeros(0, np.int64), 'inner_points': np.zeros(0, np.int64)}
    points = voxel_downsample(points, config.collision_voxel)
    batch = _Batch(grasps, gripper, dev)
    widths = torch.as_tensor(grasps.widths, device=dev)
    depths = torch.as_tensor(grasps.depths, device=dev)
    body, inner = _count_body_and_inner(batch, torch.as_tensor(points, device=dev), widths,
                                        depths, config.chunk_size)
    collision = body > int(config.collision_tolerance_points)
    if plane is not None:
        fingers, back = _finger_and_body_table_distance(batch.R, batch.t, widths, depths,
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
    gripper = gripper if gripper is not None else gripper_preset('robotiq_2f85')
    config = config if config is not None else RefinementConfig()
    _check_types(grasps, gripper)
    config.validate()
    points = _as_points(object_points, 'object_points', allow_empty=True)
    dev = _resolve_device(device)
    if len(grasps) == 0:
        return grasps.widths.copy(), grasps.depths.copy(), np.zeros(0, bool)
    batch = _Batch(grasps, gripper, dev)
    widths = torch.as_tensor(grasps.widths, device=dev)
    depths = torch.as_tensor(grasps.depths, device=dev)
    gap_l, gap_r, z_l, z_r = _contacts(batch, torch.as_tensor(points, device=dev), widths,
                                       depths, float(config.contact_tolerance),
                                       config.chunk_size)
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
    gripper = gripper if gripper is not None else gripper_preset('robotiq_2f85')
    config = config if config is not None else RefinementConfig()
    _check_types(grasps, gripper)
    config.validate()
    points = _as_points(object_points, 'object_points', allow_empty=True)
    normals = _as_points(object_normals, 'object_normals', allow_empty=True)
    if normals.shape != points.shape:
        raise InputError(f'object_normals has shape {normals.shape}, object_points '
                         f'{points.shape}: one normal per point is needed')
    not_unit = int((~unit_normal_rows(normals)).sum())
    if not_unit:
        raise InputError(f'object_normals must be unit vectors: {not_unit} of {len(normals)} '
                         'are not (e.g. a reconstruction without normals)')
    dev = _resolve_device(device)
    if len(grasps) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float64)
    batch = _Batch(grasps, gripper, dev)
    *_, cos_l, cos_r = _contacts(batch, torch.as_tensor(points, device=dev),
                                 torch.as_tensor(grasps.widths, device=dev),
                                 torch.as_tensor(grasps.depths, device=dev),
                                 float(config.contact_tolerance), config.chunk_size,
                                 normals=torch.as_tensor(normals, device=dev))
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
    gripper = gripper if gripper is not None else gripper_preset('robotiq_2f85')
    config = config if config is not None else RefinementConfig()
    _check_types(grasps, gripper)
    config.validate()
    if isinstance(max_grasps, bool) or not isinstance(max_grasps, (int, np.integer)) \
            or max_grasps < 1:
        raise InputError(f'max_grasps must be an integer >= 1, got {max_grasps!r}')
    objects = _as_points(object_points, 'object_points', allow_empty=False)
    scene = _as_points(scene_points, 'scene_points', allow_empty=True)
    plane = _as_plane(table_plane)
    dev = _resolve_device(device)
    ids = None
    if object_point_ids is not None:
        ids = np.asarray(object_point_ids).reshape(-1)
        if len(ids) != len(objects):
            raise InputError(f'object_point_ids has {len(ids)} entries for {len(objects)} '
                             'object points')
    if object_normals is not None:
        object_normals = np.asarray(object_normals, dtype=np.float32).reshape(-1, 3)
        if len(object_normals) != len(objects):
            raise InputError(f'object_normals has {len(object_normals)} rows for '
                             f'{len(objects)} object points')
    if config.use_free_space_check and camera_depth is not None:
        keep = ~seen_free_points(objects, camera_depth[0], camera_depth[1],
                                 config.free_space_margin)
        objects = objects[keep]
        ids = ids[keep] if ids is not None else None
        object_normals = object_normals[keep] if object_normals is not None else None
    counts = {reason: 0 for reason in REJECTION_REASONS}
    n = len(grasps)
    reason = np.full(n, -1, np.int64)  # index into REJECTION_REASONS, -1 = kept so far

    def reject(mask, name):
        new = (reason < 0) & mask
        reason[new] = REJECTION_REASONS.index(name)

    reject(invalid_grasp_mask(grasps, gripper), 'invalid')
    alive = np.flatnonzero(reason < 0)
    work = grasps.subset(alive)
    if len(work) and len(objects) and ids is not None and (work.object_ids < 0).any():
        unknown = work.object_ids < 0
        _, nearest = cKDTree(objects).query(work.translations[unknown])
        work.object_ids[unknown] = ids[nearest]
    if len(work) and config.use_contact_constraints:
        work.widths, work.depths, _ = contact_refinement(work, objects, gripper, config, dev)
    if len(work) and config.use_contact_quality and object_normals is not None:
        _, mu = contact_quality(work, objects, object_normals, gripper, config, dev)
        work.qualities = quality_from_mu(mu)
        work.scores = work.graspness * work.qualities

    def reject_alive(mask, name):
        full = np.zeros(n, bool)
        full[alive] = mask
        reject(full, name)

    if len(work):
        reject_alive(work.widths > gripper.max_stroke, 'stroke')
        approach = work.rotations[:, :, 0].astype(np.float64)
        if plane is not None:
            cos_down = -(approach @ plane[:3])
            reject_alive(cos_down < math.cos(math.radians(config.approach_cone_deg)) - 1e-9,
                         'approach_cone')
            R = torch.as_tensor(work.rotations, device=dev)
            t = torch.as_tensor(work.translations, device=dev)
            fingers, _ = _finger_and_body_table_distance(
                R, t, torch.as_tensor(work.widths, device=dev),
                torch.as_tensor(work.depths, device=dev), gripper, plane)
            tcp_height = work.translations.astype(np.float64) @ plane[:3] + plane[3]
            reject_alive((tcp_height < -config.table_tolerance)
                         | (fingers.cpu().numpy() < -config.table_tolerance)
                         | (approach @ plane[:3] > 0), 'below_table')
        if config.workspace_min is not None:
            reject_alive((work.translations < np.asarray(config.workspace_min)).any(1),
                         'workspace')
        if config.workspace_max is not None:
            reject_alive((work.translations > np.asarray(config.workspace_max)).any(1),
                         'workspace')
        if config.use_collision_check:
            todo = np.flatnonzero(reason[alive] < 0)
            obstacles = np.concatenate([objects, scene]) if len(scene) else objects
            checked = check_collisions(work.subset(todo), obstacles, gripper, config, plane, dev)
            collision = np.zeros(len(work), bool)
            empty = np.zeros(len(work), bool)
            collision[todo], empty[todo] = checked['collision'], checked['empty']
            reject_alive(collision, 'collision')
            reject_alive(empty, 'empty')

    survivors = np.flatnonzero(reason[alive] < 0)
    if config.use_depth_search and len(survivors):
        obstacles = np.concatenate([objects, scene]) if len(scene) else objects
        work.depths[survivors] = _deepest_free_depths(work.subset(survivors), obstacles,
                                                      gripper, config, plane, dev)
    candidates = work.subset(survivors)
    kept = grasp_nms(candidates, config.nms_distance, config.nms_angle_deg,
                     config.nms_symmetric)
    nms_rejected = np.ones(len(candidates), bool)
    nms_rejected[kept] = False
    reject_alive(_scatter(survivors[nms_rejected], len(work)), 'nms')
    top = kept[:max_grasps]
    reject_alive(_scatter(survivors[kept[max_grasps:]], len(work)), 'top_k')
    for i, name in enumerate(REJECTION_REASONS):
        counts[name] = int((reason == i).sum())
    return RefinementResult(grasps=candidates.subset(top), rejection_counts=counts,
                            source_indices=alive[survivors[top]].astype(np.int64))


def _deepest_free_depths(grasps: GraspSet, obstacles: np.ndarray, gripper: GripperModel,
                         config: RefinementConfig, plane, device) -> np.ndarray:
    """Depth search (notes, 8b.): deepest collision-free depth reached step by step."""
    depths = grasps.depths.astype(np.float32).copy()
    limit = min(float(config.depth_search_max), gripper.finger_length)
    step = float(config.depth_search_step)
    if step <= 0:
        return depths
    # downsample once; every step then checks the same cloud without re-voxelising it
    obstacles = voxel_downsample(obstacles, config.collision_voxel)
    config = replace(config, collision_voxel=0.0)
    active = depths < limit - 1e-6
    while active.any():
        idx = np.flatnonzero(active)
        trial = grasps.subset(idx)
        trial.depths = np.minimum(depths[idx] + step, limit).astype(np.float32)
        hit = check_collisions(trial, obstacles, gripper, config, plane, device)['collision']
        depths[idx[~hit]] = trial.depths[~hit]
        active[idx[hit]] = False
        active &= depths < limit - 1e-6
    return depths


def _scatter(index: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros(size, bool)
    mask[index] = True
    return mask
