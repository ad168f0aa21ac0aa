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

__all__ = ['GraspBatch', 'PointGrid', 'box_corners', 'contacts', 'count_body_and_inner',
           'finger_and_body_table_distance', 'table_signed_corners']

# Most uniform-grid cells a point cloud is sorted into (the cell grows past this).
MAX_GRID_CELLS = 1 << 21
# Grid cells are this many times finer along z than along x and y.
Z_CELLS_PER_CELL = 8
# Slack added to every culling interval, so that rounding never drops a point.
CULL_SLACK = 1e-5
# A block of grasps pads every row to its longest. Blocks are cut where the row length
# drops by BAND_RATIO if that saves more padded pairs than a block costs in calls (CPU
# time of one block's calls, measured, in padded pairs).
BAND_RATIO = 0.8
BLOCK_COST_PAIRS = 10000
# Boxes whose cell columns are enumerated together (bounds the (boxes, 3, x, y) arrays).
RUN_BOXES_PER_PASS = 4096


class PointGrid:
    """Points (and their normals) sorted into a uniform grid (`cell` across, finer in z).

    A grasp's candidate points are then a few contiguous runs of the sorted points (one
    per cell column its box crosses) instead of a pass over the whole cloud. Row `size`
    of `points` is a NaN sentinel used for padding: it fails every comparison.
    """

    def __init__(self, points: torch.Tensor, cell: float, normals: torch.Tensor | None = None):
        self.device = points.device
        self.size = len(points)
        sentinel = torch.full((1, 3), float('nan'), dtype=points.dtype, device=self.device)
        if self.size == 0:
            self.points = sentinel
            self.planar = sentinel.T.contiguous()
            self.normals = torch.zeros((1, 3), device=self.device) if normals is not None \
                else None
            return
        lo, hi = points.amin(0), points.amax(0)
        span = (hi - lo).double().clamp(min=1e-6)
        # z cells are finer: a column's run then follows a tilted slab more tightly
        shape = torch.tensor([1.0, 1.0, 1.0 / Z_CELLS_PER_CELL], dtype=torch.float64,
                             device=self.device)
        cell = max(float(cell), float((span.prod() / shape.prod() / MAX_GRID_CELLS)
                                      ** (1.0 / 3.0)) * 1.01)
        dims = (span / (cell * shape)).floor().long() + 1
        while int(dims.prod()) > MAX_GRID_CELLS:   # rounding up can still overflow
            cell *= 1.1
            dims = (span / (cell * shape)).floor().long() + 1
        sizes = (cell * shape).to(points.dtype)
        ijk = torch.minimum(((points - lo) / sizes).floor().long(), dims - 1)
        key = (ijk[:, 0] * dims[1] + ijk[:, 1]) * dims[2] + ijk[:, 2]
        key, order = key.sort(stable=True)
        self.points = torch.cat([points[order], sentinel])
        self.planar = self.points.T.contiguous()     # x, y, z rows for torch.take
        self.normals = None if normals is None else torch.cat(
            [normals[order], torch.zeros((1, 3), dtype=normals.dtype, device=self.device)])
        self.lo, self.cell, self.cell_z, self.dims = lo, cell, cell / Z_CELLS_PER_CELL, dims
        self.starts = torch.zeros(int(dims.prod()) + 1, dtype=torch.int64, device=self.device)
        self.starts[1:] = torch.bincount(key, minlength=int(dims.prod())).cumsum(0)

    def runs(self, centre: torch.Tensor, axes: torch.Tensor, half: torch.Tensor):
        """Runs of sorted points that may lie in each oriented box, (box, start, length).

        Boxes: centre (n, 3), axes (n, 3, 3) as columns, half-extents (n, 3), all world
        frame. Every (x, y) cell column under a box's bounding box gets the z cells where
        some point of the column's footprint satisfies all three slab conditions
        |axis_i . (p - centre)| <= half_i, a superset of the box; runs come in box order.
        """
        parts = []
        for first in range(0, len(centre), RUN_BOXES_PER_PASS):
            box, start, length = self._runs(*(v[first:first + RUN_BOXES_PER_PASS]
                                              for v in (centre, axes, half)))
            parts.append((box + first, start, length))
        if not parts:
            empty = torch.zeros(0, dtype=torch.int64, device=self.device)
            return empty, empty, empty
        return tuple(torch.cat(column) for column in zip(*parts))

    def _runs(self, centre: torch.Tensor, axes: torch.Tensor, half: torch.Tensor):
        dev = self.device
        empty = torch.zeros(0, dtype=torch.int64, device=dev)
        if self.size == 0 or len(centre) == 0:
            return empty, empty, empty
        cell, cell_z = self.cell, self.cell_z
        sizes = torch.tensor([cell, cell, cell_z], dtype=centre.dtype, device=dev)
        lo = self.lo.to(centre.dtype)
        h = half + CULL_SLACK
        reach = (axes.abs() * h[:, None, :]).sum(2)          # bounding-box half extents
        top = self.dims - 1
        i0 = ((centre - reach - lo) / sizes).floor().long()
        i1 = ((centre + reach - lo) / sizes).floor().long()
        outside = ((i1 < 0) | (i0 > top)).any(1)
        i0, i1 = torch.maximum(i0, torch.zeros_like(i0)), torch.minimum(i1, top)
        nx, ny = i1[:, 0] - i0[:, 0] + 1, i1[:, 1] - i0[:, 1] + 1
        keep = ~outside
        if not keep.any():
            return empty, empty, empty
        # every grasp gets the same window of columns (the widest); extra ones are masked
        wx, wy = int(nx[keep].max()), int(ny[keep].max())
        ox = torch.arange(wx, device=dev, dtype=centre.dtype)[None, :, None]
        oy = torch.arange(wy, device=dev, dtype=centre.dtype)[None, None, :]
        # per axis i, in z-cell units: the slab's z interval over a column is
        # centre_z - (base_i + sx_i * ox + sy_i * oy) / a_iz -+ width_i / |a_iz|
        a_x, a_y, a_z = axes[:, 0, :], axes[:, 1, :], axes[:, 2, :]         # (n, 3 axes)
        # a slab (nearly) parallel to z: |a_z| is raised to 1e-6, so the interval is
        # enormous where the column's footprint meets the slab and empty where it does not
        a_z = torch.where(a_z < 0, torch.clamp(a_z, max=-1e-6), torch.clamp(a_z, min=1e-6))
        first = lo[None, :2] + (i0[:, :2].to(centre.dtype) + 0.5) * cell - centre[:, :2]
        base = a_x * first[:, 0:1] + a_y * first[:, 1:2]
        width = h + (a_x.abs() + a_y.abs()) * (cell / 2)
        inv = 1.0 / (a_z * cell_z)
        k_centre = (centre[:, 2:3] - lo[2]) / cell_z - base * inv            # (n, 3)
        k_half = width * inv.abs()
        step_x, step_y = a_x * cell * inv, a_y * cell * inv
        mid = k_centre[:, :, None, None] - step_x[:, :, None, None] * ox[:, None] \
            - step_y[:, :, None, None] * oy[:, None]                         # (n, 3, wx, wy)
        z_lo = (mid - k_half[:, :, None, None]).amax(1)
        z_hi = (mid + k_half[:, :, None, None]).amin(1)
        k0 = torch.maximum(z_lo.clamp(-1, float(top[2]) + 1).floor().long(),
                           i0[:, 2, None, None])
        k1 = torch.minimum(z_hi.clamp(-1, float(top[2]) + 1).floor().long(),
                           i1[:, 2, None, None])
        valid = (keep[:, None, None] & (ox < nx[:, None, None]) & (oy < ny[:, None, None])
                 & (k0 <= k1))
        box, cx, cy = valid.nonzero(as_tuple=True)
        column = ((i0[box, 0] + cx) * self.dims[1] + i0[box, 1] + cy) * self.dims[2]
        start = self.starts[column + k0[box, cx, cy]]
        length = self.starts[column + k1[box, cx, cy] + 1] - start
        keep = length > 0
        return box[keep], start[keep], length[keep]


