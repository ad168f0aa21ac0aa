"""Training labels from known scene geometry: complete surfaces, SDF, grasps.

Everything here works on trimesh meshes in one common frame (the world frame
of a generated scene, z up, table top at `table_z`).

* `ObjectShape` wraps one object mesh. The pybullet random objects are unions
  of overlapping convex parts, so the mesh is split into its connected parts
  and inside/outside is "inside any part" (ray parity over the whole mesh
  would be wrong where parts overlap). Open3D's RaycastingScene answers the
  occupancy and distance queries.
* Complete surface: area-weighted samples on all parts, minus those that lie
  inside another part (internal faces of the union), with face normals.
* SDF samples: points offset from the surface by N(0, sdf_sigma) along random
  directions; distance to the nearest triangle, negative inside. For points
  inside several parts the magnitude can be too small (nearest triangle may be
  an internal face), which only affects |sdf| of deep interior points.
* Grasps (GraspNet convention, see grasp/representation.py): candidates at
  sampled surface points, over a subset of the 300 Fibonacci views, in-plane
  angles and the 4 depth bins. Each candidate is judged by `judge_grasps`:
  the gripper body of `grasp.gripper` (default the 2F-85: fingers, housing,
  swept back along the pick's straight approach from the pre-grasp pose; the
  same boxes refinement checks) against points sampled densely on every scene
  mesh plus the table plane, contacts =
  the object points nearest to each finger inside the closing region (normals
  averaged over the points within 2 mm that face that pad), and antipodal force closure: the lowest
  friction coefficient mu at which the contact line lies inside both friction
  cones (ZeroGrasp section 4.2). Parallel pads squeeze along the closing
  axis, so that axis is the contact line.
  The same function scores predicted grasps in the evaluation, so labels and
  precision use one judge.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import open3d as o3d
import trimesh

from zerograsp_ros.errors import InputError
from zerograsp_ros.grasp import DEFAULT_GRIPPER
from zerograsp_ros.grasp.gripper import GripperModel, gripper_preset
from zerograsp_ros.grasp.representation import (
    GRASPNET_DEPTHS,
    GRASPNET_NUM_ANGLES,
    GRASPNET_NUM_VIEWS,
    GraspSet,
    fibonacci_views,
    quality_from_mu,  # noqa: F401  (re-exported: the label quality scale)
    rotation_from_approach,
)

FRICTION_COEFFICIENTS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.2)
NO_FORCE_CLOSURE = np.inf  # mu_min of a grasp that is not force-closure at any mu
PATCH_BAND_M = 0.002       # points this close to a finger's first contact form its contact patch


@dataclass(frozen=True)
class LabelConfig:
    """How densely labels are sampled (chosen for the 2-core CPU budget; see module doc)."""

    surface_points: int = 2048        # stored complete-surface points per object
    contact_points: int = 2000        # denser samples used only for contacts/collisions
    sdf_points: int = 1024            # stored SDF samples per object
    sdf_sigma: float = 0.005          # offset spread of SDF samples around the surface [m]
    grasp_points: int = 24            # surface points per object that get grasp labels
    view_stride: int = 10             # every 10th of the 300 Fibonacci views -> 30 views
    angle_stride: int = 2             # every 2nd of 12 in-plane angles -> 6 angles (0..150 deg)
    depths: tuple = GRASPNET_DEPTHS
    width_margin: float = 0.005       # finger clearance added to each side of the contacts
    min_mu_for_graspness: float = 0.8  # candidate counts towards graspness if mu_min <= this
    collision_voxel: float = 0.004    # obstacle points are thinned to this spacing
    # the one 2F-85 body (grasp/gripper.py), swept from the pick's pre-grasp pose
    gripper: GripperModel = field(default_factory=lambda: gripper_preset(DEFAULT_GRIPPER))

    def views(self) -> np.ndarray:
        return fibonacci_views(GRASPNET_NUM_VIEWS)[::self.view_stride]

    def angles(self) -> np.ndarray:
        return (np.arange(GRASPNET_NUM_ANGLES) * np.pi / GRASPNET_NUM_ANGLES)[::self.angle_stride]


class ObjectShape:
    """One object mesh (common frame) with occupancy / distance queries and surface samples."""

    def __init__(self, mesh: trimesh.Trimesh, parts: list[trimesh.Trimesh] | None = None):
        if mesh is None or len(mesh.faces) == 0:
            raise InputError('object mesh is empty')
        if not np.isfinite(mesh.vertices).all():
            raise InputError('object mesh has non-finite vertices')
        self.mesh = mesh
        if parts is None:
            parts = mesh.split(only_watertight=False)
            if len(parts) == 0 or not all(p.is_watertight for p in parts):
                parts = [mesh]  # not a union of closed parts: treat the mesh as one solid
        self.parts = [p for p in parts if len(p.faces)]
        self._part_scenes = [self._raycasting_scene(p) for p in self.parts]
        self._all_scene = self._raycasting_scene(mesh)

    @staticmethod
    def _raycasting_scene(mesh: trimesh.Trimesh) -> o3d.t.geometry.RaycastingScene:
        scene = o3d.t.geometry.RaycastingScene()
        scene.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, dtype=np.float32)),
                            o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)))
        return scene

    def _part_occupancy(self, points: np.ndarray) -> np.ndarray:
        """(P, N) bool: point n inside part p."""
        q = o3d.core.Tensor(np.asarray(points, dtype=np.float32))
        return np.stack([s.compute_occupancy(q, nsamples=3).numpy() > 0.5
                         for s in self._part_scenes])

    def occupancy(self, points: np.ndarray) -> np.ndarray:
        """True where a point lies inside the solid (inside any convex part)."""
        if len(points) == 0:
            return np.zeros(0, dtype=bool)
        return self._part_occupancy(points).any(0)

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Distance to the nearest surface triangle, negative inside (see module doc)."""
        if len(points) == 0:
            return np.zeros(0, dtype=np.float32)
        q = o3d.core.Tensor(np.asarray(points, dtype=np.float32))
        dist = self._all_scene.compute_distance(q).numpy()
        return np.where(self.occupancy(points), -dist, dist).astype(np.float32)

    def sample_surface(self, count: int, rng: np.random.Generator):
        """`count` points on the outer surface with outward unit normals, (count, 3) each."""
        areas = np.array([p.area for p in self.parts])
        points, normals = [], []
        n_draw = max(count * 2, 64)
        for _attempt in range(4):
            counts = rng.multinomial(n_draw, areas / areas.sum())
            for k, (part, n_k) in enumerate(zip(self.parts, counts)):
                if n_k == 0:
                    continue
                pts, fid = _sample_faces(part, int(n_k), rng)
                nrm = part.face_normals[fid]
                if len(self.parts) > 1:
                    occ = self._part_occupancy(pts + 1e-4 * nrm)  # just outside this part
                    occ[k] = False
                    keep = ~occ.any(0)
                    pts, nrm = pts[keep], nrm[keep]
                points.append(pts)
                normals.append(nrm)
            if sum(len(p) for p in points) >= count:
                break
        points, normals = np.concatenate(points), np.concatenate(normals)
        if len(points) == 0:
            raise InputError('object mesh has no outer surface to sample')
        idx = rng.choice(len(points), size=count, replace=len(points) < count)
        return points[idx].astype(np.float32), normals[idx].astype(np.float32)

    def sample_sdf(self, count: int, sigma: float, rng: np.random.Generator):
        """Points near the surface and their signed distances, (count, 3) and (count,)."""
        pts, nrm = self.sample_surface(count, rng)
        offsets = rng.normal(0.0, sigma, size=(count, 1)) * _random_unit(count, rng, nrm)
        q = (pts + offsets).astype(np.float32)
        return q, self.signed_distance(q)


