"""Deterministic, fully populated interface messages for round-trip tests."""
import numpy as np


def _header(msg_header, seed: int, frame: str):
    msg_header.stamp.sec = 1700000000 + seed
    msg_header.stamp.nanosec = 123456789
    msg_header.frame_id = frame
    return msg_header


def _image(img, rng, h, w, encoding, channels, dtype):
    data = rng.integers(0, 255, size=(h, w, channels)).astype(dtype)
    img.height, img.width, img.encoding = h, w, encoding
    img.is_bigendian = 0
    img.step = w * channels * np.dtype(dtype).itemsize
    img.data = data.tobytes()
    return img


def make_grasp(rng, object_id):
    from zerograsp_ros.msg import Grasp
    g = Grasp()
    pos = rng.normal(size=3)
    g.pose.position.x, g.pose.position.y, g.pose.position.z = (float(v) for v in pos)
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    g.pose.orientation.x, g.pose.orientation.y, g.pose.orientation.z, g.pose.orientation.w = \
        (float(v) for v in q)
    g.width, g.depth, g.score, g.quality, g.graspness = (float(np.float32(v))
                                                         for v in rng.uniform(0, 1, 5))
    g.object_id = int(object_id)
    return g


def make_predict_request(seed: int):
    from zerograsp_ros.srv import PredictGrasps
    rng = np.random.default_rng(seed)
    req = PredictGrasps.Request()
    h, w = 12, 16
    _header(req.frame.header, seed, 'camera_color_optical_frame')
    _image(req.frame.color, rng, h, w, 'rgb8', 3, np.uint8)
    _image(req.frame.depth, rng, h, w, '16UC1', 1, np.uint16)
    ci = req.frame.camera_info
    ci.height, ci.width = h, w
    ci.k = [float(v) for v in rng.uniform(1, 600, 9)]
    ci.d = [float(v) for v in rng.normal(size=5)]
    ci.distortion_model = 'plumb_bob'
    _header(req.masks.header, seed, 'camera_color_optical_frame')
    _image(req.masks.labels, rng, h, w, '16UC1', 1, np.uint16)
    req.masks.object_ids = [1, 2, 7]
    req.masks.scores = [0.5, 0.25, 1.0]
    req.max_grasps = 17 + seed
    req.refine = bool(seed % 2)
    req.allow_unrefined = True
    req.return_reconstruction = True
    return req


def make_predict_response(seed: int):
    from geometry_msgs.msg import Point
    from sensor_msgs.msg import PointField
    from shape_msgs.msg import MeshTriangle

    from zerograsp_ros.msg import ObjectReconstruction
    from zerograsp_ros.srv import PredictGrasps
    rng = np.random.default_rng(1000 + seed)
    res = PredictGrasps.Response()
    res.success = True
    res.message = f'ok {seed} ✓'
    _header(res.grasps.header, seed, 'camera_color_optical_frame')
    res.grasps.grasps = [make_grasp(rng, i % 3 + 1) for i in range(5)]
    _header(res.reconstruction.header, seed, 'camera_color_optical_frame')
    for oid in (1, 2):
        obj = ObjectReconstruction()
        obj.object_id = oid
        obj.mesh.vertices = [Point(x=float(a), y=float(b), z=float(c))
                             for a, b, c in rng.normal(size=(4, 3))]
        obj.mesh.triangles = [MeshTriangle(vertex_indices=[0, 1, 2]),
                              MeshTriangle(vertex_indices=[1, 2, 3])]
        pts = rng.normal(size=(6, 6)).astype(np.float32)
        pc = obj.surface
        pc.height, pc.width = 1, len(pts)
        pc.fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                     for i, n in enumerate(['x', 'y', 'z', 'normal_x', 'normal_y', 'normal_z'])]
        pc.point_step, pc.row_step = 24, 24 * len(pts)
        pc.is_dense = True
        pc.data = pts.tobytes()
        obj.voxel_size = float(np.float32(0.005))
        res.reconstruction.objects.append(obj)
    res.stage_names = ['segmentation', 'network', 'refinement', 'total']
    res.stage_seconds = [float(np.float32(v)) for v in rng.uniform(0, 1, 4)]
    return res
