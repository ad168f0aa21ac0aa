"""Parallel-jaw grasps in the GraspNet convention.

Gripper frame: x = approach (palm towards object), y = closing (finger to
finger), z = x cross y. `translation` is the TCP: midway between the
fingertips. Fingers reach `depth` past the TCP along x.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

GRASPNET_NUM_VIEWS = 300
GRASPNET_NUM_ANGLES = 12
GRASPNET_DEPTHS = (0.01, 0.02, 0.03, 0.04)
MAX_WIDTH = 0.10
MAX_DEPTH = 0.04


@dataclass
class GraspSet:
    """N grasps as parallel arrays (metres, camera or world frame as the owner states)."""

    rotations: np.ndarray      # (N, 3, 3) columns = approach, closing, x cross y
    translations: np.ndarray   # (N, 3) TCP positions
    widths: np.ndarray         # (N,)
    depths: np.ndarray         # (N,)
    scores: np.ndarray         # (N,) graspness * quality
    qualities: np.ndarray      # (N,)
    graspness: np.ndarray      # (N,)
    object_ids: np.ndarray     # (N,) int32

    def __post_init__(self):
        n = len(self.translations)
        self.rotations = np.asarray(self.rotations, dtype=np.float32).reshape(n, 3, 3)
        self.translations = np.asarray(self.translations, dtype=np.float32).reshape(n, 3)
        for name in ('widths', 'depths', 'scores', 'qualities', 'graspness'):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32).reshape(n))
        self.object_ids = np.asarray(self.object_ids, dtype=np.int32).reshape(n)

    def __len__(self) -> int:
        return len(self.translations)

    @classmethod
    def empty(cls) -> 'GraspSet':
        z = np.zeros(0)
        return cls(np.zeros((0, 3, 3)), np.zeros((0, 3)), z, z, z, z, z, z)

    def subset(self, index) -> 'GraspSet':
        return GraspSet(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concatenate(sets: list['GraspSet']) -> 'GraspSet':
        sets = [s for s in sets if len(s)]
        if not sets:
            return GraspSet.empty()
        return GraspSet(**{f.name: np.concatenate([getattr(s, f.name) for s in sets])
                           for f in fields(GraspSet)})

    def sorted_by_score(self) -> 'GraspSet':
        return self.subset(np.argsort(-self.scores, kind='stable'))

    def transformed(self, T: np.ndarray) -> 'GraspSet':
        """The same grasps expressed in another frame (T maps this frame to the new one)."""
        T = np.asarray(T, dtype=np.float32)
        out = self.subset(slice(None))
        out.rotations = np.einsum('ij,njk->nik', T[:3, :3], self.rotations)
        out.translations = self.translations @ T[:3, :3].T + T[:3, 3]
        return out

    def finite_mask(self) -> np.ndarray:
        """Grasps whose pose, width and depth are all finite."""
        return (np.isfinite(self.rotations).all(axis=(1, 2))
                & np.isfinite(self.translations).all(1) & np.isfinite(self.widths)
                & np.isfinite(self.depths) & np.isfinite(self.scores))

    def to_graspnet_array(self) -> np.ndarray:
        """Rows of graspnetAPI's GraspGroup: score, width, height, depth, R(9), t(3), object id."""
        n = len(self)
        out = np.zeros((n, 17), dtype=np.float32)
        out[:, 0], out[:, 1], out[:, 2], out[:, 3] = self.scores, self.widths, 0.02, self.depths
        out[:, 4:13] = self.rotations.reshape(n, 9)
        out[:, 13:16] = self.translations
        out[:, 16] = self.object_ids
        return out

    @classmethod
    def from_graspnet_array(cls, arr: np.ndarray) -> 'GraspSet':
        arr = np.asarray(arr, dtype=np.float32).reshape(-1, 17)
        n = len(arr)
        return cls(arr[:, 4:13].reshape(n, 3, 3), arr[:, 13:16], arr[:, 1], arr[:, 3], arr[:, 0],
                   arr[:, 0], np.ones(n), arr[:, 16].astype(np.int32))


def quality_from_mu(mu_min) -> np.ndarray:
    """Grasp quality in [0, 1] from the lowest force-closure friction coefficient.

    (1.4 - mu) / 1.2 clipped, so mu = 0.2 -> 1 and mu >= 1.4 (or inf: never
    force-closure) -> 0. The training labels' quality and the refinement's contact
    quality share this scale.
    """
    mu = np.asarray(mu_min, dtype=np.float64)
    with np.errstate(invalid='ignore'):
        q = np.clip((1.4 - mu) / 1.2, 0.0, 1.0)
    return np.where(np.isfinite(mu), q, 0.0).astype(np.float32)


def mu_from_antipodal_cosine(cosine) -> np.ndarray:
    """Least friction coefficient holding contacts at this antipodal cosine.

    The cosine is between a contact's outward normal and the closing line; mu is the
    tangent of that angle (inf when the cosine is <= 0).
    """
    c = np.clip(np.asarray(cosine, dtype=np.float64), -1.0, 1.0)
    with np.errstate(divide='ignore', invalid='ignore'):
        mu = np.tan(np.arccos(c))
    return np.where(c > 1e-6, mu, np.inf)


