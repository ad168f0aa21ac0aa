"""Tabletop scenes: physical settling in pybullet, rendering and depth noise.

One module shared by the simulated cell and the training-data generator.

World frame: the table top is the plane z = 0, z up, origin at the centre of
the workspace (a 0.30 m cube, x, y in [-0.15, 0.15]).

The objects themselves (catalogue, splits, shapes, sizes) come from `sim/objects.py`.

Rendering uses Open3D's RaycastingScene (depth + instance ids in ~0.02 s at
640x480 on 2 cores, no GL context needed) with flat Lambertian colour per
object; it is not photorealistic, which is fine for depth-based methods.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import trimesh

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import CameraIntrinsics
from zerograsp_ros.geometry.rgbd import RGBDFrame
from zerograsp_ros.geometry.transforms import matrix_to_pose, pose_to_matrix
from zerograsp_ros.sim.objects import (
    PRIMITIVES,
    SPLITS,
    SceneObject,
    build_object,
    object_split,
    write_object_urdf,
)

WORKSPACE_HALF = 0.15          # workspace cube is 0.30 m wide, centred on the origin
WORKSPACE_HEIGHT = 0.30
TABLE_COLOR = np.array([0.62, 0.52, 0.40])
PHYSICS_HZ = 240


@dataclass
class Scene:
    objects: list[SceneObject]
    seed: int
    layout: str
    split: str

    def object(self, object_id: int) -> SceneObject:
        for o in self.objects:
            if o.object_id == object_id:
                return o
        raise InputError(f'scene has no object with id {object_id}')


# ----------------------------------------------------------------------------- pybullet helpers

def spawn_object(client: int, obj: SceneObject, pose: np.ndarray | None = None) -> int:
    """Load a SceneObject into a pybullet client at `pose` (default obj.pose); returns body id."""
    import pybullet as p
    if obj.urdf_path is None or not Path(obj.urdf_path).is_file():
        obj.urdf_path = write_object_urdf(obj)
    pos, quat = matrix_to_pose(obj.pose if pose is None else pose)
    body = p.loadURDF(obj.urdf_path, pos, quat, physicsClientId=client)
    p.changeDynamics(body, -1, lateralFriction=0.8, rollingFriction=0.0005,
                     spinningFriction=0.001, physicsClientId=client)
    return body


def body_pose(client: int, body: int) -> np.ndarray:
    import pybullet as p
    pos, quat = p.getBasePositionAndOrientation(body, physicsClientId=client)
    return pose_to_matrix(pos, quat)


def settle(client: int, bodies: list[int], max_seconds: float = 3.0,
           lin_tol: float = 2e-3, ang_tol: float = 2e-2) -> None:
    """Step physics until every body is at rest (checked every 0.1 s) or max_seconds pass."""
    import pybullet as p
    for step in range(int(max_seconds * PHYSICS_HZ)):
        p.stepSimulation(physicsClientId=client)
        if step % (PHYSICS_HZ // 10) == 0 and step > PHYSICS_HZ // 5:
            still = True
            for b in bodies:
                v, w = p.getBaseVelocity(b, physicsClientId=client)
                if np.linalg.norm(v) > lin_tol or np.linalg.norm(w) > ang_tol:
                    still = False
                    break
            if still:
                return


def new_physics_client() -> int:
    import pybullet as p
    client = p.connect(p.DIRECT)
    p.setGravity(0, 0, -9.81, physicsClientId=client)
    p.setPhysicsEngineParameter(fixedTimeStep=1.0 / PHYSICS_HZ, numSolverIterations=80,
                                deterministicOverlappingPairs=1, physicsClientId=client)
    return client


def add_table(client: int) -> int:
    """A static table slab whose top is z = 0."""
    import pybullet as p
    shape = p.createCollisionShape(p.GEOM_BOX, halfExtents=[0.5, 0.5, 0.025],
                                   physicsClientId=client)
    table = p.createMultiBody(0, shape, -1, [0, 0, -0.025], physicsClientId=client)
    p.changeDynamics(table, -1, lateralFriction=0.8, physicsClientId=client)
    return table


def in_workspace(T: np.ndarray, margin: float = 0.0) -> bool:
    x, y, z = T[:3, 3]
    h = WORKSPACE_HALF + margin
    return abs(x) <= h and abs(y) <= h and -0.02 <= z <= WORKSPACE_HEIGHT


# ----------------------------------------------------------------------------- scene generation

def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    return Rotation.random(random_state=int(rng.integers(2**31))).as_matrix()


def _drop_pile(client: int, objects: list[SceneObject], rng: np.random.Generator) -> list[int]:
    import pybullet as p
    wall = p.createCollisionShape(p.GEOM_BOX, halfExtents=[0.13, 0.005, 0.15],
                                  physicsClientId=client)
    walls = []
    half_pi = np.pi / 2
    for x, y, yaw in ((0, 0.125, 0), (0, -0.125, 0), (0.125, 0, half_pi), (-0.125, 0, half_pi)):
        quat = p.getQuaternionFromEuler([0, 0, yaw])
        walls.append(p.createMultiBody(0, wall, -1, [x, y, 0.15], quat, physicsClientId=client))
    bodies = []
    for obj in objects:
        T = np.eye(4)
        T[:3, :3] = _random_rotation(rng)
        T[:2, 3] = rng.uniform(-0.06, 0.06, size=2)
        T[2, 3] = 0.2
        bodies.append(spawn_object(client, obj, T))
        for _ in range(PHYSICS_HZ // 3):
            p.stepSimulation(physicsClientId=client)
    settle(client, bodies, max_seconds=2.0)
    for w in walls:
        p.removeBody(w, physicsClientId=client)
    settle(client, bodies, max_seconds=2.0)
    return bodies


def _place_packed(client: int, objects: list[SceneObject], rng: np.random.Generator) -> list[int]:
    import pybullet as p
    bodies, placed = [], []
    for obj in objects:
        for _ in range(80):
            T = np.eye(4)
            yaw = rng.uniform(0, 2 * np.pi)
            T[:3, :3] = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0],
                                  [0, 0, 1]])
            T[:2, 3] = rng.uniform(-0.11, 0.11, size=2)
            T[2, 3] = -obj.mesh.bounds[0, 2] + 0.002
            body = spawn_object(client, obj, T)
            p.performCollisionDetection(physicsClientId=client)
            touching = any(p.getClosestPoints(body, b, 0.003, physicsClientId=client)
                           for b in bodies if b is not None)
            if not touching:
                bodies.append(body)
                placed.append(obj)
                break
            p.removeBody(body, physicsClientId=client)
        else:
            bodies.append(None)   # no free spot: the object is left out
    settle(client, [b for b in bodies if b is not None], max_seconds=2.0)
    return bodies


def generate_scene(seed: int, num_objects: int, layout: str = 'pile',
                   split: str = 'train', size_levels: int | None = None) -> Scene:
    """A settled random scene, identical for identical arguments.

    size_levels (data generation only) quantises object sizes so meshes repeat across
    scenes (see `_make_object_parts`); None, the default, is the benchmark's scenes.
    """
    import pybullet as p
    if layout not in ('pile', 'packed'):
        raise InputError(f"unknown scene layout '{layout}': expected 'pile' or 'packed'")
    if not 1 <= int(num_objects) <= 30:
        raise InputError(f'num_objects must be in 1..30, got {num_objects}')
    rng = np.random.default_rng([int(seed), 7919])
    names = object_split(split)
    # Mesh objects and primitive families drawn about 3:1 so every scene mixes both.
    meshes = [n for n in names if n not in PRIMITIVES]
    chosen = [str(rng.choice(meshes)) if rng.random() < 0.7 else str(rng.choice(PRIMITIVES))
              for _ in range(int(num_objects))]
    if size_levels is not None and not 1 <= int(size_levels) <= 1000:
        raise InputError(f'size_levels must be None or in 1..1000, got {size_levels}')
    objects = [build_object(i + 1, n, rng, size_levels) for i, n in enumerate(chosen)]
    for o in objects:
        o.urdf_path = write_object_urdf(o)
    client = new_physics_client()
    try:
        add_table(client)
        if layout == 'pile':
            bodies = _drop_pile(client, objects, rng)
        else:
            bodies = _place_packed(client, objects, rng)
        kept = []
        for obj, body in zip(objects, bodies):
            if body is None:
                continue
            obj.pose = body_pose(client, body)
            if in_workspace(obj.pose):
                kept.append(obj)
    finally:
        p.disconnect(client)
    for i, obj in enumerate(kept):
        obj.object_id = i + 1
    return Scene(objects=kept, seed=int(seed), layout=layout, split=split)


# ----------------------------------------------------------------------------- camera + rendering

def camera_look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """T_world_camera of an OpenCV optical frame at `eye` looking at `target`."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:          # looking straight down: any right vector will do
        x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