def _sample_faces(mesh: trimesh.Trimesh, count: int, rng: np.random.Generator):
    """Area-weighted uniform samples on triangles (seeded; trimesh's sampler uses global state)."""
    areas = mesh.area_faces
    fid = rng.choice(len(areas), size=count, p=areas / areas.sum())
    tri = mesh.triangles[fid]
    u, v = rng.random((2, count))
    flip = u + v > 1.0
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    pts = tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0])
    return pts, fid


def _random_unit(count: int, rng: np.random.Generator, bias: np.ndarray) -> np.ndarray:
    """Random unit directions mixed with the normal so the band covers both sides."""
    d = rng.normal(size=(count, 3)) * 0.5 + bias
    return d / np.clip(np.linalg.norm(d, axis=1, keepdims=True), 1e-9, None)


def voxel_thin(points: np.ndarray, voxel: float) -> np.ndarray:
    """One point per occupied voxel (keeps the first), for cheaper collision checks."""
    if len(points) == 0:
        return points
    keys = np.floor(points / voxel).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    return points[np.sort(first)]


@dataclass
class SceneGeometry:
    """What the grasp judge needs: per object dense surface samples + the table plane."""

    object_ids: np.ndarray                 # (K,) int
    contact_points: list[np.ndarray]       # per object (M_k, 3) dense surface points
    contact_normals: list[np.ndarray]      # per object (M_k, 3) outward normals
    obstacle_points: np.ndarray            # (M, 3) all objects, thinned
    table_z: float = 0.0
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))

    def transformed(self, T: np.ndarray) -> 'SceneGeometry':
        """The same geometry in another frame (T maps this frame to the new one)."""
        R, t = T[:3, :3], T[:3, 3]
        up = R @ self.up
        # table plane n.x = table_z in the old frame -> n'.x' = table_z + n'.t
        return SceneGeometry(self.object_ids,
                             [p @ R.T + t for p in self.contact_points],
                             [n @ R.T for n in self.contact_normals],
                             self.obstacle_points @ R.T + t,
                             float(self.table_z + up @ t), up)


