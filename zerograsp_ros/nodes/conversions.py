"""ROS message <-> numpy conversions for the perception nodes.

Hand-written because cv_bridge and sensor_msgs_py are not available on every
machine this package runs on (see the README); every size or encoding problem
raises InputError naming the cause instead of producing a garbled array.
"""
from __future__ import annotations

from dataclasses import dataclass

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, Pose, TransformStamped
import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from shape_msgs.msg import Mesh, MeshTriangle
from std_msgs.msg import Header

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import CameraIntrinsics
from zerograsp_ros.geometry.rgbd import RGBDFrame, decode_color, decode_depth, validate_frame
from zerograsp_ros.geometry.transforms import (
    check_rigid,
    matrix_to_pose,
    matrix_to_quaternion,
    pose_to_matrix,
    quaternion_to_matrix,
)
from zerograsp_ros.grasp.representation import GraspSet
from zerograsp_ros.msg import (
    Grasp,
    GraspArray,
    InstanceMasks,
    ObjectReconstruction,
    SceneReconstruction,
)
from zerograsp_ros.msg import RGBDFrame as RGBDFrameMsg

# encoding -> (numpy dtype, channels)
IMAGE_ENCODINGS = {
    'rgb8': (np.uint8, 3), 'bgr8': (np.uint8, 3), 'rgba8': (np.uint8, 4),
    'bgra8': (np.uint8, 4), 'mono8': (np.uint8, 1), '8uc1': (np.uint8, 1),
    '8uc3': (np.uint8, 3), 'mono16': (np.uint16, 1), '16uc1': (np.uint16, 1),
    '32fc1': (np.float32, 1), '32sc1': (np.int32, 1),
}
_CANONICAL = {'8uc1': '8UC1', '8uc3': '8UC3', '16uc1': '16UC1', '32fc1': '32FC1',
              '32sc1': '32SC1'}

# PointField datatype -> numpy dtype
_POINTFIELD_DTYPES = {
    PointField.INT8: np.int8, PointField.UINT8: np.uint8, PointField.INT16: np.int16,
    PointField.UINT16: np.uint16, PointField.INT32: np.int32, PointField.UINT32: np.uint32,
    PointField.FLOAT32: np.float32, PointField.FLOAT64: np.float64,
}
SURFACE_FIELDS = ('x', 'y', 'z', 'normal_x', 'normal_y', 'normal_z')
# Where answers are when a request's header has no frame_id (the model works in it).
DEFAULT_CAMERA_FRAME = 'camera_color_optical_frame'


# --------------------------------------------------------------------------- time / header

def stamp_to_seconds(stamp: Time) -> float:
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def seconds_to_stamp(seconds: float) -> Time:
    sec = int(np.floor(seconds))
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def make_header(frame_id: str, stamp: Time | float) -> Header:
    if not isinstance(stamp, Time):
        stamp = seconds_to_stamp(float(stamp))
    return Header(frame_id=frame_id, stamp=stamp)


# --------------------------------------------------------------------------- images

def image_to_numpy(msg: Image, what: str = 'image') -> np.ndarray:
    """sensor_msgs/Image -> (H, W) or (H, W, C) array of the encoding's dtype (a copy)."""
    enc = msg.encoding.lower()
    if enc not in IMAGE_ENCODINGS:
        raise InputError(f"{what}: unsupported encoding '{msg.encoding}' (supported: "
                         f"{', '.join(sorted(IMAGE_ENCODINGS))})")
    dtype, channels = IMAGE_ENCODINGS[enc]
    h, w = int(msg.height), int(msg.width)
    if h == 0 or w == 0:
        raise InputError(f'{what}: empty image ({w}x{h})')
    row_bytes = w * channels * np.dtype(dtype).itemsize
    step = int(msg.step)
    if step < row_bytes:
        raise InputError(f'{what}: step {step} is smaller than width*bytes per pixel '
                         f'({w}*{channels * np.dtype(dtype).itemsize} = {row_bytes})')
    data = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if data.size != step * h:
        raise InputError(f'{what}: data holds {data.size} bytes, expected step*height = '
                         f'{step}*{h} = {step * h}')
    rows = data.reshape(h, step)[:, :row_bytes]
    dt = np.dtype(dtype).newbyteorder('>' if msg.is_bigendian else '<')
    arr = np.ascontiguousarray(rows).view(dt).reshape(h, w, channels).astype(dtype)
    return arr[..., 0] if channels == 1 else arr