def sample_camera_pose(rng: np.random.Generator, distance=(0.45, 0.75), elevation_deg=(40, 80),
                       look_at=(0.0, 0.0, 0.0)) -> np.ndarray:
    """Random T_world_camera on a sphere cap around the workspace, looking at `look_at`."""
    target = np.asarray(look_at, dtype=np.float64)
    r = rng.uniform(*distance)
    el = np.deg2rad(rng.uniform(*elevation_deg))
    az = rng.uniform(0, 2 * np.pi)
    eye = target + r * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
    return camera_look_at(eye, target)


def apply_depth_noise(depth: np.ndarray, rng: np.random.Generator,
                      scale_noise: bool = True) -> np.ndarray:
    """Dex-Net style depth noise plus stereo-like dropout.

    A Gamma(1000, 0.001) scale, half the time smooth Gaussian noise (sigma 5 mm
    on a quarter-resolution grid), and dropout at depth edges. The Gamma scale is a
    whole-image error of about 3 % (std); `scale_noise=False` leaves it out (a
    well-calibrated camera).
    """
    from scipy.ndimage import maximum_filter, minimum_filter, zoom
    d = np.array(depth, dtype=np.float32, copy=True)
    valid = np.isfinite(d) & (d > 0)
    scale = rng.gamma(1000.0, 0.001)   # drawn either way: same random stream
    if scale_noise:
        d *= np.float32(scale)
    h, w = d.shape
    if rng.random() < 0.5:
        gh, gw = max(h // 4, 1), max(w // 4, 1)
        grid = rng.normal(0.0, 0.005, size=(gh, gw)).astype(np.float32)
        d += zoom(grid, (h / gh, w / gw), order=1)[:h, :w]
    # Stereo sensors lose pixels where depth jumps (occlusion shadows, object edges).
    filled = np.where(valid, d, np.float32(10.0))
    jump = (maximum_filter(filled, size=3) - minimum_filter(filled, size=3)) > 0.015
    drop = (jump & (rng.random((h, w)) < 0.5)) | (rng.random((h, w)) < 0.002)
    d[drop | ~valid] = np.nan
    d[(d < 0.1) | (d > 2.0)] = np.nan
    return d


def _raycast_scene(scene: Scene):
    import open3d as o3d
    rc = o3d.t.geometry.RaycastingScene()
    geometry_to_label = []
    table = trimesh.creation.box([2.0, 2.0, 0.05])
    table.apply_translation([0, 0, -0.025])
    for label, mesh in [(0, table)] + [(o.object_id, o.mesh_world()) for o in scene.objects]:
        tm = o3d.t.geometry.TriangleMesh()
        tm.vertex.positions = o3d.core.Tensor(np.asarray(mesh.vertices, dtype=np.float32))
        tm.triangle.indices = o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.int32))
        rc.add_triangles(tm)
        geometry_to_label.append(label)
    return rc, np.array(geometry_to_label, dtype=np.int32)