def build_scene_geometry(shapes: list[ObjectShape], object_ids, config: LabelConfig,
                         rng: np.random.Generator, table_z: float = 0.0) -> SceneGeometry:
    pts, nrms = [], []
    for shape in shapes:
        p, n = shape.sample_surface(config.contact_points, rng)
        pts.append(p.astype(np.float64))
        nrms.append(n.astype(np.float64))
    obstacles = (voxel_thin(np.concatenate(pts), config.collision_voxel) if pts
                 else np.zeros((0, 3)))
    return SceneGeometry(np.asarray(object_ids, dtype=np.int64), pts, nrms, obstacles, table_z)


@dataclass
class GraspJudgement:
    """Per grasp (and depth column): collision, empty, width, lowest force-closure mu, object."""

    collision: np.ndarray
    empty: np.ndarray
    width: np.ndarray
    mu_min: np.ndarray         # inf = not force-closure at any mu (or two objects squeezed)
    object_index: np.ndarray   # index into geometry.object_ids of both contacts, -1 = none/mixed
    # closing-axis coordinate of the left (max y) and right (min y) contact, 0 when empty;
    # dense_labels.py needs them to tell which foreign points would change the contacts
    contact_y_left: np.ndarray | None = None
    contact_y_right: np.ndarray | None = None

    def success_at(self, mu: float) -> np.ndarray:
        return ~self.collision & ~self.empty & (self.mu_min <= mu + 1e-9)


def _mu_from_contacts(cl, cr, nl, nr) -> np.ndarray:
    """Lowest mu at which contacts (left, right) with outward normals are antipodal."""
    line = cl - cr
    line = line / np.clip(np.linalg.norm(line, axis=-1, keepdims=True), 1e-9, None)
    # the left finger pushes along -line, so its outward normal must align with +line
    q = np.minimum((nl * line).sum(-1), -(nr * line).sum(-1))
    q = np.clip(q, -1.0, 1.0)
    with np.errstate(divide='ignore', invalid='ignore'):
        mu = np.tan(np.arccos(q))
    return np.where(q > 1e-6, mu, NO_FORCE_CLOSURE)


def _table_collision(R, t, boxes, geometry: SceneGeometry) -> np.ndarray:
    """(K,) any gripper box corner below the table plane (+1 mm); boxes (K, B, 2, 3)."""
    corners = np.stack(np.meshgrid([0, 1], [0, 1], [0, 1], indexing='ij'), -1).reshape(8, 3)
    c = np.where(corners[None, None].astype(bool), boxes[:, :, 1][:, :, None],
                 boxes[:, :, 0][:, :, None])                       # (K, B, 8, 3) grasp frame
    world = np.einsum('kij,kbcj->kbci', R, c) + t[:, None, None, :]
    height = world @ geometry.up - geometry.table_z
    return (height < 0.001).any(axis=(1, 2))


def _near(points: np.ndarray, centers: np.ndarray, radius: float) -> np.ndarray:
    """Points inside the bounding box of the centres grown by `radius` (cheap pre-filter)."""
    lo, hi = centers.min(0) - radius, centers.max(0) + radius
    return ((points > lo) & (points < hi)).all(1)


