"""Dense grasp labels, computed where they are cheap (the GraspNet-1Billion recipe).

Two stages, one judge (`labels.judge_grasps`, the 2F-85 body of `grasp.gripper`):

1. Once per object mesh, in the object's own frame at its actual scale, on the object
   ALONE (no neighbours, no table): candidates at `points` surface points x a subset of
   GraspNet's 300 Fibonacci views (every `view_stride`-th) x in-plane angles x the 4
   depth bins, judged for self-collision (the swept body against the object's own
   points), emptiness, width and the lowest force-closure mu. Only the candidates that
   succeed alone are kept (a failure alone is a failure in every scene). The result is
   cached on disk under a hash of the mesh (vertices, faces, part sizes) and of the
   label configuration, and reused in every scene that holds that mesh.
2. Per scene: the kept candidates posed into the scene are checked only against what
   stage 1 left out: the table and the other objects. A candidate fails when a foreign
   point lies inside a gripper box, or lies in the closing region where the judge
   would take it as a contact (outside the object's contact patch band, see
   `_foreign_contact`), or when a box corner is below the table. With unthinned
   foreign points this is exactly `judge_grasps` on the whole scene (a test checks it);
   by default foreign points are voxel-thinned like the judge's obstacle points.

Graspness per point and view is GSNet's (Wang et al., ICCV 2021): the share of the
view's angle x depth candidates that are collision-free and force-closure at
mu <= `min_mu_for_graspness`. Per point and view the best candidate (lowest mu, then
shallowest depth) gives the angle bin, depth bin, width and quality targets.

Camera frame: a scene's object is rotated, so its object-frame views are not the
camera's template views. `dense_point_targets` gives each camera template view the
nearest rotated object view (an approximation of at most about half the view
spacing) and re-bins the best grasp's in-plane angle against the camera template's
reference axis. `leaf_grasp_targets` puts the nearest labelled point's targets on
every surface leaf.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
import trimesh

from zerograsp_ros.data.labels import (
    FRICTION_COEFFICIENTS,
    PATCH_BAND_M,
    ObjectShape,
    SceneGeometry,
    _near,
    _poses_hit,
    _slab,
    _table_collision,
    judge_grasps,
    voxel_thin,
)
from zerograsp_ros.errors import InputError
from zerograsp_ros.grasp import DEFAULT_GRIPPER
from zerograsp_ros.grasp.gripper import GripperModel, gripper_preset
from zerograsp_ros.grasp.representation import (
    GRASPNET_DEPTHS,
    GRASPNET_NUM_ANGLES,
    GRASPNET_NUM_VIEWS,
    fibonacci_views,
    quality_from_mu,
    rotation_from_approach,
)

CACHE_FORMAT = 1
CACHE_ENV = 'ZEROGRASP_DENSE_LABEL_CACHE'
_FAR_BELOW = -1.0e6   # table height that no gripper reaches: stage 1 has no table


def default_cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / '.cache' / 'zerograsp_ros' / 'dense_labels'


@dataclass(frozen=True)
class DenseLabelConfig:
    """Density of the per-object candidate set (sized for the 2-core CPU budget)."""

    # 128 points x 30 views x 6 angles x 4 depths (about 46k candidates, half facing the
    # surface) take about 30 s per mesh on one loaded core; the sparse labels use the
    # same view and angle subset at 24 points
    points: int = 128                 # labelled surface points per object
    contact_points: int = 2000        # samples used for contacts and self-collision
    view_stride: int = 10             # every 10th of GraspNet's 300 views -> 30 views
    angle_stride: int = 2             # 6 of the 12 in-plane angles (0..150 deg)
    depths: tuple = GRASPNET_DEPTHS
    width_margin: float = 0.005       # as LabelConfig: clearance on each side of the contacts
    min_mu_for_graspness: float = 0.8  # as LabelConfig
    collision_voxel: float | None = 0.004  # foreign points thinned per scene; None = all
    sample_seed: int = 0              # surface samples are a function of the mesh alone
    gripper: GripperModel = field(default_factory=lambda: gripper_preset(DEFAULT_GRIPPER))

    def views(self) -> np.ndarray:
        return fibonacci_views(GRASPNET_NUM_VIEWS)[::self.view_stride]

    def angles(self) -> np.ndarray:
        return (np.arange(GRASPNET_NUM_ANGLES) * np.pi / GRASPNET_NUM_ANGLES)[::self.angle_stride]

    def stage1_key(self) -> str:
        """What the cached object stage depends on (collision_voxel is per scene)."""
        d = asdict(self)
        d.pop('collision_voxel')
        return json.dumps(d, sort_keys=True, default=str)


@dataclass
class ObjectCandidates:
    """Stage 1 of one mesh: the candidates that succeed on the object alone (object frame)."""

    points: np.ndarray           # (P, 3) labelled surface points
    normals: np.ndarray          # (P, 3)
    contact_points: np.ndarray   # (M, 3) dense samples: this object as a neighbour elsewhere
    contact_normals: np.ndarray  # (M, 3)
    point_index: np.ndarray      # (C,) per candidate
    view_index: np.ndarray       # (C,) into config.views()
    angle_index: np.ndarray      # (C,) into config.angles()
    depth_index: np.ndarray      # (C,) into config.depths
    width: np.ndarray            # (C,) opening (label mode: contacts + margins)
    mu_min: np.ndarray           # (C,) <= max(FRICTION_COEFFICIENTS)
    contact_y_left: np.ndarray   # (C,) closing-axis coordinates of the two contacts
    contact_y_right: np.ndarray
    judged: int = 0              # candidates judged in stage 1 (facing views only)
    from_cache: bool = False

    _ARRAYS = ('points', 'normals', 'contact_points', 'contact_normals', 'point_index',
               'view_index', 'angle_index', 'depth_index', 'width', 'mu_min',
               'contact_y_left', 'contact_y_right')

    def __len__(self) -> int:
        return len(self.point_index)


def mesh_key(mesh: trimesh.Trimesh, parts, config: DenseLabelConfig) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(mesh.vertices, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(mesh.faces, dtype=np.int64).tobytes())
    h.update(np.array([len(p.faces) for p in parts or []], dtype=np.int64).tobytes())
    h.update(f'{CACHE_FORMAT}|{config.stage1_key()}'.encode())
    return h.hexdigest()[:32]


def object_candidates(mesh: trimesh.Trimesh, parts=None, config: DenseLabelConfig | None = None,
                      cache_dir: str | Path | None = None) -> ObjectCandidates:
    """Stage 1 for a mesh in its own frame, from the cache when it was computed before."""
    config = config or DenseLabelConfig()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = cache / f'{mesh_key(mesh, parts, config)}.npz'
    if path.is_file():
        try:
            with np.load(path) as data:
                return ObjectCandidates(**{k: data[k] for k in ObjectCandidates._ARRAYS},
                                        judged=int(data['judged']), from_cache=True)
        except Exception:  # noqa: BLE001 - an unreadable cache entry is recomputed
            pass
    result = _judge_object_alone(mesh, parts, config)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'{path.stem}.tmp{os.getpid()}.npz')
    np.savez(tmp, judged=np.array(result.judged),
             **{k: getattr(result, k) for k in ObjectCandidates._ARRAYS})
    os.replace(tmp, path)   # atomic: parallel workers never read half a file
    return result


def _judge_object_alone(mesh, parts, config: DenseLabelConfig) -> ObjectCandidates:
    shape = ObjectShape(mesh, parts)
    rng = np.random.default_rng(config.sample_seed)
    cpts, cnrm = (a.astype(np.float64) for a in shape.sample_surface(config.contact_points, rng))
    pts, nrm = shape.sample_surface(config.points, rng)
    # the object's own points are its obstacles, unthinned, so stage 2 can add neighbours
    # without a frame-dependent voxel grid changing the self-collision decision
    alone = SceneGeometry(np.array([0]), [cpts], [cnrm], cpts, table_z=_FAR_BELOW)
    views, angles, depths = config.views(), config.angles(), np.asarray(config.depths)
    n_a, n_d = len(angles), len(depths)
    rot = rotation_from_approach(np.repeat(views, n_a, 0), np.tile(angles, len(views)))
    facing = views @ nrm.astype(np.float64).T < 0.0          # (V, P): approach against normal
    vi, pi = np.nonzero(facing)
    pose_view = np.repeat(vi, n_a)
    pose_angle = np.tile(np.arange(n_a), len(vi))
    pose_point = np.repeat(pi, n_a)
    judged = judge_grasps(rot[pose_view * n_a + pose_angle], pts[pose_point].astype(np.float64),
                          np.broadcast_to(depths, (len(pose_point), n_d)), alone,
                          config.gripper, width_margin=config.width_margin)
    ok = judged.success_at(FRICTION_COEFFICIENTS[-1]) & (judged.object_index == 0)
    pose, col = np.nonzero(ok)
    return ObjectCandidates(
        points=pts.astype(np.float32), normals=nrm.astype(np.float32),
        contact_points=cpts.astype(np.float32), contact_normals=cnrm.astype(np.float32),
        point_index=pose_point[pose].astype(np.int32),
        view_index=pose_view[pose].astype(np.int16),
        angle_index=pose_angle[pose].astype(np.int8), depth_index=col.astype(np.int8),
        width=judged.width[pose, col].astype(np.float32),
        mu_min=judged.mu_min[pose, col].astype(np.float32),
        contact_y_left=judged.contact_y_left[pose, col].astype(np.float32),
        contact_y_right=judged.contact_y_right[pose, col].astype(np.float32),
        judged=int(ok.size))


def candidate_poses(cands: ObjectCandidates, config: DenseLabelConfig,
                    pose: np.ndarray | None = None,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotations (C, 3, 3), grasp points (C, 3) and depths (C,) of the candidates, posed."""
    views, angles = config.views(), config.angles()
    R_obj = rotation_from_approach(views[cands.view_index],
                                   angles[cands.angle_index]).astype(np.float64)
    T = np.eye(4) if pose is None else np.asarray(pose, dtype=np.float64)
    R = np.einsum('ij,cjk->cik', T[:3, :3], R_obj)
    t = cands.points[cands.point_index].astype(np.float64) @ T[:3, :3].T + T[:3, 3]
    return R, t, np.asarray(config.depths, dtype=np.float64)[cands.depth_index]


