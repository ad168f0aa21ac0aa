"""ROS 2 node of the simulated cell: a RealSense stand-in plus arm and gripper services.

Publishes the realsense2_camera 4.x topics (reliable QoS, one stamp per frame):
  <camera_namespace>/color/image_raw                    rgb8
  <camera_namespace>/color/camera_info
  <camera_namespace>/aligned_depth_to_color/image_raw   16UC1 millimetres (0 = no return)
  <camera_namespace>/aligned_depth_to_color/camera_info
all in frame `camera_frame` (camera_color_optical_frame), and serves
  /sim_cell/move_tcp     (zerograsp_ros/srv/SimMoveTcp)   TCP pose in `base_frame`
  /sim_cell/gripper      (zerograsp_ros/srv/SimGripper)
  /sim_cell/reset_scene  (zerograsp_ros/srv/SimResetScene)
With `publish_tf` (default) it latches the cell's static TF, world -> `base_frame`
(T_world_base) -> `camera_frame` (T_base_camera), on /tf_static through
tf2_ros.StaticTransformBroadcaster; where tf2_ros is not installed it warns once and
runs without TF (RViz then needs the Fixed Frame set to `camera_frame`).
Parameter defaults come from config/sim_cell.yaml. Physics and rendering share one
pybullet client, so all callbacks run in one mutually exclusive group: no frames are
published while a motion is being simulated.
"""
from __future__ import annotations

import threading

from geometry_msgs.msg import PoseStamped
import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from zerograsp_ros.errors import InputError
from zerograsp_ros.nodes.common import FROM_CONFIG, Param, declare_params, positive
from zerograsp_ros.nodes.conversions import (
    intrinsics_to_camera_info,
    make_header,
    matrix_to_pose_msg,
    numpy_to_image,
    pose_msg_to_matrix,
    transform_stamped_from_matrix,
)
from zerograsp_ros.sim.cell import (
    WORLD_FRAME,
    SimCell,
    cell_static_transforms,
    load_sim_cell_config,
    sim_cell_config_from_parameters,
)
from zerograsp_ros.srv import SimGripper, SimMoveTcp, SimResetScene

# Like the real driver: reliable, volatile, a short queue.
CAMERA_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                        reliability=ReliabilityPolicy.RELIABLE,
                        durability=DurabilityPolicy.VOLATILE)

POSITIVE = (positive, 'a number > 0')
PARAMETERS = (   # defaults: config/sim_cell.yaml
    Param('publish_rate_hz', FROM_CONFIG, 'Camera frames published per second', *POSITIVE),
    Param('base_frame', FROM_CONFIG, 'Robot base frame; SimMoveTcp targets must be given in it'),
    Param('camera_namespace', FROM_CONFIG,
          'Prefix of the realsense2_camera topics (4.x default /camera/camera)'),
    Param('camera_frame', FROM_CONFIG, 'frame_id of the colour and aligned depth images'),
    Param('image_width', FROM_CONFIG, 'Image width [px]'),
    Param('image_height', FROM_CONFIG, 'Image height [px]'),
    Param('fx', FROM_CONFIG, 'Focal length x [px]'),
    Param('fy', FROM_CONFIG, 'Focal length y [px]'),
    Param('cx', FROM_CONFIG, 'Principal point x [px]'),
    Param('cy', FROM_CONFIG, 'Principal point y [px]'),
    Param('depth_noise', FROM_CONFIG, 'Apply the dex depth-noise model and edge dropout'),
    Param('T_world_base', FROM_CONFIG,
          'Robot base in the world (table top z = 0), 4x4 row-major'),
    Param('T_base_camera', FROM_CONFIG,
          'Camera optical frame in the robot base frame, 4x4 row-major'),
    Param('seed', FROM_CONFIG, 'Scene seed at start-up and the reset default'),
    Param('num_objects', FROM_CONFIG, 'Objects per scene'),
    Param('layout', FROM_CONFIG, 'Scene layout: pile or packed'),
    Param('split', FROM_CONFIG, 'Object split: train, val or test'),
    Param('grip_force', FROM_CONFIG, 'Default grip force limit [N]', *POSITIVE),
    Param('tcp_speed', FROM_CONFIG, 'Cartesian speed of simulated motions [m/s]', *POSITIVE),
    Param('check_reachability', FROM_CONFIG,
          'Reject TCP targets the Panda cannot reach (inverse kinematics)'),
    Param('publish_tf', FROM_CONFIG, f'Latch static TF {WORLD_FRAME} -> base_frame -> '
          'camera_frame on /tf_static (needs tf2_ros; without it the node warns and runs '
          'without TF)'),
)


