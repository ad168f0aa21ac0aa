"""Depth-scale tare: correct a frame's depth scale against the calibrated table plane.

Stereo depth cameras drift in scale (a whole image reads a few per cent too near
or too far; Intel ships a tare calibration against a flat target at a known
distance for this). A pick cell knows where its table is: the hand-eye
calibration gives the camera in the robot base frame and the table is a known
plane there. So, per frame:

1. fit the dominant plane on the frame (RANSAC, as the tabletop segmenter does);
2. check it is the calibrated table: its normal lies within `max_tilt_deg` of
   the calibrated normal (a pure depth-scale error leaves normals unchanged);
3. scale = median over the fitted plane's inlier pixels of measured depth / the
   depth the calibrated plane predicts along that pixel's ray;
4. depth /= scale.

A scale beyond 1 +- `max_scale_error` is not drift but a wrong calibration, wrong
depth units or no table in view: the frame is refused (InputError naming the
numbers). The default bound, 15 %, is about five standard deviations of the
simulated camera's scale noise (Gamma(1000, 0.001), std 3.2 %) and far beyond a
RealSense's drift; it was set from that noise model, not from benchmark scenes.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.rgbd import RGBDFrame, validate_frame


@dataclass
class DepthTareConfig:
    """Parameters of the depth-scale tare (node parameters `depth_tare.<field>`)."""

    enabled: bool = True
    max_scale_error: float = 0.15    # |scale - 1| above this: the frame is refused
    max_tilt_deg: float = 5.0        # fitted vs calibrated table normal
    inlier_distance: float = 0.008   # [m] pixels this close to the fitted plane are table
    min_table_pixels: int = 2000     # fewer table pixels: refused (table not in view)
    max_depth: float = 1.5           # [m] farther pixels are not used for the fit

    def validate(self) -> None:
        if not 0 < self.max_scale_error < 1:
            raise InputError(f'depth tare: max_scale_error must be in (0, 1), got '
                             f'{self.max_scale_error}')
        if not 0 < self.max_tilt_deg < 90:
            raise InputError(f'depth tare: max_tilt_deg must be in (0, 90), got '
                             f'{self.max_tilt_deg}')
        if not (self.inlier_distance > 0 and self.max_depth > 0 and self.min_table_pixels >= 3):
            raise InputError('depth tare: inlier_distance and max_depth must be > 0 and '
                             'min_table_pixels >= 3')


@dataclass
class TareResult:
    """What the tare measured on one frame (scale = measured / calibrated depth)."""

    scale: float
    tilt_deg: float
    table_pixels: int
    fitted_distance: float      # camera -> fitted table plane [m] (measured depth)
    known_distance: float       # camera -> calibrated table plane [m]
    applied: bool = False

    def summary(self) -> str:
        return (f'depth scale {self.scale:.4f} ({100 * (self.scale - 1):+.1f} %): the table '
                f'measures {self.fitted_distance:.3f} m away, calibrated {self.known_distance:.3f}'
                f' m; tilt {self.tilt_deg:.1f} deg over {self.table_pixels} pixels')


def table_plane_in_camera(T_base_camera: np.ndarray,
                          table_plane_base=(0.0, 0.0, 1.0, 0.0)) -> np.ndarray:
    """The calibrated table plane (a, b, c, d) in the camera frame, normal towards the camera.

    T_base_camera: camera optical frame in the frame where the table plane is given
    (robot base or world); table_plane_base: a x + b y + c z + d = 0 there.
    """
    T = np.asarray(T_base_camera, dtype=np.float64).reshape(4, 4)
    plane = np.asarray(table_plane_base, dtype=np.float64).reshape(-1)
    if plane.shape != (4,) or not np.isfinite(plane).all() or not np.isfinite(T).all():
        raise InputError(f'depth tare: table plane {table_plane_base} must be 4 finite numbers '
                         'and T_base_camera a finite 4x4 transform')
    norm = np.linalg.norm(plane[:3])
    if norm < 1e-9:
        raise InputError('depth tare: the table plane normal is zero')
    n_base, d_base = plane[:3] / norm, plane[3] / norm
    R, t = T[:3, :3], T[:3, 3]
    n_cam = R.T @ n_base
    d_cam = float(n_base @ t + d_base)     # signed height of the camera above the table
    if abs(d_cam) < 1e-6:
        raise InputError('depth tare: the camera lies in the table plane')
    if d_cam < 0:
        n_cam, d_cam = -n_cam, -d_cam
    return np.array([*n_cam, d_cam])


def measure_depth_scale(frame: RGBDFrame, known_plane: np.ndarray,
                        config: DepthTareConfig | None = None) -> TareResult:
    """Fit the table on the frame and compare it with the calibrated plane (no change made).

    InputError when no plane can be fitted or it is not the calibrated table.
    """
    from zerograsp_ros.geometry.camera import unproject
    from zerograsp_ros.perception.segmentation import TabletopConfig, fit_plane

    config = config or DepthTareConfig()
    validate_frame(frame)
    known = np.asarray(known_plane, dtype=np.float64).reshape(4)
    depth = np.asarray(frame.depth, dtype=np.float32)
    usable = frame.valid_depth() & (depth <= config.max_depth)
    pts, pix = unproject(depth, frame.intrinsics, mask=usable, return_pixels=True)
    if len(pts) < config.min_table_pixels:
        raise InputError(f'depth tare: only {len(pts)} valid depth pixels nearer than '
                         f'{config.max_depth} m (need {config.min_table_pixels} on the table)')
    fitted = fit_plane(pts, TabletopConfig(max_depth=config.max_depth,
                                           plane_distance=config.inlier_distance))
    cos = float(np.clip(abs(fitted[:3] @ known[:3]), -1.0, 1.0))
    tilt = float(np.degrees(np.arccos(cos)))
    inliers = np.abs(pts @ fitted[:3] + fitted[3]) < config.inlier_distance
    rays = pts[inliers] / pts[inliers, 2:3]                  # (x/z, y/z, 1) per pixel
    along = rays @ known[:3]
    facing = along < -1e-6                                   # rays that hit the known plane
    count = int(facing.sum())
    if count < config.min_table_pixels:
        raise InputError(f'depth tare: the fitted plane has {count} table pixels (need '
                         f'{config.min_table_pixels}): is the table in view?')
    expected = -known[3] / along[facing]                     # calibrated depth per pixel
    scale = float(np.median(pts[inliers][facing, 2] / expected))
    return TareResult(scale=scale, tilt_deg=tilt, table_pixels=count,
                      fitted_distance=float(fitted[3]), known_distance=float(known[3]))


def tare_frame(frame: RGBDFrame, known_plane: np.ndarray,
               config: DepthTareConfig | None = None) -> tuple[RGBDFrame, TareResult]:
    """The frame with its depth divided by the measured scale, and the measurement.

    Disabled: the frame unchanged and None as the measurement. A tilt or scale beyond
    the config's bounds raises InputError: the frame is refused, not corrected.
    """
    config = config or DepthTareConfig()
    config.validate()
    if not config.enabled:
        return frame, None
    result = measure_depth_scale(frame, known_plane, config)
    if result.tilt_deg > config.max_tilt_deg:
        raise InputError(f'depth tare refused the frame: the fitted table is tilted '
                         f'{result.tilt_deg:.1f} deg from the calibrated one (max '
                         f'{config.max_tilt_deg} deg); check the hand-eye calibration '
                         '(T_base_camera) and the table plane, or disable depth_tare')
    if abs(result.scale - 1.0) > config.max_scale_error:
        raise InputError(f'depth tare refused the frame: {result.summary()}, beyond the '
                         f'+-{100 * config.max_scale_error:.0f} % bound; check the depth units, '
                         'the hand-eye calibration and the table plane, or disable depth_tare')
    depth = (np.asarray(frame.depth, dtype=np.float32) / np.float32(result.scale))
    meta = dict(frame.meta)
    meta['depth_tare_scale'] = result.scale
    result.applied = True
    return replace(frame, depth=depth, meta=meta), result
