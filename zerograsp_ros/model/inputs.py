"""From an RGB-D frame with instance labels to per-object input octrees.

Scene cube (reference facts): one cube of `scene_cube_m` (1.28 m) per scene in
the camera frame; x, y are divided by half the cube around the optical axis;
z runs from z_min to z_min + cube with z_min = (nearest valid object depth
rounded down to `z_round_m`) - `z_margin_m`. Unit coordinates are clipped to
+-coord_clip. Every object of a scene shares the cube, so octree keys of
different objects (and of input and ground-truth octrees) are comparable.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import ocnn
from ocnn.octree import Octree, Points
import torch

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import CameraIntrinsics
from zerograsp_ros.geometry.rgbd import RGBDFrame, validate_frame
from zerograsp_ros.model.config import ModelConfig


@dataclass(frozen=True)
class SceneNormalization:
    """Maps camera-frame metres to the scene's unit cube [-1, 1]^3 and back."""

    z_min_m: float
    half_extent_m: float

    @classmethod
    def from_depths(cls, nearest_depth_m: float, config: ModelConfig) -> 'SceneNormalization':
        z0 = np.floor(nearest_depth_m / config.z_round_m) * config.z_round_m - config.z_margin_m
        return cls(float(z0), 0.5 * config.scene_cube_m)

    def to_unit(self, points_m):
        """(N,3) metres -> unit cube coordinates (numpy or torch)."""
        h = self.half_extent_m
        out = points_m / h
        shift = points_m.new_tensor([0.0, 0.0, self.z_min_m / h + 1.0]) \
            if isinstance(points_m, torch.Tensor) else np.array([0.0, 0.0, self.z_min_m / h + 1.0])
        return out - shift

    def to_metres(self, points_unit):
        h = self.half_extent_m
        shift = points_unit.new_tensor([0.0, 0.0, self.z_min_m / h + 1.0]) \
            if isinstance(points_unit, torch.Tensor) \
            else np.array([0.0, 0.0, self.z_min_m / h + 1.0])
        return (points_unit + shift) * h


@dataclass
class ObjectObservation:
    """The visible part of one object: valid masked depth pixels."""

    object_id: int
    points_m: np.ndarray    # (N,3) float32 camera frame
    pixels: np.ndarray      # (N,2) int64 (row, col)


@dataclass
class SceneObservation:
    """A validated frame split into objects, with its scene cube."""

    frame: RGBDFrame
    objects: list[ObjectObservation]
    normalization: SceneNormalization
    valid_depth: np.ndarray          # (H,W) bool after the configured range
    warnings: list[str] = field(default_factory=list)

    @property
    def intrinsics(self) -> CameraIntrinsics:
        return self.frame.intrinsics


def observe_scene(frame: RGBDFrame, config: ModelConfig, object_ids=None) -> SceneObservation:
    """Validate a frame and collect every object's valid points.

    InputError for unusable frames (sizes, intrinsics, no valid depth, no label
    image, no object in it, requested ids absent); objects with fewer than
    `min_object_points` valid points are skipped with a warning.
    """
    validate_frame(frame)
    if frame.labels is None:
        raise InputError('frame has no instance label image (labels=None); segment the scene '
                         'first')
    labels = np.asarray(frame.labels)
    if labels.ndim != 2:
        raise InputError(f'label image must be single-channel (H,W), got shape {labels.shape}')
    present = np.unique(labels)
    present = [int(i) for i in present if i > 0]
    if object_ids is None:
        ids = present
        if not ids:
            raise InputError('label image contains no object (every pixel is 0 = background)')
    else:
        ids = [int(i) for i in object_ids]
        missing = sorted(set(ids) - set(present))
        if missing:
            raise InputError(f'object ids {missing} have empty masks in the label image '
                             f'(present: {present})')
        if not ids:
            raise InputError('object_ids is empty')
    depth = np.asarray(frame.depth, dtype=np.float32)
    with np.errstate(invalid='ignore'):
        valid = frame.valid_depth() & (depth >= config.min_depth_m) & (depth <= config.max_depth_m)
    intr = frame.intrinsics
    warnings, objects = [], []
    for oid in ids:
        rows, cols = np.nonzero(valid & (labels == oid))
        if len(rows) < config.min_object_points:
            warnings.append(f'object {oid} skipped: {len(rows)} valid depth points '
                            f'(< {config.min_object_points})')
            continue
        z = depth[rows, cols]
        x = (cols.astype(np.float32) - intr.cx) * z / intr.fx
        y = (rows.astype(np.float32) - intr.cy) * z / intr.fy
        objects.append(ObjectObservation(oid, np.stack([x, y, z], 1).astype(np.float32),
                                         np.stack([rows, cols], 1).astype(np.int64)))
    nearest = min((float(o.points_m[:, 2].min()) for o in objects), default=None)
    if nearest is None:
        if not valid.any():
            raise InputError('depth image has no valid pixel within '
                             f'[{config.min_depth_m}, {config.max_depth_m}] m')
        nearest = float(depth[valid].min())
    norm = SceneNormalization.from_depths(nearest, config)
    for obj in objects:
        outside = np.mean(np.abs(norm.to_unit(obj.points_m)).max(1) > config.coord_clip)
        if outside > 0.01:
            warnings.append(f'object {obj.object_id}: {100 * outside:.0f} % of its points lie '
                            f'outside the {config.scene_cube_m} m scene cube and were clipped')
    return SceneObservation(frame, objects, norm, valid, warnings)


def build_octree(points_unit: torch.Tensor, depth: int, full_depth: int,
                 normals: torch.Tensor | None = None,
                 features: torch.Tensor | None = None) -> Octree:
    """One single-object octree from unit-cube points (already clipped to the cube)."""
    pts = Points(points_unit, normals=normals, features=features)
    octree = Octree(depth, full_depth, device=points_unit.device)
    octree.build_octree(pts)
    return octree


def merge(octrees: list[Octree]) -> Octree:
    """ocnn batch of octrees (batch index = position in the list) with neighbours built."""
    merged = ocnn.octree.merge_octrees(octrees)
    merged.construct_all_neigh()
    return merged


def leaf_centres_unit(octree: Octree, depth: int, nempty: bool = True) -> torch.Tensor:
    """Centres of the octree's nodes at `depth` in unit-cube coordinates, (N,3)."""
    x, y, z, _ = octree.xyzb(depth, nempty=nempty)
    xyz = torch.stack([x, y, z], 1).float() + 0.5
    return xyz * 2.0 ** (1 - depth) - 1.0
