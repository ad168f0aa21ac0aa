"""Execution backend for the real cell: moveit_py + the gripper action + tf2.

Everything robot-PC-only (moveit.planning, moveit_msgs, control_msgs, tf2_ros,
rclpy.action) is imported in `load_moveit_api()`, and the Humble/Jazzy API
differences live in `MoveItApi` (one place):
- `MoveItPy.execute`: Jazzy `execute(trajectory, controllers=[...])`, Humble
  `execute(group_name, trajectory, blocking=True)`.
- the Robotiq controller's action: `control_msgs/ParallelGripperCommand`
  (Jazzy's parallel_gripper_action_controller, the default) or `GripperCommand`
  (Humble-era gripper_controllers), chosen by the robot preset.

MoveItPy gets its parameters the way a launch file gives them: the real-cell launch
passes `MoveItConfigsBuilder(...).to_dict()` to this node, launch_ros writes it to a
`--params-file`, and MoveItPy reads those from the process's argv (or from
`moveit_params_file`). Gripper goals count only once the knuckle joint has settled
on /joint_states (zerograsp_ros.execution.knuckle_monitor): the controller reports
"stalled, succeeded" long before the fingers stop.

Straight-line motions use the preset's `linear_motion` pipeline (Pilz LIN by
default), free motions `free_motion` (OMPL). On a dry run every plan starts
from the goal state of the previous one, so the whole sequence is planned
without moving.
"""
from __future__ import annotations

from dataclasses import dataclass
import os

import numpy as np

from zerograsp_ros.errors import InputError
from zerograsp_ros.execution.backends import (
    CollisionBox,
    CollisionMesh,
    ExecutionBackend,
    ExecutionError,
    GripperResult,
    MotionResult,
    wait_for_future,
)
from zerograsp_ros.execution.knuckle_monitor import KnuckleMonitor
from zerograsp_ros.execution.robot import RobotPreset
from zerograsp_ros.geometry.transforms import matrix_to_pose, pose_to_matrix

# GoalStatus values of action_msgs (kept here so the module imports without ROS).
STATUS_SUCCEEDED, STATUS_ABORTED = 4, 6


@dataclass
class MoveItApi:
    """The robot-PC classes the adapter uses (real ones from load_moveit_api, or fakes)."""

    MoveItPy: object
    PlanRequestParameters: object
    RobotState: object
    CollisionObject: object
    AttachedCollisionObject: object
    SolidPrimitive: object
    Mesh: object
    MeshTriangle: object
    Point: object
    Pose: object
    PoseStamped: object
    GripperCommand: object
    ParallelGripperCommand: object | None
    ActionClient: object
    make_tf_buffer: object           # callable(node) -> object with lookup_transform(...)
    # callable(node, topic, callback, callback_group) -> subscription to sensor_msgs/JointState
    subscribe_joint_states: object = None
    distro: str = 'jazzy'

    def make_moveit_py(self, node_name: str, params_file: str = ''):
        kwargs = {'launch_params_filepaths': [params_file]} if params_file else {}
        if self.distro != 'humble':
            # One /get_planning_scene in the cell is enough (RViz / move_group own it).
            kwargs['provide_planning_service'] = False
        return self.MoveItPy(node_name=node_name, **kwargs)

    def execute(self, robot, group: str, trajectory, controllers) -> tuple[bool, str]:
        """Run a trajectory; (succeeded, status text)."""
        if self.distro == 'humble':
            status = robot.execute(group, trajectory, blocking=True)
            return status is not False, 'executed' if status is not False else 'failed'
        # Jazzy: an ExecutionStatus, truthy on success, .status e.g. 'SUCCEEDED' / 'ABORTED'.
        status = robot.execute(trajectory, controllers=list(controllers))
        text = str(getattr(status, 'status', status))
        return bool(status), text


