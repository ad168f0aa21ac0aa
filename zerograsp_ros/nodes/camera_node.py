"""Camera node: publishes registered RGB-D frames (zerograsp_ros/RGBDFrame).

Sources (parameter `source`):
- realsense: subscribes realsense2_camera 4.x topics (colour, aligned depth, colour
  camera info; sensor-data QoS) and pairs colour and depth by stamp within
  `sync_tolerance`.
- sim: the same subscription pointed at the simulated cell, which publishes the
  realsense topic names.
- replay: recorded frames from `replay_dir` (format in zerograsp_ros/geometry/rgbd.py),
  published at `replay_rate` with the current time as stamp.

Every frame goes through the depth-scale tare (`depth_tare.*`, on by default;
zerograsp_ros/perception/depth_tare.py) before it is published, so segmentation,
grasping and refinement all see the corrected depth. It needs the hand-eye
calibration `T_base_camera` and the table plane in the base frame (`table_plane_base`):
source sim reads T_base_camera from the sim cell config, replay from each recorded
frame's camera_info.yaml when present; without one the node warns once and
publishes frames untared. A frame whose correction is absurd is dropped and reported.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path
import sys

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.rgbd import list_frame_dirs, load_frame_dir
from zerograsp_ros.msg import RGBDFrame as RGBDFrameMsg
from zerograsp_ros.nodes.common import (
    FRAME_QOS,
    RGBD_FRAME_TOPIC,
    SENSOR_QOS,
    Param,
    dataclass_params,
    declare_params,
    group,
    non_negative,
    positive,
)
from zerograsp_ros.nodes.conversions import (
    frame_to_rgbd_msg,
    numpy_to_image,
    rgbd_msg_to_frame,
    stamp_to_seconds,
)
from zerograsp_ros.perception.depth_tare import DepthTareConfig, table_plane_in_camera, tare_frame

SOURCES = ('realsense', 'sim', 'replay')
PARAMETERS = (
    Param('source', 'realsense', 'Frame source: realsense, sim (realsense topics of the '
          'simulated cell) or replay (recorded frames from replay_dir)',
          lambda v: v in SOURCES, f'one of {SOURCES}'),
    Param('color_topic', '/camera/camera/color/image_raw',
          'Colour image topic (realsense2_camera 4.x default)'),
    Param('depth_topic', '/camera/camera/aligned_depth_to_color/image_raw',
          'Depth aligned to colour (needs align_depth.enable:=true on the camera)'),
    Param('camera_info_topic', '/camera/camera/color/camera_info',
          'Camera info of the colour image (intrinsics of both)'),
    Param('sync_tolerance', 0.02, 'Max stamp difference between paired colour and depth [s]',
          non_negative, 'a number >= 0'),
    Param('frame_id', '', "Override of the published frame_id ('' = the images')"),
    Param('replay_dir', '', 'Recorded frame directory, or a directory of them (replay)'),
    Param('replay_rate', 2.0, 'Replay publishing rate [Hz]', positive, 'a number > 0'),
    Param('replay_loop', True, 'Replay: start again after the last frame'),
    Param('validate_frames', True, 'Decode and check every frame before publishing (bad '
          'frames are reported and not published)'),
    *dataclass_params('depth_tare', DepthTareConfig(), 'depth-scale tare against the table'),
    Param('T_base_camera', [0.0], 'Hand-eye calibration: camera optical frame in the robot '
          "base frame, 16 numbers row-major ([0.0] = none; source sim: the sim cell's)"),
    Param('table_plane_base', [0.0, 0.0, 1.0, 0.0], 'Table top plane a x + b y + c z + d = 0 '
          'in the robot base frame', lambda v: len(v) == 4, '4 numbers'),
    Param('sim_cell_config', '', "source sim: the sim cell YAML with T_base_camera ('' = the "
          "package's config/sim_cell.yaml)"),
)


class CameraNode(Node):
    def __init__(self, **kwargs):
        super().__init__('camera_node', **kwargs)
        values = declare_params(self, PARAMETERS)
        self.source = values['source']
        self.color_topic = values['color_topic']
        self.depth_topic = values['depth_topic']
        self.info_topic = values['camera_info_topic']
        self.sync_tolerance = values['sync_tolerance']
        self.frame_id = values['frame_id']
        self.replay_dir = values['replay_dir']
        self.replay_rate = values['replay_rate']
        self.replay_loop = values['replay_loop']
        self.validate_frames = values['validate_frames']
        self._set_up_tare(values)
        self.publisher = self.create_publisher(RGBDFrameMsg, RGBD_FRAME_TOPIC, FRAME_QOS)
        self.published = 0
        self.rejected = 0
        self.last_problem = ''
        if self.source == 'replay':
            self._start_replay()
        else:
            self._start_live()

    # ----------------------------------------------------------------- depth tare

    def _set_up_tare(self, values: dict):
        self.tare_config = DepthTareConfig(**group(values, 'depth_tare'))
        self.tare_config.validate()
        calibration = values['T_base_camera']
        self.table_plane_base = values['table_plane_base']
        sim_config = values['sim_cell_config']
        self.T_base_camera = None
        if len(calibration) == 16:
            self.T_base_camera = np.asarray(calibration, dtype=np.float64).reshape(4, 4)
        elif len(calibration) != 1:
            raise InputError(f"parameter 'T_base_camera' needs 16 numbers, got {len(calibration)}")
        elif self.source == 'sim':
            from zerograsp_ros.sim.cell_config import load_sim_cell_config
            self.T_base_camera = load_sim_cell_config(sim_config or None).T_base_camera
        self.known_plane = None if self.T_base_camera is None else \
            table_plane_in_camera(self.T_base_camera, self.table_plane_base)
        self.tare_scale = None
        if self.tare_config.enabled and self.T_base_camera is None and self.source != 'replay':
            self.get_logger().warn('depth_tare is on but no hand-eye calibration (T_base_camera)'
                                   ' is given: frames are published without depth-scale '
                                   'correction')

    def _tare(self, frame):
        """The frame with its depth scale corrected; InputError when the tare refuses it."""
        plane = self.known_plane
        if plane is None and 'T_base_camera' in frame.meta:      # a recorded frame's own
            plane = table_plane_in_camera(frame.meta['T_base_camera'], self.table_plane_base)
        if not self.tare_config.enabled or plane is None:
            return frame
        frame, result = tare_frame(frame, plane, self.tare_config)
        self.tare_scale = result.scale
        self.get_logger().info(f'depth tare: {result.summary()}; corrected',
                               throttle_duration_sec=10.0)
        return frame

    def _refuse(self, exc: InputError):
        self.rejected += 1
        self.last_problem = str(exc)
        self.get_logger().warn(f'dropping a camera frame ({self.rejected} so far): {exc}',
                               throttle_duration_sec=2.0)

    # ----------------------------------------------------------------- replay

    def _start_replay(self):
        if not self.replay_dir:
            raise InputError("source 'replay' needs the replay_dir parameter")
        dirs = list_frame_dirs(Path(self.replay_dir).expanduser())
        self.replay_frames = [load_frame_dir(d) for d in dirs]  # InputError names a bad one
        self.replay_index = 0
        self.get_logger().info(f'replaying {len(self.replay_frames)} frame(s) from '
                               f'{self.replay_dir} at {self.replay_rate} Hz')
        self.replay_timer = self.create_timer(1.0 / self.replay_rate, self._replay_tick)

    def _replay_tick(self):
        if self.replay_index >= len(self.replay_frames):
            if not self.replay_loop:
                self.replay_timer.cancel()
                return
            self.replay_index = 0
        frame = self.replay_frames[self.replay_index]
        self.replay_index += 1
        try:
            frame = self._tare(frame)
        except InputError as exc:
            self._refuse(exc)
            return
        msg = frame_to_rgbd_msg(frame, stamp=self.get_clock().now().to_msg())
        if self.frame_id:
            self._set_frame_id(msg, self.frame_id)
        self.publisher.publish(msg)
        self.published += 1

    # ----------------------------------------------------------------- live

    def _start_live(self):
        self.camera_info: CameraInfo | None = None
        self.colors: deque[Image] = deque(maxlen=6)
        self.depths: deque[Image] = deque(maxlen=6)
        self.create_subscription(Image, self.color_topic, self._on_color, SENSOR_QOS)
        self.create_subscription(Image, self.depth_topic, self._on_depth, SENSOR_QOS)
        self.create_subscription(CameraInfo, self.info_topic, self._on_info, SENSOR_QOS)
        self.get_logger().info(f'{self.source}: pairing {self.color_topic} with '
                               f'{self.depth_topic} (tolerance {self.sync_tolerance} s)')

    def _on_info(self, msg: CameraInfo):
        self.camera_info = msg

    def _on_color(self, msg: Image):
        self.colors.append(msg)
        self._pair()

    def _on_depth(self, msg: Image):
        self.depths.append(msg)
        self._pair()

    def _pair(self):
        """Publish the newest colour/depth pair whose stamps agree within the tolerance."""
        if self.camera_info is None:
            if self.colors and self.depths:
                self.get_logger().warn(f'images arrive but no camera info yet on '
                                       f'{self.info_topic}', throttle_duration_sec=5.0)
            return
        best = None
        for ci, color in enumerate(self.colors):
            tc = stamp_to_seconds(color.header.stamp)
            for di, depth in enumerate(self.depths):
                dt = abs(tc - stamp_to_seconds(depth.header.stamp))
                if dt <= self.sync_tolerance and (best is None or (tc, -dt) > best[2]):
                    best = (ci, di, (tc, -dt))
        if best is None:
            if len(self.colors) == self.colors.maxlen and len(self.depths) == self.depths.maxlen:
                self.get_logger().warn(
                    f'no colour/depth pair within {self.sync_tolerance} s among the last '
                    f'{self.colors.maxlen} images; raise sync_tolerance or enable the '
                    "camera's enable_sync", throttle_duration_sec=5.0)
            return
        ci, di, _ = best
        color, depth = self.colors[ci], self.depths[di]
        for _ in range(ci + 1):  # this pair and everything older is used up
            self.colors.popleft()
        for _ in range(di + 1):
            self.depths.popleft()
        msg = RGBDFrameMsg()
        msg.header = color.header
        msg.color, msg.depth, msg.camera_info = color, depth, self.camera_info
        if self.frame_id:
            self._set_frame_id(msg, self.frame_id)
        tare = self.tare_config.enabled and self.known_plane is not None
        if self.validate_frames or tare:
            try:
                frame = self._tare(rgbd_msg_to_frame(msg))
            except InputError as exc:
                self._refuse(exc)
                return
            if tare:
                msg.depth = self._depth_image(frame.depth, msg.depth)
        self.publisher.publish(msg)
        self.published += 1

    @staticmethod
    def _depth_image(depth_m: np.ndarray, like: Image) -> Image:
        """Corrected depth [m] in the incoming image's encoding (16UC1 mm or 32FC1 m)."""
        depth = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0,
                              neginf=0.0)
        if like.encoding.lower() == '32fc1':
            return numpy_to_image(depth.astype(np.float32), '32FC1', like.header)
        mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
        return numpy_to_image(mm, '16UC1', like.header)

    @staticmethod
    def _set_frame_id(msg: RGBDFrameMsg, frame_id: str):
        for header in (msg.header, msg.color.header, msg.depth.header, msg.camera_info.header):
            header.frame_id = frame_id


def main(args=None):
    from zerograsp_ros.nodes.bringup import run_single_node

    return run_single_node(CameraNode, args)


if __name__ == '__main__':
    sys.exit(main())