def numpy_to_image(array: np.ndarray, encoding: str, header: Header | None = None) -> Image:
    """(H, W[, C]) array -> sensor_msgs/Image of the given encoding (little endian)."""
    enc = encoding.lower()
    if enc not in IMAGE_ENCODINGS:
        raise InputError(f"unsupported encoding '{encoding}'")
    dtype, channels = IMAGE_ENCODINGS[enc]
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] != channels:
        raise InputError(f'{encoding} needs {channels} channel(s), got array shape {array.shape}')
    arr = np.ascontiguousarray(arr.astype(np.dtype(dtype).newbyteorder('<'), copy=False))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = _CANONICAL.get(enc, enc)
    msg.is_bigendian = 0
    msg.step = int(arr.shape[1] * arr.shape[2] * arr.itemsize)
    msg.data = arr.tobytes()
    return msg


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    k = np.asarray(msg.k, dtype=np.float64)
    if k.size != 9 or not np.any(k):
        raise InputError('camera info has no intrinsics (K is all zero)')
    intr = CameraIntrinsics.from_matrix(k, int(msg.width), int(msg.height))
    check_camera_matrix(k.reshape(3, 3), intr)
    return intr


# A pinhole K the model can use: [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with a field of view
# below this on both axes and a skew no real calibration has (the model ignores skew).
MAX_FIELD_OF_VIEW_DEG = 170.0
MAX_SKEW_RATIO = 0.01   # |s| / fx


def check_camera_matrix(K: np.ndarray, intr: CameraIntrinsics) -> None:
    """Refuse a K that is not a plausible pinhole matrix, naming what is wrong.

    (A focal length of 1e-12 px used to reach Open3D as a 'voxel_size is too small'
    internal error; K[2][2] = 0 or a large skew were used silently.)
    """
    if not np.isfinite(K).all():
        raise InputError(f'camera matrix K contains NaN/inf: {K.tolist()}')
    if abs(K[2, 2] - 1.0) > 1e-6 or abs(K[2, 0]) > 1e-9 or abs(K[2, 1]) > 1e-9:
        raise InputError(f'camera matrix K must have a last row [0, 0, 1], got {K[2].tolist()}')
    if abs(K[1, 0]) > 1e-9:
        raise InputError(f'camera matrix K[1][0] must be 0, got {K[1, 0]}')
    if abs(K[0, 1]) > MAX_SKEW_RATIO * intr.fx:
        raise InputError(f'camera matrix skew K[0][1] = {K[0, 1]:g} is implausible (more than '
                         f'{MAX_SKEW_RATIO:g} x fx = {MAX_SKEW_RATIO * intr.fx:g}; the model '
                         'assumes no skew)')
    half = np.tan(np.radians(MAX_FIELD_OF_VIEW_DEG / 2))
    for name, f, size in (('fx', intr.fx, intr.width), ('fy', intr.fy, intr.height)):
        if f < 0.5 * size / half:
            raise InputError(f'camera focal length {name} = {f:g} px is implausibly small for '
                             f'a {size} px image (field of view over '
                             f'{MAX_FIELD_OF_VIEW_DEG:g} deg); is CameraInfo.k in pixels?')
    if not (0 <= intr.cx <= intr.width and 0 <= intr.cy <= intr.height):
        raise InputError(f'camera principal point ({intr.cx:g}, {intr.cy:g}) lies outside the '
                         f'{intr.width}x{intr.height} image')


def intrinsics_to_camera_info(intr: CameraIntrinsics, header: Header | None = None) -> CameraInfo:
    msg = CameraInfo()
    if header is not None:
        msg.header = header
    msg.width, msg.height = int(intr.width), int(intr.height)
    msg.k = [float(x) for x in intr.K.reshape(-1)]
    msg.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.distortion_model = 'plumb_bob'
    msg.d = [0.0] * 5
    return msg


