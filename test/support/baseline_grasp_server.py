"""A /predict_grasps stand-in for the execution tests, in its own process.

It listens to the realsense topics (as published by sim_cell_node), segments the
latest frame with the package's tabletop segmentation, proposes SHAF-like top-down
grasps (zerograsp_ros.sim.baselines.highest_point_grasps) and answers with the
grasps and, as the reconstruction, each segmented object's visible points with
their convex hull as its mesh. The trained ZeroGrasp checkpoint is not needed, so
the pick test measures execution, not the network.
"""
from pathlib import Path
import sys
import threading
import time

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from scipy.spatial import ConvexHull, cKDTree  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from zerograsp_ros.errors import InputError  # noqa: E402
from zerograsp_ros.geometry.camera import unproject  # noqa: E402
from zerograsp_ros.geometry.rgbd import RGBDFrame, decode_color, decode_depth  # noqa: E402
from zerograsp_ros.nodes.conversions import (  # noqa: E402
    ObjectShape,
    camera_info_to_intrinsics,
    grasps_to_msg,
    image_to_numpy,
    scene_to_msg,
    stamp_to_seconds,
)
from zerograsp_ros.perception.segmentation import segment_tabletop  # noqa: E402
from zerograsp_ros.sim.baselines import highest_point_grasps  # noqa: E402
from zerograsp_ros.srv import PredictGrasps  # noqa: E402

NS = '/camera/camera'


class BaselineGraspServer:
    def __init__(self, node):
        self.node = node
        self.lock = threading.Lock()
        self.color, self.depth, self.info = {}, {}, None
        # Reliable, like the publisher: best-effort large images drop fragments under load.
        q = QoSProfile(depth=2, reliability=ReliabilityPolicy.RELIABLE)
        node.create_subscription(Image, f'{NS}/color/image_raw', self._on_color, q)
        node.create_subscription(Image, f'{NS}/aligned_depth_to_color/image_raw',
                                 self._on_depth, q)
        node.create_subscription(CameraInfo, f'{NS}/color/camera_info', self._on_info, q)
        node.create_service(PredictGrasps, 'predict_grasps', self.handle,
                            callback_group=MutuallyExclusiveCallbackGroup())

    def _on_color(self, msg):
        with self.lock:
            self.color = {stamp_to_seconds(msg.header.stamp): msg}

    def _on_depth(self, msg):
        with self.lock:
            self.depth = {stamp_to_seconds(msg.header.stamp): msg}

    def _on_info(self, msg):
        self.info = msg

    def fresh_frame(self, newer_than: float, timeout: float = 15.0) -> RGBDFrame:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                both = sorted(set(self.color) & set(self.depth))
                if both and both[-1] > newer_than and self.info is not None:
                    c, d = self.color[both[-1]], self.depth[both[-1]]
                    return RGBDFrame(decode_color(image_to_numpy(c), c.encoding),
                                     decode_depth(image_to_numpy(d), d.encoding),
                                     camera_info_to_intrinsics(self.info),
                                     frame_id=c.header.frame_id, stamp=both[-1])
            time.sleep(0.05)
        raise InputError('no fresh camera frame from the sim cell')

    def handle(self, request, response):
        try:
            frame = self.fresh_frame(self.node.get_clock().now().nanoseconds * 1e-9)
            labels, plane = segment_tabletop(frame)
            pts, pix = unproject(frame.depth, frame.intrinsics, mask=labels > 0,
                                 return_pixels=True)
            ids = labels[pix[:, 0], pix[:, 1]]
            grasps = highest_point_grasps(frame, table_plane=plane)
            if len(grasps) == 0 or len(pts) == 0:
                raise InputError('no objects on the table')
            grasps.object_ids = ids[cKDTree(pts).query(grasps.translations)[1]].astype(np.int32)
            objects = []
            for oid in np.unique(ids):
                p = pts[ids == oid]
                if len(p) < 10:
                    continue
                hull = ConvexHull(p)
                objects.append(ObjectShape(int(oid), p, np.zeros_like(p), p, hull.simplices,
                                           0.005))
            header = self.node.get_clock().now().to_msg()
            response.grasps = grasps_to_msg(grasps.sorted_by_score(), _header(frame, header))
            response.reconstruction = scene_to_msg(objects, _header(frame, header))
            response.success = True
            response.message = f'{len(grasps)} SHAF-like grasps on {len(objects)} objects'
        except InputError as exc:
            response.success, response.message = False, str(exc)
        return response


def _header(frame, stamp):
    from std_msgs.msg import Header
    return Header(stamp=stamp, frame_id=frame.frame_id)


def main():
    rclpy.init()
    node = rclpy.create_node('baseline_grasp_server')
    BaselineGraspServer(node)
    executor = MultiThreadedExecutor(num_threads=3)
    executor.add_node(node)
    print('READY', flush=True)
    try:
        executor.spin()
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    main()
