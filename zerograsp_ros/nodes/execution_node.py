"""Execution node: serves /pick (srv/PickObject.srv) on the sim cell or a MoveIt 2 robot.

For a pick without an explicit grasp it calls /predict_grasps (async, with the
reconstruction), then runs zerograsp_ros.execution.pick.PickSequence on the
backend chosen by the `backend` parameter ('sim' | 'moveit'). The service runs
in its own callback group and the clients in a reentrant one, so with a
MultiThreadedExecutor the service can wait on its clients' futures.
"""
from __future__ import annotations

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.node import Node
from std_msgs.msg import Header
import yaml

from zerograsp_ros.errors import InputError
from zerograsp_ros.execution.backends import CollisionBox, ExecutionError, wait_for_future
from zerograsp_ros.execution.pick import (
    LIFT_MODES,
    PickConfig,
    PickResult,
    PickSequence,
    PickTarget,
    ReconstructedObject,
)
from zerograsp_ros.execution.robot import config_dir, load_robot_preset
from zerograsp_ros.geometry.transforms import make_pose, matrix_from_rpy
from zerograsp_ros.msg import GraspArray
from zerograsp_ros.nodes.common import (
    EXECUTED_GRASP_TOPIC,
    FROM_CONFIG,
    LATCHED_QOS,
    Param,
    declare_params,
)
from zerograsp_ros.nodes.conversions import grasps_to_msg, msg_to_grasps, msg_to_scene
from zerograsp_ros.srv import PickObject, PredictGrasps

PARAMETERS = tuple(Param(name, FROM_CONFIG, description) for name, description in {
    # name -> description; defaults: config/execution.yaml
    'robot': 'robot preset name in config/robots/ (panda | fr3) or a preset YAML path',
    'backend': "'sim' (the simulated cell's services) or 'moveit' (moveit_py on the robot PC)",
    'pre_grasp_distance': 'pre-grasp distance back along the approach [m]',
    'lift_height': 'lift distance after grasping [m]',
    'lift_mode': "'auto' (up if the approach is > 60 deg from vertical, else back), 'up', "
                 "'retreat'",
    'width_margin': 'opening beyond the grasp width before the approach [m]',
    'grasp_effort': 'closing force limit [N]',
    'open_effort': 'opening force limit [N] (0 = gripper default)',
    'min_held_width': 'closed below this width = nothing grasped [m]',
    'max_candidates': 'grasp candidates tried in score order before giving up',
    'verify_hold_after_lift': 're-close after the lift and fail if the object slipped',
    'avoid_failed_grasps': 'try candidates that repeat an earlier failed grasp last',
    'failed_grasp_distance': 'TCP distance within which a candidate repeats a failed grasp [m]',
    'failed_grasp_angle_deg': 'rotation angle within which a candidate repeats a failed grasp',
    'failed_grasp_memory': 'failed grasps remembered (a successful pick clears them)',
    'place': 'after the lift, move to place_pose and release',
    'place_pose': 'place TCP pose x y z roll pitch yaw in the base frame [m, rad]',
    'retreat_after_place': 'retreat along the approach after releasing [m]',
    'sim_place': 'backend sim: drop the object at sim_place_pose (out of the camera view) '
                 'after the lift, so the next pick sees the table without it',
    'sim_place_pose': 'backend sim: drop pose x y z roll pitch yaw in the base frame',
    'velocity_scaling': 'MoveIt velocity scaling (0 = the preset value, low by default)',
    'acceleration_scaling': 'MoveIt acceleration scaling (0 = the preset value)',
    'tcp_behind_fingertips': 'fingertips -> TCP link along the approach [m] (-1 = preset)',
    'use_table': 'add the table box to the planning scene',
    'table_size': 'table box size [m]',
    'table_center': 'table box centre in the base frame [m]',
    'predict_service': 'grasp prediction service',
    'predict_timeout': 'seconds to wait for /predict_grasps',
    'max_grasps': 'grasps requested from /predict_grasps',
    'sim_cell_config': "sim cell YAML with T_base_camera ('' = config/sim_cell.yaml)",
    'sim_service_prefix': 'namespace of the sim cell services',
    'service_timeout': 'seconds per sim-cell / gripper call',
    'moveit_node_name': "MoveItPy's node name (moveit backend)",
    'moveit_params_file': "moveit backend: a ROS parameter file with the cell's robot "
                          "description, SRDF and moveit_cpp parameters for MoveItPy ('' = "
                          "this process's --params-file arguments: pick_scene.launch.py "
                          'use_sim:=false passes MoveItConfigsBuilder(...).to_dict())',
}.items())


def default_parameters() -> dict:
    """Defaults from config/execution.yaml (the one place they are written)."""
    data = yaml.safe_load((config_dir() / 'execution.yaml').read_text())
    return dict(data['execution_node']['ros__parameters'])