def _slab(points: np.ndarray, R: np.ndarray, t: np.ndarray, half_height: float,
          half_width: float, x_range: tuple[float, float]):
    """Points inside each grasp's local box, flattened: (pose, point, x, y, z), by pose."""
    m, k = len(points), len(R)
    if m == 0:
        e = np.zeros(0)
        return e.astype(int), e.astype(int), e, e, e
    # one GEMM for all poses: (M, 3) @ (3, K*3) -> (M, K, 3), then subtract R^T t
    R32 = R.astype(np.float32)
    local = (points.astype(np.float32) @ R32.transpose(1, 0, 2).reshape(3, k * 3)).reshape(m, k, 3)
    local -= np.einsum('ki,kij->kj', t, R).astype(np.float32)[None]
    keep = ((np.abs(local[..., 2]) < half_height) & (np.abs(local[..., 1]) < half_width)
            & (local[..., 0] > x_range[0]) & (local[..., 0] < x_range[1]))
    ki, mi = np.nonzero(keep.T)
    return ki, mi, local[mi, ki, 0], local[mi, ki, 1], local[mi, ki, 2]


def _poses_hit(boxes: np.ndarray, pose: np.ndarray, coords) -> np.ndarray:
    """(K,) whether any point lies strictly inside any box of its pose; boxes (K, B, 2, 3).

    Open boxes, so a point on a face is free. Box by box (the housing, which most
    points behind the fingers hit, first) and axis by axis, on the points of poses
    not yet hit: most pairs are decided by the first test.
    """
    hit = np.zeros(len(boxes), bool)
    for j in sorted(range(boxes.shape[1]), reverse=True):
        cand = np.nonzero(~hit[pose])[0]
        for axis, values in enumerate(coords):
            if not len(cand):
                break
            k, v = pose[cand], values[cand]
            cand = cand[(v > boxes[k, j, 0, axis]) & (v < boxes[k, j, 1, axis])]
        hit[pose[cand]] = True
    return hit


def _first_per_group(group: np.ndarray, key: np.ndarray, count: int) -> np.ndarray:
    """Index of the smallest key per group (groups sorted ascending), -1 for empty groups."""
    out = np.full(count, -1)
    if len(group) == 0:
        return out
    starts = np.nonzero(np.r_[True, group[1:] != group[:-1]])[0]
    group_min = np.minimum.reduceat(key, starts)
    seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(group)]))
    hit = np.nonzero(key == group_min[seg])[0]
    first = np.r_[True, seg[hit][1:] != seg[hit][:-1]]
    out[group[hit[first]]] = hit[first]
    return out


def _group_mean(group: np.ndarray, values: np.ndarray, member: np.ndarray,
                count: int) -> np.ndarray:
    """Mean of values (n, 3) over member rows per group, (count, 3)."""
    w = member.astype(np.float64)
    n = np.bincount(group, weights=w, minlength=count)
    sums = np.stack([np.bincount(group, weights=w * values[:, c], minlength=count)
                     for c in range(values.shape[1])], axis=1)
    return sums / np.maximum(n, 1.0)[:, None]


def _unit_rows(v: np.ndarray) -> np.ndarray:
    return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-9, None)


