"""The paper's grasp parameterisation ('paper' grasp head): views, angle, depth and width bins.

Per surface leaf the head predicts graspness and quality (one each, sigmoid)
and logits over
  * approach views: `config.grasp_views` directions on a Fibonacci sphere in the
    camera frame (GraspNet uses 300; 60 here keep the head small, about 26 deg
    apart);
  * in-plane angles: `grasp_angle_bins` bins of pi / bins about the approach,
    from the view's base frame `rotation_from_approach(view, 0)` (a parallel jaw
    is symmetric under a half turn, so angles live in [0, pi));
  * depth: the GraspNet depth bins 0.01..0.04 m;
  * width: `grasp_width_bins` equal bins over [0, max_grasp_width_m].
Targets come from the per-leaf labels of targets.py (the best grasp's approach,
closing axis, width and depth): the nearest view, the angle of the closing axis
projected into that view's plane, the nearest depth and the width's bin. With
dense labels the view target is the leaf's graspness over the views (soft
cross-entropy), so every view that grasps counts, as in GSNet.
Decoding keeps, per leaf, the `grasp_views_per_leaf` most likely views among
those reachable from above the table (approach within
`decode_approach_cone_deg` of straight down, given the table's up direction in
the camera frame); the grasp's graspness is the leaf's graspness times the
view's probability, so the score stays graspness x quality.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from zerograsp_ros.grasp.representation import (
    GRASPNET_DEPTHS,
    fibonacci_views,
    rotation_from_approach,
)
from zerograsp_ros.model.config import ModelConfig
from zerograsp_ros.model.targets import LEAF_TARGET_CHANNELS

DECODE_CLEARANCE_M = 0.002   # decoded finger boxes stay this far above the table plane


def head_slices(config: ModelConfig) -> dict[str, slice]:
    """Channel ranges of the paper head's signal (after normal 3 and SDF 1)."""
    sizes = (('graspness', 1), ('quality', 1), ('view', config.grasp_views),
             ('angle', config.grasp_angle_bins), ('depth', len(GRASPNET_DEPTHS)),
             ('width', config.grasp_width_bins))
    out, start = {}, 4
    for name, n in sizes:
        out[name] = slice(start, start + n)
        start += n
    return out


def view_frames(config: ModelConfig, device=None) -> torch.Tensor:
    """(V, 3, 3) base rotations [approach, closing, x cross y] of the views at angle 0."""
    views = fibonacci_views(config.grasp_views)
    return torch.from_numpy(rotation_from_approach(views, 0.0)).to(device)


def bin_targets(targets: torch.Tensor, config: ModelConfig) -> dict[str, torch.Tensor]:
    """Class indices (long) from per-leaf labels (L, 15): view, angle, depth, width."""
    frames = view_frames(config, targets.device).to(targets.dtype)
    approach, closing = targets[:, 6:9], targets[:, 9:12]
    view = (approach @ frames[:, :, 0].T).argmax(1)
    base = frames[view]
    y0, z0 = base[:, :, 1], base[:, :, 2]
    theta = torch.atan2((closing * z0).sum(1), (closing * y0).sum(1)) % math.pi
    step = math.pi / config.grasp_angle_bins
    angle = torch.round(theta / step).long() % config.grasp_angle_bins
    depths = torch.tensor(GRASPNET_DEPTHS, device=targets.device, dtype=targets.dtype)
    depth = (targets[:, 13:14] * config.max_grasp_depth_m - depths).abs().argmin(1)
    width = (targets[:, 12] * config.grasp_width_bins).long().clamp(
        0, config.grasp_width_bins - 1)
    return {'view': view, 'angle': angle, 'depth': depth, 'width': width}


def reachable_views(config: ModelConfig, up: np.ndarray | None, device=None) -> torch.Tensor:
    """(V,) bool: views whose approach lies within the cone around straight down (-up)."""
    n = config.grasp_views
    if up is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    up = np.asarray(up, dtype=np.float64).reshape(3)
    up = up / max(np.linalg.norm(up), 1e-12)
    cos_down = fibonacci_views(n) @ -up
    ok = cos_down >= math.cos(math.radians(config.decode_approach_cone_deg)) - 1e-9
    return torch.from_numpy(ok).to(device)


