"""A recording fake of moveit_py, the Robotiq gripper action and tf2 for the adapter tests.

It fails where the real packages fail, with their names, signatures and return values
(moveit2 jazzy moveit_py bindings, ros2_controllers jazzy gripper controllers):
- `MoveItPy(node_name, name_space, launch_params_filepaths, config_dict,
  provide_planning_service, remappings)`; Jazzy `execute(robot_trajectory, controllers)`
  (both required) returns an ExecutionStatus (truthy, `.status` text), Humble
  `execute(group, trajectory, blocking=True)`.
- `get_planning_component` raises for a group the SRDF lacks;
  `PlanningComponent.set_goal_state(...)` returns False for a pose_link that is not a
  link of the model; `plan()` returns a response that is falsy without a plan.
- `PlanningScene.process_attached_collision_object` returns a bool (False for an
  unknown link or object); `apply_collision_object` returns None.
- The gripper action: GripperCommand (goal.command = control_msgs/GripperCommand:
  position, max_effort; result position, effort, stalled, reached_goal) or
  ParallelGripperCommand (goal.command = sensor_msgs/JointState with one position,
  anything else is rejected; result state: JointState, stalled, reached_goal). Like the
  Robotiq driver, the controller answers "stalled, succeeded" at once with the knuckle
  where it was; the knuckle then moves on /joint_states (sensor_msgs/JointState) and
  stops at the target or on the object.
"""
from __future__ import annotations

from contextlib import contextmanager
import threading
import time
from types import SimpleNamespace

import numpy as np
from scipy.spatial.transform import Rotation

STATUS_SUCCEEDED = 4


class Future:
    """A completed future (the adapter only adds done callbacks and reads results)."""

    def __init__(self, value):
        self.value = value

    def add_done_callback(self, cb):
        cb(self)

    def exception(self):
        return None

    def result(self):
        return self.value


