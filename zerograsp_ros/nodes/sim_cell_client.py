"""The simulated cell's execution backend over ROS: clients of /sim_cell/move_tcp and /gripper.

`SimCellBackend` talks to nodes/sim_cell_node.py through srv/SimMoveTcp.srv and
srv/SimGripper.srv, so it works across processes; the planning scene and the move
logic are shared with the in-process backend (zerograsp_ros.execution.sim_backend).
The camera extrinsics come from the cell's known calibration (config/sim_cell.yaml:
T_base_camera, read by zerograsp_ros.sim.cell.load_sim_cell_config), not from TF.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rclpy.callback_groups import ReentrantCallbackGroup

from zerograsp_ros.errors import InputError
from zerograsp_ros.execution.backends import (
    ExecutionBackend,
    ExecutionError,
    GripperResult,
    MotionResult,
    wait_for_future,
)
from zerograsp_ros.execution.sim_backend import SimPlanningScene
from zerograsp_ros.nodes.conversions import matrix_to_pose_msg, pose_msg_to_matrix
from zerograsp_ros.sim.cell_config import load_sim_cell_config
from zerograsp_ros.srv import SimGripper, SimMoveTcp


class SimCellBackend(SimPlanningScene, ExecutionBackend):
    """Drives the simulated cell through its services; TCP poses in the cell's base frame.

    `node` must be spun by an executor in another thread (e.g. a
    MultiThreadedExecutor): calls block on futures, never spin themselves.
    """

    def __init__(self, node, sim_config: str | Path | None = None,
                 service_prefix: str = '/sim_cell', timeout: float = 30.0, callback_group=None,
                 check_collisions: bool = True):
        self.node = node
        self.timeout = float(timeout)
        cell_config = load_sim_cell_config(sim_config)   # the cell's own calibration
        self.planning_frame, self.camera_frame = cell_config.base_frame, cell_config.camera_frame
        self.T_base_camera = cell_config.T_base_camera
        group = callback_group or ReentrantCallbackGroup()
        prefix = service_prefix.rstrip('/')
        self._move = node.create_client(SimMoveTcp, f'{prefix}/move_tcp', callback_group=group)
        self._grip = node.create_client(SimGripper, f'{prefix}/gripper', callback_group=group)
        self._init_scene(check_collisions)

    def _call(self, client, request, what: str):
        if not client.wait_for_service(timeout_sec=min(self.timeout, 10.0)):
            raise ExecutionError(f'{what}: service {client.srv_name} is not available '
                                 '(is sim_cell_node running?)')
        return wait_for_future(client.call_async(request), self.timeout, what)

    def lookup_transform(self, target_frame: str, source_frame: str) -> np.ndarray:
        frames = {self.planning_frame: np.eye(4), self.camera_frame: self.T_base_camera}
        if target_frame != self.planning_frame or source_frame not in frames:
            raise ExecutionError(f'the sim cell knows only {source_frame!r} in '
                                 f'{sorted(frames)} -> {self.planning_frame!r}; asked for '
                                 f'{target_frame!r} <- {source_frame!r}')
        return frames[source_frame].copy()

    def _request(self, T: np.ndarray, straight_line: bool, dry_run: bool):
        req = SimMoveTcp.Request()
        req.target.header.frame_id = self.planning_frame
        req.target.header.stamp = self.node.get_clock().now().to_msg()
        req.target.pose = matrix_to_pose_msg(T)
        req.straight_line = bool(straight_line)
        req.dry_run = bool(dry_run)
        return req

    def move(self, T_base_tcp: np.ndarray, straight_line: bool, dry_run: bool) -> MotionResult:
        # The cell's dry-run answer is the plan check: an unreachable pose is "not planned"
        # (try the next candidate), a failure after that is an execution failure (stop).
        def check(T):
            try:
                res = self._call(self._move, self._request(T, straight_line, True),
                                 'sim move_tcp (check)')
            except ExecutionError as exc:
                return False, str(exc)
            return bool(res.success), res.message

        def execute(T):
            try:
                res = self._call(self._move, self._request(T, straight_line, False),
                                 'sim move_tcp')
            except ExecutionError as exc:
                return False, str(exc), None
            return bool(res.success), res.message, reached_pose(res)

        return self._plan_and_move(T_base_tcp, straight_line, dry_run, check, execute)

    def gripper(self, width: float, max_effort: float) -> GripperResult:
        req = SimGripper.Request()
        req.width = float(width)
        req.max_effort = float(max_effort)
        try:
            res = self._call(self._grip, req, 'sim gripper')
        except ExecutionError as exc:
            return GripperResult(False, float('nan'), None, str(exc))
        held = bool(res.object_held) if width < 0 else None
        return self._after_gripper(width, GripperResult(bool(res.success), float(res.width),
                                                        held, res.message))

    def close(self) -> None:
        self.node.destroy_client(self._move)
        self.node.destroy_client(self._grip)


def reached_pose(response) -> np.ndarray | None:
    """The TCP pose a SimMoveTcp answer reports, or None when it carries none."""
    try:
        return pose_msg_to_matrix(response.reached.pose, 'reached pose')
    except InputError:   # a failed call answers a default (zero) pose
        return None