# --------------------------------------------------------------------------- RGB-D frames

def frame_msg_is_empty(msg: RGBDFrameMsg) -> bool:
    """True for a default-constructed RGBDFrame (no image data, no size): 'use the latest frame'.

    A frame with a size or colour but no depth bytes is broken, not absent: it must be
    reported, not silently replaced by the camera's latest frame.
    """
    return all(len(image.data) == 0 and image.width == 0 and image.height == 0
               for image in (msg.depth, msg.color))


def rgbd_msg_to_frame(msg: RGBDFrameMsg, min_valid_fraction: float = 0.0) -> RGBDFrame:
    """RGBDFrame message -> validated core RGBDFrame (InputError names the problem)."""
    if len(msg.depth.data) == 0:
        raise InputError('empty RGB-D frame (depth image has no data)')
    if len(msg.color.data) == 0:
        raise InputError('empty RGB-D frame (colour image has no data)')
    color = image_to_numpy(msg.color, 'colour image')
    depth_raw = image_to_numpy(msg.depth, 'depth image')
    rgb = decode_color(color, msg.color.encoding)
    depth = decode_depth(depth_raw, msg.depth.encoding)
    intr = camera_info_to_intrinsics(msg.camera_info)
    frame = RGBDFrame(rgb=rgb, depth=depth, intrinsics=intr,
                      frame_id=msg.header.frame_id or DEFAULT_CAMERA_FRAME,
                      stamp=stamp_to_seconds(msg.header.stamp))
    validate_frame(frame, min_valid_fraction)
    return frame


def response_header(header: Header, default_frame: str = DEFAULT_CAMERA_FRAME) -> Header:
    """The header of an answer about a frame: its frame id, or the camera frame when empty.

    A pose always carries a frame: a request whose frame has no frame_id is answered
    in the camera's optical frame (where the model's poses are).
    """
    return Header(stamp=header.stamp, frame_id=header.frame_id or default_frame)


def frame_to_rgbd_msg(frame: RGBDFrame, stamp: Time | float | None = None) -> RGBDFrameMsg:
    """Core frame -> RGBDFrame message (rgb8 colour, 16UC1 millimetre depth)."""
    header = make_header(frame.frame_id, frame.stamp if stamp is None else stamp)
    depth = np.nan_to_num(np.asarray(frame.depth, dtype=np.float64), nan=0.0, posinf=0.0,
                          neginf=0.0)
    depth_mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
    msg = RGBDFrameMsg()
    msg.header = header
    msg.color = numpy_to_image(np.asarray(frame.rgb, dtype=np.uint8), 'rgb8', header)
    msg.depth = numpy_to_image(depth_mm, '16UC1', header)
    msg.camera_info = intrinsics_to_camera_info(frame.intrinsics, header)
    return msg


# --------------------------------------------------------------------------- instance masks

def masks_msg_is_empty(msg: InstanceMasks) -> bool:
    """True for default-constructed masks: 'segment the frame'.

    A sized label image without data, or ids without labels, are broken masks (reported).
    """
    return len(msg.labels.data) == 0 and msg.labels.width == 0 and msg.labels.height == 0 \
        and len(msg.object_ids) == 0


def masks_msg_to_labels(msg: InstanceMasks, shape: tuple[int, int] | None = None) -> np.ndarray:
    """InstanceMasks -> (H, W) int32 labels; InputError on encoding/size problems."""
    if len(msg.labels.data) == 0:
        raise InputError('instance masks are empty (label image has no data)')
    if msg.labels.encoding.lower() not in ('16uc1', 'mono16', '32sc1', 'mono8', '8uc1'):
        raise InputError(f"instance masks: unsupported label encoding '{msg.labels.encoding}' "
                         '(expected 16UC1 or 32SC1)')
    labels = image_to_numpy(msg.labels, 'label image').astype(np.int32)
    if shape is not None and labels.shape != tuple(shape):
        raise InputError(f'label image size {labels.shape[1]}x{labels.shape[0]} does not match '
                         f'the frame size {shape[1]}x{shape[0]}')
    if (labels < 0).any():
        raise InputError('label image has negative ids')
    listed = sorted(int(i) for i in msg.object_ids)
    if listed:  # an empty list = not given; a given one must agree with the image
        present = sorted(int(i) for i in np.unique(labels) if i > 0)
        if listed != present:
            raise InputError(f'instance masks list object ids {listed} but the label image '
                             f'holds ids {present}')
    return labels


