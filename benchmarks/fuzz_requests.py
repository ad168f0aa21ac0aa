"""Request generator of benchmarks/fuzz_services.py: seeded, by category.

Each draw yields (service, category, malformed, [requests]): malformed is True when
the request must be refused, False when it is valid, None when a random mutation
may or may not leave it valid. Real frames: the shipped sample and frames captured
from the running simulated cell.
"""
from __future__ import annotations

import copy
import time

import numpy as np

CAMERA_FRAME = 'camera_color_optical_frame'

# category -> (service, weight per 1000 requests)
MIX = {   # valid requests run the model (seconds each on 2 shared cores): a small share
    ('predict_grasps', 'valid_latest'): 3, ('predict_grasps', 'valid_frame'): 2,
    ('predict_grasps', 'empty_frame_id'): 2, ('predict_grasps', 'mutated_real_frame'): 120,
    ('predict_grasps', 'byte_noise_frame'): 60, ('predict_grasps', 'implausible_intrinsics'): 70,
    ('predict_grasps', 'hostile_masks'): 140, ('predict_grasps', 'many_ids_labels'): 30,
    ('predict_grasps', 'scattered_32_ids'): 3, ('predict_grasps', 'image_4k'): 7,
    ('predict_grasps', 'broken_sizes'): 60,
    ('refine_grasps', 'valid'): 25, ('refine_grasps', 'grasp_defect'): 100,
    ('refine_grasps', 'scene_defect'): 100, ('refine_grasps', 'frame_defect'): 35,
    ('refine_grasps', 'many_grasps'): 8, ('refine_grasps', 'huge_reconstruction'): 2,
    ('pick', 'explicit_dry_run'): 110, ('pick', 'bad_object_id'): 15,
    ('pick', 'best_dry_run'): 1,
}
INTRINSICS_DEFECTS = ('tiny_focal', 'k22_zero', 'absurd_skew', 'nan', 'negative_focal',
                      'principal_outside', 'all_zero', 'k10_nonzero')
MASK_DEFECTS = ('too_many_ids_33', 'tiny_object', 'scores_wrong_length', 'scores_nan',
                'scores_out_of_range', 'inconsistent_ids', 'wrong_size', 'negative_32sc1',
                'float_encoding', 'sized_without_data', 'ids_without_labels')
ENCODINGS = ('rgb8', 'bgr8', 'mono8', '16UC1', '32FC1', '32SC1', 'mono16', 'yuv422',
             'bayer_rggb8', '', 'RGB8', '8UC3', '64FC1', 'rgba8')



def frame_4k():
    """A 3840x2160 RGB-D frame with one object: the image-size limit must refuse it fast."""
    from zerograsp_ros.geometry.camera import CameraIntrinsics
    from zerograsp_ros.msg import RGBDFrame
    from zerograsp_ros.nodes.conversions import (
        intrinsics_to_camera_info,
        make_header,
        numpy_to_image,
    )

    h, w = 2160, 3840
    header = make_header(CAMERA_FRAME, time.time())
    depth = np.full((h, w), 700, np.uint16)
    depth[900:1200, 1700:2000] = 640
    return RGBDFrame(header=header,
                     color=numpy_to_image(np.zeros((h, w, 3), np.uint8), 'rgb8', header),
                     depth=numpy_to_image(depth, '16UC1', header),
                     camera_info=intrinsics_to_camera_info(
                         CameraIntrinsics(2600.0, 2600.0, w / 2, h / 2, w, h), header))


