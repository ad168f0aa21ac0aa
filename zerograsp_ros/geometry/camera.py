"""Pinhole camera model in the OpenCV optical convention (x right, y down, z forward)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zerograsp_ros.errors import InputError


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of a width x height image, focal lengths and centre in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_matrix(cls, K, width: int, height: int) -> 'CameraIntrinsics':
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        intr = cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]),
                   int(width), int(height))
        intr.validate()
        return intr

    @classmethod
    def d435(cls, width: int = 640, height: int = 480) -> 'CameraIntrinsics':
        """Typical RealSense D435 colour intrinsics at 640x480 (scaled for other sizes)."""
        s = width / 640.0
        return cls(615.0 * s, 615.0 * s, 320.0 * s, 240.0 * s, width, height)

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def validate(self) -> None:
        vals = np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float64)
        if not np.all(np.isfinite(vals)):
            raise InputError(f'camera intrinsics contain NaN/inf: K={self.K.tolist()}')
        if self.fx <= 0 or self.fy <= 0:
            raise InputError(f'camera intrinsics have non-positive focal length '
                             f'(fx={self.fx}, fy={self.fy}); is CameraInfo.k filled?')
        if self.width <= 0 or self.height <= 0:
            raise InputError(f'camera image size must be positive, got {self.width}x{self.height}')


def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(u, v) pixel-centre coordinates, each (H, W) float32."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    return u, v


def unproject(depth_m: np.ndarray, intr: CameraIntrinsics, mask: np.ndarray | None = None,
              return_pixels: bool = False):
    """Back-project valid depth pixels (finite, > 0) into camera-frame points [m].

    Returns (N, 3) float32 points, and with return_pixels also (N, 2) int (row, col).
    """
    depth_m = np.asarray(depth_m)
    valid = np.isfinite(depth_m) & (depth_m > 0)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    rows, cols = np.nonzero(valid)
    z = depth_m[rows, cols].astype(np.float32)
    x = (cols.astype(np.float32) - intr.cx) * z / intr.fx
    y = (rows.astype(np.float32) - intr.cy) * z / intr.fy
    pts = np.stack([x, y, z], axis=1)
    if return_pixels:
        return pts, np.stack([rows, cols], axis=1)
    return pts


def project(points: np.ndarray, intr: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Project camera-frame points to pixel coordinates (u, v) float and their depth z."""
    pts = np.asarray(points, dtype=np.float64)
    z = pts[..., 2]
    with np.errstate(divide='ignore', invalid='ignore'):
        u = intr.fx * pts[..., 0] / z + intr.cx
        v = intr.fy * pts[..., 1] / z + intr.cy
    return np.stack([u, v], axis=-1), z


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 homogeneous transform to (N, 3) points."""
    T = np.asarray(T)
    return np.asarray(points) @ T[:3, :3].T + T[:3, 3]
