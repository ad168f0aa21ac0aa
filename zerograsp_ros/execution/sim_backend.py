"""Execution backends for the simulated cell: over its ROS services, or in-process.

Talks to nodes/sim_cell_node.py through /sim_cell/move_tcp, /sim_cell/gripper
(srv/SimMoveTcp.srv, srv/SimGripper.srv), so it works across processes. The
camera extrinsics come from the cell's known calibration (config/sim_cell.yaml:
T_base_camera), not from TF. The simulated cell has no planning scene: the
scene update validates and keeps the collision meshes (a malformed one still
stops the pick before any motion), and attach/detach are bookkeeping; the
physics decides what is held.

rclpy and the service types are imported inside the class (a ROS edge, like
the moveit_py adapter), so this module imports without ROS. `SimCellApiBackend`
drives a zerograsp_ros.sim.cell.SimCell object directly (same semantics,
no ROS: for benchmarks and quick checks).
"""
from __future__ import annotations

from pathlib import Path
import threading

import numpy as np
import yaml

from zerograsp_ros.errors import InputError
from zerograsp_ros.execution.backends import (
    CollisionBox,
    CollisionMesh,
    ExecutionBackend,
    ExecutionError,
    GripperResult,
    MotionResult,
)
from zerograsp_ros.execution.robot import config_dir


def load_sim_cell_frames(path: str | Path | None = None) -> tuple[str, str, np.ndarray]:
    """(base_frame, camera_frame, T_base_camera) from the sim cell's YAML."""
    path = Path(path) if path else config_dir() / 'sim_cell.yaml'
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f'cannot read the sim cell config {path}: {exc}') from exc
    params = data
    if isinstance(data, dict) and 'sim_cell_node' in data:
        params = data['sim_cell_node'].get('ros__parameters', {})
    if not isinstance(params, dict) or 'T_base_camera' not in params:
        raise InputError(f'{path} has no sim_cell_node.ros__parameters.T_base_camera')
    T = np.asarray(params['T_base_camera'], dtype=np.float64)
    if T.size != 16 or not np.isfinite(T).all():
        raise InputError(f'{path}: T_base_camera must be 16 finite numbers (4x4 row-major)')
    return (str(params.get('base_frame', 'panda_link0')),
            str(params.get('camera_frame', 'camera_color_optical_frame')), T.reshape(4, 4))


def wait_for_future(future, timeout: float, what: str):
    """Block this thread until an rclpy future completes (the executor spins elsewhere)."""
    done = threading.Event()
    future.add_done_callback(lambda _f: done.set())
    if not done.wait(timeout):
        future.cancel()
        raise ExecutionError(f'{what}: no answer within {timeout:.1f} s')
    if future.exception() is not None:
        raise ExecutionError(f'{what}: {future.exception()}')
    return future.result()


class _SceneBookkeeping:
    """Planning-scene stand-in shared by the sim backends (the physics is the real scene)."""

    def update_planning_scene(self, objects: list[CollisionMesh], table: CollisionBox | None,
                              target: str | None) -> None:
        names = [o.name for o in objects]
        if len(set(names)) != len(names):
            raise ExecutionError(f'duplicate collision object names {names}')
        if target is not None and target not in names:
            raise ExecutionError(f'target {target!r} is not among the objects {names}')
        self.scene_objects = {o.name: o for o in objects}
        self.scene_target = target

    def attach(self, object_name: str) -> None:
        self.attached = object_name

    def detach(self, object_name: str) -> None:
        if self.attached != object_name:
            raise ExecutionError(f'{object_name} is not attached (attached: {self.attached})')
        self.attached = None
        self.scene_objects.pop(object_name, None)


