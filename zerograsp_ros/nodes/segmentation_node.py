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
    Param,
    dataclass_params,
    declare_params,
    group,
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

SEGMENTER_PARAMETERS = (   # shared by the segmentation, grasp and refinement nodes
    Param('segmenter', DEFAULT_SEGMENTER, "Instance segmenter: 'learned' (centre-voting "
          "U-Net), 'tabletop' (plane + clustering) or 'sam2' (local weights)",
          lambda v: v in SEGMENTERS, f'one of {list(SEGMENTERS)}'),
    Param('segmenter_fallback', FALLBACK_SEGMENTER, "Segmenter used when the chosen one "
          "cannot load ('' = none: stop)", lambda v: v == '' or v in SEGMENTERS,
          f"'' or one of {list(SEGMENTERS)}"),
    *dataclass_params('tabletop', TabletopConfig(), 'tabletop segmentation'),
    Param('sam2_checkpoint', '', 'segmenter sam2: SAM 2 weights file (local path)'),
    Param('sam2_model_config', 'configs/sam2.1/sam2.1_hiera_s.yaml',
          'segmenter sam2: SAM 2 model config name'),
    Param('learned_checkpoint', '', "segmenter learned: weights ('' = the package's "
          'checkpoints/segnet.pt)'),
    *dataclass_params('learned', VotingConfig(), 'learned segmentation'),
)
PARAMETERS = SEGMENTER_PARAMETERS


def segmenter_from_parameters(values: dict, log=None):
    """The segmenter the SEGMENTER_PARAMETERS values describe (`log`: fallback warnings)."""
    kind, fallback = values['segmenter'], values['segmenter_fallback'] or None
    tabletop = TabletopConfig.from_dict(group(values, 'tabletop'))
    if kind == 'sam2':
        return make_segmenter('sam2', fallback=fallback, log=log,
                              checkpoint=values['sam2_checkpoint'],
                              model_config=values['sam2_model_config'], tabletop=tabletop)
    if kind == 'learned':
        return make_segmenter('learned', fallback=fallback, log=log,
                              checkpoint=values['learned_checkpoint'],
                              config=VotingConfig.from_dict(group(values, 'learned')),
                              tabletop=tabletop)
    return make_segmenter('tabletop', config=tabletop)


class SegmentationNode(Node):
    def __init__(self, **kwargs):
        super().__init__('segmentation_node', **kwargs)
        self.segmenter = segmenter_from_parameters(declare_params(self, PARAMETERS),
                                                   self.get_logger().warn)
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
