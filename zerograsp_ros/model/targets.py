"""Training targets (produced by the data pipeline) and their per-leaf form.

A SceneSample pairs an RGB-D frame with instance labels and, per object id,
the complete ground-truth surface (points + outward normals, camera frame,
metres) and optional dense grasp labels on surface points. `leaf_targets`
turns one object's target into per-leaf values of its ground-truth octree:
normal, SDF (leaf centre - normal * sdf = surface), and the grasp label of
the closest labelled grasp point within `grasp_label_radius_m`.
"""
from __future__ import annotations

from dataclasses import dataclass
import functools

import numpy as np
from scipy.spatial import cKDTree

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.rgbd import RGBDFrame


@dataclass
class ObjectTarget:
    object_id: int
    surface_points: np.ndarray   # (M,3) float32, camera frame, metres, complete GT surface
    surface_normals: np.ndarray  # (M,3) unit outward normals
    # optional dense grasp labels on surface points (may be None / empty):
    grasp_points: np.ndarray | None = None    # (G,3)
    graspness: np.ndarray | None = None       # (G,) in [0,1]
    grasp_quality: np.ndarray | None = None   # (G,) in [0,1] (force closure of best grasp)
    grasp_approach: np.ndarray | None = None  # (G,3) unit approach of best grasp
    grasp_closing: np.ndarray | None = None   # (G,3) unit closing axis of best grasp
    grasp_width: np.ndarray | None = None     # (G,) metres
    grasp_depth: np.ndarray | None = None     # (G,) metres
    label_radius_m: float | None = None       # leaves this close take a label (None: config)
    view_graspness: np.ndarray | None = None  # (G, U) graspness per Fibonacci view (dense)
    # (G, MAX_GRASP_MODES, GRASP_MODE_CHANNELS) the best grasp of each of the point's most
    # graspable views, exact best first (dense); rows of zeros = no such grasp
    grasp_modes: np.ndarray | None = None

    @property
    def has_grasp_labels(self) -> bool:
        return self.grasp_points is not None and len(self.grasp_points) > 0

    def validate(self) -> None:
        pts = np.asarray(self.surface_points)
        nrm = np.asarray(self.surface_normals)
        if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) == 0:
            raise InputError(f'object {self.object_id}: surface_points must be (M,3), M > 0, '
                             f'got {pts.shape}')
        if nrm.shape != pts.shape:
            raise InputError(f'object {self.object_id}: surface_normals {nrm.shape} do not '
                             f'match surface_points {pts.shape}')
        if not (np.isfinite(pts).all() and np.isfinite(nrm).all()):
            raise InputError(f'object {self.object_id}: surface points/normals contain NaN')
        if self.has_grasp_labels:
            g = len(self.grasp_points)
            for name in ('graspness', 'grasp_quality', 'grasp_approach', 'grasp_closing',
                         'grasp_width', 'grasp_depth'):
                arr = getattr(self, name)
                if arr is None or len(arr) != g:
                    raise InputError(f'object {self.object_id}: {name} must have {g} rows '
                                     'like grasp_points')
            if self.grasp_modes is not None and (len(self.grasp_modes) != g or np.ndim(
                    self.grasp_modes) != 3 or self.grasp_modes.shape[2] != GRASP_MODE_CHANNELS):
                raise InputError(f'object {self.object_id}: grasp_modes must be (G, modes, '
                                 f'{GRASP_MODE_CHANNELS}) with G = {g}, got '
                                 f'{np.shape(self.grasp_modes)}')
            if self.view_graspness is not None and len(self.view_graspness) != g:
                raise InputError(f'object {self.object_id}: view_graspness must have {g} rows '
                                 'like grasp_points')


@dataclass
class SceneSample:
    frame: RGBDFrame              # labels (instance ids) required
    targets: dict[int, ObjectTarget]   # by object id


# per-leaf grasp label channels (after normal 3 and sdf 1)
GRASP_LABEL_CHANNELS = 11   # graspness, quality, approach 3, closing 3, width, depth, labelled
# normal 3, sdf 1, grasp labels; then the paper head's view graspness or the direct
# head's grasp modes, if any
LEAF_TARGET_CHANNELS = 4 + GRASP_LABEL_CHANNELS
# per grasp mode: approach 3, closing 3, width (metres), depth (metres), quality
GRASP_MODE_CHANNELS = 9