def start_static_tf(node: Node, transforms) -> object | None:
    """Latch (parent, child, 4x4) transforms on /tf_static; None where tf2_ros is missing.

    tf2_ros is imported here only: it is part of a full ROS 2 install, not of the
    PyPI wheels this package also runs on.
    """
    msgs = [transform_stamped_from_matrix(T, parent, child, node.get_clock().now().to_msg())
            for parent, child, T in transforms]
    chain = ' -> '.join([transforms[0][0]] + [child for _, child, _ in transforms])
    try:
        from tf2_ros import StaticTransformBroadcaster
    except ImportError as exc:
        node.get_logger().warning(
            f'TF is NOT published: tf2_ros is not installed ({exc}). The frames {chain} '
            f'exist only in config/sim_cell.yaml; in RViz set the Fixed Frame to '
            f"'{transforms[-1][1]}' (the images' frame).")
        return None
    broadcaster = StaticTransformBroadcaster(node)
    broadcaster.sendTransform(msgs)
    node.get_logger().info(f'static TF latched on /tf_static: {chain}')
    return broadcaster


class SimCellNode(Node):
    """The simulated cell on ROS 2 (see the module docstring)."""

    def __init__(self, **kwargs):
        super().__init__('sim_cell_node', **kwargs)
        defaults = {name: [float(v) for v in value] if isinstance(value, list) else value
                    for name, value in load_sim_cell_config().parameters.items()}
        params = declare_params(self, PARAMETERS, defaults)
        self.config = sim_cell_config_from_parameters(params)
        self.rate = float(params['publish_rate_hz'])
        ns = str(params['camera_namespace']).rstrip('/')
        # Frames are checked before the (slow) cell is built: a bad name stops start-up.
        transforms = cell_static_transforms(self.config) if params['publish_tf'] else []
        self.cell = SimCell(self.config)
        self.cell.reset()
        # pybullet is not thread-safe: every use of the cell holds this lock. The camera
        # timer has its own group so a busy camera never starves the services, and it
        # re-renders only when a service changed the scene (else it re-stamps the
        # last images), which keeps the simulated camera cheap on small machines.
        self._cell_lock = threading.Lock()
        self._scene_version = 0
        self._rendered = None  # (scene version, rgb, depth_mm, intrinsics)
        group = MutuallyExclusiveCallbackGroup()
        camera_group = MutuallyExclusiveCallbackGroup()
        self.pub_color = self.create_publisher(Image, f'{ns}/color/image_raw', CAMERA_QOS)
        self.pub_color_info = self.create_publisher(CameraInfo, f'{ns}/color/camera_info',
                                                    CAMERA_QOS)
        self.pub_depth = self.create_publisher(
            Image, f'{ns}/aligned_depth_to_color/image_raw', CAMERA_QOS)
        self.pub_depth_info = self.create_publisher(
            CameraInfo, f'{ns}/aligned_depth_to_color/camera_info', CAMERA_QOS)
        self.create_service(SimMoveTcp, '/sim_cell/move_tcp', self._on_move_tcp,
                            callback_group=group)
        self.create_service(SimGripper, '/sim_cell/gripper', self._on_gripper,
                            callback_group=group)
        self.create_service(SimResetScene, '/sim_cell/reset_scene', self._on_reset,
                            callback_group=group)
        self.timer = self.create_timer(1.0 / self.rate, self.publish_frame,
                                       callback_group=camera_group)
        self.tf_broadcaster = start_static_tf(self, transforms) if transforms else None
        self.get_logger().info(
            f'simulated cell up: {len(self.cell.object_ids())} objects, camera topics under '
            f'{ns}, services /sim_cell/{{move_tcp,gripper,reset_scene}}')

    # ------------------------------------------------------------------ camera
    def publish_frame(self) -> None:
        if not self._cell_lock.acquire(blocking=False):
            return  # the arm or gripper is moving: no frame this period
        try:
            if self._rendered is None or self._rendered[0] != self._scene_version:
                frame = self.cell.capture()
                depth_mm = np.nan_to_num(frame.depth, nan=0.0, posinf=0.0, neginf=0.0)
                depth_mm = np.clip(np.round(depth_mm * 1000.0), 0, 65535).astype(np.uint16)
                self._rendered = (self._scene_version, frame.rgb, depth_mm, frame.intrinsics)
            _, rgb, depth_mm, intrinsics = self._rendered
        finally:
            self._cell_lock.release()
        header = make_header(self.config.camera_frame, self.get_clock().now().to_msg())
        info = intrinsics_to_camera_info(intrinsics, header)
        self.pub_color.publish(numpy_to_image(rgb, 'rgb8', header))
        self.pub_color_info.publish(info)
        self.pub_depth.publish(numpy_to_image(depth_mm, '16UC1', header))
        self.pub_depth_info.publish(info)

    def _changing_scene(self):
        """Hold the cell for a service call and mark the scene for re-rendering."""
        node = self

        class _Hold:
            def __enter__(self):
                node._cell_lock.acquire()

            def __exit__(self, *exc):
                node._scene_version += 1
                node._cell_lock.release()

        return _Hold()

    # ------------------------------------------------------------------ services
    def _reached(self) -> PoseStamped:
        T = self.cell.tcp_pose_base()
        msg = PoseStamped()
        msg.header = make_header(self.config.base_frame, self.get_clock().now().to_msg())
        msg.pose = matrix_to_pose_msg(T)
        return msg

    def _on_move_tcp(self, request, response):
        try:
            frame = request.target.header.frame_id
            if frame.lstrip('/') != self.config.base_frame:
                raise InputError(f"target frame '{frame}' is not the cell's base frame "
                                 f"'{self.config.base_frame}'")
            T = pose_msg_to_matrix(request.target.pose, 'target pose')
            with self._changing_scene():
                ok, message = self.cell.move_tcp(T, straight_line=bool(request.straight_line),
                                                 dry_run=bool(request.dry_run))
            response.success, response.message = bool(ok), message
        except InputError as exc:
            response.success, response.message = False, str(exc)
        with self._cell_lock:
            response.reached = self._reached()
        return response

    def _on_gripper(self, request, response):
        try:
            with self._changing_scene():
                width, held = self.cell.gripper_command(float(request.width),
                                                        float(request.max_effort))
            response.success, response.message = True, 'ok'
            response.width, response.object_held = float(width), bool(held)
            response.held_object_id = int(held)
        except InputError as exc:
            response.success, response.message = False, str(exc)
            with self._cell_lock:
                response.width = float(self.cell.gripper_width())
        return response

    def _on_reset(self, request, response):
        try:
            with self._changing_scene():
                ids = self.cell.reset(seed=int(request.seed),
                                      num_objects=int(request.num_objects) or None,
                                      layout=request.layout or None,
                                      split=request.split or None)
            response.success, response.message = True, f'{len(ids)} objects on the table'
            response.object_ids = [int(i) for i in ids]
        except InputError as exc:
            response.success, response.message = False, str(exc)
        return response

    def destroy_node(self):
        self.cell.close()
        return super().destroy_node()


def main(args=None):
    from zerograsp_ros.nodes.bringup import run_single_node
    return run_single_node(SimCellNode, args)


if __name__ == '__main__':
    import sys
    sys.exit(main())
