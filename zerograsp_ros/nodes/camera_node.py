"""Camera node: publishes registered RGB-D frames (zerograsp_ros/RGBDFrame).

Sources (parameter `source`):
- realsense: subscribes realsense2_camera 4.x topics (colour, aligned depth, colour
  camera info; sensor-data QoS) and pairs colour and depth by stamp within
  `sync_tolerance`.
- sim: the same subscription pointed at the simulated cell, which publishes the
  realsense topic names.
- replay: recorded frames from `replay_dir` (format in zerograsp_ros/geometry/rgbd.py),
  published at `replay_rate` with the current time as stamp.
"""
from __future__ import annotations

from collections import deque
from pathlib import Path
import sys

from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.rgbd import list_frame_dirs, load_frame_dir
from zerograsp_ros.msg import RGBDFrame as RGBDFrameMsg
from zerograsp_ros.nodes.common import (
    FRAME_QOS,
    RGBD_FRAME_TOPIC,
    SENSOR_QOS,
    declare,
    non_negative,
    positive,
)
from zerograsp_ros.nodes.conversions import frame_to_rgbd_msg, rgbd_msg_to_frame, stamp_to_seconds

SOURCES = ('realsense', 'sim', 'replay')


class CameraNode(Node):
    def __init__(self, **kwargs):
        super().__init__('camera_node', **kwargs)
        self.source = declare(self, 'source', 'realsense',
                              'Frame source: realsense, sim (realsense topics of the simulated '
                              'cell) or replay (recorded frames from replay_dir)',
                              lambda v: v in SOURCES, f'one of {SOURCES}')
        self.color_topic = declare(self, 'color_topic', '/camera/camera/color/image_raw',
                                   'Colour image topic (realsense2_camera 4.x default)')
        self.depth_topic = declare(
            self, 'depth_topic', '/camera/camera/aligned_depth_to_color/image_raw',
            'Depth aligned to colour (needs align_depth.enable:=true on the camera)')
        self.info_topic = declare(self, 'camera_info_topic', '/camera/camera/color/camera_info',
                                  'Camera info of the colour image (intrinsics of both)')
        self.sync_tolerance = declare(self, 'sync_tolerance', 0.02,
                                      'Max stamp difference between paired colour and depth [s]',
                                      non_negative, 'a number >= 0')
        self.frame_id = declare(self, 'frame_id', '',
                                "Override of the published frame_id ('' = the images')")
        self.replay_dir = declare(self, 'replay_dir', '',
                                  'Recorded frame directory, or a directory of them (replay)')
        self.replay_rate = declare(self, 'replay_rate', 2.0, 'Replay publishing rate [Hz]',
                                   positive, 'a number > 0')
        self.replay_loop = declare(self, 'replay_loop', True,
                                   'Replay: start again after the last frame')
        self.validate_frames = declare(self, 'validate_frames', True,
                                       'Decode and check every frame before publishing '
                                       '(bad frames are reported and not published)')
        self.publisher = self.create_publisher(RGBDFrameMsg, RGBD_FRAME_TOPIC, FRAME_QOS)
        self.published = 0
        self.rejected = 0
        self.last_problem = ''
        if self.source == 'replay':
            self._start_replay()
        else:
            self._start_live()

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
        if self.validate_frames:
            try:
                rgbd_msg_to_frame(msg)
            except InputError as exc:
                self.rejected += 1
                self.last_problem = str(exc)
                self.get_logger().warn(f'dropping a bad camera frame ({self.rejected} so '
                                       f'far): {exc}', throttle_duration_sec=2.0)
                return
        self.publisher.publish(msg)
        self.published += 1

    @staticmethod
    def _set_frame_id(msg: RGBDFrameMsg, frame_id: str):
        for header in (msg.header, msg.color.header, msg.depth.header, msg.camera_info.header):
            header.frame_id = frame_id


def main(args=None):
    from zerograsp_ros.nodes.bringup import run_single_node

    return run_single_node(CameraNode, args)


if __name__ == '__main__':
    sys.exit(main())
