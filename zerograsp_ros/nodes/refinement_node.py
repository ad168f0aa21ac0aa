"""Refinement node: serves /refine_grasps (contact constraints, collision check, NMS, top-k).

For clients other than grasp_node, which refines in process by default with the same
code and REFINEMENT_PARAMETERS (`use_refine_service: true` makes it call this service).

The gripper model comes from the `gripper` preset parameter; every field of
RefinementConfig is a parameter `refinement.<field>`. When the request carries the
frame, its depth points join the obstacle cloud and the table plane is fitted on it.
"""
from __future__ import annotations

import sys
import traceback

from rclpy.node import Node

from zerograsp_ros.errors import InputError
from zerograsp_ros.grasp import DEFAULT_GRIPPER
from zerograsp_ros.grasp.gripper import gripper_preset
from zerograsp_ros.grasp.refinement import RefinementConfig
from zerograsp_ros.nodes.common import (
    REFINE_SERVICE,
    Param,
    at_least_one,
    dataclass_params,
    declare_params,
    group,
    is_device,
)
from zerograsp_ros.nodes.conversions import (
    frame_msg_is_empty,
    grasps_to_msg,
    msg_to_grasps,
    msg_to_scene,
    response_header,
    rgbd_msg_to_frame,
)
from zerograsp_ros.nodes.request_limits import (
    check_frame_size,
    check_max_grasps,
    check_refine_request_size,
    limit_params,
    limits_from_parameters,
    plain_message,
)
from zerograsp_ros.nodes.segmentation_node import SEGMENTER_PARAMETERS, segmenter_from_parameters
from zerograsp_ros.perception.pipeline import refine_on_reconstruction
from zerograsp_ros.runtime import resolve_device
from zerograsp_ros.srv import RefineGrasps

# What refinement does: also grasp_node's parameters, which refines in process with them.
REFINEMENT_PARAMETERS = (
    Param('gripper', DEFAULT_GRIPPER, 'Gripper preset (zerograsp_ros.grasp.gripper)'),
    Param('use_table_plane', True, 'Fit the table plane on the frame and reject grasps '
          'through it'),
    *dataclass_params('refinement', RefinementConfig(), 'refinement'),
)
THREADS = Param('torch_threads', 0, 'CPU threads torch may use (0 = torch default; 1 is '
                'fastest on small, busy machines)', lambda v: v >= 0, 'an integer >= 0')
PARAMETERS = (
    *REFINEMENT_PARAMETERS,
    Param('max_grasps', 20, 'Grasps kept when the request says 0', at_least_one,
          'an integer >= 1'),
    Param('device', 'cpu', "Torch device for the collision checks ('cpu', 'cuda[:N]' or "
          "'auto')", is_device, "'auto', 'cpu' or 'cuda[:N]'"),
    THREADS,
    *SEGMENTER_PARAMETERS,
    *limit_params(('max_image_pixels', 'max_objects', 'max_request_grasps',
                   'max_reconstruction_points')),
)


def refinement_from_parameters(values: dict):
    """(gripper model, checked RefinementConfig) of the REFINEMENT_PARAMETERS values."""
    config = RefinementConfig(**group(values, 'refinement'))
    config.validate()
    return gripper_preset(values['gripper']), config


class RefinementNode(Node):
    def __init__(self, **kwargs):
        super().__init__('refinement_node', **kwargs)
        values = declare_params(self, PARAMETERS)
        self.gripper, self.config = refinement_from_parameters(values)
        self.segmenter = segmenter_from_parameters(values, self.get_logger().warn) \
            if values['use_table_plane'] else None
        self.max_grasps = values['max_grasps']
        self.torch_threads = values['torch_threads']
        self.limits = limits_from_parameters(values)
        self.device = str(resolve_device(values['device']))
        self.create_service(RefineGrasps, REFINE_SERVICE, self._on_refine)
        self.get_logger().info(f'gripper {self.gripper.name}, refinement on {self.device}')

    def _on_refine(self, request, response):
        try:
            self._refine(request, response)
        except InputError as exc:
            response.success = False
            response.message = plain_message(exc)
            self.get_logger().warn(f'refine_grasps failed: {response.message}')
        except Exception as exc:  # a bug must not take the service down: report it loudly
            response.success = False
            response.message = plain_message(f'internal error: {type(exc).__name__}: {exc}')
            self.get_logger().error(f'refine_grasps crashed:\n{traceback.format_exc()}')
        return response

    def _refine(self, request, response):
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)  # per thread (OpenMP): set it here
        check_max_grasps(request.max_grasps)  # sizes first: refused before any decoding
        check_refine_request_size(request.grasps, request.reconstruction, self.limits)
        if not frame_msg_is_empty(request.frame):
            check_frame_size(request.frame, self.limits)
        grasps = msg_to_grasps(request.grasps)
        objects = msg_to_scene(request.reconstruction)
        if not objects:
            raise InputError('the request has no reconstruction (no objects)')
        if request.grasps.header.frame_id != request.reconstruction.header.frame_id:
            raise InputError(f"grasps are in '{request.grasps.header.frame_id}' but the "
                             f"reconstruction in '{request.reconstruction.header.frame_id}'")
        frame, plane, note = None, None, ''
        if not frame_msg_is_empty(request.frame):
            frame_id = request.frame.header.frame_id
            if frame_id and frame_id != request.grasps.header.frame_id:
                raise InputError(f"the frame is in '{frame_id}' but the grasps in "
                                 f"'{request.grasps.header.frame_id}': its depth points and "
                                 'free-space check need the same camera frame')
            frame = rgbd_msg_to_frame(request.frame)
            if self.segmenter is not None:
                try:
                    plane = self.segmenter.table_plane(frame)
                except InputError as exc:
                    note = f'; no table plane ({exc})'
        k = int(request.max_grasps) or self.max_grasps
        out = refine_on_reconstruction(grasps, objects, self.gripper, self.config, frame=frame,
                                       table_plane=plane, max_grasps=k, device=self.device)
        response.success = True
        response.grasps = grasps_to_msg(out.grasps, response_header(request.grasps.header))
        response.rejection_reasons = list(out.rejection_counts)
        response.rejection_counts = [int(v) for v in out.rejection_counts.values()]
        for warning in out.warnings:
            self.get_logger().warn(warning)
            note += f'; {warning}'
        response.message = f'{len(response.grasps.grasps)} of {len(grasps)} grasps kept in ' \
                           f'{out.seconds:.3f} s{note}'


def main(args=None):
    from zerograsp_ros.nodes.bringup import run_single_node

    return run_single_node(RefinementNode, args)


if __name__ == '__main__':
    sys.exit(main())
