"""Segmentation node: RGBDFrame -> InstanceMasks (same header).

`segmenter` picks the method (perception/segmentation.py): 'learned' (centre-voting
U-Net, checkpoints/segnet.pt), 'tabletop' (geometric) or 'sam2' (needs the sam2
package and local weights). When the chosen learned segmenter cannot load (weights
missing or corrupt, package missing), the node logs why and uses
`segmenter_fallback` ('tabletop'); with `segmenter_fallback: ''` it stops at
start-up with that message instead.
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
from zerograsp_ros.perception.learned_segmentation import VotingConfig
from zerograsp_ros.perception.segmentation import (
    DEFAULT_SEGMENTER,
    FALLBACK_SEGMENTER,
    SEGMENTERS,
    TabletopConfig,
    make_segmenter,
)


def declare_segmenter(node: Node):
    """Declare the segmenter parameters (shared by the segmentation, grasp, refinement nodes)."""
    kind = declare(node, 'segmenter', DEFAULT_SEGMENTER,
                   "Instance segmenter: 'learned' (centre-voting U-Net), 'tabletop' (plane + "
                   "clustering) or 'sam2' (local weights)", lambda v: v in SEGMENTERS,
                   f'one of {list(SEGMENTERS)}')
    fallback = declare(node, 'segmenter_fallback', FALLBACK_SEGMENTER,
                       "Segmenter used when the chosen one cannot load ('' = none: stop)",
                       lambda v: v == '' or v in SEGMENTERS, f"'' or one of {list(SEGMENTERS)}")
    tabletop = TabletopConfig.from_dict(
        declare_dataclass(node, 'tabletop', TabletopConfig(), 'tabletop segmentation'))
    warn = node.get_logger().warn
    if kind == 'sam2':
        checkpoint = declare(node, 'sam2_checkpoint', '', 'SAM 2 weights file (local path)')
        model_config = declare(node, 'sam2_model_config', 'configs/sam2.1/sam2.1_hiera_s.yaml',
                               'SAM 2 model config name')
        return make_segmenter('sam2', fallback=fallback or None, log=warn,
                              checkpoint=checkpoint, model_config=model_config,
                              tabletop=tabletop)
    if kind == 'learned':
        checkpoint = declare(node, 'learned_checkpoint', '',
                             "Learned segmenter weights ('' = the package's "
                             "checkpoints/segnet.pt)")
        voting = VotingConfig.from_dict(
            declare_dataclass(node, 'learned', VotingConfig(), 'learned segmentation'))
        return make_segmenter('learned', fallback=fallback or None, log=warn,
                              checkpoint=checkpoint, config=voting, tabletop=tabletop)
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
