"""Model-free grasp baselines on one partial depth view, for the clutter-removal benchmark.

Each takes an RGBDFrame and returns a GraspSet in the CAMERA frame, best first:
- `random_grasps`: a floor. Random object points (above the table plane), random
  approach within 60 deg of straight down, random in-plane angle and depth, full opening.
- `highest_point_grasps` (SHAF-like): top-down grasps at the highest points of the
  cloud, one per connected piece (object) first, then further distinct spots, each
  centred on its peak's top face and closing across its narrower horizontal extent,
  fingertips reaching 3 cm below the peak (but staying 1 cm above the table); grasp
  centres outside the executor's workspace are skipped when it is given.
- `antipodal_grasps` (GPD-like): sampled surface points with a local frame from PCA of
  their neighbourhood (approach against the normal, closing across the surface's
  curved direction), tilted about the closing axis, pushed in as deep as the gripper box
  model stays collision-free against the cloud, kept when points lie between the fingers;
  scored by antipodality of the outermost points' normals (no learned classifier).
- `oracle_grasps`: not a baseline but the cell's ceiling, planned on the true meshes.
The table plane (a, b, c, d), normal pointing up, is fitted by RANSAC when not given.
"""
from __future__ import annotations

import numpy as np

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import unproject
from zerograsp_ros.geometry.rgbd import RGBDFrame, validate_frame
from zerograsp_ros.grasp import DEFAULT_GRIPPER
from zerograsp_ros.grasp.gripper import GripperModel, gripper_preset
from zerograsp_ros.grasp.representation import GraspSet

MIN_HEIGHT = 0.005    # points this far above the table plane count as objects