class RequestFactory:
    def __init__(self, sample_dir, captured_frames):
        from zerograsp_ros.geometry.rgbd import load_frame_dir
        from zerograsp_ros.nodes.conversions import frame_to_rgbd_msg

        sample = load_frame_dir(sample_dir)
        self.sample_labels = sample.labels
        self.frames = [frame_to_rgbd_msg(sample, stamp=1.0)] + list(captured_frames)
        self.sample_msg = self.frames[0]

    # ----------------------------------------------------------------- helpers

    def _frame(self, rng, k=None):
        msg = copy.deepcopy(self.frames[int(rng.integers(len(self.frames))) if k is None
                                        else k])
        msg.header.stamp.sec = int(time.time())
        return msg

    def _predict(self, frame=None, masks=None, **kw):
        from zerograsp_ros.srv import PredictGrasps

        r = PredictGrasps.Request(**kw)
        if frame is not None:
            r.frame = frame
        if masks is not None:
            r.masks = masks
        return r

    def _masks(self, labels, header, encoding='16UC1'):
        from zerograsp_ros.msg import InstanceMasks
        from zerograsp_ros.nodes.conversions import numpy_to_image

        m = InstanceMasks(header=header)
        m.labels = numpy_to_image(labels.astype(np.int32 if encoding == '32SC1'
                                                else np.uint16), encoding, header)
        return m

    def valid_latest(self):
        return self._predict(refine=False)

    # ----------------------------------------------------------------- draws

    def chunk(self, seed, n):
        rng = np.random.default_rng(seed)
        keys = list(MIX)
        weights = np.array([MIX[k] for k in keys], float)
        weights /= weights.sum()
        sent = 0
        # a burst of 8 concurrent requests in every 4th chunk
        burst_at = int(rng.integers(n // 2)) if n >= 16 and seed % 4 == 0 else -1
        while sent < n:
            if sent >= burst_at >= 0:
                burst_at = -1
                yield ('predict_grasps', 'concurrent_8', False,
                       [self._predict(self._frame(rng, 0), refine=False) for _ in range(8)])
                sent += 8
                continue
            service, category = keys[int(rng.choice(len(keys), p=weights))]
            malformed, request = getattr(self, f'{service}_{category}')(rng)
            yield service, category, malformed, [request]
            sent += 1

    # predict_grasps ------------------------------------------------------

    def predict_grasps_valid_latest(self, rng):
        return False, self._predict(refine=bool(rng.integers(2)),
                                    max_grasps=int(rng.choice([0, 1, 5, 2**32 - 1])))

    def predict_grasps_valid_frame(self, rng):
        return False, self._predict(self._frame(rng), refine=bool(rng.integers(2)))

    def predict_grasps_empty_frame_id(self, rng):
        frame = self._frame(rng)
        for h in (frame.header, frame.color.header, frame.depth.header, frame.camera_info.header):
            h.frame_id = ''
        return False, self._predict(frame, refine=False)

    def predict_grasps_mutated_real_frame(self, rng):
        """1-3 random field mutations of a real frame (may stay valid)."""
        frame = self._frame(rng)
        for _ in range(int(rng.integers(1, 4))):
            image = frame.color if rng.integers(2) else frame.depth
            what = rng.choice(['encoding', 'width', 'height', 'step', 'truncate', 'extend',
                               'bigendian', 'k_scale', 'frame_id', 'flip_bytes', 'nan_depth',
                               'info_size'])
            if what == 'encoding':
                image.encoding = str(rng.choice(ENCODINGS))
            elif what in ('width', 'height'):
                delta = int(rng.choice([-1, 1, -image.width, 7, 2**20]))
                setattr(image, what, max(0, getattr(image, what) + delta))
            elif what == 'step':
                image.step = int(rng.choice([0, max(0, image.step - 1), image.step + 3,
                                             2**31]))
            elif what == 'truncate':
                image.data = bytes(image.data)[:int(rng.integers(len(image.data) + 1))]
            elif what == 'extend':
                image.data = bytes(image.data) + bytes(int(rng.integers(1, 4096)))
            elif what == 'bigendian':
                image.is_bigendian = 1 - image.is_bigendian
            elif what == 'k_scale':
                k = list(frame.camera_info.k)
                k[int(rng.integers(9))] *= float(rng.choice([0.0, -1.0, 1e-9, 1e9, 1.01]))
                frame.camera_info.k = k
            elif what == 'frame_id':
                frame.header.frame_id = str(rng.choice(['', 'x' * 300, 'other_frame', '/']))
            elif what == 'flip_bytes':
                data = bytearray(image.data)
                if data:
                    idx = rng.integers(len(data), size=min(len(data), 2000))
                    for i in idx:
                        data[i] = int(rng.integers(256))
                    image.data = bytes(data)
            elif what == 'nan_depth':
                frame.depth.encoding = '32FC1'
                frame.depth.step = frame.depth.width * 4
                frame.depth.data = np.full(frame.depth.width * frame.depth.height, np.nan,
                                           '<f4').tobytes()
            elif what == 'info_size':
                frame.camera_info.width = max(0, frame.camera_info.width +
                                              int(rng.choice([-1, 1, 1000])))
        return None, self._predict(frame, refine=bool(rng.integers(4) == 0))

    def predict_grasps_byte_noise_frame(self, rng):
        """Random sizes, steps, encodings and random bytes."""
        from zerograsp_ros.msg import RGBDFrame

        frame = RGBDFrame()
        for image in (frame.color, frame.depth):
            image.width, image.height = int(rng.integers(0, 70)), int(rng.integers(0, 70))
            image.encoding = str(rng.choice(ENCODINGS))
            image.step = int(rng.integers(0, 300))
            image.data = rng.bytes(int(rng.integers(0, 20000)))
            image.is_bigendian = int(rng.integers(2))
        frame.camera_info.k = [float(v) for v in rng.normal(0, 500, 9)]
        frame.camera_info.width, frame.camera_info.height = frame.color.width, frame.color.height
        return None, self._predict(frame, refine=False)

    def predict_grasps_implausible_intrinsics(self, rng):
        frame = self._frame(rng)
        k = np.array(frame.camera_info.k, float).reshape(3, 3)
        defect = rng.choice(INTRINSICS_DEFECTS)
        if defect == 'tiny_focal':
            k[0, 0] = k[1, 1] = float(rng.choice([1e-12, 1e-6, 1.0]))
        elif defect == 'k22_zero':
            k[2, 2] = 0.0
        elif defect == 'absurd_skew':
            k[0, 1] = float(rng.choice([1e3, -1e6, 1e12]))
        elif defect == 'nan':
            k[int(rng.integers(2)), int(rng.integers(3))] = float('nan')
        elif defect == 'negative_focal':
            k[1, 1] = -k[1, 1]
        elif defect == 'principal_outside':
            k[0, 2] = float(rng.choice([-500.0, 1e6]))
        elif defect == 'all_zero':
            k[:] = 0.0
        elif defect == 'k10_nonzero':
            k[1, 0] = 3.0
        frame.camera_info.k = [float(v) for v in k.ravel()]
        return True, self._predict(frame, refine=False)

    def predict_grasps_hostile_masks(self, rng):
        frame = self._frame(rng, 0)
        labels = self.sample_labels.copy()
        defect = rng.choice(MASK_DEFECTS)
        encoding = '16UC1'
        if defect == 'too_many_ids_33':
            labels = (np.arange(labels.size) % 33 + 1).reshape(labels.shape)
        elif defect == 'tiny_object':
            labels[5, 5] = labels.max() + 1
        elif defect == 'wrong_size':
            labels = labels[:-1]
        elif defect == 'negative_32sc1':
            labels, encoding = -labels, '32SC1'
        masks = self._masks(labels, frame.header, encoding)
        ids = sorted(int(i) for i in np.unique(labels) if i > 0)
        masks.object_ids = ids
        if defect == 'scores_wrong_length':
            masks.scores = [0.9] * (len(ids) + int(rng.choice([-1, 1, 5])))
        elif defect == 'scores_nan':
            masks.scores = [float('nan')] * len(ids)
        elif defect == 'scores_out_of_range':
            masks.scores = [float(rng.choice([-1.0, 2.0, float('inf')]))] * len(ids)
        elif defect == 'inconsistent_ids':
            masks.object_ids = [i + 100 for i in ids]
        elif defect == 'float_encoding':
            masks.labels.encoding = '32FC1'
        elif defect == 'sized_without_data':
            masks.labels.data = b''
        elif defect == 'ids_without_labels':
            masks = type(masks)(header=frame.header, object_ids=[1, 2])
        return True, self._predict(frame, masks, refine=False)

    def predict_grasps_many_ids_labels(self, rng):
        """The review's killer: random ids 0..N per pixel, object_ids empty."""
        frame = self._frame(rng, 0)
        top = int(rng.choice([1000, 10000, 65535]))
        labels = rng.integers(0, top + 1, (frame.depth.height, frame.depth.width))
        return True, self._predict(frame, self._masks(labels, frame.header), refine=False)

    def predict_grasps_scattered_32_ids(self, rng):
        """32 ids (the count limit) scattered over every pixel: each spans the scene."""
        frame = self._frame(rng, 0)
        labels = rng.integers(1, 33, (frame.depth.height, frame.depth.width))
        return True, self._predict(frame, self._masks(labels, frame.header), refine=False)

    def predict_grasps_image_4k(self, rng):
        frame = frame_4k()
        return True, self._predict(frame, refine=False)

    def predict_grasps_broken_sizes(self, rng):
        """Header sizes that disagree with the data (huge claimed sizes included)."""
        frame = self._frame(rng)
        image = frame.color if rng.integers(2) else frame.depth
        image.width, image.height = int(rng.choice([2**31, 65536, 0])), \
            int(rng.choice([2**31, 1, 65536]))
        return True, self._predict(frame, refine=False)

    # refine_grasps --------------------------------------------------------

    def _refine(self, rng, n=None, points=600):
        from zerograsp_ros.grasp.representation import GraspSet, rotation_from_axes
        from zerograsp_ros.nodes.conversions import (
            ObjectShape,
            grasps_to_msg,
            make_header,
            scene_to_msg,
        )
        from zerograsp_ros.srv import RefineGrasps

        n = int(rng.integers(1, 40)) if n is None else n
        angles = rng.uniform(0, np.pi, n)
        closing = np.stack([np.cos(angles), np.sin(angles), np.zeros(n)], 1)
        approach = np.tile([0.0, 0.0, 1.0], (n, 1))
        t = np.array([0.0, 0.0, 0.6]) + rng.normal(0, 0.01, (n, 3))
        grasps = GraspSet(rotation_from_axes(approach, closing), t, np.full(n, 0.08),
                          np.full(n, 0.02), rng.random(n), rng.random(n), rng.random(n),
                          np.ones(n, np.int32))
        pts = (rng.normal(0, 0.03, (points, 3)) + [0.0, 0.0, 0.6]).astype(np.float32)
        nrm = pts - pts.mean(0)
        nrm = (nrm / np.linalg.norm(nrm, axis=1, keepdims=True)).astype(np.float32)
        scene = scene_to_msg([ObjectShape(1, pts, nrm, np.zeros((0, 3)), np.zeros((0, 3), int),
                                          0.005)], make_header(CAMERA_FRAME, 1.0),
                             include_mesh=False)
        return RefineGrasps.Request(grasps=grasps_to_msg(grasps, make_header(CAMERA_FRAME, 1.0)),
                                    reconstruction=scene, max_grasps=int(rng.integers(0, 30)))

    def refine_grasps_valid(self, rng):
        r = self._refine(rng)
        if rng.integers(2):
            r.frame = self._frame(rng, 0)
            r.frame.header.frame_id = CAMERA_FRAME
        return False, r

    def refine_grasps_grasp_defect(self, rng):
        r = self._refine(rng)
        g = r.grasps.grasps[0]
        defect = rng.choice(['nan_position', 'inf_width', 'zero_quaternion', 'nan_quaternion',
                             'frame_mismatch', 'nan_score'])
        if defect == 'nan_position':
            g.pose.position.x = float('nan')
        elif defect == 'inf_width':
            g.width = float('inf')
        elif defect == 'zero_quaternion':
            g.pose.orientation.x = g.pose.orientation.y = 0.0
            g.pose.orientation.z = g.pose.orientation.w = 0.0
        elif defect == 'nan_quaternion':
            g.pose.orientation.w = float('nan')
        elif defect == 'frame_mismatch':
            r.grasps.header.frame_id = 'other_frame'
        elif defect == 'nan_score':
            g.score = float('nan')
        return True, r

    def refine_grasps_scene_defect(self, rng):
        r = self._refine(rng)
        cloud = r.reconstruction.objects[0].surface
        defect = rng.choice(['no_objects', 'nan_points', 'short_step', 'missing_field',
                             'truncated', 'bad_datatype', 'no_points'])
        if defect == 'no_objects':
            r.reconstruction.objects = []
        elif defect == 'nan_points':
            a = np.frombuffer(bytes(cloud.data), '<f4').copy()
            a[::5] = np.nan
            cloud.data = a.tobytes()
        elif defect == 'short_step':
            cloud.point_step = 8
        elif defect == 'missing_field':
            cloud.fields = cloud.fields[:2]
        elif defect == 'truncated':
            cloud.data = bytes(cloud.data)[:len(cloud.data) // 3]
        elif defect == 'bad_datatype':
            cloud.fields[0].datatype = 99
        elif defect == 'no_points':
            cloud.width, cloud.data = 0, b''
        return True, r

    def refine_grasps_frame_defect(self, rng):
        r = self._refine(rng)
        r.frame = self._frame(rng, 0)
        r.frame.header.frame_id = CAMERA_FRAME
        defect = rng.choice(['encoding', 'k22_zero', 'truncated', 'other_frame', 'image_4k'])
        if defect == 'encoding':
            r.frame.depth.encoding = 'bayer_rggb8'
        elif defect == 'k22_zero':
            k = list(r.frame.camera_info.k)
            k[8] = 0.0
            r.frame.camera_info.k = k
        elif defect == 'truncated':
            r.frame.depth.data = bytes(r.frame.depth.data)[:100]
        elif defect == 'other_frame':
            r.frame.header.frame_id = 'other_frame'
        elif defect == 'image_4k':
            r.frame.color.width, r.frame.color.height = 3840, 2160
        return True, r

    def refine_grasps_many_grasps(self, rng):
        return True, self._refine(rng, n=25000)

    def refine_grasps_huge_reconstruction(self, rng):
        return True, self._refine(rng, points=2_100_000)

    # pick ------------------------------------------------------------------

    def pick_explicit_dry_run(self, rng):
        from zerograsp_ros.srv import PickObject

        r = PickObject.Request(object_id=-1, use_explicit_grasp=True, dry_run=True)
        r.grasp_header.frame_id = str(rng.choice(['panda_link0', CAMERA_FRAME, '', 'nowhere']))
        p, q = r.grasp.pose.position, r.grasp.pose.orientation
        p.x, p.y, p.z = (float(v) for v in rng.uniform([0.3, -0.3, 0.02], [0.7, 0.3, 0.4]))
        q.x, q.y, q.z, q.w = 0.0, 1.0, 0.0, 0.0
        r.grasp.width, r.grasp.depth = 0.05, 0.02
        defect = rng.choice(['none', 'none', 'nan_position', 'zero_quaternion', 'huge_position',
                             'negative_width', 'nan_depth', 'tiny_quaternion'])
        if defect == 'nan_position':
            p.y = float('nan')
        elif defect == 'zero_quaternion':
            q.y = 0.0
        elif defect == 'tiny_quaternion':
            q.y = 1e-30
        elif defect == 'huge_position':
            p.x = 1e300
        elif defect == 'negative_width':
            r.grasp.width = -0.01
        elif defect == 'nan_depth':
            r.grasp.depth = float('nan')
        malformed = None if defect == 'none' and r.grasp_header.frame_id else True
        return malformed, r

    def pick_bad_object_id(self, rng):
        from zerograsp_ros.srv import PickObject

        return True, PickObject.Request(object_id=int(rng.choice([-2**31, -2, 0, -7])),
                                        dry_run=True)

    def pick_best_dry_run(self, rng):
        from zerograsp_ros.srv import PickObject

        return None, PickObject.Request(object_id=-1, dry_run=True)
