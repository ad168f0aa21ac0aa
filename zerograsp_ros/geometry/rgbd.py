"""RGB-D frames: validation, depth decoding and the recorded-frame directory format.

Recorded-frame format (used by the camera node's replay source and the
shipped samples): one directory per frame holding
  color.png         8-bit RGB
  depth.png         16-bit single channel, millimetres (0 = no measurement)
  camera_info.yaml  width, height, K (9 numbers, row-major), frame_id
  labels.png        optional 16-bit instance labels (0 = background)
A replay directory is either one such frame directory or a directory of
them, replayed in name order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import CameraIntrinsics

MAX_DEPTH_M = 10.0  # beyond any tabletop camera; larger values are treated as invalid


@dataclass
class RGBDFrame:
    """A registered colour + depth frame in numpy form.

    rgb: (H, W, 3) uint8; depth: (H, W) float32 metres, NaN or 0 = invalid;
    labels: optional (H, W) int32 instance ids, 0 = background.
    """

    rgb: np.ndarray
    depth: np.ndarray
    intrinsics: CameraIntrinsics
    labels: np.ndarray | None = None
    frame_id: str = 'camera_color_optical_frame'
    stamp: float = 0.0
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.depth.shape[:2]

    def valid_depth(self) -> np.ndarray:
        d = self.depth
        return np.isfinite(d) & (d > 0) & (d < MAX_DEPTH_M)


def decode_depth(depth: np.ndarray, encoding: str) -> np.ndarray:
    """Depth image of a ROS encoding -> float32 metres (invalid pixels NaN)."""
    enc = encoding.lower()
    if enc in ('16uc1', 'mono16'):
        d = np.asarray(depth, dtype=np.float32) * 0.001
        d[np.asarray(depth) == 0] = np.nan
    elif enc == '32fc1':
        d = np.array(depth, dtype=np.float32, copy=True)
    else:
        raise InputError(f"unsupported depth encoding '{encoding}': "
                         'expected 16UC1 (mm) or 32FC1 (m)')
    d[~np.isfinite(d) | (d <= 0) | (d >= MAX_DEPTH_M)] = np.nan
    return d


def decode_color(color: np.ndarray, encoding: str) -> np.ndarray:
    """Colour image of a ROS encoding -> (H, W, 3) uint8 RGB."""
    enc = encoding.lower()
    c = np.asarray(color)
    if enc == 'rgb8':
        return c.reshape(c.shape[0], c.shape[1], 3).astype(np.uint8, copy=False)
    if enc == 'bgr8':
        return c.reshape(c.shape[0], c.shape[1], 3)[..., ::-1].astype(np.uint8)
    if enc in ('rgba8', 'bgra8'):
        c = c.reshape(c.shape[0], c.shape[1], 4)[..., :3]
        return c if enc == 'rgba8' else c[..., ::-1].astype(np.uint8)
    if enc == 'mono8':
        c = c.reshape(c.shape[0], c.shape[1])
        return np.repeat(c[..., None], 3, axis=2).astype(np.uint8)
    raise InputError(f"unsupported colour encoding '{encoding}': expected rgb8, bgr8, rgba8, "
                     "bgra8 or mono8")


def validate_frame(frame: RGBDFrame, min_valid_fraction: float = 0.0) -> None:
    """Raise InputError naming the first problem that makes the frame unusable."""
    if frame.depth is None or frame.depth.size == 0:
        raise InputError('empty depth image')
    if frame.rgb is None or frame.rgb.size == 0:
        raise InputError('empty colour image')
    if frame.depth.ndim != 2:
        raise InputError(f'depth must be a single-channel image, got shape {frame.depth.shape}')
    if frame.rgb.ndim != 3 or frame.rgb.shape[2] != 3:
        raise InputError(f'colour must be HxWx3, got shape {frame.rgb.shape}')
    h, w = frame.depth.shape
    if frame.rgb.shape[:2] != (h, w):
        raise InputError(f'colour size {frame.rgb.shape[1]}x{frame.rgb.shape[0]} does not match '
                         f'depth size {w}x{h} (is depth aligned to colour?)')
    intr = frame.intrinsics
    intr.validate()
    if (intr.width, intr.height) != (w, h):
        raise InputError(f'camera info size {intr.width}x{intr.height} does not match image '
                         f'size {w}x{h}')
    if frame.labels is not None and frame.labels.shape[:2] != (h, w):
        raise InputError(f'label image size {frame.labels.shape[1]}x{frame.labels.shape[0]} does '
                         f'not match depth size {w}x{h}')
    valid = frame.valid_depth()
    if not valid.any():
        raise InputError('depth image has no valid pixel (all zero, NaN, inf or out of range)')
    if valid.mean() < min_valid_fraction:
        raise InputError(f'only {100 * valid.mean():.1f} % of depth pixels are valid '
                         f'(need {100 * min_valid_fraction:.0f} %)')


def save_frame_dir(frame: RGBDFrame, directory: str | Path) -> Path:
    """Write a frame in the recorded-frame format (see module docstring)."""
    from PIL import Image

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(frame.rgb, dtype=np.uint8), 'RGB').save(d / 'color.png')
    depth = np.nan_to_num(frame.depth, nan=0.0, posinf=0.0, neginf=0.0)
    depth_mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
    Image.fromarray(depth_mm).save(d / 'depth.png')
    if frame.labels is not None:
        Image.fromarray(np.asarray(frame.labels).astype(np.uint16)).save(d / 'labels.png')
    info = {'width': frame.intrinsics.width, 'height': frame.intrinsics.height,
            'K': [float(x) for x in frame.intrinsics.K.reshape(-1)],
            'frame_id': frame.frame_id}
    info.update({k: v for k, v in frame.meta.items() if k not in info})
    (d / 'camera_info.yaml').write_text(yaml.safe_dump(info, sort_keys=False))
    return d


def load_frame_dir(directory: str | Path) -> RGBDFrame:
    """Read one frame written by save_frame_dir; InputError if files are missing or bad."""
    from PIL import Image

    d = Path(directory)
    for name in ('color.png', 'depth.png', 'camera_info.yaml'):
        if not (d / name).is_file():
            raise InputError(f'recorded frame {d} lacks {name}')
    try:
        info = yaml.safe_load((d / 'camera_info.yaml').read_text())
        rgb = np.asarray(Image.open(d / 'color.png').convert('RGB'))
        depth_raw = np.asarray(Image.open(d / 'depth.png')).astype(np.uint16)
        labels = None
        if (d / 'labels.png').is_file():
            labels = np.asarray(Image.open(d / 'labels.png')).astype(np.int32)
        intr = CameraIntrinsics.from_matrix(info['K'], info['width'], info['height'])
    except InputError:
        raise
    except Exception as exc:  # corrupt PNG or YAML: name the file
        raise InputError(f'cannot read recorded frame {d}: {exc}') from exc
    meta = {k: v for k, v in info.items() if k not in ('width', 'height', 'K', 'frame_id')}
    return RGBDFrame(rgb=rgb, depth=decode_depth(depth_raw, '16UC1'), intrinsics=intr,
                     labels=labels, frame_id=info.get('frame_id', 'camera_color_optical_frame'),
                     meta=meta)


def list_frame_dirs(directory: str | Path) -> list[Path]:
    """The frame directories of a replay directory, in name order."""
    d = Path(directory)
    if (d / 'depth.png').is_file():
        return [d]
    frames = sorted(p for p in d.iterdir() if p.is_dir() and (p / 'depth.png').is_file()) \
        if d.is_dir() else []
    if not frames:
        raise InputError(f'no recorded frames (directories with depth.png) under {d}')
    return frames