def labels_to_masks_msg(labels: np.ndarray, header: Header,
                        scores: dict[int, float] | None = None) -> InstanceMasks:
    labels = np.asarray(labels)
    ids = [int(i) for i in np.unique(labels) if i > 0]
    if ids and max(ids) > 65535:
        raise InputError(f'object id {max(ids)} does not fit a 16UC1 label image')
    msg = InstanceMasks()
    msg.header = header
    msg.labels = numpy_to_image(labels.astype(np.uint16), '16UC1', header)
    msg.object_ids = ids
    msg.scores = [float((scores or {}).get(i, 1.0)) for i in ids]
    return msg


# --------------------------------------------------------------------------- grasps

def grasps_to_msg(grasps: GraspSet, header: Header) -> GraspArray:
    """GraspSet -> GraspArray; grasps with any non-finite value are dropped (never NaN out)."""
    grasps = grasps.subset(grasps.finite_mask())
    msg = GraspArray()
    msg.header = header
    if len(grasps) == 0:
        return msg
    quats = matrix_to_quaternion(grasps.rotations)  # x, y, z, w
    for i in range(len(grasps)):
        g = Grasp()
        t = grasps.translations[i]
        g.pose.position.x, g.pose.position.y, g.pose.position.z = (float(v) for v in t)
        q = quats[i]
        (g.pose.orientation.x, g.pose.orientation.y, g.pose.orientation.z,
         g.pose.orientation.w) = (float(v) for v in q)
        g.width = float(grasps.widths[i])
        g.depth = float(grasps.depths[i])
        g.score = float(grasps.scores[i])
        g.quality = float(grasps.qualities[i])
        g.graspness = float(grasps.graspness[i])
        g.object_id = int(grasps.object_ids[i])
        msg.grasps.append(g)
    return msg


def msg_to_grasps(msg: GraspArray) -> GraspSet:
    """GraspArray -> GraspSet; InputError for NaN/inf or degenerate orientations."""
    n = len(msg.grasps)
    if n == 0:
        return GraspSet.empty()
    t = np.array([[g.pose.position.x, g.pose.position.y, g.pose.position.z]
                  for g in msg.grasps], dtype=np.float64)
    q = np.array([[g.pose.orientation.x, g.pose.orientation.y, g.pose.orientation.z,
                   g.pose.orientation.w] for g in msg.grasps], dtype=np.float64)
    scalars = np.array([[g.width, g.depth, g.score, g.quality, g.graspness]
                        for g in msg.grasps], dtype=np.float64)
    if not (np.isfinite(t).all() and np.isfinite(scalars).all()):
        raise InputError('grasp array contains NaN/inf in a pose, width, depth or score')
    R = quaternion_to_matrix(q, 'grasp')
    return GraspSet(R, t, scalars[:, 0], scalars[:, 1], scalars[:, 2], scalars[:, 3],
                    scalars[:, 4], np.array([g.object_id for g in msg.grasps], dtype=np.int32))


# --------------------------------------------------------------------------- poses
# (the maths and its tolerance policy: zerograsp_ros.geometry.transforms)

def matrix_to_pose_msg(T: np.ndarray) -> Pose:
    """4x4 -> geometry_msgs/Pose (the rotation projected onto SO(3))."""
    position, q = matrix_to_pose(T)
    p = Pose()
    p.position.x, p.position.y, p.position.z = (float(v) for v in position)
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = (float(v) for v in q)
    return p


