"""Synthetic tabletop RGB-D frames rendered with Open3D ray casting (for perception tests).

A table (box top at z = 0, world z up) with boxes and cylinders on it, seen by
a pinhole camera from above at an angle; returns the frame, ground-truth
labels (1..K in object order) and the table plane in the camera frame.
"""
import numpy as np
import open3d as o3d

from zerograsp_ros.geometry.camera import CameraIntrinsics
from zerograsp_ros.geometry.rgbd import RGBDFrame


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """4x4 camera-to-world pose of an optical frame (z forward, y down) looking at target."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = eye
    return T


def default_objects():
    """(kind, size, xy) of three well separated objects."""
    return [('box', (0.06, 0.05, 0.10), (-0.10, 0.02)),
            ('cylinder', (0.035, 0.12), (0.06, -0.06)),
            ('box', (0.08, 0.04, 0.05), (0.08, 0.10))]


def render_tabletop(objects=None, width=320, height=240, eye=(0.0, -0.45, 0.55),
                    with_table=True, seed=0):
    objects = default_objects() if objects is None else objects
    intr = CameraIntrinsics(fx=0.9 * width, fy=0.9 * width, cx=width / 2, cy=height / 2,
                            width=width, height=height)
    scene = o3d.t.geometry.RaycastingScene()
    meshes = []
    if with_table:
        table = o3d.geometry.TriangleMesh.create_box(1.2, 1.2, 0.05)
        table.translate((-0.6, -0.6, -0.05))
        meshes.append(table)
    for kind, size, (x, y) in objects:
        if kind == 'box':
            m = o3d.geometry.TriangleMesh.create_box(*size)
            m.translate((x - size[0] / 2, y - size[1] / 2, 0.0))
        else:
            m = o3d.geometry.TriangleMesh.create_cylinder(radius=size[0], height=size[1],
                                                          resolution=40)
            m.translate((x, y, size[1] / 2))
        meshes.append(m)
    geometry_ids = [scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(m))
                    for m in meshes]
    cam_to_world = look_at(eye)
    world_to_cam = np.linalg.inv(cam_to_world)
    rays = scene.create_rays_pinhole(o3d.core.Tensor(intr.K), o3d.core.Tensor(world_to_cam),
                                     width, height)
    hit = scene.cast_rays(rays)
    t = hit['t_hit'].numpy()
    rays_np = rays.numpy()
    points_w = rays_np[..., :3] + rays_np[..., 3:] * t[..., None]
    points_c = (points_w.reshape(-1, 3) - cam_to_world[:3, 3]) @ cam_to_world[:3, :3]
    depth = points_c[:, 2].reshape(height, width).astype(np.float32)
    depth[~np.isfinite(t)] = np.nan
    gid = hit['geometry_ids'].numpy().astype(np.int64)
    labels = np.zeros((height, width), dtype=np.int32)
    first_object = 1 if with_table else 0
    for k, g in enumerate(geometry_ids[first_object:], start=1):
        labels[gid == g] = k
    rng = np.random.default_rng(seed)
    rgb = np.full((height, width, 3), 180, dtype=np.uint8)
    for k in range(1, labels.max() + 1):
        rgb[labels == k] = rng.integers(0, 255, 3)
    # Table plane z = 0 in the camera frame, normal towards the camera.
    n = world_to_cam[:3, :3] @ np.array([0.0, 0.0, 1.0])
    d = float(-(n @ world_to_cam[:3, 3]))  # the world origin lies on the table top
    plane = np.array([*n, d])
    if plane[3] < 0:
        plane = -plane
    frame = RGBDFrame(rgb=rgb, depth=depth, intrinsics=intr, frame_id='camera_color_optical_frame')
    return frame, labels, plane
