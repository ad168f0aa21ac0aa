"""Read generated shards back as model `SceneSample`s (and ground truth for evaluation).

Shard layout (schema version 1, written by `generate.py`): keys `s<j>_<name>`
for scene j of the shard. Per scene: rgb, depth_mm (uint16, 0 = invalid),
labels (instance ids, 0 = background/table), K, image_size, T_world_camera,
object_ids, object_names, object_pixels; per object id k `obj<k>_`:
mesh_vertices / mesh_faces / part_sizes (world frame, every object), and for
visible objects (camera frame) surface_points, surface_normals, sdf_points,
sdf_values, grasp_points, grasp_graspness_raw, grasp_quality, grasp_mu,
grasp_approach, grasp_closing, grasp_width, grasp_depth, grasp_valid (sparse
labels), or with `--dense-labels` dense_points, dense_graspness (per point and
camera template view), dense_angle_bin, dense_depth_bin, dense_width and
dense_quality, and per point its exact best grasp (dense_best_approach, _closing,
_width, _depth, _quality, dense_has_grasp). Where dense targets exist training
reads them instead.

Graspness is handed to the model normalised per scene (raw / scene maximum),
as GSNet does, because raw fractions of a coarse candidate grid are small.

Depth scale: the dex noise model multiplies a whole depth image by one
Gamma(1000, 0.001) factor (about +-3 %, i.e. +-2 cm at 0.6 m). No method can
undo that from one image, so training targets are expressed in the sensor's
scaled frame (`SceneRecord.depth_scale`, found by re-rendering the stored
meshes without noise); evaluation compares against the true geometry.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import json
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
import trimesh

from zerograsp_ros.data.generate import SCHEMA_VERSION
from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import CameraIntrinsics
from zerograsp_ros.geometry.rgbd import RGBDFrame
from zerograsp_ros.grasp.representation import (
    GRASPNET_NUM_ANGLES,
    fibonacci_views,
    rotation_from_approach,
)
from zerograsp_ros.model.config import MAX_GRASP_MODES
from zerograsp_ros.model.targets import GRASP_MODE_CHANNELS, ObjectTarget, SceneSample


@dataclass
class SceneRecord:
    """Everything stored for one scene (arrays keyed without the `s<j>_` prefix)."""

    arrays: dict[str, np.ndarray]
    # grasp modes per object id, rebuilt once (every training step would redo it)
    _grasp_modes: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getitem__(self, key):
        return self.arrays[key]

    @property
    def object_ids(self) -> np.ndarray:
        return self.arrays['object_ids']

    def labelled_ids(self) -> list[int]:
        return [int(i) for i in self.object_ids if f'obj{i}_surface_points' in self.arrays]

    def frame(self) -> RGBDFrame:
        w, h = (int(v) for v in self.arrays['image_size'])
        intr = CameraIntrinsics.from_matrix(self.arrays['K'], w, h)
        depth = self.arrays['depth_mm'].astype(np.float32) * 0.001
        depth[self.arrays['depth_mm'] == 0] = np.nan
        return RGBDFrame(rgb=self.arrays['rgb'], depth=depth, intrinsics=intr,
                         labels=self.arrays['labels'].astype(np.int32),
                         meta={'scene_seed': int(self.arrays['seed']),
                               'T_world_camera': self.arrays['T_world_camera'].tolist()})

    def world_meshes(self) -> dict[int, trimesh.Trimesh]:
        return {int(i): trimesh.Trimesh(self.arrays[f'obj{i}_mesh_vertices'],
                                        self.arrays[f'obj{i}_mesh_faces'], process=False)
                for i in self.object_ids}

    def world_parts(self, object_id: int) -> list[trimesh.Trimesh]:
        """The convex parts of an object (stored as consecutive face blocks)."""
        v = self.arrays[f'obj{object_id}_mesh_vertices']
        f = self.arrays[f'obj{object_id}_mesh_faces']
        parts, start = [], 0
        for n in self.arrays[f'obj{object_id}_part_sizes']:
            faces = f[start:start + int(n)]
            used, inverse = np.unique(faces, return_inverse=True)
            parts.append(trimesh.Trimesh(v[used], inverse.reshape(-1, 3), process=False))
            start += int(n)
        return parts

    @property
    def has_dense_labels(self) -> bool:
        """Scenes generated with `--dense-labels`: training reads the dense targets."""
        return any(f'obj{i}_dense_points' in self.arrays for i in self.labelled_ids())

    def _dense_scene_max(self) -> float:
        """Largest point graspness of the scene (cached like depth_scale: once per scene)."""
        if 'dense_scene_max' not in self.arrays:
            self.arrays['dense_scene_max'] = np.array(max(
                (float(self.arrays[f'obj{i}_dense_graspness'].astype(np.float32)
                       .mean(1).max(initial=0.0))
                 for i in self.labelled_ids() if f'obj{i}_dense_points' in self.arrays),
                default=0.0))
        return float(self.arrays['dense_scene_max'])

    def depth_scale(self) -> float:
        """The image-wide depth factor of the noise model (observed / noise-free depth)."""
        if 'depth_scale' not in self.arrays:
            self.arrays['depth_scale'] = np.array(estimate_depth_scale(self))
        return float(self.arrays['depth_scale'])

    def target(self, object_id: int, with_grasps: bool = True,
               sensor_frame: bool = False, grasp_modes: bool = False) -> ObjectTarget:
        """Ground truth of one object; sensor_frame=True scales it like the observed depth.

        grasp_modes: also each dense label point's grasp modes (`_dense_grasp_modes`).
        """
        a, k = self.arrays, f'obj{object_id}_'
        s = self.depth_scale() if sensor_frame else 1.0
        tgt = ObjectTarget(object_id=int(object_id),
                           surface_points=(a[k + 'surface_points'] * s).astype(np.float32),
                           surface_normals=a[k + 'surface_normals'])
        if with_grasps and self.has_dense_labels:
            _put_dense_grasp_labels(tgt, a, k, s, self._dense_scene_max())
            if grasp_modes and tgt.has_grasp_labels:
                if object_id not in self._grasp_modes:
                    self._grasp_modes[object_id] = _dense_grasp_modes(a, k)
                tgt.grasp_modes = self._grasp_modes[object_id]
        elif with_grasps and len(a.get(k + 'grasp_points', ())):
            scene_max = max((float(a[f'obj{i}_grasp_graspness_raw'].max(initial=0.0))
                             for i in self.labelled_ids()), default=0.0)
            tgt.grasp_points = (a[k + 'grasp_points'] * s).astype(np.float32)
            tgt.graspness = (a[k + 'grasp_graspness_raw'] / max(scene_max, 1e-6)
                             ).astype(np.float32)
            tgt.grasp_quality = a[k + 'grasp_quality']
            tgt.grasp_approach = a[k + 'grasp_approach']
            tgt.grasp_closing = a[k + 'grasp_closing']
            tgt.grasp_width = a[k + 'grasp_width']
            tgt.grasp_depth = a[k + 'grasp_depth']
        return tgt

    def sample(self, with_grasps: bool = True, sensor_frame: bool = True,
               grasp_modes: bool = False) -> SceneSample:
        """Training sample: frame + targets (by default in the sensor's scaled frame)."""
        return SceneSample(frame=self.frame(),
                           targets={i: self.target(i, with_grasps, sensor_frame, grasp_modes)
                                    for i in self.labelled_ids()})


def _put_dense_grasp_labels(tgt: ObjectTarget, a: dict, k: str, scale: float,
                            scene_max: float) -> None:
    """Dense targets (`dense_labels.py`) as per-point labels: each point's best grasp.

    Point graspness is GSNet's mean over the views, normalised by the scene's maximum
    like the sparse labels; approach, closing axis, depth, width and quality are the
    exact best grasp of the point's best view (highest graspness, then quality).
    Leaves take the nearest point's labels within twice the points' spacing, so
    every surface leaf is labelled, not only the leaves next to a handful of points.
    """
    pts = a[k + 'dense_points'].astype(np.float64)
    if not len(pts):
        return
    if k + 'dense_best_approach' not in a:
        raise InputError(f'{k}dense_* labels without dense_best_* (written by an older '
                         'generate.py): regenerate the data set with --dense-labels')
    ok = a[k + 'dense_has_grasp'].astype(bool)
    point_g = a[k + 'dense_graspness'].astype(np.float32).mean(1) / max(scene_max, 1e-6)
    tgt.grasp_points = (pts * scale).astype(np.float32)
    tgt.graspness = np.where(ok, point_g, 0.0).astype(np.float32)
    tgt.grasp_quality = a[k + 'dense_best_quality'].astype(np.float32)
    approach = a[k + 'dense_best_approach'].astype(np.float32)
    tgt.grasp_approach = np.where(ok[:, None], approach, (0.0, 0.0, 1.0)).astype(np.float32)
    closing = a[k + 'dense_best_closing'].astype(np.float32)
    tgt.grasp_closing = np.where(ok[:, None], closing, (0.0, 1.0, 0.0)).astype(np.float32)
    tgt.grasp_width = a[k + 'dense_best_width'].astype(np.float32)
    tgt.grasp_depth = a[k + 'dense_best_depth'].astype(np.float32)
    tgt.view_graspness = np.where(ok[:, None], a[k + 'dense_graspness'], 0).astype(np.float16)
    spacing = cKDTree(pts).query(pts, k=2)[0][:, 1] if len(pts) > 1 else np.zeros(1)
    tgt.label_radius_m = float(2.0 * np.median(spacing) * scale)


def _dense_grasp_modes(a: dict, k: str) -> np.ndarray:
    """(P, MAX_GRASP_MODES, 9) grasp modes per point (`ObjectTarget.grasp_modes`).

    Each point's best grasp in each of its most graspable object views, exact, best
    first. The shards keep per camera template view only a copy of the nearest object
    view's label with the in-plane angle re-binned (up to ~20 deg off for 30 object
    views), so the object's rotation is recovered from the exact best grasps (each is
    the rotation applied to one of the label grid's view x angle frames) and the grid's
    grasps are rebuilt with it. InputError when no rotation explains every best grasp
    (a data set labelled on another grid than `DenseLabelConfig()`'s).
    """
    from zerograsp_ros.data.dense_labels import DenseLabelConfig

    ok = a[k + 'dense_has_grasp'].astype(bool)
    modes = np.zeros((len(ok), MAX_GRASP_MODES, GRASP_MODE_CHANNELS), np.float32)
    modes[:, 0, 0:3] = a[k + 'dense_best_approach']
    modes[:, 0, 3:6] = a[k + 'dense_best_closing']
    modes[:, 0, 6] = a[k + 'dense_best_width']
    modes[:, 0, 7] = a[k + 'dense_best_depth']
    modes[:, 0, 8] = a[k + 'dense_best_quality']
    modes[~ok] = 0.0
    if not ok.any():
        return modes
    grid = DenseLabelConfig()
    views, angles = grid.views(), grid.angles()
    frames = rotation_from_approach(np.repeat(views, len(angles), 0),
                                    np.tile(angles, len(views))).astype(np.float64)   # (G,3,3)
    best = np.stack([modes[ok, 0, 0:3], modes[ok, 0, 3:6],
                     np.cross(modes[ok, 0, 0:3], modes[ok, 0, 3:6])], axis=2).astype(np.float64)
    rotation = _grid_rotation(best, frames)
    if rotation is None:
        raise InputError(f'{k}dense labels: no rotation of the default label grid '
                         f'({len(views)} views x {len(angles)} angles) explains their best '
                         'grasps, so their grasp modes cannot be rebuilt; train without '
                         '--grasp-modes or regenerate with the default DenseLabelConfig')
    # per point and object view: the template nearest that view carries its label
    templates = fibonacci_views(a[k + 'dense_graspness'].shape[1])
    template = np.argmax((views @ rotation.T) @ templates.T, axis=1)          # (V,)

    def per_view(name, dtype):   # (P, V) the stored per-template label at each object view
        return a[k + name].astype(dtype)[:, template]

    graspness, quality = per_view('dense_graspness', np.float32), per_view('dense_quality',
                                                                            np.float32)
    angle_bin = per_view('dense_angle_bin', np.int64)
    has = (angle_bin >= 0) & ok[:, None]
    # the template's re-binned closing axis picks the grid angle (grid angles 30 deg apart)
    ref = rotation_from_approach(templates[template]).astype(np.float64)
    theta = angle_bin * (np.pi / GRASPNET_NUM_ANGLES)
    closing = (np.cos(theta)[..., None] * ref[None, :, :, 1]
               + np.sin(theta)[..., None] * ref[None, :, :, 2])                # (P, V, 3)
    grid_closing = np.einsum('ij,vajk->vaik', rotation,
                             frames.reshape(len(views), len(angles), 3, 3))[..., 1]  # (V,A,3)
    angle = np.abs(np.einsum('pvi,vai->pva', closing, grid_closing)).argmax(2)  # (P, V)
    rank = np.where(has, graspness + 1e-3 * quality, -1.0)
    top = np.argsort(-rank, axis=1, kind='stable')[:, :MAX_GRASP_MODES]          # (P, K)
    rows = np.arange(len(ok))[:, None]
    R = rotation @ frames[top * len(angles) + angle[rows, top]]                 # (P,K,3,3)
    depth = np.asarray(grid.depths, np.float32)[
        np.clip(per_view('dense_depth_bin', np.int64)[rows, top], 0, None)]
    rebuilt = np.concatenate([R[..., 0], R[..., 1],
                              per_view('dense_width', np.float32)[rows, top, None],
                              depth[..., None], quality[rows, top, None]], -1)
    valid = has[rows, top]
    modes[:, 1:] = np.where(valid[:, 1:, None], rebuilt[:, 1:], 0.0)   # mode 0: exact best
    return modes


def _grid_rotation(best: np.ndarray, frames: np.ndarray, tol_deg: float = 1.0):
    """The rotation R with every best[i] = R @ frames[j_i] for some grid frame j_i, or None.

    best (N, 3, 3) and frames (G, 3, 3) are rotation matrices (columns approach,
    closing, normal); a best grasp is written exactly as R @ frame, so the first one
    fixes R up to which frame it is, and the others test each candidate.
    """
    cos_tol = np.cos(np.radians(tol_deg))
    for candidate in (best[0] @ frames.transpose(0, 2, 1)):                  # R = B0 F_j^T
        grid = np.einsum('ij,gjk->gik', candidate, frames)                    # (G, 3, 3)
        # every best grasp must match some grid frame, its closing axis up to sign
        approach = best[:, :, 0] @ grid[:, :, 0].T > cos_tol                  # (N, G)
        closing = np.abs(best[:, :, 1] @ grid[:, :, 1].T) > cos_tol
        if (approach & closing).any(1).all():
            return candidate
    return None


def estimate_depth_scale(record: SceneRecord) -> float:
    """Median observed / noise-free depth over object pixels (noise-free by ray casting)."""
    import open3d as o3d

    scene = o3d.t.geometry.RaycastingScene()
    for mesh in record.world_meshes().values():
        scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, dtype=np.float32)),
                            o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)))
    frame = record.frame()
    valid = frame.valid_depth() & (frame.labels > 0)
    rows, cols = np.nonzero(valid)
    if len(rows) < 10:
        return 1.0
    pick = np.random.default_rng(0).choice(len(rows), size=min(4000, len(rows)), replace=False)
    rows, cols = rows[pick], cols[pick]
    intr = frame.intrinsics
    T = np.asarray(record['T_world_camera'], dtype=np.float64)
    d_cam = np.stack([(cols - intr.cx) / intr.fx, (rows - intr.cy) / intr.fy,
                      np.ones(len(rows))], axis=1)
    rays = np.concatenate([np.broadcast_to(T[:3, 3], d_cam.shape), d_cam @ T[:3, :3].T], axis=1)
    clean = scene.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))['t_hit'].numpy()
    ratio = frame.depth[rows, cols] / clean
    ratio = ratio[np.isfinite(ratio) & (ratio > 0.8) & (ratio < 1.2)]
    return float(np.median(ratio)) if len(ratio) else 1.0