def scene_collision_free(objects: list[ObjectCandidates], poses: list[np.ndarray],
                         config: DenseLabelConfig | None = None, table_z: float = 0.0,
                         up=(0.0, 0.0, 1.0), chunk: int = 512) -> list[np.ndarray]:
    """Stage 2: per object, which of its cached candidates survive the table and neighbours.

    poses[k] maps object k's frame to the scene frame; the table is the plane
    up . x = table_z. Returns one bool mask (C_k,) per object.
    """
    config = config or DenseLabelConfig()
    if len(objects) != len(poses):
        raise InputError(f'{len(objects)} objects but {len(poses)} poses')
    gripper = config.gripper
    posed = [c.contact_points.astype(np.float64) @ np.asarray(T)[:3, :3].T + np.asarray(T)[:3, 3]
             for c, T in zip(objects, poses)]
    table = SceneGeometry(np.zeros(0, np.int64), [], [], np.zeros((0, 3)), float(table_z),
                          np.asarray(up, dtype=np.float64))
    reach = gripper.length_behind_tip
    half_y = float(gripper.half_extent_y(np.float64(gripper.max_stroke)))
    radius = np.sqrt(reach ** 2 + half_y ** 2 + gripper.half_extent_z ** 2) + 1e-3
    out = []
    for k, (cands, T) in enumerate(zip(objects, poses)):
        foreign = [p for j, p in enumerate(posed) if j != k]
        foreign = np.concatenate(foreign) if foreign else np.zeros((0, 3))
        if config.collision_voxel and len(foreign):
            foreign = voxel_thin(foreign, config.collision_voxel)
        R, t, depth = candidate_poses(cands, config, T)
        free = np.ones(len(cands), dtype=bool)
        for start in range(0, len(cands), chunk):
            sl = slice(start, min(start + chunk, len(cands)))
            free[sl] = ~_blocked(R[sl], t[sl], depth[sl], cands.width[sl],
                                 cands.contact_y_left[sl], cands.contact_y_right[sl],
                                 foreign, table, gripper, radius, reach, half_y)
        out.append(free)
    return out


