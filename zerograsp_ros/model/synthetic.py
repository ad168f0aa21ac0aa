"""Analytic box scenes (exact depth, labels and ground truth) for tests and benchmarks.

Boxes are axis-aligned in the camera frame and ray-cast exactly (slab method),
so depth, instance labels, complete surfaces with normals and simple grasp
labels are known without a renderer. Label 0 boxes act as the table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zerograsp_ros.geometry.camera import CameraIntrinsics
from zerograsp_ros.geometry.rgbd import RGBDFrame
from zerograsp_ros.model.targets import ObjectTarget, SceneSample


@dataclass(frozen=True)
class Box:
    label: int
    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    color: tuple[int, int, int] = (200, 60, 60)


def render_boxes(boxes: list[Box], intr: CameraIntrinsics) -> RGBDFrame:
    """Ray-cast boxes: nearest hit per pixel gives depth [m], label and colour."""
    v, u = np.mgrid[0:intr.height, 0:intr.width].astype(np.float64)
    d = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], -1)
    d = d.reshape(-1, 3)
    with np.errstate(divide='ignore', invalid='ignore'):
        inv = 1.0 / d
    depth = np.full(len(d), np.inf)
    labels = np.zeros(len(d), dtype=np.int32)
    rgb = np.full((len(d), 3), 90, dtype=np.uint8)
    for box in boxes:
        lo, hi = np.asarray(box.lo), np.asarray(box.hi)
        with np.errstate(invalid='ignore'):
            t1, t2 = lo * inv, hi * inv
        t_near = np.nanmax(np.minimum(t1, t2), axis=1)
        t_far = np.nanmin(np.maximum(t1, t2), axis=1)
        hit = (t_near <= t_far) & (t_near > 0) & (t_near < depth)
        depth[hit] = t_near[hit]   # ray z component is 1, so t is the depth
        labels[hit] = box.label
        rgb[hit] = box.color
    depth[~np.isfinite(depth)] = np.nan
    return RGBDFrame(rgb=rgb.reshape(intr.height, intr.width, 3),
                     depth=depth.reshape(intr.height, intr.width).astype(np.float32),
                     intrinsics=intr, labels=labels.reshape(intr.height, intr.width))


def box_target(box: Box, spacing: float = 0.002, max_width: float = 0.10) -> ObjectTarget:
    """Complete surface of a box with outward normals and antipodal grasp labels.

    Each surface point gets the grasp that approaches against its face normal
    and closes along the narrowest other box axis (if narrower than max_width).
    """
    lo, hi = np.asarray(box.lo, dtype=np.float64), np.asarray(box.hi, dtype=np.float64)
    ext = hi - lo
    pts, nrm, app, clo, wid = [], [], [], [], []
    for axis in range(3):
        a1, a2 = [k for k in range(3) if k != axis]
        g1 = np.linspace(lo[a1], hi[a1], max(2, int(ext[a1] / spacing) + 1))
        g2 = np.linspace(lo[a2], hi[a2], max(2, int(ext[a2] / spacing) + 1))
        m1, m2 = np.meshgrid(g1, g2, indexing='ij')
        close_axis = a1 if ext[a1] <= ext[a2] else a2
        for side, val in ((-1.0, lo[axis]), (1.0, hi[axis])):
            p = np.zeros((m1.size, 3))
            p[:, axis], p[:, a1], p[:, a2] = val, m1.ravel(), m2.ravel()
            n = np.zeros(3)
            n[axis] = side
            c = np.zeros(3)
            c[close_axis] = 1.0
            pts.append(p)
            nrm.append(np.repeat(n[None], len(p), 0))
            app.append(np.repeat(-n[None], len(p), 0))
            clo.append(np.repeat(c[None], len(p), 0))
            wid.append(np.full(len(p), ext[close_axis]))
    pts, nrm = np.concatenate(pts), np.concatenate(nrm)
    app, clo, wid = np.concatenate(app), np.concatenate(clo), np.concatenate(wid)
    ok = wid < max_width
    return ObjectTarget(
        object_id=box.label, surface_points=pts.astype(np.float32),
        surface_normals=nrm.astype(np.float32), grasp_points=pts.astype(np.float32),
        graspness=ok.astype(np.float32), grasp_quality=ok.astype(np.float32),
        grasp_approach=app.astype(np.float32), grasp_closing=clo.astype(np.float32),
        grasp_width=np.clip(wid + 0.01, 0, max_width).astype(np.float32),
        grasp_depth=np.full(len(pts), 0.02, dtype=np.float32))


def table_scene(n_objects: int, intr: CameraIntrinsics | None = None, seed: int = 0,
                table_depth: float = 0.75) -> tuple[RGBDFrame, list[Box]]:
    """n boxes (5-9 cm) standing in front of a table-like back plane, seen from 0.5-0.7 m."""
    intr = intr or CameraIntrinsics.d435()
    rng = np.random.default_rng(seed)
    boxes = [Box(0, (-1.0, -1.0, table_depth), (1.0, 1.0, table_depth + 0.02), (120, 110, 100))]
    cols = int(np.ceil(np.sqrt(n_objects)))
    for i in range(n_objects):
        r, c = divmod(i, cols)
        size = rng.uniform(0.05, 0.09, 3)
        cx = (c - (cols - 1) / 2) * 0.11 + rng.uniform(-0.01, 0.01)
        cy = (r - (cols - 1) / 2) * 0.11 + rng.uniform(-0.01, 0.01)
        z0 = rng.uniform(0.50, 0.62)
        lo = (cx - size[0] / 2, cy - size[1] / 2, z0)
        hi = (cx + size[0] / 2, cy + size[1] / 2, min(z0 + size[2], table_depth - 0.001))
        color = tuple(int(x) for x in rng.integers(40, 255, 3))
        boxes.append(Box(i + 1, lo, hi, color))
    return render_boxes(boxes, intr), boxes


def table_sample(n_objects: int, intr: CameraIntrinsics | None = None,
                 seed: int = 0) -> SceneSample:
    """A training sample: table scene plus complete box targets with grasp labels."""
    frame, boxes = table_scene(n_objects, intr, seed)
    return SceneSample(frame, {b.label: box_target(b) for b in boxes if b.label > 0})