def pose_msg_to_matrix(pose: Pose, what: str = 'pose') -> np.ndarray:
    """geometry_msgs/Pose -> 4x4; InputError for NaN/inf or a zero or non-unit quaternion."""
    o = pose.orientation
    return pose_to_matrix([pose.position.x, pose.position.y, pose.position.z],
                          [o.x, o.y, o.z, o.w], what)


def transform_stamped_from_matrix(T: np.ndarray, parent_frame: str, child_frame: str,
                                  stamp: Time | float) -> TransformStamped:
    """4x4 pose of child_frame in parent_frame -> TransformStamped (what tf2 broadcasts)."""
    if not parent_frame or not child_frame:
        raise InputError('a transform needs both a parent and a child frame id')
    pose = matrix_to_pose_msg(check_rigid(T, f'transform {parent_frame} -> {child_frame}'))
    msg = TransformStamped()
    msg.header = make_header(parent_frame, stamp)
    msg.child_frame_id = child_frame
    msg.transform.translation.x = pose.position.x
    msg.transform.translation.y = pose.position.y
    msg.transform.translation.z = pose.position.z
    msg.transform.rotation = pose.orientation
    return msg


def transform_stamped_to_matrix(msg: TransformStamped) -> tuple[str, str, np.ndarray]:
    """TransformStamped -> (parent frame, child frame, 4x4); InputError for a bad quaternion."""
    t, r = msg.transform.translation, msg.transform.rotation
    T = pose_to_matrix([t.x, t.y, t.z], [r.x, r.y, r.z, r.w],
                       f'transform {msg.header.frame_id} -> {msg.child_frame_id}')
    return msg.header.frame_id, msg.child_frame_id, T


# --------------------------------------------------------------------------- point clouds

def points_to_cloud(fields: dict[str, np.ndarray], header: Header) -> PointCloud2:
    """Named (N,) float32 columns -> unorganised little-endian PointCloud2 (height 1)."""
    names = list(fields)
    n = len(next(iter(fields.values()))) if fields else 0
    cols = []
    for name in names:
        col = np.asarray(fields[name], dtype=np.float32).reshape(-1)
        if len(col) != n:
            raise InputError(f"point cloud field '{name}' has {len(col)} values, expected {n}")
        cols.append(col)
    data = np.ascontiguousarray(np.stack(cols, axis=1) if cols else np.zeros((0, 0), np.float32),
                                dtype='<f4')
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = 1, int(n)
    msg.fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, name in enumerate(names)]
    msg.is_bigendian = False
    msg.point_step = 4 * len(names)
    msg.row_step = msg.point_step * int(n)
    msg.data = data.tobytes()
    msg.is_dense = bool(np.isfinite(data).all())
    return msg