def _blocked(R, t, depth, width, y_left, y_right, foreign, table, gripper: GripperModel,
             radius, reach, half_y) -> np.ndarray:
    """Table or foreign points hit the body, or take the place of a contact (module doc)."""
    kc = len(R)
    boxes = gripper.boxes(np.minimum(width, gripper.max_stroke), depth)
    blocked = _table_collision(R, t, boxes, table)
    if len(foreign) == 0 or kc == 0:
        return blocked
    near = _near(foreign, t, radius)
    ki, _, x, y, z = _slab(foreign[near], R, t, gripper.half_extent_z, half_y,
                           (depth.min() - reach, depth.max()))
    if len(ki) == 0:
        return blocked
    contact = _foreign_contact(x, y, z, depth[ki], y_left[ki], y_right[ki], gripper)
    return (blocked | _poses_hit(boxes, ki, (x, y, z))
            | (np.bincount(ki[contact], minlength=kc) > 0))


def _foreign_contact(x, y, z, depth, y_left, y_right, gripper: GripperModel) -> np.ndarray:
    """Foreign points the judge would take as (or into) a contact of the object.

    Beyond a contact the contacts become mixed; within its patch band the patch normal
    changes. Between the two patches a foreign point changes nothing.
    """
    in_closing = ((x > depth - gripper.finger_length) & (x < depth)
                  & (np.abs(y) < gripper.max_stroke / 2.0)
                  & (np.abs(z) < gripper.finger_width / 2.0))
    band = np.minimum(PATCH_BAND_M, (y_left - y_right) / 4.0)
    return in_closing & ((y >= y_left - band) | (y <= y_right + band))