def pick_target_from_prediction(response) -> PickTarget:
    """PredictGrasps response -> pick target: grasps + reconstructed meshes, camera frame."""
    frame = response.grasps.header.frame_id
    if response.reconstruction.objects and response.reconstruction.header.frame_id != frame:
        raise InputError(f"reconstruction frame '{response.reconstruction.header.frame_id}' "
                         f"differs from the grasps' frame '{frame}'")
    objects = [ReconstructedObject(o.object_id, o.vertices, o.faces, o.points)
               for o in msg_to_scene(response.reconstruction)]
    return PickTarget(msg_to_grasps(response.grasps), frame, objects)


class ExecutionNode(Node):
    """Serves /pick; `backend` may be injected (tests), else built from parameters."""

    def __init__(self, node_name: str = 'execution_node', backend=None, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        declare_params(self, PARAMETERS, default_parameters())
        self.client_group = ReentrantCallbackGroup()
        self.service_group = MutuallyExclusiveCallbackGroup()
        self.predict_client = self.create_client(PredictGrasps, self.p('predict_service'),
                                                 callback_group=self.client_group)
        self.setup_error = ''
        self.sequence = None
        # The candidate being executed, in the prediction's frame (for the web view).
        self.executed_pub = self.create_publisher(GraspArray, EXECUTED_GRASP_TOPIC,
                                                  LATCHED_QOS)
        self._target_frame = ''
        try:
            self.robot = self._robot_preset()
            self.config = self._pick_config()
            self.backend = backend or self._make_backend()
            self.sequence = PickSequence(self.backend, self.robot, self.config, self._table(),
                                         on_attempt=self._publish_attempt)
        except (InputError, ExecutionError) as exc:
            # Keep serving: every /pick answers with this reason instead of a crash.
            self.setup_error = str(exc)
            self.get_logger().error(f'execution backend unavailable: {exc}')
        self.srv = self.create_service(PickObject, 'pick', self._on_pick,
                                       callback_group=self.service_group)
        if self.sequence is not None:
            self.get_logger().info(
                f'serving /pick with robot {self.robot.name!r} on the '
                f'{self.p("backend")!r} backend (planning frame {self.backend.planning_frame})')

    # ----------------------------------------------------------------- set-up
    def p(self, name: str):
        return self.get_parameter(name).value

    def _robot_preset(self):
        import dataclasses
        robot = load_robot_preset(self.p('robot'))
        changes = {}
        for name in ('velocity_scaling', 'acceleration_scaling'):
            if self.p(name) > 0:
                changes[name] = float(self.p(name))
        if changes:
            robot = dataclasses.replace(robot, **changes).validate()
        if self.p('tcp_behind_fingertips') >= 0:
            robot = dataclasses.replace(robot, gripper=dataclasses.replace(
                robot.gripper, tcp_behind_fingertips=float(self.p('tcp_behind_fingertips'))))
        return robot

    def _pick_config(self) -> PickConfig:
        place = None
        key = 'sim_place_pose' if self.p('backend') == 'sim' and self.p('sim_place') else \
            'place_pose' if self.p('place') else None
        if key:
            values = np.asarray(self.p(key), dtype=np.float64)
            if values.shape != (6,):
                raise InputError(f'{key} needs 6 values (x y z roll pitch yaw), got '
                                 f'{values.tolist()}')
            place = make_pose(matrix_from_rpy(values[3:]), values[:3])
        if self.p('lift_mode') not in LIFT_MODES:
            raise InputError(f"lift_mode must be one of {LIFT_MODES}, got {self.p('lift_mode')!r}")
        return PickConfig(
            pre_grasp_distance=float(self.p('pre_grasp_distance')),
            lift_height=float(self.p('lift_height')), lift_mode=self.p('lift_mode'),
            width_margin=float(self.p('width_margin')),
            grasp_effort=float(self.p('grasp_effort')), open_effort=float(self.p('open_effort')),
            min_held_width=float(self.p('min_held_width')),
            max_candidates=int(self.p('max_candidates')),
            verify_hold_after_lift=bool(self.p('verify_hold_after_lift')),
            place_pose=place, retreat_after_place=float(self.p('retreat_after_place')),
            avoid_failed_grasps=bool(self.p('avoid_failed_grasps')),
            failed_grasp_distance=float(self.p('failed_grasp_distance')),
            failed_grasp_angle_deg=float(self.p('failed_grasp_angle_deg')),
            failed_grasp_memory=int(self.p('failed_grasp_memory')),
        ).validate()

    def _table(self) -> CollisionBox | None:
        if not self.p('use_table'):
            return None
        size = np.asarray(self.p('table_size'), dtype=np.float64)
        center = np.asarray(self.p('table_center'), dtype=np.float64)
        if size.shape != (3,) or center.shape != (3,) or (size <= 0).any():
            raise InputError(f'table_size / table_center need 3 values each (size > 0), got '
                             f'{size.tolist()} / {center.tolist()}')
        pose = np.eye(4)
        pose[:3, 3] = center
        return CollisionBox('table', size, pose)

    def _make_backend(self):
        kind = self.p('backend')
        if kind == 'sim':
            from zerograsp_ros.nodes.sim_cell_client import SimCellBackend
            return SimCellBackend(self, self.p('sim_cell_config') or None,
                                  self.p('sim_service_prefix'), self.p('service_timeout'),
                                  callback_group=self.client_group)
        if kind == 'moveit':
            from zerograsp_ros.execution.moveit_backend import MoveItBackend
            return MoveItBackend(self, self.robot, moveit_node_name=self.p('moveit_node_name'),
                                 callback_group=self.client_group,
                                 moveit_params_file=self.p('moveit_params_file'))
        raise InputError(f"backend must be 'sim' or 'moveit', got {kind!r}")

    # ----------------------------------------------------------------- /pick
    def _predict(self) -> tuple[PickTarget, str]:
        if not self.predict_client.wait_for_service(timeout_sec=5.0):
            raise ExecutionError(f'{self.predict_client.srv_name} is not available')
        req = PredictGrasps.Request()
        req.max_grasps = int(self.p('max_grasps'))
        req.refine = True
        req.return_reconstruction = True
        res = wait_for_future(self.predict_client.call_async(req),
                              float(self.p('predict_timeout')), 'grasp prediction')
        if not res.success:
            raise ExecutionError(f'grasp prediction failed: {res.message}')
        try:
            return pick_target_from_prediction(res), res.message
        except InputError as exc:  # the perception side sent something unusable
            raise ExecutionError(f'unusable grasp prediction: {exc}') from exc

    def _target(self, request) -> tuple[PickTarget, str]:
        if request.object_id < -1 or request.object_id == 0:
            raise InputError(f'object_id must be -1 (any) or a positive instance id, got '
                             f'{request.object_id}')
        if request.use_explicit_grasp:
            if not request.grasp_header.frame_id:
                raise InputError('explicit grasp without grasp_header.frame_id')
            array = GraspArray()
            array.header = request.grasp_header
            array.grasps = [request.grasp]
            grasps = msg_to_grasps(array)  # InputError on NaN/inf or a zero quaternion
            return PickTarget(grasps, request.grasp_header.frame_id), \
                'explicit grasp (no reconstruction: table only in the planning scene)'
        return self._predict()

    def _on_pick(self, request, response):
        if self.sequence is None:
            response.success, response.failed_stage = False, 'request'
            response.message = f'execution backend unavailable: {self.setup_error}'
            return response
        try:
            result, note = self._pick(request)
        except Exception as exc:  # never leave a caller without an answer
            self.get_logger().error(f'pick aborted by an internal error: {exc!r}')
            done = self.sequence.stages_so_far()
            result = PickResult(False, f'internal error ({type(exc).__name__}: {exc}); '
                                'nothing further was commanded',
                                done[-1].stage if done else 'request')
            note = ''
        for stage in result.stages:
            text = (f'[{stage.stage}] {"ok" if stage.ok else "FAILED"} ({stage.seconds:.2f} s): '
                    f'{stage.message}')
            if stage.ok:
                self.get_logger().info(text)
            else:
                self.get_logger().warning(text)
        return self.fill_response(result, response, note)

    def _pick(self, request) -> tuple[PickResult, str]:
        self._publish_attempt(None)   # a new pick: the last one's grasp is history
        try:
            target, note = self._target(request)
        except InputError as exc:
            return PickResult(False, f'bad request: {exc}', 'request'), ''
        except ExecutionError as exc:
            return PickResult(False, str(exc), 'perception'), ''
        if not request.use_explicit_grasp:
            target.object_id = int(request.object_id)
        target.dry_run = bool(request.dry_run)
        self._target_frame = target.frame_id
        return self.sequence.run(target), note

    def _publish_attempt(self, grasp=None):
        """The candidate being executed on EXECUTED_GRASP_TOPIC (none: an empty array)."""
        header = Header(frame_id=self._target_frame, stamp=self.get_clock().now().to_msg())
        try:
            msg = grasps_to_msg(grasp, header) if grasp is not None else GraspArray(header=header)
            self.executed_pub.publish(msg)
        except Exception as exc:  # a view must never stop the arm: say so and go on
            self.get_logger().warning(f'cannot publish the executed grasp: {exc}')

    def fill_response(self, result: PickResult, response, note: str = ''):
        response.success = bool(result.success)
        response.message = result.message + (f' [{note}]' if note and result.success else '')
        response.failed_stage = '' if result.success else result.failed_stage
        response.candidates_tried = int(result.candidates_tried)
        if result.grasp is not None and len(result.grasp):
            response.executed_grasp_header.frame_id = result.planning_frame
            response.executed_grasp_header.stamp = self.get_clock().now().to_msg()
            msg = grasps_to_msg(result.grasp, response.executed_grasp_header)
            if msg.grasps:
                response.executed_grasp = msg.grasps[0]
        return response

    def destroy_node(self):
        if getattr(self, 'backend', None) is not None:
            try:
                self.backend.close()
            except Exception as exc:  # shutting down anyway; say why it was not clean
                self.get_logger().warning(f'backend close failed: {exc}')
        return super().destroy_node()


def main(args=None):
    from zerograsp_ros.nodes.bringup import run_single_node
    return run_single_node(ExecutionNode, args)


if __name__ == '__main__':
    import sys
    sys.exit(main())