def load_moveit_api() -> MoveItApi:
    """Import the robot-PC packages; ExecutionError naming the missing one otherwise."""
    try:
        from control_msgs.action import GripperCommand
        from geometry_msgs.msg import Point, Pose, PoseStamped
        from moveit.core.robot_state import RobotState
        from moveit.planning import MoveItPy, PlanRequestParameters
        from moveit_msgs.msg import AttachedCollisionObject, CollisionObject
        from rclpy.action import ActionClient
        from shape_msgs.msg import Mesh, MeshTriangle, SolidPrimitive
        import tf2_ros
    except ImportError as exc:
        raise ExecutionError(f'the moveit backend needs moveit_py, moveit_msgs, control_msgs '
                             f'and tf2_ros (a ROS 2 install with MoveIt 2): {exc}') from exc
    try:
        from control_msgs.action import ParallelGripperCommand
    except ImportError:  # older control_msgs (Humble) lack it
        ParallelGripperCommand = None

    def make_tf_buffer(node):
        buffer = tf2_ros.Buffer()
        buffer._zerograsp_listener = tf2_ros.TransformListener(buffer, node)
        return buffer

    return MoveItApi(MoveItPy, PlanRequestParameters, RobotState, CollisionObject,
                     AttachedCollisionObject, SolidPrimitive, Mesh, MeshTriangle, Point, Pose,
                     PoseStamped, GripperCommand, ParallelGripperCommand, ActionClient,
                     make_tf_buffer, joint_state_subscription,
                     os.environ.get('ROS_DISTRO', 'jazzy').lower())


def joint_state_subscription(node, topic: str, callback, callback_group=None):
    """sensor_msgs/JointState subscription; sensor-data QoS also matches a reliable publisher."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState

    return node.create_subscription(JointState, topic, callback, qos_profile_sensor_data,
                                    callback_group=callback_group)


def pose_msg(api: MoveItApi, T: np.ndarray):
    """4x4 -> the API's geometry_msgs/Pose (maths: geometry.transforms)."""
    pose = api.Pose()
    position, q = matrix_to_pose(T)
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = \
        (float(v) for v in q)
    return pose


def _store_acm(scene, acm) -> None:
    # Some moveit_py builds hand out the ACM by reference, others a copy with a setter.
    try:
        scene.allowed_collision_matrix = acm
    except AttributeError:  # read-only property: the reference was edited in place
        pass