def judge_grasps(rotations: np.ndarray, translations: np.ndarray, depths: np.ndarray,
                 geometry: SceneGeometry, gripper: GripperModel,
                 widths: np.ndarray | None = None, width_margin: float = 0.005,
                 chunk: int = 256) -> GraspJudgement:
    """Judge K poses x D depth columns against the scene (same frame as the geometry).

    depths (K,) or (K, D). widths=None is label mode: the gripper opens just
    enough for the contacts, 2 * max |contact y| + 2 * margin, symmetric about
    the grasp point; otherwise the given opening is used (K,) or (K, D).
    Results are (K, D), or (K,) when depths was (K,).
    """
    R = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    t = np.asarray(translations, dtype=np.float64).reshape(-1, 3)
    k = len(R)
    depths = np.asarray(depths, dtype=np.float64)
    flat = depths.ndim <= 1
    if k == 0:
        shape = (0,) if flat else (0, depths.shape[-1])
        return GraspJudgement(np.zeros(shape, bool), np.zeros(shape, bool),
                              np.zeros(shape, np.float32), np.zeros(shape), np.zeros(shape, int))
    depths = np.broadcast_to(depths.reshape(k, -1) if depths.ndim else depths, (k, 1) if flat
                             else depths.shape).astype(np.float64)
    d_cols = depths.shape[1]
    given = None if widths is None else np.broadcast_to(
        np.asarray(widths, dtype=np.float64).reshape(k, -1), (k, d_cols))
    res = {name: np.zeros((k, d_cols), dtype) for name, dtype in
           (('collision', bool), ('empty', bool), ('width', np.float32),
            ('mu_min', np.float64), ('object_index', np.int64),
            ('contact_y_left', np.float32), ('contact_y_right', np.float32))}
    pts = (np.concatenate(geometry.contact_points) if geometry.contact_points
           else np.zeros((0, 3)))
    nrm = (np.concatenate(geometry.contact_normals) if geometry.contact_normals
           else np.zeros((0, 3)))
    obj_of = np.concatenate([np.full(len(p), j) for j, p in enumerate(geometry.contact_points)]
                            ) if geometry.contact_points else np.zeros(0, int)
    max_width = gripper.max_stroke
    reach = gripper.length_behind_tip
    half_y = float(gripper.half_extent_y(np.float64(max_width)))
    r_contact = np.sqrt(gripper.finger_length ** 2 + max_width ** 2 / 4
                        + gripper.finger_width ** 2 / 4) + 1e-3
    r_obstacle = np.sqrt(reach ** 2 + half_y ** 2 + gripper.half_extent_z ** 2) + 1e-3
    half_h = gripper.finger_width / 2.0
    for start in range(0, k, chunk):
        sl = slice(start, min(start + chunk, k))
        Rc, tc, dc = R[sl], t[sl], depths[sl]
        kc = len(Rc)
        near = _near(pts, tc, r_contact)
        ki, mi, x, y, _ = _slab(pts[near], Rc, tc, half_h, max_width / 2.0,
                                (dc.min() - gripper.finger_length, dc.max()))
        cn, co = nrm[near][mi], obj_of[near][mi]
        near_o = _near(geometry.obstacle_points, tc, r_obstacle)
        oki, _, ox, oy, oz = _slab(geometry.obstacle_points[near_o], Rc, tc,
                                   gripper.half_extent_z, half_y, (dc.min() - reach, dc.max()))
        for col in range(d_cols):
            d = dc[:, col]
            open_half = (np.full(kc, max_width / 2.0) if given is None
                         else given[sl, col] / 2.0)
            inside = ((x > d[ki] - gripper.finger_length) & (x < d[ki])
                      & (np.abs(y) < open_half[ki]))
            sel = np.nonzero(inside)[0]
            il = _first_per_group(ki[sel], -y[sel], kc)
            ir = _first_per_group(ki[sel], y[sel], kc)
            empty = il < 0
            il, ir = np.where(empty, 0, sel[np.maximum(il, 0)] if len(sel) else 0), \
                np.where(empty, 0, sel[np.maximum(ir, 0)] if len(sel) else 0)
            mu = np.full(kc, NO_FORCE_CLOSURE)
            obj = np.full(kc, -1)
            width = (np.full(kc, max_width) if given is None else given[sl, col].copy())
            ok = ~empty
            if ok.any():
                # contact = the patch each pad touches (points within a small band of the
                # extreme y), so a flat face gives a clean contact line and normal
                y_l, y_r = np.where(ok, y[il], 0.0), np.where(ok, y[ir], 0.0)
                res['contact_y_left'][sl, col] = y_l
                res['contact_y_right'][sl, col] = y_r
                band = np.minimum(PATCH_BAND_M, (y_l - y_r) / 4.0)
                g = ki[sel]
                closing = Rc[:, :, 1]
                facing = (cn[sel] * closing[g]).sum(1)   # > 0: faces the left pad
                in_l = (y[sel] >= (y_l - band)[g]) & (facing > 0.0)
                in_r = (y[sel] <= (y_r + band)[g]) & (facing < 0.0)
                nl, nr = _group_mean(g, cn[sel], in_l, kc), _group_mean(g, cn[sel], in_r, kc)
                # parallel pads push along the closing axis: that is the contact line
                mu[ok] = _mu_from_contacts(closing[ok], 0.0 * closing[ok], _unit_rows(nl[ok]),
                                           _unit_rows(nr[ok]))
                same = co[il[ok]] == co[ir[ok]]
                single = il[ok] == ir[ok]  # one point cannot be squeezed from both sides
                mu[ok] = np.where(same & ~single, mu[ok], NO_FORCE_CLOSURE)
                obj[ok] = np.where(same, co[il[ok]], -1)
                if given is None:
                    span = np.maximum(y[il[ok]], -y[ir[ok]])
                    width[ok] = 2.0 * span + 2.0 * width_margin
            too_wide = width > max_width + 1e-9
            boxes = gripper.boxes(np.minimum(width, max_width), d)
            collision = too_wide | _table_collision(Rc, tc, boxes, geometry)
            if len(oki):
                collision |= _poses_hit(boxes, oki, (ox, oy, oz))
            res['collision'][sl, col] = collision
            res['empty'][sl, col] = empty
            res['width'][sl, col] = width
            res['mu_min'][sl, col] = mu
            res['object_index'][sl, col] = obj
    if flat:
        res = {name: v[:, 0] for name, v in res.items()}
    return GraspJudgement(**res)