class FakeKnuckle:
    """The 2F-85's knuckle joint: moves after a latency, stops at the target or an object."""

    def __init__(self, gripper, object_width, start=0.0, speed=4.0, latency=0.03,
                 stuck=False, rate=200.0):
        self.g, self.object_width = gripper, object_width
        self.start_pos, self.target, self.t0 = start, start, time.monotonic()
        self.speed, self.latency, self.stuck, self.period = speed, latency, stuck, 1.0 / rate
        self.callback = None
        self.lock = threading.Lock()

    def position(self, now=None) -> float:
        with self.lock:
            start, target, t0 = self.start_pos, self.target, self.t0
        now = time.monotonic() if now is None else now
        if self.stuck:
            return start
        limit = target
        if self.object_width is not None and target > start:      # closing
            limit = min(target, self.g.width_to_knuckle(self.object_width))
            limit = max(limit, start) if start > limit else limit
        travel = max(0.0, now - t0 - self.latency) * self.speed
        if limit >= start:
            return min(start + travel, limit)
        return max(start - travel, limit)

    def command(self, target: float) -> float:
        """Start a move; returns the position now (what the stalled result reports)."""
        now = time.monotonic()
        here = self.position(now)
        with self.lock:
            self.start_pos, self.target, self.t0 = here, target, now
        threading.Thread(target=self._publish_for, args=(1.0,), daemon=True).start()
        return here

    def publish(self):
        from sensor_msgs.msg import JointState
        if self.callback is None:
            return
        msg = JointState()
        msg.name = ['fer_joint1', self.g.joint_name, 'fr3_joint1']
        msg.position = [0.1, float(self.position()), 0.2]
        self.callback(msg)

    def _publish_for(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.publish()
            time.sleep(self.period)


class FakeMoveIt:
    """Records every call the adapter makes to moveit_py, the gripper action and tf2."""

    def __init__(self, T_base_camera, object_width=0.04, reject=lambda goal, params: False,
                 scene_error=None, distro='jazzy', moveit_error=None, model_links=None,
                 attach_ok=True, gripper_stuck=False, execute_status='SUCCEEDED',
                 model_groups=None):
        from geometry_msgs.msg import Point, Pose, PoseStamped
        from sensor_msgs.msg import JointState
        from shape_msgs.msg import Mesh, MeshTriangle, SolidPrimitive
        from std_msgs.msg import Header

        from zerograsp_ros.execution.robot import load_robot_preset
        self.calls = []
        self.T_base_camera = T_base_camera
        self.object_width = object_width      # None = nothing between the fingers
        self.reject = reject
        self.scene_error = scene_error
        self.moveit_error = moveit_error
        # Links and groups of the robot model (None = every one the presets name).
        self.model_links = model_links
        self.model_groups = model_groups
        self.knuckle = FakeKnuckle(load_robot_preset('panda').gripper, object_width,
                                   stuck=gripper_stuck)
        rec = self.calls
        fake = self

        def known_link(link):
            return fake.model_links is None or link in fake.model_links

        class CollisionObject:
            ADD, REMOVE = 0, 1

            def __init__(self):
                self.id, self.header, self.operation = '', Header(), 0
                self.meshes, self.mesh_poses = [], []
                self.primitives, self.primitive_poses = [], []
                self.pose = Pose()

        class AttachedCollisionObject:
            def __init__(self):
                self.link_name, self.object, self.touch_links = '', CollisionObject(), []

        class Acm:
            def set_entry(self, a, b, allowed):
                rec.append(('acm', a, b, allowed))

        class Scene:
            allowed_collision_matrix = Acm()
            current_state = SimpleNamespace(update=lambda: rec.append(('state_update',)))

            def apply_collision_object(self, collision_object_msg, color_msg=None):
                if fake.scene_error:
                    raise RuntimeError(fake.scene_error)
                rec.append(('apply', collision_object_msg))

            def process_attached_collision_object(self, attached_collision_object_msg):
                aco = attached_collision_object_msg
                rec.append(('attached', aco))
                if aco.link_name and not known_link(aco.link_name):
                    return False
                return fake.attach_ok

        self.attach_ok = attach_ok

        class Monitor:
            @contextmanager
            def read_write(self):
                yield Scene()

        class Trajectory:
            def __init__(self, goal):
                self.goal = goal

            def __len__(self):
                return 3

            def __getitem__(self, i):
                return ('end_state_of', self.goal)

        class PlanResponse:
            def __init__(self, trajectory):
                self.trajectory = trajectory

            def __bool__(self):
                return self.trajectory is not None

        class Arm:
            goal = None

            def set_start_state_to_current_state(self):
                rec.append(('start_current',))

            def set_start_state(self, configuration_name=None, robot_state=None):
                rec.append(('start_state', robot_state))
                return True

            def set_goal_state(self, configuration_name=None, robot_state=None,
                               pose_stamped_msg=None, pose_link=None,
                               motion_plan_constraints=None):
                self.goal = pose_stamped_msg
                rec.append(('goal', pose_stamped_msg, pose_link))
                return known_link(pose_link)

            def plan(self, single_plan_parameters=None, multi_plan_parameters=None,
                     planning_scene=None, solution_selection_function=None,
                     stopping_criterion_callback=None):
                p = single_plan_parameters
                rec.append(('plan', p.planning_pipeline, p.planner_id,
                            p.max_velocity_scaling_factor))
                if fake.reject(self.goal, p):
                    return PlanResponse(None)
                return PlanResponse(Trajectory(self.goal))

        class ExecutionStatus:
            def __init__(self, status):
                self.status = status

            def __bool__(self):
                return self.status == 'SUCCEEDED'

        class MoveItPy:
            def __init__(self, node_name='moveit_py', name_space='', launch_params_filepaths=None,
                         config_dict=None, provide_planning_service=True, remappings=None):
                if fake.moveit_error:
                    raise RuntimeError(fake.moveit_error)
                rec.append(('moveit_py', node_name))
                fake.provide_planning_service = provide_planning_service
                fake.launch_params_filepaths = launch_params_filepaths

            def get_planning_component(self, planning_component_name):
                rec.append(('component', planning_component_name))
                if fake.model_groups is not None and \
                        planning_component_name not in fake.model_groups:
                    raise RuntimeError(f'No planning group {planning_component_name} found')
                return Arm()

            def get_planning_scene_monitor(self):
                return Monitor()

            if distro == 'humble':
                def execute(self, group_name, robot_trajectory, blocking=True):
                    rec.append(('execute', (group_name, robot_trajectory),
                                {'blocking': blocking}))
                    return None
            else:
                def execute(self, robot_trajectory, controllers):
                    rec.append(('execute', (robot_trajectory,), {'controllers': controllers}))
                    return ExecutionStatus(execute_status)

        class PlanRequestParameters:
            def __init__(self, moveit_cpp, ns='plan_request_params'):
                self.namespace = ns

        class GripperCommandMsg:           # control_msgs/msg/GripperCommand
            def __init__(self):
                self.position, self.max_effort = 0.0, 0.0

        class GripperCommand:
            class Goal:
                def __init__(self):
                    self.command = GripperCommandMsg()

        class ParallelGripperCommand:
            class Goal:
                def __init__(self):
                    self.command = JointState()

        class ActionClient:
            def __init__(self, node, action_type, action_name, callback_group=None):
                rec.append(('action_client', action_type.__name__, action_name))
                self.action_type = action_type

            def wait_for_server(self, timeout_sec=None):
                return True

            def send_goal_async(self, goal, feedback_callback=None, goal_uuid=None):
                rec.append(('gripper_goal', goal.command))
                if self.action_type is ParallelGripperCommand:
                    if len(goal.command.position) != 1:      # the controller rejects it
                        return Future(SimpleNamespace(accepted=False))
                    angle = goal.command.position[0]
                else:
                    angle = goal.command.position
                here = fake.knuckle.command(float(angle))
                if self.action_type is ParallelGripperCommand:
                    state = JointState(name=[fake.knuckle.g.joint_name], position=[here],
                                       effort=[0.0])
                    res = SimpleNamespace(state=state, stalled=True, reached_goal=False)
                else:
                    res = SimpleNamespace(position=here, effort=0.0, stalled=True,
                                          reached_goal=False)
                response = SimpleNamespace(status=STATUS_SUCCEEDED, result=res)
                return Future(SimpleNamespace(accepted=True,
                                              get_result_async=lambda: Future(response)))

            def destroy(self):
                pass

        class TfBuffer:
            def lookup_transform(self, target_frame, source_frame, time, timeout=None):
                from geometry_msgs.msg import TransformStamped
                rec.append(('tf', target_frame, source_frame))
                ts = TransformStamped()
                T = fake.T_base_camera
                q = Rotation.from_matrix(T[:3, :3]).as_quat()
                ts.transform.translation.x, ts.transform.translation.y, \
                    ts.transform.translation.z = (float(v) for v in T[:3, 3])
                r = ts.transform.rotation
                r.x, r.y, r.z, r.w = (float(v) for v in q)
                return ts

        def subscribe_joint_states(node, topic, callback, callback_group):
            rec.append(('joint_states', topic))
            fake.knuckle.callback = callback
            fake.knuckle.publish()            # the broadcaster publishes all the time
            return None

        from zerograsp_ros.execution.moveit_backend import MoveItApi
        self.api = MoveItApi(MoveItPy, PlanRequestParameters, None, CollisionObject,
                             AttachedCollisionObject, SolidPrimitive, Mesh, MeshTriangle, Point,
                             Pose, PoseStamped, GripperCommand, ParallelGripperCommand,
                             ActionClient, lambda node: TfBuffer(), subscribe_joint_states,
                             distro)

    def names(self):
        return [c[0] for c in self.calls]

    def goals(self):
        return [c for c in self.calls if c[0] == 'goal']


def fast_gripper(preset):
    """The preset with settle timings short enough for tests (same logic, less waiting)."""
    import dataclasses
    return dataclasses.replace(preset, gripper=dataclasses.replace(
        preset.gripper, settle_time=0.05, motion_start_wait=0.25, settle_timeout=2.0))


def pose_matrix(pose) -> np.ndarray:
    T = np.eye(4)
    q = pose.orientation
    T[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    T[:3, 3] = [pose.position.x, pose.position.y, pose.position.z]
    return T
