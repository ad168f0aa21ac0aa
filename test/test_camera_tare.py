"""The camera node applies the depth-scale tare before publishing (real rclpy node over DDS)."""
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros


@pytest.fixture(scope='module')
def ros(ros_domain):
    import rclpy

    rclpy.init()
    yield
    rclpy.shutdown()


def _spin_until(executor, predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def test_camera_node_corrects_the_depth_scale_and_drops_absurd_frames(ros):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import CameraInfo, Image

    from zerograsp_ros.geometry.camera import CameraIntrinsics
    from zerograsp_ros.msg import RGBDFrame
    from zerograsp_ros.nodes.camera_node import CameraNode
    from zerograsp_ros.nodes.common import FRAME_QOS, RGBD_FRAME_TOPIC
    from zerograsp_ros.nodes.conversions import (
        intrinsics_to_camera_info,
        make_header,
        numpy_to_image,
        rgbd_msg_to_frame,
    )

    # Calibration: the camera 0.6 m above the table (base z = 0), looking straight down.
    T = np.eye(4)
    T[:3, :3] = np.diag([1.0, -1.0, -1.0])
    T[2, 3] = 0.6
    camera = CameraNode(parameter_overrides=[
        Parameter('T_base_camera', value=T.reshape(-1).tolist())])
    driver = rclpy.create_node('fake_realsense_tare')
    pub_color = driver.create_publisher(Image, '/camera/camera/color/image_raw', 5)
    pub_depth = driver.create_publisher(
        Image, '/camera/camera/aligned_depth_to_color/image_raw', 5)
    pub_info = driver.create_publisher(CameraInfo, '/camera/camera/color/camera_info', 5)
    frames = []
    driver.create_subscription(RGBDFrame, RGBD_FRAME_TOPIC, frames.append, FRAME_QOS)
    executor = SingleThreadedExecutor()
    for n in (camera, driver):
        executor.add_node(n)

    def publish(stamp, depth_mm):
        header = make_header('camera_color_optical_frame', stamp)
        depth = np.full((48, 64), depth_mm, np.uint16)
        depth[20:28, 28:36] = depth_mm - 50              # a small box 5 cm tall on the table
        pub_color.publish(numpy_to_image(np.full((48, 64, 3), 90, np.uint8), 'rgb8', header))
        pub_depth.publish(numpy_to_image(depth, '16UC1', header))

    try:
        assert _spin_until(executor, lambda: pub_color.get_subscription_count() > 0
                           and pub_info.get_subscription_count() > 0
                           and driver.count_publishers(RGBD_FRAME_TOPIC) > 0)
        pub_info.publish(intrinsics_to_camera_info(
            CameraIntrinsics(60.0, 60.0, 32.0, 24.0, 64, 48),
            make_header('camera_color_optical_frame', 0.0)))
        _spin_until(executor, lambda: camera.camera_info is not None)
        publish(100.0, 630)                             # depth reads 5 % too far
        assert _spin_until(executor, lambda: len(frames) == 1)
        frame = rgbd_msg_to_frame(frames[0])
        assert camera.tare_scale == pytest.approx(1.05, abs=2e-3)
        assert np.median(frame.depth) == pytest.approx(0.600, abs=0.0015)
        assert frame.depth[24, 32] == pytest.approx(0.580 / 1.05, abs=0.0015)  # the box too
        publish(101.0, 900)                             # 50 % off: not drift, refused
        assert _spin_until(executor, lambda: camera.rejected == 1)
        assert 'depth tare refused' in camera.last_problem and '+50.0 %' in camera.last_problem
        assert len(frames) == 1
    finally:
        executor.shutdown()
        camera.destroy_node()
        driver.destroy_node()