@dataclass
class ObjectViewLabels:
    """Per labelled point and object-frame view (object frame): GSNet graspness + best grasp."""

    graspness: np.ndarray    # (P, V) share of angle x depth candidates that succeed
    angle_index: np.ndarray  # (P, V) best grasp's angle index into config.angles(), -1 none
    depth_index: np.ndarray  # (P, V) best grasp's depth index, -1 none
    width: np.ndarray        # (P, V) metres, 0 none
    mu_min: np.ndarray       # (P, V) inf none
    quality: np.ndarray      # (P, V) quality_from_mu, 0 none


def view_labels(cands: ObjectCandidates, free: np.ndarray | None,
                config: DenseLabelConfig | None = None) -> ObjectViewLabels:
    """Graspness and best grasp per point and view from the candidates that survive."""
    config = config or DenseLabelConfig()
    n_p, n_v = len(cands.points), len(config.views())
    per_view = len(config.angles()) * len(config.depths)
    keep = np.ones(len(cands), bool) if free is None else np.asarray(free, bool)
    cell = cands.point_index.astype(np.int64) * n_v + cands.view_index
    good = keep & (cands.mu_min <= config.min_mu_for_graspness + 1e-9)
    graspness = np.bincount(cell[good], minlength=n_p * n_v) / per_view
    angle = np.full(n_p * n_v, -1, np.int8)
    depth = np.full(n_p * n_v, -1, np.int8)
    width = np.zeros(n_p * n_v, np.float32)
    mu = np.full(n_p * n_v, np.inf, np.float32)
    idx = np.nonzero(keep)[0]
    if len(idx):
        # best per cell: lowest mu, then shallowest depth; lexsort's last key is primary
        order = idx[np.lexsort((cands.depth_index[idx], cands.mu_min[idx], cell[idx]))]
        first = order[np.r_[True, cell[order][1:] != cell[order][:-1]]]
        c = cell[first]
        angle[c], depth[c] = cands.angle_index[first], cands.depth_index[first]
        width[c], mu[c] = cands.width[first], cands.mu_min[first]
    shape = (n_p, n_v)
    return ObjectViewLabels(graspness.reshape(shape).astype(np.float32), angle.reshape(shape),
                            depth.reshape(shape), width.reshape(shape), mu.reshape(shape),
                            quality_from_mu(mu).reshape(shape))


