"""Segmentation node: RGBDFrame -> InstanceMasks (same header), tabletop by default.

The learned seam (`segmenter: sam2`) needs the sam2 package and local weights;
without them the node stops at start-up with a message that says which is missing.
"""
from __future__ import annotations

import sys

from rclpy.node import Node

from zerograsp_ros.errors import InputError
from zerograsp_ros.msg import InstanceMasks
from zerograsp_ros.msg import RGBDFrame as RGBDFrameMsg
from zerograsp_ros.nodes.common import (
    FRAME_QOS,
    INSTANCE_MASKS_TOPIC,
    RGBD_FRAME_TOPIC,
    declare,
    declare_dataclass,
)
from zerograsp_ros.nodes.conversions import labels_to_masks_msg, rgbd_msg_to_frame
from zerograsp_ros.perception.segmentation import SEGMENTERS, TabletopConfig, make_segmenter


def declare_segmenter(node: Node):
    """Declare the segmenter parameters (shared by the segmentation and grasp nodes)."""
    kind = declare(node, 'segmenter', 'tabletop',
                   "Instance segmenter: 'tabletop' (plane + clustering) or 'sam2' (learned, "
                   'local weights)', lambda v: v in SEGMENTERS, f'one of {list(SEGMENTERS)}')
    tabletop = TabletopConfig.from_dict(
        declare_dataclass(node, 'tabletop', TabletopConfig(), 'tabletop segmentation'))
    if kind == 'sam2':
        checkpoint = declare(node, 'sam2_checkpoint', '', 'SAM 2 weights file (local path)')
        model_config = declare(node, 'sam2_model_config', 'configs/sam2.1/sam2.1_hiera_s.yaml',
                               'SAM 2 model config name')
        return make_segmenter('sam2', checkpoint=checkpoint, model_config=model_config,
                              tabletop=tabletop)
    return make_segmenter('tabletop', config=tabletop)


class SegmentationNode(Node):
    def __init__(self, **kwargs):
        super().__init__('segmentation_node', **kwargs)
        self.segmenter = declare_segmenter(self)
        self.publisher = self.create_publisher(InstanceMasks, INSTANCE_MASKS_TOPIC, FRAME_QOS)
        self.create_subscription(RGBDFrameMsg, RGBD_FRAME_TOPIC, self._on_frame, FRAME_QOS)
        self.segmented = 0
        self.last_problem = ''
        self.get_logger().info(f'segmenter: {self.segmenter.kind}')

    def _on_frame(self, msg: RGBDFrameMsg):
        try:
            frame = rgbd_msg_to_frame(msg)
            seg = self.segmenter.segment(frame)
        except InputError as exc:
            self.last_problem = str(exc)
            self.get_logger().warn(f'cannot segment frame: {exc}', throttle_duration_sec=2.0)
            return
        if not seg.object_ids:
            self.last_problem = 'no objects on the table'
            self.get_logger().warn('no objects on the table (nothing stands on the support '
                                   'plane)', throttle_duration_sec=5.0)
        self.publisher.publish(labels_to_masks_msg(seg.labels, msg.header, seg.scores))
        self.segmented += 1


def main(args=None):
    from zerograsp_ros.nodes.bringup import run_single_node

    return run_single_node(SegmentationNode, args)


if __name__ == '__main__':
    sys.exit(main())
