"""The camera node applies the depth-scale tare before publishing (real rclpy node over DDS)."""
from pathlib import Path
import sys

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from support.ros_helpers import FakeRealsense  # noqa: E402

pytestmark = pytest.mark.ros


def test_camera_node_corrects_the_depth_scale_and_drops_absurd_frames(rclpy_initialised):
    from rclpy.parameter import Parameter

    from zerograsp_ros.geometry.camera import CameraIntrinsics
    from zerograsp_ros.nodes.camera_node import CameraNode
    from zerograsp_ros.nodes.conversions import make_header, numpy_to_image, rgbd_msg_to_frame

    # Calibration: the camera 0.6 m above the table (base z = 0), looking straight down.
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, -1.0, -1.0])
    T[2, 3] = 0.6
    camera = CameraNode(parameter_overrides=[
        Parameter('T_base_camera', value=T.reshape(-1).tolist())])
    driver = FakeRealsense(camera, 'fake_realsense_tare')
    frames = driver.frames

    def publish(stamp, depth_mm):
        header = make_header('camera_color_optical_frame', stamp)
        depth = np.full((48, 64), depth_mm, np.uint16)
        depth[20:28, 28:36] = depth_mm - 50              # a small box 5 cm tall on the table
        driver.publish(numpy_to_image(np.full((48, 64, 3), 90, np.uint8), 'rgb8', header),
                       numpy_to_image(depth, '16UC1', header))

    try:
        driver.connect(CameraIntrinsics(60.0, 60.0, 32.0, 24.0, 64, 48))
        publish(100.0, 630)                             # depth reads 5 % too far
        assert driver.spin_until(lambda: len(frames) == 1)
        frame = rgbd_msg_to_frame(frames[0])
        assert camera.tare_scale == pytest.approx(1.05, abs=2e-3)
        assert np.median(frame.depth) == pytest.approx(0.600, abs=0.0015)
        assert frame.depth[24, 32] == pytest.approx(0.580 / 1.05, abs=0.0015)  # the box too
        publish(101.0, 900)                             # 50 % off: not drift, refused
        assert driver.spin_until(lambda: camera.rejected == 1)
        assert 'depth tare refused' in camera.last_problem and '+50.0 %' in camera.last_problem
        assert len(frames) == 1
    finally:
        driver.close()
