"""The simulated cell's planning scene and its in-process execution backend.

`SimPlanningScene` is the planning scene every sim backend shares; `SimCellApiBackend`
drives a zerograsp_ros.sim.cell.SimCell object directly (no ROS: benchmarks and quick
checks). The backend that reaches the cell over its ROS services (/sim_cell/move_tcp,
/sim_cell/gripper) is `zerograsp_ros.nodes.sim_cell_client.SimCellBackend`, with the
same semantics. The cell has no MoveIt: the planning scene keeps the collision meshes
and does the planning-scene collision check itself; the physics decides what is held.
"""
from __future__ import annotations

import numpy as np

from zerograsp_ros.errors import InputError
from zerograsp_ros.execution.backends import (
    CollisionBox,
    CollisionMesh,
    ExecutionBackend,
    ExecutionError,
    GripperResult,
    MotionResult,
)
from zerograsp_ros.grasp import DEFAULT_GRIPPER


class SimPlanningScene:
    """The planning scene of the sim backends.

    It does what MoveIt's collision checking does on the robot, with the gripper box
    model of zerograsp_ros.grasp (refinement's check). A straight-line move is refused
    ("not planned") when the gripper, at the current opening, would sweep through a
    non-target object's collision mesh (sampled surface) or below the table top on its
    way; a free move checks its goal pose with the fingers fully open. The target
    (contact allowed) and the attached object are exempt. The physics of the cell then
    decides what actually happens.
    """

    check_collisions = True
    PATH_STEP = 0.01   # m between checked poses on a straight line

    def _init_scene(self, check_collisions: bool = True) -> None:
        from dataclasses import replace

        from zerograsp_ros.grasp.gripper import gripper_preset
        self.check_collisions = bool(check_collisions)
        # the body itself at each checked pose: the moves here are checked pose by pose
        # along their path, so the refinement model's swept approach would count twice
        self.gripper_model = replace(gripper_preset(DEFAULT_GRIPPER), approach_distance=0.0)
        self.scene_objects: dict[str, CollisionMesh] = {}
        self.scene_points: dict[str, np.ndarray] = {}
        self.scene_target: str | None = None
        self.table_plane: np.ndarray | None = None
        self.attached: str | None = None
        self.tcp: np.ndarray | None = None          # last TCP pose reached (or planned to)
        self.opening = self.gripper_model.max_stroke

    def update_planning_scene(self, objects: list[CollisionMesh], table: CollisionBox | None,
                              target: str | None) -> None:
        import trimesh
        names = [o.name for o in objects]
        if len(set(names)) != len(names):
            raise ExecutionError(f'duplicate collision object names {names}')
        if target is not None and target not in names:
            raise ExecutionError(f'target {target!r} is not among the objects {names}')
        self.scene_objects = {o.name: o for o in objects}
        rng = np.random.default_rng(0)
        self.scene_points = {}
        for o in objects:  # surface samples: the box model counts points, not triangles
            mesh = trimesh.Trimesh(o.vertices, o.faces, process=False)
            samples = trimesh.sample.sample_surface(mesh, 400, seed=rng)[0] \
                if mesh.area > 0 else np.zeros((0, 3))
            self.scene_points[o.name] = np.concatenate([o.vertices, samples])
        self.scene_target = target
        self.table_plane = None
        if table is not None:
            n = table.pose[:3, 2]
            top = table.pose[:3, 3] + n * table.size[2] / 2
            self.table_plane = np.r_[n, -n @ top]

    def attach(self, object_name: str) -> None:
        self.attached = object_name

    def detach(self, object_name: str) -> None:
        if self.attached != object_name:
            raise ExecutionError(f'{object_name} is not attached (attached: {self.attached})')
        self.attached = None
        self.scene_objects.pop(object_name, None)
        self.scene_points.pop(object_name, None)

    def scene_collision(self, T_goal: np.ndarray, straight_line: bool) -> str | None:
        """Why the move would collide with the planning scene, or None."""
        if not self.check_collisions or (not self.scene_points and self.table_plane is None):
            return None
        from zerograsp_ros.grasp.refinement import RefinementConfig, check_collisions
        from zerograsp_ros.grasp.representation import GraspSet
        if straight_line and self.tcp is not None:
            dist = np.linalg.norm(T_goal[:3, 3] - self.tcp[:3, 3])
            s = np.linspace(0.0, 1.0, max(2, int(np.ceil(dist / self.PATH_STEP)) + 1))
            t = self.tcp[:3, 3] + s[:, None] * (T_goal[:3, 3] - self.tcp[:3, 3])
            opening = self.opening
        else:
            t, opening = T_goal[None, :3, 3], self.gripper_model.max_stroke
        n = len(t)
        poses = GraspSet(np.repeat(T_goal[None, :3, :3], n, 0), t,
                         np.full(n, max(opening, 1e-3)), np.zeros(n), np.ones(n), np.ones(n),
                         np.ones(n), np.zeros(n))
        config = RefinementConfig(collision_tolerance_points=2)
        hits = []
        for name, points in self.scene_points.items():
            if name in (self.scene_target, self.attached):
                continue
            if check_collisions(poses, points, self.gripper_model, config)['collision'].any():
                hits.append(name)
        if self.table_plane is not None and self.attached is None and check_collisions(
                poses, np.zeros((0, 3)), self.gripper_model, config,
                self.table_plane)['collision'].any():
            hits.append('the table')
        if hits:
            return 'the gripper would hit ' + ', '.join(hits) + ' (planning scene)'
        return None

    def _plan_and_move(self, T_base_tcp, straight_line: bool, dry_run: bool, check, execute):
        """Shared move logic: scene check, reachability check, then the motion."""
        T = np.asarray(T_base_tcp, dtype=np.float64)
        blocked = self.scene_collision(T, straight_line)
        if blocked:
            return MotionResult(False, False, blocked)
        ok, message = check(T)
        if not ok:
            return MotionResult(False, False, message)
        if dry_run:
            self.tcp = T
            return MotionResult(True, True, message, T)
        ok, message, reached = execute(T)
        self.tcp = reached if reached is not None else T
        return MotionResult(ok, True, message, reached)

    def _after_gripper(self, width: float, result: GripperResult) -> GripperResult:
        if result.ok and np.isfinite(result.width):
            self.opening = result.width
        return result