def cloud_to_points(msg: PointCloud2, names=('x', 'y', 'z')) -> np.ndarray:
    """PointCloud2 -> (N, len(names)) float32 array of the named fields (any layout)."""
    n = int(msg.width) * int(msg.height)
    by_name = {f.name: f for f in msg.fields}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise InputError(f'point cloud lacks field(s) {missing} (has {sorted(by_name)})')
    step = int(msg.point_step)
    data = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if data.size < n * step:
        raise InputError(f'point cloud data holds {data.size} bytes, expected '
                         f'{n} points * {step} bytes')
    if n == 0:
        return np.zeros((0, len(names)), dtype=np.float32)
    rows = data[: n * step].reshape(n, step) if int(msg.height) <= 1 else \
        data.reshape(int(msg.height), int(msg.row_step))[:, : int(msg.width) * step] \
        .reshape(n, step)
    order = '>' if msg.is_bigendian else '<'
    out = np.empty((n, len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        f = by_name[name]
        if f.datatype not in _POINTFIELD_DTYPES:
            raise InputError(f"point cloud field '{name}' has unknown datatype {f.datatype}")
        dt = np.dtype(_POINTFIELD_DTYPES[f.datatype]).newbyteorder(order)
        if f.offset + dt.itemsize > step:
            raise InputError(f"point cloud field '{name}' lies outside the point step")
        out[:, j] = np.ascontiguousarray(rows[:, f.offset:f.offset + dt.itemsize]).view(dt)[:, 0]
    return out


# --------------------------------------------------------------------------- reconstructions

@dataclass
class ObjectShape:
    """A reconstructed object as read back from a message (same fields as the model's)."""

    object_id: int
    points: np.ndarray     # (N, 3) float32 surface points
    normals: np.ndarray    # (N, 3) float32 unit normals
    vertices: np.ndarray   # (V, 3) float32
    faces: np.ndarray      # (F, 3) int64
    voxel_size: float


def object_to_msg(obj, header: Header, include_mesh: bool = True) -> ObjectReconstruction:
    """Any object with object_id, points, normals, vertices, faces, voxel_size -> message."""
    msg = ObjectReconstruction()
    msg.object_id = int(obj.object_id)
    points = np.asarray(obj.points, dtype=np.float32).reshape(-1, 3)
    normals = np.asarray(obj.normals, dtype=np.float32).reshape(-1, 3) \
        if obj.normals is not None else np.zeros_like(points)
    keep = np.isfinite(points).all(1) & np.isfinite(normals).all(1)
    points, normals = points[keep], normals[keep]
    msg.surface = points_to_cloud(dict(zip(SURFACE_FIELDS, [*points.T, *normals.T])), header)
    mesh = Mesh()
    if not include_mesh:  # refinement needs only the surface points
        msg.mesh = mesh
        msg.voxel_size = float(obj.voxel_size)
        return msg
    vertices = np.asarray(obj.vertices if obj.vertices is not None else np.zeros((0, 3)),
                          dtype=np.float64).reshape(-1, 3)
    faces = np.asarray(obj.faces if obj.faces is not None else np.zeros((0, 3)),
                       dtype=np.int64).reshape(-1, 3)
    if len(faces) and (faces.min() < 0 or faces.max() >= len(vertices)):
        raise InputError(f'object {msg.object_id}: mesh face index out of range')
    if not np.isfinite(vertices).all():
        raise InputError(f'object {msg.object_id}: mesh has NaN/inf vertices')
    mesh.vertices = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in vertices]
    mesh.triangles = [MeshTriangle(vertex_indices=[int(a), int(b), int(c)]) for a, b, c in faces]
    msg.mesh = mesh
    msg.voxel_size = float(obj.voxel_size)
    return msg


def msg_to_object(msg: ObjectReconstruction) -> ObjectShape:
    cloud = cloud_to_points(msg.surface, SURFACE_FIELDS) if msg.surface.width else \
        np.zeros((0, 6), np.float32)
    vertices = np.array([[p.x, p.y, p.z] for p in msg.mesh.vertices], dtype=np.float32) \
        .reshape(-1, 3)
    faces = np.array([list(t.vertex_indices) for t in msg.mesh.triangles], dtype=np.int64) \
        .reshape(-1, 3)
    if len(faces) and faces.max() >= len(vertices):
        raise InputError(f'object {msg.object_id}: mesh face index out of range')
    points, normals = cloud[:, :3], cloud[:, 3:]
    if not np.isfinite(points).all():
        raise InputError(f'object {msg.object_id}: surface points contain NaN/inf')
    return ObjectShape(int(msg.object_id), points, normals, vertices, faces,
                       float(msg.voxel_size))


def scene_to_msg(objects, header: Header, include_mesh: bool = True) -> SceneReconstruction:
    msg = SceneReconstruction()
    msg.header = header
    msg.objects = [object_to_msg(o, header, include_mesh) for o in objects]
    return msg


def msg_to_scene(msg: SceneReconstruction) -> list[ObjectShape]:
    return [msg_to_object(o) for o in msg.objects]


def scene_points(objects) -> tuple[np.ndarray, np.ndarray]:
    """All objects' surface points (M, 3) and the object id of each point (M,)."""
    pts = [np.asarray(o.points, dtype=np.float32).reshape(-1, 3) for o in objects]
    ids = [np.full(len(p), int(o.object_id), dtype=np.int32) for p, o in zip(pts, objects)]
    if not pts:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.int32)
    return np.concatenate(pts), np.concatenate(ids)
