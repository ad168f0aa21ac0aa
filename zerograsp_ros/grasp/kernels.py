"""Batched torch kernels of grasp refinement: gripper-frame scans, contacts, body counts.

Every function here takes checked inputs (finite float32 tensors on one device, a valid
`GripperModel`, a unit-normal table plane); validation happens once, at the public entry
points of `zerograsp_ros.grasp.checks` and `zerograsp_ros.grasp.refinement`. The decisions
they compute are defined in the `refinement` module notes.
"""
from __future__ import annotations

import numpy as np
import torch

from zerograsp_ros.grasp.gripper import GripperModel
from zerograsp_ros.grasp.representation import GraspSet

__all__ = ['GraspBatch', 'box_corners', 'contacts', 'count_body_and_inner',
           'finger_and_body_table_distance', 'morton_codes', 'table_signed_corners']

# Small spatially sorted chunks cull most points per chunk (CPU: 32 measured best of
# 8-64); a GPU prefers fewer, larger launches.
MAX_GRASPS_PER_CHUNK = {'cpu': 32, 'cuda': 512}


class GraspBatch:
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
        self.order = np.argsort(morton_codes(centre, 0.01), kind='stable')

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
            corners = box_corners(d_all - g.finger_length, d_all, widths[padded] / 2,
                                   g.finger_width / 2)
        else:
            corners = box_corners(d_all - g.length_behind_tip, d_all,
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


def morton_codes(points: np.ndarray, cell: float) -> np.ndarray:
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


def box_corners(x_lo, x_hi, y_half, z_half) -> torch.Tensor:
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


def count_body_and_inner(batch: GraspBatch, points: torch.Tensor, widths, depths, chunk_size):
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


def contacts(batch: GraspBatch, points: torch.Tensor, widths, depths, tolerance, chunk_size,
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


def table_signed_corners(R, t, x_lo, x_hi, y_lo, y_hi, z_half, plane):
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


def finger_and_body_table_distance(R, t, widths, depths, gripper, plane):
    """Lowest signed distance of (finger boxes, rest of the swept body) corners to the plane."""
    g = gripper
    tip_root = depths - g.finger_length
    outer = widths / 2 + g.finger_thickness
    left = table_signed_corners(R, t, tip_root, depths, -outer, -widths / 2,
                                 g.finger_width / 2, plane)
    right = table_signed_corners(R, t, tip_root, depths, widths / 2, outer,
                                  g.finger_width / 2, plane)
    back = table_signed_corners(R, t, tip_root - g.back_length, tip_root, -outer, outer,
                                 g.finger_width / 2, plane)
    if g.has_housing:
        x_lo, x_hi = g.housing_x_range
        half = torch.full_like(widths, g.housing_width / 2)
        back = torch.minimum(back, table_signed_corners(
            R, t, depths + x_lo, depths + x_hi, -half, half, g.housing_height / 2, plane))
    return torch.minimum(left, right), back