@dataclass
class DensePointTargets:
    """Per labelled point, camera frame, over the camera's template views (model targets)."""

    points: np.ndarray       # (P, 3) camera frame
    normals: np.ndarray      # (P, 3)
    graspness: np.ndarray    # (P, U) per template view
    angle_bin: np.ndarray    # (P, U) of GRASPNET_NUM_ANGLES bins of pi/12, -1 none
    depth_bin: np.ndarray    # (P, U) into GRASPNET_DEPTHS, -1 none
    width: np.ndarray        # (P, U) metres
    quality: np.ndarray      # (P, U) in [0, 1]
    # per point, the exact best grasp of its best object view (highest graspness, then
    # quality), camera frame; zeros where the point has none (best_quality 0)
    best_approach: np.ndarray | None = None   # (P, 3)
    best_closing: np.ndarray | None = None    # (P, 3)
    best_width: np.ndarray | None = None      # (P,)
    best_depth: np.ndarray | None = None      # (P,) metres
    best_quality: np.ndarray | None = None    # (P,)
    has_grasp: np.ndarray | None = None       # (P,) bool

    @property
    def point_graspness(self) -> np.ndarray:
        """(P,) mean graspness over the views."""
        return self.graspness.mean(1)


def dense_point_targets(cands: ObjectCandidates, labels: ObjectViewLabels,
                        T_camera_object: np.ndarray, config: DenseLabelConfig | None = None,
                        num_views: int = GRASPNET_NUM_VIEWS) -> DensePointTargets:
    """Object-frame view labels on the camera's `num_views` Fibonacci template views."""
    config = config or DenseLabelConfig()
    T = np.asarray(T_camera_object, dtype=np.float64)
    R_co = T[:3, :3]
    templates = fibonacci_views(num_views)
    obj_views = config.views() @ R_co.T                     # object views, camera frame
    nearest = np.argmax(templates @ obj_views.T, axis=1)    # (U,) object view per template
    angle_obj = labels.angle_index[:, nearest]              # (P, U)
    has = angle_obj >= 0
    # re-bin the in-plane angle against each template's reference axes
    p_idx, u_idx = np.nonzero(has)
    angle_bin = np.full(angle_obj.shape, -1, np.int8)
    if len(p_idx):
        R_best = rotation_from_approach(config.views()[nearest[u_idx]],
                                        config.angles()[angle_obj[p_idx, u_idx]])
        closing = np.einsum('ij,nj->ni', R_co, R_best[:, :, 1].astype(np.float64))
        ref = rotation_from_approach(templates[u_idx]).astype(np.float64)
        theta = np.arctan2((closing * ref[:, :, 2]).sum(1), (closing * ref[:, :, 1]).sum(1))
        step = np.pi / GRASPNET_NUM_ANGLES
        angle_bin[p_idx, u_idx] = (np.round(np.mod(theta, np.pi) / step).astype(np.int64)
                                   % GRASPNET_NUM_ANGLES)
    best = _best_grasps(labels, config, R_co)
    return DensePointTargets(
        **best,
        points=(cands.points.astype(np.float64) @ R_co.T + T[:3, 3]).astype(np.float32),
        normals=(cands.normals.astype(np.float64) @ R_co.T).astype(np.float32),
        graspness=labels.graspness[:, nearest], angle_bin=angle_bin,
        depth_bin=labels.depth_index[:, nearest], width=labels.width[:, nearest],
        quality=labels.quality[:, nearest])