class ShardDataset:
    """All complete shards of one split directory, scenes indexed 0..N-1 (shard order).

    Shards are found by name (so a split whose generation was stopped early
    is usable); the last opened shard is cached.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise InputError(f'data set directory {self.directory} does not exist')
        self.shards = sorted(self.directory.glob('shard_*.npz'))
        self.shards = [s for s in self.shards if '.tmp' not in s.name]
        if not self.shards:
            raise InputError(f'no shard_*.npz files in {self.directory}')
        self._index: list[tuple[int, int]] = []
        for si, path in enumerate(self.shards):
            try:
                with np.load(path) as data:
                    version = int(data['schema_version'])
                    n = int(data['num_scenes'])
            except Exception as exc:  # noqa: BLE001 - name the broken file
                raise InputError(f'shard {path} is unreadable: {exc}') from exc
            if version != SCHEMA_VERSION:
                raise InputError(f'shard {path} has schema version {version}, this code reads '
                                 f'{SCHEMA_VERSION}; regenerate the data set')
            self._index += [(si, j) for j in range(n)]
        self._cache: tuple[int, dict] | None = None
        manifest = self.directory / 'manifest.json'
        self.manifest = json.loads(manifest.read_text()) if manifest.is_file() else None

    def __len__(self) -> int:
        return len(self._index)

    def record(self, index: int) -> SceneRecord:
        if not 0 <= index < len(self):
            raise IndexError(f'scene {index} out of range 0..{len(self) - 1}')
        si, j = self._index[index]
        if self._cache is None or self._cache[0] != si:
            with np.load(self.shards[si]) as data:
                self._cache = (si, {k: data[k] for k in data.files})
        prefix = f's{j}_'
        return SceneRecord({k[len(prefix):]: v for k, v in self._cache[1].items()
                            if k.startswith(prefix)})

    def __getitem__(self, index: int) -> SceneSample:
        return self.record(index).sample()

    def load_all(self, with_grasps: bool = True) -> list[SceneSample]:
        """Every scene with at least one labelled object, in memory (compact: ~1 MB each)."""
        out = []
        for i in range(len(self)):
            rec = self.record(i)
            if rec.labelled_ids():
                out.append(rec.sample(with_grasps))
        return out
