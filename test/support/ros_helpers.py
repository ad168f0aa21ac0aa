"""Helpers of the in-process node tests (test_nodes_units.py, test_camera_tare.py)."""
import time

REALSENSE_COLOR = '/camera/camera/color/image_raw'
REALSENSE_DEPTH = '/camera/camera/aligned_depth_to_color/image_raw'
REALSENSE_INFO = '/camera/camera/color/camera_info'


def spin_until(executor, predicate, timeout=10.0):
    """Spin until predicate() holds or timeout passes; the predicate's last value."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return predicate()


class FakeRealsense:
    """A node publishing on realsense2_camera's topics and collecting camera_node's frames.

    Spins `camera` and itself on one executor; `connect` waits for the DDS matches
    and sends the camera info, so the next published image pair becomes a frame.
    """

    def __init__(self, camera, name='fake_realsense'):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, Image

        from zerograsp_ros.msg import RGBDFrame
        from zerograsp_ros.nodes.common import FRAME_QOS, RGBD_FRAME_TOPIC

        self.camera = camera
        self.node = rclpy.create_node(name)
        self.pub_color = self.node.create_publisher(Image, REALSENSE_COLOR, 5)
        self.pub_depth = self.node.create_publisher(Image, REALSENSE_DEPTH, 5)
        self.pub_info = self.node.create_publisher(CameraInfo, REALSENSE_INFO, 5)
        self.frames = []
        self.node.create_subscription(RGBDFrame, RGBD_FRAME_TOPIC, self.frames.append,
                                      FRAME_QOS)
        self.executor = SingleThreadedExecutor()
        for n in (camera, self.node):
            self.executor.add_node(n)

    def spin_until(self, predicate, timeout=10.0):
        return spin_until(self.executor, predicate, timeout)

    def connect(self, intrinsics):
        from zerograsp_ros.nodes.common import RGBD_FRAME_TOPIC
        from zerograsp_ros.nodes.conversions import intrinsics_to_camera_info, make_header

        assert self.spin_until(lambda: self.pub_color.get_subscription_count() > 0
                               and self.pub_info.get_subscription_count() > 0
                               and self.node.count_publishers(RGBD_FRAME_TOPIC) > 0), \
            'camera_node never matched the fake realsense topics'
        self.pub_info.publish(intrinsics_to_camera_info(
            intrinsics, make_header('camera_color_optical_frame', 0.0)))
        assert self.spin_until(lambda: self.camera.camera_info is not None), \
            'camera_node never received the camera info'

    def publish(self, color, depth):
        self.pub_color.publish(color)
        self.pub_depth.publish(depth)

    def close(self):
        self.executor.shutdown()
        self.camera.destroy_node()
        self.node.destroy_node()