def _best_grasps(labels: ObjectViewLabels, config: DenseLabelConfig, R_co: np.ndarray) -> dict:
    """Per point the best object view's grasp, exact (no template approximation)."""
    has = labels.angle_index >= 0
    best = np.where(has, labels.graspness + 1e-3 * labels.quality, -1.0).argmax(1)
    rows = np.arange(len(best))
    ok = has[rows, best]
    angle = np.where(ok, labels.angle_index[rows, best], 0)
    R = R_co @ rotation_from_approach(config.views()[best], config.angles()[angle]
                                      ).astype(np.float64)
    depth = np.asarray(config.depths, dtype=np.float64)[np.clip(labels.depth_index[rows, best],
                                                                0, None)]
    return {'best_approach': R[:, :, 0].astype(np.float32),
            'best_closing': R[:, :, 1].astype(np.float32),
            'best_width': np.where(ok, labels.width[rows, best], 0.0).astype(np.float32),
            'best_depth': np.where(ok, depth, 0.0).astype(np.float32),
            'best_quality': np.where(ok, labels.quality[rows, best], 0.0).astype(np.float32),
            'has_grasp': ok}


def leaf_grasp_targets(targets: DensePointTargets, leaf_points_m: np.ndarray,
                       max_distance_m: float | None = None) -> dict[str, np.ndarray]:
    """Every leaf takes the targets of its nearest labelled point (same object, camera frame).

    Leaves farther than `max_distance_m` (None: no limit) get graspness 0 and no grasp
    (bins -1) and `labelled` False. Returns arrays with one row per leaf.
    """
    leaves = np.asarray(leaf_points_m, dtype=np.float64).reshape(-1, 3)
    n_u = targets.graspness.shape[1]
    out = {'graspness': np.zeros((len(leaves), n_u), np.float32),
           'angle_bin': np.full((len(leaves), n_u), -1, np.int8),
           'depth_bin': np.full((len(leaves), n_u), -1, np.int8),
           'width': np.zeros((len(leaves), n_u), np.float32),
           'quality': np.zeros((len(leaves), n_u), np.float32),
           'labelled': np.zeros(len(leaves), bool)}
    if len(leaves) == 0 or len(targets.points) == 0:
        return out
    dist, idx = cKDTree(targets.points.astype(np.float64)).query(
        leaves, k=1, distance_upper_bound=np.inf if max_distance_m is None else max_distance_m)
    hit = np.isfinite(dist)
    j = idx[hit]
    for name in ('graspness', 'angle_bin', 'depth_bin', 'width', 'quality'):
        out[name][hit] = getattr(targets, name)[j]
    out['labelled'] = hit
    return out


def scene_dense_targets(meshes: list[tuple[trimesh.Trimesh, list]], poses: list[np.ndarray],
                        T_camera_world: np.ndarray, config: DenseLabelConfig | None = None,
                        cache_dir: str | Path | None = None, table_z: float = 0.0,
                        num_views: int = GRASPNET_NUM_VIEWS,
                        ) -> tuple[list[DensePointTargets], list[ObjectCandidates]]:
    """Both stages for one scene: meshes[k] = (object-frame mesh, its convex parts)."""
    config = config or DenseLabelConfig()
    cands = [object_candidates(m, parts, config, cache_dir) for m, parts in meshes]
    free = scene_collision_free(cands, poses, config, table_z=table_z)
    T_cw = np.asarray(T_camera_world, dtype=np.float64)
    targets = [dense_point_targets(c, view_labels(c, f, config), T_cw @ np.asarray(T),
                                   config, num_views)
               for c, f, T in zip(cands, free, poses)]
    return targets, cands