def decode_paper_grasps(signal: torch.Tensor, config: ModelConfig,
                        up: np.ndarray | None = None, points: torch.Tensor | None = None,
                        table_plane: np.ndarray | None = None, gripper=None,
                        clearance_m: float = DECODE_CLEARANCE_M) -> dict[str, torch.Tensor]:
    """Per leaf the top reachable views: (L, K) fields; K = grasp_views_per_leaf.

    Returns graspness (leaf graspness x view probability among all views),
    quality, rotation (L, K, 3, 3), width and depth (metres), view index.
    Reachable: within the cone around -up; with `table_plane` (a, b, c, d; normal
    up, signed distance n.p + d), the leaf's surface `points` (L, 3) and a
    `gripper` (grasp.gripper.GripperModel), also every corner of both finger
    boxes at the decoded angle, depth and width at least `clearance_m` above the
    plane. Views that are not reachable get graspness 0 when fewer than K are.
    """
    sl = head_slices(config)
    if table_plane is not None:
        up = np.asarray(table_plane, dtype=np.float64)[:3]
    allowed = reachable_views(config, up, signal.device)[None, :].expand(len(signal), -1)
    frames = view_frames(config, signal.device).to(signal.dtype)
    step = math.pi / config.grasp_angle_bins
    theta = signal[:, sl['angle']].argmax(1).to(signal.dtype) * step
    c, s = torch.cos(theta), torch.sin(theta)
    depths = torch.tensor(GRASPNET_DEPTHS, device=signal.device, dtype=signal.dtype)
    depth = depths[signal[:, sl['depth']].argmax(1)]
    width_p = torch.softmax(signal[:, sl['width']], 1)
    centres = (torch.arange(config.grasp_width_bins, device=signal.device, dtype=signal.dtype)
               + 0.5) * config.max_grasp_width_m / config.grasp_width_bins
    width = width_p @ centres        # expected width: smoother than the arg-max bin
    if table_plane is not None and points is not None and gripper is not None:
        plane = torch.as_tensor(np.asarray(table_plane, dtype=np.float64), device=signal.device,
                                dtype=signal.dtype)
        n = plane[:3] / plane[:3].norm()
        height = points @ n + plane[3] / plane[:3].norm()           # (L,) TCP above the plane
        nx, ny0, nz0 = frames[:, :, 0] @ n, frames[:, :, 1] @ n, frames[:, :, 2] @ n   # (V,)
        ny = c[:, None] * ny0 + s[:, None] * nz0                     # (L, V) n . closing
        nz = -s[:, None] * ny0 + c[:, None] * nz0
        x_lo = nx[None, :] * (depth[:, None] - gripper.finger_length)
        x_hi = nx[None, :] * depth[:, None]
        lowest = (height[:, None] + torch.minimum(x_lo, x_hi)
                  - ny.abs() * (width[:, None] / 2 + gripper.finger_thickness)
                  - nz.abs() * gripper.finger_width / 2)
        allowed = allowed & (lowest >= clearance_m)
    view_p = torch.softmax(signal[:, sl['view']], 1)
    masked = torch.where(allowed, view_p, torch.full_like(view_p, -1.0))
    k = min(config.grasp_views_per_leaf, config.grasp_views)
    top_p, top_v = masked.topk(k, dim=1)
    top_p = top_p.clamp(min=0.0)
    base = frames[top_v]                                     # (L, K, 3, 3)
    x = base[..., 0]
    y = base[..., 1] * c[:, None, None] + base[..., 2] * s[:, None, None]
    rot = torch.stack([x, y, torch.cross(x, y, dim=-1)], dim=-1)
    graspness = torch.sigmoid(signal[:, sl['graspness']])
    return {'graspness': graspness * top_p, 'quality': torch.sigmoid(
        signal[:, sl['quality']]).expand(-1, k), 'rotation': rot,
        'width': width[:, None].expand(-1, k), 'depth': depth[:, None].expand(-1, k),
        'view': top_v}


def paper_grasp_losses(signal: torch.Tensor, targets: torch.Tensor, graspable: torch.Tensor,
                       labelled: torch.Tensor, config: ModelConfig, masked_mean) -> dict:
    """Graspness L1 (graspable leaves), quality L1 and view/angle/depth/width CE (labelled)."""
    sl = head_slices(config)
    terms = {'graspness': masked_mean((torch.sigmoid(signal[:, sl['graspness']][:, 0])
                                       - targets[:, 4]).abs(), graspable),
             'quality': masked_mean((torch.sigmoid(signal[:, sl['quality']][:, 0])
                                     - targets[:, 5]).abs(), labelled)}
    if labelled.any():
        bins = bin_targets(targets[labelled], config)
        sig = signal[labelled]
        for name in ('angle', 'depth', 'width'):
            terms[name] = F.cross_entropy(sig[:, sl[name]], bins[name])
        view = F.cross_entropy(sig[:, sl['view']], bins['view'], reduction='none')
        if targets.shape[1] > LEAF_TARGET_CHANNELS:
            # dense labels: the view distribution is the graspness over the views (GSNet),
            # not only the best view; rows without view mass keep the best view
            views = targets[labelled][:, LEAF_TARGET_CHANNELS:]
            mass = views.sum(1, keepdim=True)
            soft = -(views / mass.clamp(min=1e-9) * F.log_softmax(sig[:, sl['view']], 1)).sum(1)
            view = torch.where(mass[:, 0] > 0, soft, view)
        terms['view'] = view.mean()
    else:
        for name in ('view', 'angle', 'depth', 'width'):
            terms[name] = signal.sum() * 0.0
    return terms