class MoveItBackend(ExecutionBackend):
    """moveit_py planning/execution, the gripper action and tf2, for one robot preset."""

    TABLE_NAME = 'table'

    def __init__(self, node, robot: RobotPreset, api: MoveItApi | None = None,
                 moveit_node_name: str = 'zerograsp_moveit_py', tf_timeout: float = 1.0,
                 callback_group=None, moveit_params_file: str = ''):
        self.api = api or load_moveit_api()
        self.node = node
        self.preset = robot
        self.planning_frame = robot.base_frame
        self.tf_timeout = float(tf_timeout)
        try:
            self.robot = self.api.make_moveit_py(moveit_node_name, moveit_params_file)
            self.arm = self.robot.get_planning_component(robot.planning_group)
        except Exception as exc:  # MoveItPy raises RuntimeError for a missing configuration
            raise ExecutionError(
                f'MoveItPy could not start for group {robot.planning_group!r}: {exc}. It needs '
                'the cell\'s robot_description(_semantic) and the moveit_cpp parameters: start '
                'it with launch/pick_scene.launch.py use_sim:=false (it passes '
                'MoveItConfigsBuilder(...).to_dict(), config/moveit_cpp.yaml included), or '
                'set moveit_params_file') from exc
        self.scene_monitor = self.robot.get_planning_scene_monitor()
        self.tf_buffer = self.api.make_tf_buffer(node)
        grip = robot.gripper
        action_type = self.api.GripperCommand
        if grip.action_type == 'ParallelGripperCommand':
            if self.api.ParallelGripperCommand is None:
                raise ExecutionError('this control_msgs has no ParallelGripperCommand; set the '
                                     "preset's gripper.action_type to GripperCommand")
            action_type = self.api.ParallelGripperCommand
        self._action_type = action_type
        self.gripper_client = self.api.ActionClient(node, action_type, grip.action_name,
                                                    callback_group=callback_group)
        self.knuckle = KnuckleMonitor(grip.joint_name, grip.settle_time, grip.settle_tolerance,
                                      grip.motion_start_wait)
        self._joint_states = self.api.subscribe_joint_states(
            node, grip.joint_states_topic, self.knuckle.on_joint_state, callback_group)
        self.scene_objects: list[str] = []
        self.attached: list[str] = []   # attached to the TCP in the planning scene
        self._dry_run_start = None   # RobotState the next dry-run plan starts from

    # ----------------------------------------------------------------- frames
    def lookup_transform(self, target_frame: str, source_frame: str) -> np.ndarray:
        import rclpy.duration
        import rclpy.time
        try:
            stamped = self.tf_buffer.lookup_transform(
                target_frame, source_frame, rclpy.time.Time(),
                timeout=rclpy.duration.Duration(seconds=self.tf_timeout))
        except Exception as exc:  # tf2 raises several unrelated exception types
            raise ExecutionError(f'no TF {target_frame} <- {source_frame}: {exc} (publish the '
                                 f'hand-eye calibration as a static TF {target_frame} -> '
                                 'camera_link; the camera driver publishes the rest)') from exc
        t, r = stamped.transform.translation, stamped.transform.rotation
        try:
            return pose_to_matrix([t.x, t.y, t.z], [r.x, r.y, r.z, r.w],
                                  f'TF {target_frame} <- {source_frame}')
        except InputError as exc:
            raise ExecutionError(str(exc)) from exc

    # ----------------------------------------------------------------- planning scene
    def _collision_object(self, name: str, operation):
        co = self.api.CollisionObject()
        co.id = name
        co.header.frame_id = self.planning_frame
        co.operation = operation
        return co

    def mesh_object(self, obj: CollisionMesh):
        co = self._collision_object(obj.name, self.api.CollisionObject.ADD)
        mesh = self.api.Mesh()
        mesh.vertices = [self.api.Point(x=float(x), y=float(y), z=float(z))
                         for x, y, z in obj.vertices]
        mesh.triangles = [self.api.MeshTriangle(vertex_indices=[int(a), int(b), int(c)])
                          for a, b, c in obj.faces]
        co.meshes = [mesh]
        co.mesh_poses = [pose_msg(self.api, np.eye(4))]  # vertices are in the base frame
        co.pose = pose_msg(self.api, np.eye(4))
        return co

    def box_object(self, box: CollisionBox):
        co = self._collision_object(box.name, self.api.CollisionObject.ADD)
        prim = self.api.SolidPrimitive()
        prim.type = self.api.SolidPrimitive.BOX
        prim.dimensions = [float(v) for v in box.size]
        co.primitives = [prim]
        co.primitive_poses = [pose_msg(self.api, np.eye(4))]
        co.pose = pose_msg(self.api, box.pose)
        return co

    def update_planning_scene(self, objects: list[CollisionMesh], table: CollisionBox | None,
                              target: str | None) -> None:
        touch = list(self.preset.touch_links)
        try:
            with self.scene_monitor.read_write() as scene:
                for name in self.scene_objects:
                    scene.apply_collision_object(
                        self._collision_object(name, self.api.CollisionObject.REMOVE))
                added = []
                if table is not None:
                    scene.apply_collision_object(self.box_object(table))
                    added.append(table.name)
                for obj in objects:
                    scene.apply_collision_object(self.mesh_object(obj))
                    added.append(obj.name)
                acm = scene.allowed_collision_matrix
                for obj in objects:  # gripper links may touch the target, nothing else
                    for link in touch:
                        acm.set_entry(obj.name, link, obj.name == target)
                _store_acm(scene, acm)
                scene.current_state.update()
        except Exception as exc:  # moveit_py raises RuntimeError or pybind errors
            raise ExecutionError(f'planning scene update failed: {exc}') from exc
        self.scene_objects = added

    def attach(self, object_name: str) -> None:
        aco = self.api.AttachedCollisionObject()
        aco.link_name = self.preset.tcp_link
        aco.object = self._collision_object(object_name, self.api.CollisionObject.ADD)
        aco.touch_links = list(self.preset.touch_links)
        try:
            with self.scene_monitor.read_write() as scene:
                if not scene.process_attached_collision_object(aco):
                    raise ExecutionError(f'the planning scene refused to attach {object_name} '
                                         f'to {aco.link_name} (unknown object or link?)')
                if self.TABLE_NAME in self.scene_objects:  # it rests on the table when lifted
                    acm = scene.allowed_collision_matrix
                    acm.set_entry(object_name, self.TABLE_NAME, True)
                    _store_acm(scene, acm)
                scene.current_state.update()
        except ExecutionError:
            raise
        except Exception as exc:
            raise ExecutionError(f'attaching {object_name} failed: {exc}') from exc
        self.attached.append(object_name)

    def detach(self, object_name: str) -> None:
        """Detach `object_name` ('' = everything attached to the TCP) and drop its world copy."""
        aco = self.api.AttachedCollisionObject()
        aco.link_name = self.preset.tcp_link
        aco.object = self._collision_object(object_name, self.api.CollisionObject.REMOVE)
        names = [object_name] if object_name else list(self.attached)
        try:
            with self.scene_monitor.read_write() as scene:
                if not scene.process_attached_collision_object(aco):
                    raise ExecutionError(f'the planning scene refused to detach '
                                         f'{object_name or "all objects"} from {aco.link_name}')
                # Its mesh pose is stale once released: drop it from the world too.
                for name in names:
                    scene.apply_collision_object(
                        self._collision_object(name, self.api.CollisionObject.REMOVE))
                scene.current_state.update()
        except ExecutionError:
            raise
        except Exception as exc:
            raise ExecutionError(f'detaching {object_name or "all objects"} failed: {exc}') \
                from exc
        self.attached = [n for n in self.attached if n not in names]
        self.scene_objects = [n for n in self.scene_objects if n not in names]

    # ----------------------------------------------------------------- motion
    def begin_pick(self) -> None:
        """Forget the dry-run start; detach what an earlier pick left attached.

        With `place: false` (or a pick that failed after the grasp) the object stays
        attached to the TCP after the pick; the next pick opens the gripper before it
        approaches, so the object must not ride along in the planning scene.
        """
        self._dry_run_start = None
        if self.attached:
            self.detach('')

    def plan_parameters(self, straight_line: bool):
        spec = self.preset.linear_motion if straight_line else self.preset.free_motion
        params = self.api.PlanRequestParameters(self.robot, spec.get('namespace', ''))
        params.planning_pipeline = spec['pipeline']
        params.planner_id = spec['planner_id']
        params.planning_time = self.preset.planning_time
        params.planning_attempts = self.preset.planning_attempts
        params.max_velocity_scaling_factor = self.preset.velocity_scaling
        params.max_acceleration_scaling_factor = self.preset.acceleration_scaling
        return params

    def goal_pose(self, T_base_tcp: np.ndarray):
        goal = self.api.PoseStamped()
        goal.header.frame_id = self.planning_frame
        goal.pose = pose_msg(self.api, T_base_tcp)
        return goal

    def move(self, T_base_tcp: np.ndarray, straight_line: bool, dry_run: bool) -> MotionResult:
        T = np.asarray(T_base_tcp, dtype=np.float64)
        if dry_run and self._dry_run_start is not None:
            self.arm.set_start_state(robot_state=self._dry_run_start)
        else:
            self.arm.set_start_state_to_current_state()
        kind = 'straight-line' if straight_line else 'free'
        try:
            goal_set = self.arm.set_goal_state(pose_stamped_msg=self.goal_pose(T),
                                               pose_link=self.preset.tcp_link)
        except Exception as exc:  # pybind raises for malformed arguments
            return MotionResult(False, False, f'{kind} goal rejected: {exc}')
        if not goal_set:
            return MotionResult(False, False, f'MoveIt rejected the {kind} goal for '
                                f'{self.preset.tcp_link!r} (a link of the robot model?)')
        try:
            plan = self.arm.plan(single_plan_parameters=self.plan_parameters(straight_line))
        except Exception as exc:
            return MotionResult(False, False, f'{kind} planning raised: {exc}')
        if not plan:
            return MotionResult(False, False, f'no {kind} plan to the TCP goal')
        if dry_run:
            self._dry_run_start = self._last_state(plan.trajectory, T)
            return MotionResult(True, True, f'{kind} motion planned', T)
        self._dry_run_start = None
        try:
            ok, status = self.api.execute(self.robot, self.preset.planning_group,
                                          plan.trajectory, self.preset.controllers)
        except Exception as exc:
            return MotionResult(False, True, f'{kind} execution raised: {exc}')
        return MotionResult(ok, True, f'{kind} motion ' + (
            'executed' if ok else f'failed in the controller ({status})'), T)

    def _last_state(self, trajectory, T: np.ndarray):
        try:  # moveit_py RobotTrajectory is indexable in recent releases
            return trajectory[len(trajectory) - 1]
        except Exception:  # older bindings: solve IK at the goal instead
            state = self.api.RobotState(self.robot.get_robot_model())
            state.set_from_ik(self.preset.planning_group, self.goal_pose(T).pose,
                              self.preset.tcp_link, 1.0)
            return state

    # ----------------------------------------------------------------- gripper
    def gripper_goal(self, width: float, max_effort: float):
        grip = self.preset.gripper
        angle = grip.knuckle_closed if width < 0 else grip.width_to_knuckle(width)
        effort = float(max_effort) if max_effort > 0 else grip.max_effort
        goal = self._action_type.Goal()
        if self._action_type is self.api.GripperCommand:
            goal.command.position = float(angle)
            goal.command.max_effort = effort
        else:  # ParallelGripperCommand: a JointState command
            goal.command.name = [grip.joint_name]
            goal.command.position = [float(angle)]
            goal.command.effort = [effort]
        return goal

    def gripper(self, width: float, max_effort: float) -> GripperResult:
        """Send the goal, then judge it on the knuckle joint once it has settled."""
        grip = self.preset.gripper
        closing = width < 0
        target = grip.knuckle_closed if closing else grip.width_to_knuckle(width)
        if not self.gripper_client.wait_for_server(timeout_sec=min(grip.action_timeout, 5.0)):
            return GripperResult(False, float('nan'), None,
                                 f'gripper action {grip.action_name} is not available')
        last = self.knuckle.latest()
        sent = self.knuckle.clock()
        try:
            goal = self.gripper_goal(width, max_effort)
            handle = wait_for_future(self.gripper_client.send_goal_async(goal),
                                     grip.action_timeout, 'gripper goal')
            if not handle.accepted:
                return GripperResult(False, float('nan'), None, 'gripper goal rejected')
            response = wait_for_future(handle.get_result_async(), grip.action_timeout,
                                       'gripper result')
        except ExecutionError as exc:
            return GripperResult(False, float('nan'), None, str(exc))
        res = response.result
        report = (f'status {response.status}, stalled {bool(res.stalled)}, '
                  f'reached_goal {bool(res.reached_goal)}')
        # allow_stalling false: a stall aborts the goal, which is still a finished move.
        if not (response.status == STATUS_SUCCEEDED
                or (response.status == STATUS_ABORTED and bool(res.stalled))):
            return GripperResult(False, float('nan'), None, f'gripper goal failed ({report})')
        try:
            position = self.knuckle.wait_settled(sent, last[1] if last else None, target,
                                                 grip.settle_timeout)
        except ExecutionError as exc:
            return GripperResult(False, float('nan'), None, f'{exc} ({report})')
        width_now = grip.knuckle_to_width(position)
        report = f'knuckle settled at {position:.3f} rad (commanded {target:.3f}); {report}'
        if closing:
            # The width check: stopped short of fully closed = something between the pads.
            held = grip.knuckle_closed - position > grip.position_tolerance
            return GripperResult(True, width_now, held, report)
        if abs(position - target) > grip.position_tolerance:
            return GripperResult(False, width_now, None, 'gripper did not reach the commanded '
                                 f'opening {width:.3f} m (blocked?): {report}')
        return GripperResult(True, width_now, None, report)

    def close(self) -> None:
        self.gripper_client.destroy()
        if self.node is not None and self._joint_states is not None:
            self.node.destroy_subscription(self._joint_states)