def same_grasp_rotation(R_a: np.ndarray, R_b: np.ndarray, angle_deg: float,
                        symmetric: bool = True) -> np.ndarray:
    """Whether rotations (broadcastable (..., 3, 3) stacks) lie within `angle_deg`.

    The angle is that of R_a^T R_b (trace = 1 + 2 cos); with `symmetric`, R_b turned
    180 deg about its approach (x) counts too: the same physical two-finger grasp.
    """
    dots = np.einsum('...ik,...ik->...k', np.asarray(R_a, np.float64),
                     np.asarray(R_b, np.float64))     # column-wise dot products
    cos_limit = np.cos(np.radians(angle_deg))
    same = (dots.sum(-1) - 1.0) / 2.0 >= cos_limit
    if symmetric:
        same |= (dots[..., 0] - dots[..., 1] - dots[..., 2] - 1.0) / 2.0 >= cos_limit
    return same


def unit_normal_rows(normals: np.ndarray, tolerance: float = 0.05) -> np.ndarray:
    """Which rows of an (N, 3) array are finite unit vectors (|length - 1| <= tolerance)."""
    n = np.asarray(normals, dtype=np.float64).reshape(-1, 3)
    with np.errstate(invalid='ignore'):
        return np.isfinite(n).all(1) & (np.abs(np.linalg.norm(n, axis=1) - 1.0) <= tolerance)


def fibonacci_views(num_views: int = GRASPNET_NUM_VIEWS) -> np.ndarray:
    """Unit approach directions on a Fibonacci sphere (GraspNet's 300 views), (V, 3)."""
    i = np.arange(num_views, dtype=np.float64)
    phi = (np.sqrt(5.0) - 1.0) / 2.0
    z = (2.0 * i + 1.0) / num_views - 1.0
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    ang = 2.0 * np.pi * i * phi
    return np.stack([r * np.cos(ang), r * np.sin(ang), z], axis=1)


def rotation_from_approach(approach: np.ndarray, angle: np.ndarray | float = 0.0) -> np.ndarray:
    """Gripper rotations [x y z] from approach vectors (N, 3) and in-plane angles (N,).

    y = (-a_y, a_x, 0) normalised ((0, 1, 0) when a is vertical), z = x cross y,
    then rotate about x by the angle (GraspNet convention).
    """
    a = np.asarray(approach, dtype=np.float64).reshape(-1, 3)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    angle = np.broadcast_to(np.asarray(angle, dtype=np.float64), (len(a),))
    y = np.stack([-a[:, 1], a[:, 0], np.zeros(len(a))], axis=1)
    ny = np.linalg.norm(y, axis=1, keepdims=True)
    vertical = ny[:, 0] < 1e-8
    y[vertical] = (0.0, 1.0, 0.0)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    z = np.cross(a, y)
    R0 = np.stack([a, y, z], axis=2)
    c, s = np.cos(angle), np.sin(angle)
    Rx = np.zeros((len(a), 3, 3))
    Rx[:, 0, 0] = 1.0
    Rx[:, 1, 1], Rx[:, 1, 2], Rx[:, 2, 1], Rx[:, 2, 2] = c, -s, s, c
    return (R0 @ Rx).astype(np.float32)


def rotation_from_axes(approach: np.ndarray, closing: np.ndarray) -> np.ndarray:
    """Orthonormal gripper rotations from (possibly noisy) approach and closing axes (N, 3)."""
    a = np.asarray(approach, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(closing, dtype=np.float64).reshape(-1, 3)
    a = a / np.clip(np.linalg.norm(a, axis=1, keepdims=True), 1e-9, None)
    b = b - (b * a).sum(1, keepdims=True) * a  # Gram-Schmidt: closing orthogonal to approach
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    bad = nb[:, 0] < 1e-6
    if bad.any():
        b[bad] = rotation_from_approach(a[bad])[:, :, 1]
        nb[bad] = 1.0
    b = b / nb
    return np.stack([a, b, np.cross(a, b)], axis=2).astype(np.float32)


def gripper_wireframe(grasps: GraspSet, finger_length: float = 0.04,
                      palm_back: float = 0.02) -> np.ndarray:
    """Line segments drawing each grasp as a simple two-finger gripper.

    Returns (N, 5, 2, 3) segments in the grasps' frame: left finger, right
    finger, palm bar, stem (back along the approach) and tip marker.
    Used by the RViz markers and the rendered figures alike.
    """
    n = len(grasps)
    R, t = grasps.rotations.astype(np.float64), grasps.translations.astype(np.float64)
    ax, cl = R[:, :, 0], R[:, :, 1]
    half = (grasps.widths.astype(np.float64) / 2.0)[:, None]
    depth = grasps.depths.astype(np.float64)[:, None]
    tip_l, tip_r = t + ax * depth + cl * half, t + ax * depth - cl * half
    root_l = tip_l - ax * finger_length
    root_r = tip_r - ax * finger_length
    palm_mid = (root_l + root_r) / 2.0
    stem_end = palm_mid - ax * palm_back
    segs = np.stack([
        np.stack([root_l, tip_l], 1), np.stack([root_r, tip_r], 1),
        np.stack([root_l, root_r], 1), np.stack([palm_mid, stem_end], 1),
        np.stack([t, t + ax * 1e-3], 1)], axis=1)
    return segs.reshape(n, 5, 2, 3).astype(np.float32)