class SimCellBackend(_SceneBookkeeping, ExecutionBackend):
    """Drives the simulated cell through its services; TCP poses in the cell's base frame.

    `node` must be spun by an executor in another thread (e.g. a
    MultiThreadedExecutor): calls block on futures, never spin themselves.
    """

    def __init__(self, node, sim_config: str | Path | None = None,
                 service_prefix: str = '/sim_cell', timeout: float = 30.0, callback_group=None):
        from rclpy.callback_groups import ReentrantCallbackGroup

        from zerograsp_ros.srv import SimGripper, SimMoveTcp
        self._srv = {'move': SimMoveTcp, 'gripper': SimGripper}
        self.node = node
        self.timeout = float(timeout)
        self.planning_frame, self.camera_frame, self.T_base_camera = \
            load_sim_cell_frames(sim_config)
        group = callback_group or ReentrantCallbackGroup()
        prefix = service_prefix.rstrip('/')
        self._move = node.create_client(SimMoveTcp, f'{prefix}/move_tcp', callback_group=group)
        self._grip = node.create_client(SimGripper, f'{prefix}/gripper', callback_group=group)
        self.scene_objects: dict[str, CollisionMesh] = {}
        self.scene_target: str | None = None
        self.attached: str | None = None

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

    def move(self, T_base_tcp: np.ndarray, straight_line: bool, dry_run: bool) -> MotionResult:
        from zerograsp_ros.nodes.conversions import pose_from_matrix
        T = np.asarray(T_base_tcp, dtype=np.float64)
        req = self._srv['move'].Request()
        req.target.header.frame_id = self.planning_frame
        req.target.header.stamp = self.node.get_clock().now().to_msg()
        req.target.pose = pose_from_matrix(T[:3, :3], T[:3, 3])
        req.straight_line = bool(straight_line)
        # A dry-run call first: an unreachable pose is "not planned" (try the next
        # candidate), a failure after that is an execution failure (stop).
        req.dry_run = True
        try:
            check = self._call(self._move, req, 'sim move_tcp (check)')
        except ExecutionError as exc:
            return MotionResult(False, True, str(exc))
        if not check.success:
            return MotionResult(False, False, check.message)
        if dry_run:
            return MotionResult(True, True, check.message, T)
        req.dry_run = False
        try:
            res = self._call(self._move, req, 'sim move_tcp')
        except ExecutionError as exc:
            return MotionResult(False, True, str(exc))
        reached = _pose_to_matrix(res.reached.pose)
        return MotionResult(bool(res.success), True, res.message, reached)

    def gripper(self, width: float, max_effort: float) -> GripperResult:
        req = self._srv['gripper'].Request()
        req.width = float(width)
        req.max_effort = float(max_effort)
        try:
            res = self._call(self._grip, req, 'sim gripper')
        except ExecutionError as exc:
            return GripperResult(False, float('nan'), None, str(exc))
        held = bool(res.object_held) if width < 0 else None
        return GripperResult(bool(res.success), float(res.width), held, res.message)

    def close(self) -> None:
        self.node.destroy_client(self._move)
        self.node.destroy_client(self._grip)


def _pose_to_matrix(pose) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    T = np.eye(4)
    q = [pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w]
    if np.linalg.norm(q) > 1e-9:
        T[:3, :3] = Rotation.from_quat(q).as_matrix()
    T[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return T


class SimCellApiBackend(_SceneBookkeeping, ExecutionBackend):
    """The simulated cell driven in-process through zerograsp_ros.sim.cell.SimCell."""

    def __init__(self, cell):
        self.cell = cell
        self.planning_frame = cell.config.base_frame
        self.camera_frame = cell.config.camera_frame
        self.scene_objects: dict[str, CollisionMesh] = {}
        self.scene_target: str | None = None
        self.attached: str | None = None

    def lookup_transform(self, target_frame: str, source_frame: str) -> np.ndarray:
        frames = {self.planning_frame: np.eye(4), self.camera_frame: self.cell.T_base_camera}
        if target_frame != self.planning_frame or source_frame not in frames:
            raise ExecutionError(f'the sim cell knows only {sorted(frames)} -> '
                                 f'{self.planning_frame!r}; asked for {target_frame!r} <- '
                                 f'{source_frame!r}')
        return frames[source_frame].copy()

    def move(self, T_base_tcp: np.ndarray, straight_line: bool, dry_run: bool) -> MotionResult:
        try:
            ok, msg = self.cell.move_tcp(T_base_tcp, straight_line=straight_line, dry_run=True)
            if not ok:
                return MotionResult(False, False, msg)
            if dry_run:
                return MotionResult(True, True, msg, np.asarray(T_base_tcp))
            ok, msg = self.cell.move_tcp(T_base_tcp, straight_line=straight_line)
        except InputError as exc:
            return MotionResult(False, False, str(exc))
        return MotionResult(ok, True, msg, self.cell.tcp_pose_base())

    def gripper(self, width: float, max_effort: float) -> GripperResult:
        try:
            measured, held_id = self.cell.gripper_command(width, max_effort)
        except InputError as exc:
            return GripperResult(False, float('nan'), None, str(exc))
        held = bool(held_id) if width < 0 else None
        return GripperResult(True, float(measured), held, f'held object {held_id}')
