"""Rigid-transform maths in numpy: quaternions, rotation matrices, 4x4 poses.

The one home of pose and rotation conversions (messages are read and written in
`zerograsp_ros.nodes.conversions`, which calls these). Conventions: quaternions are
(x, y, z, w) like ROS, pybullet and scipy; a pose is a 4x4 homogeneous matrix.

One tolerance policy, for every caller:
- A quaternion must be finite and have a norm within `QUATERNION_NORM_TOLERANCE`
  of 1; it is then normalised. A zero (or tiny) quaternion and any other norm raise
  InputError: a wrong norm means a wrong field or unit, not rounding (float32
  rounding is ~1e-7).
- A rotation matrix is accepted by `check_rigid` when |R^T R - I| and the bottom row
  stay within `ROTATION_TOLERANCE` and det R > 0. Matrices turned into quaternions are
  first projected onto SO(3) (`project_to_so3`), so the slight drift of float32 network
  rotations never reaches a message.
"""
from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from zerograsp_ros.errors import InputError

__all__ = [
    'QUATERNION_NORM_TOLERANCE', 'ROTATION_TOLERANCE', 'check_quaternions', 'check_rigid',
    'interpolate_poses', 'make_pose', 'matrix_from_rpy', 'matrix_to_pose',
    'matrix_to_quaternion', 'pose_to_matrix', 'project_to_so3', 'quaternion_to_matrix',
    'rotation_angle',
]

QUATERNION_NORM_TOLERANCE = 1e-2   # |norm - 1| accepted (then normalised)
ZERO_QUATERNION_NORM = 1e-6        # below: "zero quaternion"
ROTATION_TOLERANCE = 1e-3          # max |R^T R - I| of an accepted rotation


def check_quaternions(q, what: str = 'quaternion') -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w) -> unit float64 quaternions, else InputError.

    The message names `what` and, for a batch, the first bad index.
    """
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1:] != (4,):
        raise InputError(f'{what} must have 4 components (x, y, z, w), got shape {q.shape}')
    flat = q.reshape(-1, 4)
    where = (lambda i: f'{what} {i}') if q.ndim > 1 else (lambda i: what)
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        raise InputError(f'{where(int(np.argmin(finite)))} contains NaN/inf')
    norms = np.linalg.norm(flat, axis=1)
    if (norms < ZERO_QUATERNION_NORM).any():
        raise InputError(f'{where(int(np.argmin(norms)))} is a zero quaternion (no rotation '
                         'is defined)')
    off = np.abs(norms - 1.0)
    if (off > QUATERNION_NORM_TOLERANCE).any():
        i = int(np.argmax(off))
        raise InputError(f'{where(i)} is a non-unit quaternion (norm {norms[i]:.4g}; accepted '
                         f'within {QUATERNION_NORM_TOLERANCE:g} of 1)')
    return (flat / norms[:, None]).reshape(q.shape)


def quaternion_to_matrix(q, what: str = 'quaternion') -> np.ndarray:
    """(..., 4) quaternions (x, y, z, w) -> (..., 3, 3) rotations (policy: module docstring)."""
    check_quaternions(q, what)
    q = np.asarray(q, dtype=np.float64)   # scipy normalises it (as it always did here)
    return Rotation.from_quat(q.reshape(-1, 4)).as_matrix().reshape(q.shape[:-1] + (3, 3))


def project_to_so3(R) -> np.ndarray:
    """(..., 3, 3) matrices -> the nearest rotations (SVD; a reflection is flipped)."""
    R = np.asarray(R, dtype=np.float64)
    u, _, vt = np.linalg.svd(R)
    flip = np.linalg.det(u @ vt) < 0
    u[..., :, 2] = np.where(flip[..., None], -u[..., :, 2], u[..., :, 2])
    return u @ vt


def matrix_to_quaternion(R) -> np.ndarray:
    """(..., 3, 3) rotations -> (..., 4) unit (x, y, z, w); drifted ones projected first.

    Rotations orthonormal to 1e-9 are converted as they are (bit-identical poses
    keep the simulated physics reproducible); others are projected onto SO(3).
    """
    R = np.asarray(R, dtype=np.float64)
    drift = np.abs(R @ np.swapaxes(R, -1, -2) - np.eye(3)).max(axis=(-2, -1))
    if (drift > 1e-9).any() or (np.linalg.det(R) < 0).any():
        R = project_to_so3(R)
    q = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat()
    return q.reshape(R.shape[:-2] + (4,))


def make_pose(R, t) -> np.ndarray:
    """Rotation (3, 3) and translation (3,) -> 4x4."""
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def pose_to_matrix(position, quaternion, what: str = 'pose') -> np.ndarray:
    """Position (3,) and quaternion (x, y, z, w) -> 4x4; InputError for NaN or a bad quaternion."""
    t = np.asarray(position, dtype=np.float64).reshape(-1)
    if t.shape != (3,) or not np.isfinite(t).all():
        raise InputError(f'{what}: position must be 3 finite numbers, got {t.tolist()}')
    return make_pose(quaternion_to_matrix(quaternion, f'{what}: orientation'), t)


def matrix_to_pose(T) -> tuple[np.ndarray, np.ndarray]:
    """4x4 -> (position (3,), unit quaternion (x, y, z, w)); the rotation is projected."""
    T = np.asarray(T, dtype=np.float64)
    return T[:3, 3].copy(), matrix_to_quaternion(T[:3, :3])


def check_rigid(T, what: str = 'transform') -> np.ndarray:
    """A finite rigid 4x4 transform as float64, else InputError naming `what`."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise InputError(f'{what} must be a finite 4x4 transform, got shape {T.shape}'
                         + ('' if T.shape != (4, 4) else ' with NaN/inf'))
    R = T[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=ROTATION_TOLERANCE) or np.linalg.det(R) < 0:
        raise InputError(f'{what} has a rotation that is not orthonormal / right-handed')
    if not np.allclose(T[3], [0, 0, 0, 1], atol=ROTATION_TOLERANCE):
        raise InputError(f'{what} has a bottom row other than [0 0 0 1]')
    return T


def matrix_from_rpy(rpy) -> np.ndarray:
    """Roll, pitch, yaw [rad] (fixed axes x, y, z, as URDF) -> 3x3 rotation."""
    rpy = np.asarray(rpy, dtype=np.float64)
    if rpy.shape != (3,) or not np.isfinite(rpy).all():
        raise InputError(f'roll, pitch, yaw must be 3 finite angles, got {rpy.tolist()}')
    return Rotation.from_euler('xyz', rpy).as_matrix()


def rotation_angle(R_a, R_b) -> float:
    """Angle [rad] of the rotation taking R_a to R_b."""
    return float(np.linalg.norm((Rotation.from_matrix(R_a).inv()
                                 * Rotation.from_matrix(R_b)).as_rotvec()))


def interpolate_poses(T_start, T_goal, n: int) -> np.ndarray:
    """(n, 4, 4) poses from T_start (excluded) to T_goal (included): linear position, slerp."""
    T0, T1 = np.asarray(T_start, dtype=np.float64), np.asarray(T_goal, dtype=np.float64)
    s = np.arange(1, n + 1) / n
    slerp = Slerp([0, 1], Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]])))
    out = np.tile(np.eye(4), (n, 1, 1))
    out[:, :3, :3] = slerp(s).as_matrix()
    out[:, :3, 3] = (1 - s)[:, None] * T0[:3, 3] + s[:, None] * T1[:3, 3]
    return out