class SimCellApiBackend(SimPlanningScene, ExecutionBackend):
    """The simulated cell driven in-process through zerograsp_ros.sim.cell.SimCell."""

    def __init__(self, cell, check_collisions: bool = True):
        self.cell = cell
        self.planning_frame = cell.config.base_frame
        self.camera_frame = cell.config.camera_frame
        self._init_scene(check_collisions)
        self.tcp = cell.tcp_pose_base()

    def lookup_transform(self, target_frame: str, source_frame: str) -> np.ndarray:
        frames = {self.planning_frame: np.eye(4), self.camera_frame: self.cell.T_base_camera}
        if target_frame != self.planning_frame or source_frame not in frames:
            raise ExecutionError(f'the sim cell knows only {sorted(frames)} -> '
                                 f'{self.planning_frame!r}; asked for {target_frame!r} <- '
                                 f'{source_frame!r}')
        return frames[source_frame].copy()

    def move(self, T_base_tcp: np.ndarray, straight_line: bool, dry_run: bool) -> MotionResult:
        def check(T):
            try:
                return self.cell.move_tcp(T, straight_line=straight_line, dry_run=True)
            except InputError as exc:
                return False, str(exc)

        def execute(T):
            ok, msg = self.cell.move_tcp(T, straight_line=straight_line)
            return ok, msg, self.cell.tcp_pose_base()

        return self._plan_and_move(T_base_tcp, straight_line, dry_run, check, execute)

    def gripper(self, width: float, max_effort: float) -> GripperResult:
        try:
            measured, held_id = self.cell.gripper_command(width, max_effort)
        except InputError as exc:
            return GripperResult(False, float('nan'), None, str(exc))
        held = bool(held_id) if width < 0 else None
        return self._after_gripper(width, GripperResult(True, float(measured), held,
                                                        f'held object {held_id}'))