@functools.lru_cache(maxsize=8)
def view_map(label_views: int, model_views: int) -> np.ndarray:
    """(model_views,) index of the nearest of `label_views` Fibonacci views to each model view."""
    from zerograsp_ros.grasp.representation import fibonacci_views

    return np.argmax(fibonacci_views(model_views) @ fibonacci_views(label_views).T, axis=1)


def leaf_targets(target: ObjectTarget, leaf_centres_m: np.ndarray, leaf_normals: np.ndarray,
                 leaf_points_m: np.ndarray, voxel_size_m: float, max_width_m: float,
                 max_depth_m: float, label_radius_m: float, view_bins: int = 0,
                 modes: int = 0) -> np.ndarray:
    """(L, 15 [+ view_bins | modes x 9]) per-leaf targets: normal 3, sdf/voxel 1, grasp 11.

    view_bins > 0 (the paper head's views) appends the graspness per view, from the
    target's `view_graspness` taken at the nearest label view of each model view;
    zeros where the target has none (the loss then falls back to the best view).
    modes > 0 (the direct head) appends the first `modes` of the target's
    `grasp_modes`, width and depth divided by their maxima; zeros where it has none.

    SDF is signed along the leaf normal, in voxel units: centre - n * sdf = surface.
    Grasp columns: graspness, quality, approach 3, closing 3, width/max, depth/max,
    labelled flag (1 where a grasp point lies within the radius, else graspness 0).
    """
    n_leaf = len(leaf_centres_m)
    if view_bins and modes:
        raise InputError('leaf_targets: view_bins (paper head) and modes (direct head) '
                         'exclude each other')
    extra = view_bins or modes * GRASP_MODE_CHANNELS
    out = np.zeros((n_leaf, LEAF_TARGET_CHANNELS + extra), dtype=np.float32)
    out[:, 0:3] = leaf_normals
    sdf = np.sum((leaf_centres_m - leaf_points_m) * leaf_normals, axis=1) / voxel_size_m
    out[:, 3] = np.clip(sdf, -1.0, 1.0)
    if not target.has_grasp_labels or n_leaf == 0:
        return out
    tree = cKDTree(np.asarray(target.grasp_points, dtype=np.float64))
    radius = max(label_radius_m, 0.5 * voxel_size_m)
    dist, idx = tree.query(leaf_points_m, k=1, distance_upper_bound=radius)
    hit = np.isfinite(dist)
    j = idx[hit]
    g = out[hit]
    g[:, 4] = np.clip(np.asarray(target.graspness)[j], 0.0, 1.0)
    g[:, 5] = np.clip(np.asarray(target.grasp_quality)[j], 0.0, 1.0)
    g[:, 6:9] = np.asarray(target.grasp_approach)[j]
    g[:, 9:12] = np.asarray(target.grasp_closing)[j]
    g[:, 12] = np.clip(np.asarray(target.grasp_width)[j] / max_width_m, 0.0, 1.0)
    g[:, 13] = np.clip(np.asarray(target.grasp_depth)[j] / max_depth_m, 0.0, 1.0)
    g[:, 14] = 1.0
    if view_bins and target.view_graspness is not None:
        views = np.asarray(target.view_graspness, dtype=np.float32)
        g[:, LEAF_TARGET_CHANNELS:] = views[j][:, view_map(views.shape[1], view_bins)]
    if modes and target.grasp_modes is not None:
        m = np.array(np.asarray(target.grasp_modes, dtype=np.float32)[j, :modes])
        m[..., 6] = np.clip(m[..., 6] / max_width_m, 0.0, 1.0)
        m[..., 7] = np.clip(m[..., 7] / max_depth_m, 0.0, 1.0)
        g[:, LEAF_TARGET_CHANNELS:LEAF_TARGET_CHANNELS + m.shape[1] * GRASP_MODE_CHANNELS] = \
            m.reshape(len(m), -1)
    out[hit] = g
    return out