def _blocks_of_rows(counts: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split rows sorted by descending length into [i, j) blocks padded to row i's length.

    Minimises padded pairs plus BLOCK_COST_PAIRS per block over cuts where the length drops
    by BAND_RATIO (a small dynamic programme), then splits blocks over `budget` pairs.
    """
    n = len(counts)
    if n == 0:
        return []
    cuts, level = [0], float(counts[0])
    while level >= 1.0:
        level *= BAND_RATIO
        k = int(np.searchsorted(-counts, -level, side='right'))
        if cuts[-1] < k < n:
            cuts.append(k)
    cuts.append(n)
    best, back = [0.0] + [np.inf] * (len(cuts) - 1), [0] * len(cuts)
    for b in range(1, len(cuts)):
        for a in range(b):
            cost = best[a] + BLOCK_COST_PAIRS + (cuts[b] - cuts[a]) * float(counts[cuts[a]])
            if cost < best[b]:
                best[b], back[b] = cost, a
    bounds, b = [], len(cuts) - 1
    while b > 0:
        bounds.append((cuts[back[b]], cuts[b]))
        b = back[b]
    blocks = []
    for i, j in reversed(bounds):
        rows = max(1, budget // max(1, int(counts[i])))
        blocks.extend((k, min(j, k + rows)) for k in range(i, j, rows))
    return blocks


class GraspBatch:
    """Grasp poses on a torch device and the gripper-frame transform of nearby points."""

    def __init__(self, grasps: GraspSet, gripper: GripperModel, device: torch.device):
        self.gripper = gripper
        self.device = device
        self.R = torch.as_tensor(grasps.rotations, device=device)
        self.t = torch.as_tensor(grasps.translations, device=device)
        self.offset = torch.einsum('nj,njk->nk', self.t, self.R)   # R^T t per grasp

    @staticmethod
    def cell_for(g: GripperModel, closing_only: bool = False) -> float:
        """A grid cell giving about twelve cells across one grasp's box (5 mm .. 3 cm)."""
        if closing_only:
            extent = max(g.finger_length, g.max_stroke)
        else:
            extent = max(g.length_behind_tip, 2 * float(g.half_extent_y(g.max_stroke)))
        return min(0.03, max(0.005, extent / 12))

    def blocks(self, grid: PointGrid, widths: torch.Tensor, depths: torch.Tensor,
               chunk_size: int, closing_only: bool = False):
        """Yield (grasp index (b,), sorted point index (b, m), q_x, q_y, q_z (b, m)) blocks.

        Row j holds grasp[j]'s candidate points (`PointGrid.runs` of its box around the
        gripper body; with `closing_only`, around the closing region between the fingers),
        padded with the NaN sentinel; no other point can touch the grasp's boxes. Every
        grasp is in one block; a block holds about `chunk_size` (grasp, point) pairs.
        """
        g = self.gripper
        n = len(widths)
        if n == 0 or grid.size == 0:
            return
        if closing_only:
            x_lo, y_half, z_half = depths - g.finger_length, widths / 2, g.finger_width / 2
        else:
            x_lo, y_half = depths - g.length_behind_tip, g.half_extent_y(widths)
            z_half = g.half_extent_z
        half = torch.stack([(depths - x_lo) / 2, y_half,
                            torch.full_like(depths, float(z_half))], 1)
        centre = self.t + self.R[:, :, 0] * ((depths + x_lo) / 2)[:, None]
        run_grasp, run_start, run_length = grid.runs(centre, self.R, half)
        if len(run_grasp) == 0:
            return
        dev = self.device
        count = torch.zeros(n, dtype=torch.int64, device=dev).index_add_(0, run_grasp,
                                                                         run_length)
        # blocks of grasps with similar counts keep the padding small
        by_count = torch.argsort(count, descending=True, stable=True)
        sorted_count = count[by_count].cpu().numpy()
        descending = -sorted_count
        run_of_grasp = torch.searchsorted(run_grasp, torch.arange(n + 1, device=dev))
        run_offset = torch.cumsum(run_length, 0) - run_length   # within all runs
        grasp_offset = run_offset[run_of_grasp[:-1].clamp(max=len(run_offset) - 1)]
        last = int(np.searchsorted(descending, 0, side='left'))   # grasps with candidates
        for i, j in _blocks_of_rows(sorted_count[:last], max(1, int(chunk_size))):
            members = by_count[i:j]
            yield (members, *self._padded(grid, members, int(sorted_count[i]), run_of_grasp,
                                          run_start, run_length, run_offset, grasp_offset))

    def _padded(self, grid, members, width, run_of_grasp, run_start, run_length, run_offset,
                grasp_offset):
        """Point indices (b, width) of the members' runs, padded; and their q_x, q_y, q_z."""
        dev = self.device
        b = len(members)
        lo, hi = run_of_grasp[members], run_of_grasp[members + 1]
        n_runs = hi - lo
        slot = torch.repeat_interleave(torch.arange(b, device=dev), n_runs)
        run = lo[slot] + torch.arange(len(slot), device=dev) \
            - (torch.cumsum(n_runs, 0) - n_runs)[slot]
        lengths = run_length[run]
        position = run_offset[run] - grasp_offset[members][slot]   # within the grasp's list
        source = torch.arange(int(lengths.sum()), device=dev) + torch.repeat_interleave(
            run_start[run] - (torch.cumsum(lengths, 0) - lengths), lengths)
        target = source + torch.repeat_interleave(slot * width + position - run_start[run],
                                                  lengths)
        index = torch.full((b * width,), grid.size, dtype=torch.int64, device=dev)
        index[target] = source
        index = index.view(b, width)
        x, y, z = (torch.take(grid.planar[axis], index) for axis in range(3))
        R, offset = self.R[members][:, :, :, None], self.offset[members][:, :, None]
        q = [torch.addcmul(torch.addcmul(torch.addcmul(-offset[:, k], z, R[:, 2, k]), y,
                                         R[:, 1, k]), x, R[:, 0, k]) for k in range(3)]
        return index, q[0], q[1], q[2]


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


def count_body_and_inner(batch: GraspBatch, grid: PointGrid, widths, depths, chunk_size):
    """Per grasp: obstacle points in the gripper body and in the closing region."""
    g = batch.gripper
    n = len(widths)
    body = torch.zeros(n, dtype=torch.int64, device=batch.device)
    inner = torch.zeros(n, dtype=torch.int64, device=batch.device)
    for grasp, _, qx, qy, qz in batch.blocks(grid, widths, depths, chunk_size):
        w, d = widths[grasp][:, None], depths[grasp][:, None]
        y_abs, z_abs = qy.abs(), qz.abs()
        in_outer = ((z_abs <= g.finger_width / 2) & (y_abs <= w / 2 + g.finger_thickness)
                    & (qx >= d - g.finger_length - g.back_length) & (qx <= d))
        inside = in_outer & (y_abs < w / 2) & (qx >= d - g.finger_length)
        inner[grasp] = inside.sum(1)
        if g.has_housing:
            x_lo, x_hi = g.housing_x_range
            hit = (in_outer & ~inside) | ((z_abs <= g.housing_height / 2)
                                          & (y_abs <= g.housing_width / 2)
                                          & (qx >= d + x_lo) & (qx <= d + x_hi))
            body[grasp] = hit.sum(1)
        else:
            body[grasp] = in_outer.sum(1) - inner[grasp]
    return body, inner


def contacts(batch: GraspBatch, grid: PointGrid, widths, depths, tolerance, chunk_size,
             with_normals: bool = False):
    """Per grasp: gaps to the left/right finger and contact depths (inf / -inf if none).

    With `with_normals` (the grid's unit normals, one per point) also the antipodal cosine
    of each side: the mean outward normal of the side's contact patch (points within
    `tolerance` of the tightest gap that face that finger) dotted with the direction
    towards the finger (-1 when no patch point faces it).
    """
    g = batch.gripper
    n = len(widths)
    dev = batch.device
    gap_left = torch.full((n,), float('inf'), device=dev)
    gap_right = gap_left.clone()
    z_left = torch.full((n,), -float('inf'), device=dev)
    z_right = z_left.clone()
    normal_sum = {side: torch.zeros((n, 3), device=dev) for side in (-1.0, 1.0)}
    closing = batch.R[:, :, 1]
    for grasp, index, qx, qy, qz in batch.blocks(grid, widths, depths, chunk_size,
                                                 closing_only=True):
        w, d = widths[grasp][:, None], depths[grasp][:, None]
        region = ((qz.abs() <= g.finger_width / 2) & (qy.abs() < w / 2)
                  & (qx >= d - g.finger_length) & (qx <= d))
        # Few pairs fall between the fingers: finish on those.
        row, col = region.nonzero(as_tuple=True)
        if len(row) == 0:
            continue
        x, y = qx[row, col], qy[row, col]
        pair_grasp = grasp[row]
        half = widths[pair_grasp] / 2
        if with_normals:
            normals = grid.normals[index[row, col]]
            n_y = (normals * closing[pair_grasp]).sum(1)   # along the closing axis
        # The left finger sits at y = -w/2 (gap w/2 + y), the right one at y = +w/2.
        # Each grasp lies in one block, so its minimum is final here.
        for gap, gap_out, z_out, sign in ((half + y, gap_left, z_left, -1.0),
                                          (half - y, gap_right, z_right, 1.0)):
            gap_out.scatter_reduce_(0, pair_grasp, gap, 'amin')
            near = gap <= gap_out[pair_grasp] + tolerance
            z_out.scatter_reduce_(0, pair_grasp[near], x[near], 'amax')
            if with_normals:
                facing = near & (sign * n_y > 0)
                normal_sum[sign].index_add_(0, pair_grasp[facing], normals[facing])
    if not with_normals:
        return gap_left, gap_right, z_left, z_right
    cosines = []
    for sign in (-1.0, 1.0):
        length = normal_sum[sign].norm(dim=1)
        along = sign * (normal_sum[sign] * closing).sum(1)
        cosines.append(torch.where(length > 0, along / length.clamp(min=1e-12),
                                   torch.full_like(length, -1.0)))
    return gap_left, gap_right, z_left, z_right, cosines[0], cosines[1]


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