def _cloud(frame: RGBDFrame, table_plane) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All valid points, the object points (above the table) and the plane (normal up)."""
    validate_frame(frame)
    pts = unproject(frame.depth, frame.intrinsics, mask=frame.valid_depth()).astype(np.float64)
    if table_plane is None:
        from zerograsp_ros.perception.segmentation import fit_plane
        table_plane = fit_plane(pts)
    plane = np.asarray(table_plane, dtype=np.float64).reshape(-1)
    if plane.shape != (4,) or not np.isfinite(plane).all():
        raise InputError(f'table_plane must be 4 finite numbers, got {table_plane}')
    plane = plane / np.linalg.norm(plane[:3])
    height = pts @ plane[:3] + plane[3]
    return pts, pts[height > MIN_HEIGHT], plane


def _voxel_thin(points: np.ndarray, voxel: float) -> np.ndarray:
    """One point per voxel (the first), so neighbourhood queries stay cheap."""
    keys = np.floor(points / voxel).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return points[np.sort(first)]


def _grasps(R, t, widths, depths, scores) -> GraspSet:
    n = len(t)
    scores = np.asarray(scores, dtype=np.float64)
    return GraspSet(rotations=R, translations=t, widths=widths, depths=depths, scores=scores,
                    qualities=scores, graspness=np.ones(n), object_ids=-np.ones(n))


def _frame_from(approach: np.ndarray, closing: np.ndarray) -> np.ndarray:
    """(N,3,3) rotations [x y z] from approach and a closing hint (orthogonalised)."""
    x = approach / np.linalg.norm(approach, axis=-1, keepdims=True)
    y = closing - (closing * x).sum(-1, keepdims=True) * x
    y /= np.linalg.norm(y, axis=-1, keepdims=True)
    return np.stack([x, y, np.cross(x, y)], axis=-1)


def random_grasps(frame: RGBDFrame, num_grasps: int = 50, rng: np.random.Generator | None = None,
                  table_plane=None, gripper: GripperModel | None = None) -> GraspSet:
    gripper = gripper or gripper_preset(DEFAULT_GRIPPER)
    rng = rng if rng is not None else np.random.default_rng(0)
    _, obj, plane = _cloud(frame, table_plane)
    if len(obj) == 0:
        return GraspSet.empty()
    t = obj[rng.integers(len(obj), size=num_grasps)]
    down = -plane[:3]
    # Uniform directions within 60 deg of straight down.
    cos_t = rng.uniform(np.cos(np.radians(60)), 1.0, size=num_grasps)
    phi = rng.uniform(0, 2 * np.pi, size=num_grasps)
    helper = np.array([1.0, 0, 0]) if abs(down[0]) < 0.9 else np.array([0, 1.0, 0])
    u = np.cross(down, helper)
    u /= np.linalg.norm(u)
    v = np.cross(down, u)
    sin_t = np.sqrt(1 - cos_t ** 2)
    approach = (cos_t[:, None] * down + sin_t[:, None] * (np.cos(phi)[:, None] * u
                                                          + np.sin(phi)[:, None] * v))
    closing = rng.normal(size=(num_grasps, 3))
    R = _frame_from(approach, closing)
    depths = rng.uniform(0.0, 0.03, size=num_grasps)
    return _grasps(R, t, np.full(num_grasps, gripper.max_stroke), depths,
                   rng.random(num_grasps)).sorted_by_score()


def highest_point_grasps(frame: RGBDFrame, num_grasps: int = 10, table_plane=None,
                         gripper: GripperModel | None = None, neighbourhood: float = 0.05,
                         separation: float = 0.03, in_workspace=None) -> GraspSet:
    """Top-down grasps at distinct peaks: first one per object (highest first), then more spots.

    Objects are the connected pieces of the above-table cloud. A peak whose top patch
    was already used, or whose grasp centre lies within `separation` of an earlier one,
    gives no new proposal; `in_workspace` (camera-frame points -> bool mask), when
    given, drops grasp centres outside the region the executor accepts.
    """
    gripper = gripper or gripper_preset(DEFAULT_GRIPPER)
    _, obj, plane = _cloud(frame, table_plane)
    if len(obj) == 0:
        return GraspSet.empty()
    obj = _voxel_thin(obj, 0.003)
    n_up = plane[:3]
    height = obj @ n_up + plane[3]
    order = np.argsort(-height)
    # In-plane coordinates of every object point (for the narrow-side estimate).
    helper = np.array([1.0, 0, 0]) if abs(n_up[0]) < 0.9 else np.array([0, 1.0, 0])
    e1 = np.cross(n_up, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n_up, e1)
    flat = np.stack([obj @ e1, obj @ e2], axis=1)
    piece = _pieces(obj, link=0.008)
    R, t, d, s, centres = [], [], [], [], []
    used = np.zeros(len(obj), dtype=bool)
    taken_pieces: set[int] = set()
    for first_pass in (True, False):
        for i in order:
            if len(t) >= num_grasps:
                break
            if used[i] or (first_pass and piece[i] in taken_pieces):
                continue
            # The top patch around the peak: centre the grasp on it, close across its
            # narrow side.
            near = _top_patch(obj, height, i, neighbourhood)
            used |= near
            centre = flat[near].mean(0)
            if any(np.linalg.norm(centre - c) <= separation for c in centres):
                continue
            point = obj[i] + (centre[0] - flat[i, 0]) * e1 + (centre[1] - flat[i, 1]) * e2
            if in_workspace is not None and not bool(np.asarray(in_workspace(point[None]))[0]):
                continue
            local = flat[near] - centre
            if len(local) >= 3:
                _, vecs = np.linalg.eigh(local.T @ local)
                minor = vecs[:, 0]           # narrow horizontal direction = closing axis
            else:
                minor = np.array([1.0, 0.0])
            closing = minor[0] * e1 + minor[1] * e2
            R.append(_frame_from(-n_up[None], closing[None])[0])
            t.append(point)
            centres.append(centre)
            taken_pieces.add(int(piece[i]))
            d.append(float(np.clip(height[i] - 0.01, 0.0, 0.03)))
            # one per object first (highest first), then further spots by height
            s.append(height[i] + (1.0 if first_pass else 0.0))
    if not t:
        return GraspSet.empty()
    return _grasps(np.array(R), np.array(t), np.full(len(t), gripper.max_stroke),
                   np.array(d), np.array(s)).sorted_by_score()


def _pieces(points: np.ndarray, link: float) -> np.ndarray:
    """Connected-piece index per point (points closer than `link` are connected)."""
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree
    tree = cKDTree(points)
    graph = tree.sparse_distance_matrix(tree, link, output_type='coo_matrix')
    return connected_components(graph, directed=False)[1]


def _top_patch(points: np.ndarray, height: np.ndarray, peak: int, radius: float,
               drop: float = 0.015, link: float = 0.006) -> np.ndarray:
    """Mask of the points connected to the peak within `drop` below it (its top face)."""
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree
    cand = np.flatnonzero((height > height[peak] - drop)
                          & (np.linalg.norm(points - points[peak], axis=1) < 3 * radius))
    tree = cKDTree(points[cand])
    graph = tree.sparse_distance_matrix(tree, link, output_type='coo_matrix')
    _, comp = connected_components(graph, directed=False)
    mask = np.zeros(len(points), dtype=bool)
    mask[cand[comp == comp[np.searchsorted(cand, peak)]]] = True
    return mask


def _normals(points: np.ndarray, radius: float = 0.015) -> np.ndarray:
    import open3d as o3d
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=30))
    n = np.asarray(pcd.normals)
    flip = (n * points).sum(1) > 0          # orient towards the camera at the origin
    n[flip] *= -1
    return n


def antipodal_grasps(frame: RGBDFrame, num_samples: int = 80,
                     rng: np.random.Generator | None = None, table_plane=None,
                     gripper: GripperModel | None = None,
                     tilts_deg=(-30, 0, 30), depths=(0.0, 0.015, 0.03, 0.045),
                     max_grasps: int = 50) -> GraspSet:
    from scipy.spatial import cKDTree

    from zerograsp_ros.grasp.refinement import RefinementConfig, check_collisions
    gripper = gripper or gripper_preset(DEFAULT_GRIPPER)
    rng = rng if rng is not None else np.random.default_rng(0)
    pts, obj, plane = _cloud(frame, table_plane)
    if len(obj) < 10:
        return GraspSet.empty()
    obj = _voxel_thin(obj, 0.003)
    normals = _normals(obj)
    tree = cKDTree(obj)
    seeds = rng.choice(len(obj), size=min(num_samples, len(obj)), replace=False)
    down = -plane[:3]
    R_list, t_list = [], []
    for i in seeds:
        nb = tree.query_ball_point(obj[i], 0.02)
        if len(nb) < 5:
            continue
        local = obj[nb] - obj[nb].mean(0)
        _, vecs = np.linalg.eigh(local.T @ local)
        n = normals[i]
        axis = vecs[:, 2]                       # direction of least curvature (most spread)
        closing = np.cross(n, axis)
        if np.linalg.norm(closing) < 1e-6:
            continue
        closing /= np.linalg.norm(closing)
        for tilt in np.radians(tilts_deg):
            # Rodrigues rotation of the approach (-n) about the closing axis.
            a = -n
            a = (a * np.cos(tilt) + np.cross(closing, a) * np.sin(tilt)
                 + closing * (closing @ a) * (1 - np.cos(tilt)))
            if a @ down < np.cos(np.radians(60)):
                continue
            R_list.append(_frame_from(a[None], closing[None])[0])
            t_list.append(obj[i])
    if not R_list:
        return GraspSet.empty()
    R0, t0 = np.array(R_list), np.array(t_list)
    m = len(R0)
    R = np.repeat(R0, len(depths), axis=0)
    t = np.repeat(t0, len(depths), axis=0)
    # The seed sits mid-way between the fingers, whose tips reach `depth` past it.
    d = np.tile(np.asarray(depths, dtype=np.float64), m)
    candidates = _grasps(R, t, np.full(len(t), gripper.max_stroke), d, np.zeros(len(t)))
    # Obstacles: the cloud near the objects only (the far table cannot touch the gripper).
    reach = gripper.length_behind_tip + 0.05
    near = np.all((pts > obj.min(0) - reach) & (pts < obj.max(0) + reach), axis=1)
    cfg = RefinementConfig(collision_tolerance_points=2, empty_min_points=10)
    masks = check_collisions(candidates, pts[near], gripper, cfg, table_plane=plane)
    ok = ~masks['collision'] & ~masks['empty']
    ok = ok.reshape(m, len(depths))
    if not ok.any():
        return GraspSet.empty()
    # Push in: the deepest collision-free depth of each (seed, orientation).
    best_depth = np.where(ok.any(1), len(depths) - 1 - np.argmax(ok[:, ::-1], axis=1), -1)
    keep = np.flatnonzero(best_depth >= 0)
    idx = keep * len(depths) + best_depth[keep]
    chosen = candidates.subset(idx)
    widths, scores = [], []
    for k in range(len(chosen)):
        Rk, tk, dk = chosen.rotations[k].astype(np.float64), chosen.translations[k], \
            float(chosen.depths[k])
        nb = tree.query_ball_point(tk, 0.08)
        q = (obj[nb] - tk) @ Rk
        inside = (q[:, 0] <= dk) & (q[:, 0] >= dk - gripper.finger_length) & \
            (np.abs(q[:, 1]) < gripper.max_stroke / 2) & \
            (np.abs(q[:, 2]) <= gripper.finger_width / 2)
        if inside.sum() < 3:
            widths.append(gripper.max_stroke)
            scores.append(0.0)
            continue
        qi, ni = q[inside], normals[np.asarray(nb)[inside]] @ Rk
        left, right = np.argmin(qi[:, 1]), np.argmax(qi[:, 1])
        # Antipodal when the outermost points' normals face along the closing axis.
        score = min(abs(ni[left, 1]), abs(ni[right, 1]))
        widths.append(float(min(qi[right, 1] - qi[left, 1] + 0.02, gripper.max_stroke)))
        scores.append(score * (1.0 + dk / 0.045) / 2.0)   # deeper grasps hold better
    chosen.widths = np.asarray(widths, dtype=np.float32)
    chosen.scores = np.asarray(scores, dtype=np.float32)
    chosen.qualities = chosen.scores.copy()
    return chosen.sorted_by_score().subset(slice(0, max_grasps))


def oracle_grasps(scene, T_world_camera: np.ndarray, rng: np.random.Generator | None = None,
                  points_per_scene: int = 40, approach_cone_deg: float = 75.0,
                  max_grasps: int = 50) -> GraspSet:
    """The cell's ceiling: grasps sampled on the ground-truth meshes, judged by the label judge.

    scene: the cell's current `sim.scene.Scene` (objects at their true poses, world frame,
    table top z = 0). Candidates at surface points of every object: the label views
    that approach against the outward normal and within `approach_cone_deg` of straight
    down, the label in-plane angles and depths. `data.labels.judge_grasps` (collisions
    with every object and the table, antipodal force closure) keeps those that hold one
    object; score = the label quality (lowest force-closure mu); ties go to deeper,
    then more top-down grasps.
    `points_per_scene` surface points are shared among the objects left (at least 8
    each), so the cost per plan stays about constant as the table clears.
    Returned in the camera frame, best first, at most one per (object, point).
    """
    from zerograsp_ros.data.labels import (
        FRICTION_COEFFICIENTS,
        LabelConfig,
        ObjectShape,
        build_scene_geometry,
        judge_grasps,
    )
    from zerograsp_ros.grasp.representation import quality_from_mu, rotation_from_approach

    rng = rng if rng is not None else np.random.default_rng(0)
    config = LabelConfig()
    objects = list(scene.objects)
    if not objects:
        return GraspSet.empty()
    shapes = []
    for obj in objects:
        parts = [p.copy().apply_transform(obj.pose) for p in obj.parts] or None
        shapes.append(ObjectShape(obj.mesh_world(), parts))
    ids = np.array([o.object_id for o in objects], dtype=np.int64)
    geometry = build_scene_geometry(shapes, ids, config, rng, table_z=0.0)
    views, angles = config.views(), config.angles()
    views = views[views @ np.array([0.0, 0.0, -1.0]) >= np.cos(np.radians(approach_cone_deg))]
    rot_va = rotation_from_approach(np.repeat(views, len(angles), axis=0),
                                    np.tile(angles, len(views))).astype(np.float64)
    approach_va = rot_va[:, :, 0]
    depths = np.asarray(config.depths, dtype=np.float64)
    out = []
    points_per_object = max(8, points_per_scene // len(objects))
    for j, (obj, shape) in enumerate(zip(objects, shapes)):
        pts, nrm = shape.sample_surface(4 * points_per_object, rng)
        pts, nrm = pts[pts[:, 2] > 0.004], nrm[pts[:, 2] > 0.004]
        pts, nrm = pts[:points_per_object].astype(np.float64), nrm[:points_per_object]
        facing = approach_va @ nrm.T.astype(np.float64) < 0.0           # (VA, P)
        pose_va, pose_pt = np.nonzero(facing)
        if len(pose_va) == 0:
            continue
        R, t = rot_va[pose_va], pts[pose_pt]
        judged = judge_grasps(R, t, np.broadcast_to(depths, (len(R), len(depths))), geometry,
                              config.gripper, width_margin=config.width_margin)
        ok = judged.success_at(FRICTION_COEFFICIENTS[-1]) & (judged.object_index == j)
        quality = np.where(ok, quality_from_mu(np.where(ok, judged.mu_min, np.inf)), -1.0)
        # on ties (many grasps reach quality 1): deeper, then closer to top-down (the judge
        # checks the housing swept from the pre-grasp pose; top-down still leaves the
        # most room for the arm, which it does not model)
        down = np.clip(-R[:, 2, 0], 0.0, 1.0)[:, None]
        score = quality + (1e-3 * np.arange(len(depths))[None, :] + 5e-3 * down) * ok
        flat = np.argmax(score, axis=1)
        best = score[np.arange(len(R)), flat]
        for p in np.unique(pose_pt):                  # the best pose per surface point
            rows = np.flatnonzero((pose_pt == p) & (best >= 0.0))
            if len(rows) == 0:
                continue
            k = rows[np.argmax(best[rows])]
            col = flat[k]
            out.append((R[k], t[k], float(judged.width[k, col]), depths[col], float(best[k]),
                        float(quality_from_mu(judged.mu_min[k, col])), int(obj.object_id)))
    if not out:
        return GraspSet.empty()
    R, t, w, d, score, q, oid = (np.array(v) for v in zip(*out))
    world = GraspSet(rotations=R, translations=t, widths=w, depths=d, scores=score, qualities=q,
                     graspness=np.ones(len(q)), object_ids=oid)
    camera = world.transformed(np.linalg.inv(T_world_camera))
    return camera.sorted_by_score().subset(slice(0, max_grasps))