@dataclass
class GraspLabels:
    """Per labelled surface point: graspness and the best grasp (GraspNet convention)."""

    points: np.ndarray     # (P, 3)
    graspness: np.ndarray  # (P,) fraction of candidates that succeed at mu <= config threshold
    quality: np.ndarray    # (P,) best grasp's quality_from_mu (0 when none)
    mu_min: np.ndarray     # (P,) best grasp's lowest force-closure mu (inf when none)
    approach: np.ndarray   # (P, 3)
    closing: np.ndarray    # (P, 3)
    width: np.ndarray      # (P,)
    depth: np.ndarray      # (P,)
    valid: np.ndarray      # (P,) bool: at least one successful candidate


def label_object_grasps(points: np.ndarray, normals: np.ndarray, object_index: int,
                        geometry: SceneGeometry, config: LabelConfig) -> GraspLabels:
    """Dense candidates at each point; keep graspness and the best successful grasp.

    Candidates: config.views() x config.angles() x config.depths, only views
    that approach against the outward normal (the others start inside the
    object and count as failures in graspness).
    """
    views, angles, depths = config.views(), config.angles(), np.asarray(config.depths)
    p_count = len(points)
    total = len(views) * len(angles) * len(depths)
    va_views = np.repeat(views, len(angles), axis=0)
    va_angles = np.tile(angles, len(views))
    rot_all = rotation_from_approach(va_views, va_angles).astype(np.float64)
    facing = va_views @ np.asarray(normals, dtype=np.float64).T < 0.0      # (VA, P)
    pose_point, pose_rot = np.nonzero(facing.T)
    judged = judge_grasps(rot_all[pose_rot], np.asarray(points, np.float64)[pose_point],
                          np.broadcast_to(depths, (len(pose_point), len(depths))), geometry,
                          config.gripper, width_margin=config.width_margin)
    ok = judged.success_at(FRICTION_COEFFICIENTS[-1]) & (judged.object_index == object_index)
    good = ok & (judged.mu_min <= config.min_mu_for_graspness)
    graspness = np.bincount(pose_point, weights=good.sum(1), minlength=p_count) / total
    # best per point = lowest mu, then shallowest depth
    mu = np.where(ok, judged.mu_min, np.inf)
    flat_mu = mu.reshape(-1)
    flat_point = np.repeat(pose_point, len(depths))
    best = _first_per_group(flat_point[np.isfinite(flat_mu)],
                            flat_mu[np.isfinite(flat_mu)], p_count)
    finite_idx = np.nonzero(np.isfinite(flat_mu))[0]
    valid = best >= 0
    b = finite_idx[np.maximum(best, 0)] if len(finite_idx) else np.zeros(p_count, int)
    pose, col = b // len(depths), b % len(depths)
    rot = rot_all[pose_rot[pose]] if len(pose_rot) else np.zeros((p_count, 3, 3))
    v = valid.astype(np.float32)
    return GraspLabels(
        points=np.asarray(points, np.float32),
        graspness=graspness.astype(np.float32),
        quality=np.where(valid, quality_from_mu(flat_mu[b] if len(flat_mu) else 0.0), 0.0
                         ).astype(np.float32),
        mu_min=np.where(valid, flat_mu[b] if len(flat_mu) else np.inf, np.inf
                        ).astype(np.float32),
        approach=(rot[:, :, 0] * v[:, None]).astype(np.float32),
        closing=(rot[:, :, 1] * v[:, None]).astype(np.float32),
        width=np.where(valid, judged.width.reshape(-1)[b] if len(flat_mu) else 0.0, 0.0
                       ).astype(np.float32),
        depth=np.where(valid, depths[col], 0.0).astype(np.float32),
        valid=valid)


def evaluate_grasp_set(grasps: GraspSet, geometry: SceneGeometry, gripper: GripperModel,
                       ) -> GraspJudgement:
    """Judge predicted grasps with their own widths and depths (evaluation mode)."""
    if len(grasps) == 0:
        z = np.zeros(0)
        return GraspJudgement(z.astype(bool), z.astype(bool), z, z, z.astype(int))
    widths = np.clip(grasps.widths, 0.0, None)
    return judge_grasps(grasps.rotations, grasps.translations, grasps.depths, geometry, gripper,
                        widths=widths)