@lru_cache(maxsize=8)
def _camera_rays(intrinsics: CameraIntrinsics) -> np.ndarray:
    """(H, W, 3) camera-frame ray directions with z = 1, so t_hit is the z-depth."""
    v, u = np.mgrid[0:intrinsics.height, 0:intrinsics.width].astype(np.float64)
    dirs = np.stack([(u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy,
                     np.ones_like(u)], axis=-1).astype(np.float32)
    dirs.setflags(write=False)
    return dirs


def render_rgbd(scene: Scene, intrinsics: CameraIntrinsics, T_world_camera: np.ndarray,
                rng: np.random.Generator | None = None, noise: bool = True,
                scale_noise: bool = True) -> RGBDFrame:
    """Ray-cast depth (m, NaN = no return), instance labels and Lambertian colour."""
    import open3d as o3d
    intrinsics.validate()
    T = np.asarray(T_world_camera, dtype=np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise InputError(f'T_world_camera must be a finite 4x4 matrix, got shape {T.shape}')
    rng = rng if rng is not None else np.random.default_rng(scene.seed)
    h, w = intrinsics.height, intrinsics.width
    dirs = _camera_rays(intrinsics) @ T[:3, :3].T.astype(np.float32)
    origins = np.broadcast_to(T[:3, 3].astype(np.float32), dirs.shape)
    rays = np.concatenate([origins, dirs], axis=-1)
    rc, geom_to_label = _raycast_scene(scene)
    out = rc.cast_rays(o3d.core.Tensor(rays))
    depth = out['t_hit'].numpy().astype(np.float32)
    gid = out['geometry_ids'].numpy().astype(np.int64)
    hit = np.isfinite(depth) & (gid != rc.INVALID_ID)
    labels = np.zeros((h, w), dtype=np.int32)
    labels[hit] = geom_to_label[gid[hit]]
    depth[~hit] = np.nan
    normals = out['primitive_normals'].numpy()
    max_id = max([o.object_id for o in scene.objects], default=0)
    colors = np.tile(TABLE_COLOR, (max_id + 1, 1)).astype(np.float32)
    for o in scene.objects:
        colors[o.object_id] = o.color
    base = colors[labels]
    # Light from above and slightly behind the camera; |n.l| since mesh winding may vary.
    light = np.array([0.3, 0.2, 1.0]) - 0.5 * T[:3, 2]
    light = (light / np.linalg.norm(light)).astype(np.float32)
    shade = 0.35 + 0.65 * np.abs(normals @ light)
    rgb = base * shade[..., None]
    rgb[~hit] = 0.2
    rgb += rng.normal(0, 0.01, size=rgb.shape)
    rgb = np.clip(rgb * 255.0, 0, 255).astype(np.uint8)
    if noise:
        depth = apply_depth_noise(depth, rng, scale_noise=scale_noise)
    meta = {'T_world_camera': T.tolist(), 'scene_seed': scene.seed, 'layout': scene.layout,
            'split': scene.split}
    return RGBDFrame(rgb=rgb, depth=depth, intrinsics=intrinsics, labels=labels, meta=meta)


# ----------------------------------------------------------------------------- saving samples

def save_scene_sample(scene: Scene, frame: RGBDFrame, directory: str | Path) -> Path:
    """Write a frame (recorded-frame format) plus GT meshes: objects.npz and scene.yaml.

    objects.npz holds, per object id k, `vertices_<k>` and `faces_<k>` in the
    WORLD frame; scene.yaml holds T_world_camera and per-object name/pose/scale.
    """
    import yaml

    from zerograsp_ros.geometry.rgbd import save_frame_dir
    d = save_frame_dir(frame, directory)
    arrays = {}
    for o in scene.objects:
        m = o.mesh_world()
        arrays[f'vertices_{o.object_id}'] = np.asarray(m.vertices, dtype=np.float32)
        arrays[f'faces_{o.object_id}'] = np.asarray(m.faces, dtype=np.int32)
    np.savez_compressed(d / 'objects.npz', **arrays)
    info = {'seed': scene.seed, 'layout': scene.layout, 'split': scene.split,
            'T_world_camera': frame.meta['T_world_camera'],
            'objects': [{'object_id': o.object_id, 'name': o.name, 'scale': float(o.scale),
                         'pose': np.asarray(o.pose).tolist()} for o in scene.objects]}
    (d / 'scene.yaml').write_text(yaml.safe_dump(info, sort_keys=False))
    return d


def load_scene_meshes(directory: str | Path) -> tuple[dict[int, trimesh.Trimesh], np.ndarray]:
    """Ground-truth world-frame meshes by object id and T_world_camera of a saved sample."""
    import yaml
    d = Path(directory)
    if not (d / 'objects.npz').is_file() or not (d / 'scene.yaml').is_file():
        raise InputError(f'{d} lacks objects.npz or scene.yaml (not a saved scene sample)')
    info = yaml.safe_load((d / 'scene.yaml').read_text())
    data = np.load(d / 'objects.npz')
    meshes = {o['object_id']: trimesh.Trimesh(data[f"vertices_{o['object_id']}"],
                                              data[f"faces_{o['object_id']}"], process=False)
              for o in info['objects']}
    return meshes, np.asarray(info['T_world_camera'], dtype=np.float64)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description='Generate a simulated tabletop scene and save one '
                                             'rendered frame with ground truth.')
    ap.add_argument('--save-sample', required=True, help='output frame directory')
    ap.add_argument('--seed', type=int, default=7)
    ap.add_argument('--objects', type=int, default=5)
    ap.add_argument('--layout', default='pile', choices=('pile', 'packed'))
    ap.add_argument('--split', default='test', choices=SPLITS)
    ap.add_argument('--noise', default='calibrated', choices=('dex', 'calibrated', 'none'),
                    help='dex: the full dex model; calibrated: without its whole-image scale '
                         'error (default, so GT meshes and depth agree to a few mm)')
    args = ap.parse_args(argv)
    scene = generate_scene(args.seed, args.objects, args.layout, args.split)
    rng = np.random.default_rng(args.seed)
    T = camera_look_at([0.0, -0.45, 0.50], [0.0, 0.0, 0.03])
    frame = render_rgbd(scene, CameraIntrinsics.d435(), T, rng, noise=args.noise != 'none',
                        scale_noise=args.noise == 'dex')
    frame.meta['depth_noise'] = args.noise
    d = save_scene_sample(scene, frame, args.save_sample)
    names = ', '.join(o.name for o in scene.objects)
    print(f'saved {len(scene.objects)} objects ({names}) to {d}')


if __name__ == '__main__':
    main()
