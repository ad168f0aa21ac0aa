"""The simulated pick cell: table, objects, a side camera, a Panda arm and a 2F-85-like gripper.

What is physical and what is kinematic:
- PHYSICAL (pybullet, 240 Hz): the table, the objects and the gripper
  (urdf/robotiq_2f85_sim.urdf). The gripper floats free, VGN style: a fixed
  constraint with a force limit drags its base along interpolated Cartesian
  paths, and its two prismatic fingers close under a force limit, so contacts,
  slips and lifts are simulated.
- KINEMATIC: the Franka Panda (pybullet_data franka_panda/panda.urdf) lives in
  a separate, never-stepped pybullet client. It answers reachability (inverse
  kinematics to the flange, panda_link8, checked by forward kinematics) and
  holds the joint positions for visualisation. It does not collide with anything.
- The camera is rendered with zerograsp_ros.sim.scene.render_rgbd (ray casting
  of the objects and the table; the gripper and arm are not drawn, so capture
  with the gripper parked, as a real cell captures with the arm out of view).

Frames: world (table top z = 0, workspace centre at the origin), robot base
panda_link0 (T_world_base from config/sim_cell.yaml), camera optical frame
(T_base_camera from the same file), TCP = midway between the fingertip ends,
axes as in Grasp.msg (x approach, y closing), 0.149 m from the flange along
its z axis; the TCP's closing axis is the flange's y axis. cell_static_transforms()
lists world -> base -> camera for TF.
"""
from __future__ import annotations

from dataclasses import dataclass
import os

import numpy as np

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import CameraIntrinsics
from zerograsp_ros.geometry.rgbd import RGBDFrame
from zerograsp_ros.geometry.transforms import (
    check_rigid,
    interpolate_poses,
    matrix_to_pose,
    pose_to_matrix,
    rotation_angle,
)
from zerograsp_ros.resources import package_file
from zerograsp_ros.sim import scene as scn
from zerograsp_ros.sim.cell_config import (  # noqa: F401  (the config's names, re-exported)
    WORLD_FRAME,
    SimCellConfig,
    cell_static_transforms,
    load_sim_cell_config,
    sim_cell_config_from_parameters,
)

GRIPPER_STROKE = 0.085            # max opening between the pads [m]
TCP_OFFSET = 0.149                # flange (gripper_base) -> TCP along the approach [m]
FINGER_LENGTH = 0.055
PRE_GRASP_DISTANCE = 0.05         # VGN: spawn 5 cm back along the approach
LIFT_HEIGHT = 0.10
SAFE_HEIGHT = 0.30                # world z for free (non straight-line) moves
PANDA_HOME = (0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785)
PANDA_FLANGE_LINK = 7             # panda_link8 in pybullet_data's panda.urdf
# TCP axes expressed in the flange frame: approach = flange z, closing = flange y.
R_FLANGE_TCP = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@dataclass
class GraspOutcome:
    success: bool
    reason: str          # 'success' or why it failed
    object_id: int = 0   # the held object (0 = none)


class SimCell:
    """Headless pybullet pick cell; see the module docstring for what is simulated how."""

    def __init__(self, config: SimCellConfig | None = None):
        import pybullet as p
        self.p = p
        self.config = config if config is not None else load_sim_cell_config()
        self.client = scn.new_physics_client()
        self._kin = p.connect(p.DIRECT)   # kinematic-only client for the Panda
        import pybullet_data
        self.panda = p.loadURDF(os.path.join(pybullet_data.getDataPath(),
                                             'franka_panda/panda.urdf'),
                                *matrix_to_pose(self.config.T_world_base),
                                useFixedBase=True, physicsClientId=self._kin)
        self._panda_joints = list(range(7))
        self._set_panda_joints(PANDA_HOME)
        self.scene: scn.Scene | None = None
        self._bodies: dict[int, int] = {}
        self._rng = np.random.default_rng(0)
        self._build_static()

    # ------------------------------------------------------------------ construction
    def _build_static(self) -> None:
        p, c = self.p, self.client
        p.resetSimulation(physicsClientId=c)
        p.setGravity(0, 0, -9.81, physicsClientId=c)
        p.setPhysicsEngineParameter(fixedTimeStep=1.0 / scn.PHYSICS_HZ, numSolverIterations=80,
                                    deterministicOverlappingPairs=1, physicsClientId=c)
        self.table = scn.add_table(c)
        urdf = package_file('urdf', 'robotiq_2f85_sim.urdf')
        self._park = self._home_tcp_world()
        self.gripper = p.loadURDF(str(urdf), *matrix_to_pose(self._base_from_tcp(self._park)),
                                  physicsClientId=c)
        self.fingers = (0, 1)
        for j in self.fingers:
            p.changeDynamics(self.gripper, j, lateralFriction=1.0, spinningFriction=0.002,
                             physicsClientId=c)
        pos, quat = matrix_to_pose(self._base_from_tcp(self._park))
        self._constraint = p.createConstraint(self.gripper, -1, -1, -1, p.JOINT_FIXED, [0, 0, 0],
                                              [0, 0, 0], pos, childFrameOrientation=quat,
                                              physicsClientId=c)
        p.changeConstraint(self._constraint, pos, quat, maxForce=300, physicsClientId=c)
        self._tcp_world = self._park.copy()
        self._set_fingers(GRIPPER_STROKE, self.config.grip_force, teleport=True)
        self._bodies = {}

    @staticmethod
    def _home_tcp_world() -> np.ndarray:
        """Parked TCP pose: high above the workspace, pointing down."""
        T = np.eye(4)
        T[:3, :3] = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
        T[:3, 3] = [0.0, 0.0, 0.45]
        return T

    @staticmethod
    def _base_from_tcp(T_world_tcp: np.ndarray) -> np.ndarray:
        T = T_world_tcp.copy()
        T[:3, 3] = T_world_tcp[:3, 3] - TCP_OFFSET * T_world_tcp[:3, 0]
        return T

    # ------------------------------------------------------------------ frames
    @property
    def T_world_base(self) -> np.ndarray:
        return self.config.T_world_base.copy()

    @property
    def T_base_camera(self) -> np.ndarray:
        return self.config.T_base_camera.copy()

    @property
    def T_world_camera(self) -> np.ndarray:
        return self.config.T_world_camera

    @property
    def intrinsics(self) -> CameraIntrinsics:
        return self.config.intrinsics

    def tcp_pose_base(self) -> np.ndarray:
        """Current (commanded) TCP pose in the robot base frame."""
        return np.linalg.inv(self.config.T_world_base) @ self._tcp_world

    def measured_tcp_world(self) -> np.ndarray:
        T_base = scn.body_pose(self.client, self.gripper)
        T = T_base.copy()
        T[:3, 3] = T_base[:3, 3] + TCP_OFFSET * T_base[:3, 0]
        return T

    # ------------------------------------------------------------------ scene
    def reset(self, seed: int | None = None, num_objects: int | None = None,
              layout: str | None = None, split: str | None = None) -> list[int]:
        """Rebuild the cell with a freshly generated (seeded) scene; returns object ids."""
        cfg = self.config
        seed = cfg.seed if seed is None else int(seed)
        scene = scn.generate_scene(seed, num_objects or cfg.num_objects, layout or cfg.layout,
                                   split or cfg.split)
        return self.load_scene(scene)

    def load_scene(self, scene: scn.Scene) -> list[int]:
        """Put a given scene (objects at their poses) on an empty table; returns ids."""
        self._build_static()
        self.scene = scene
        self._rng = np.random.default_rng([scene.seed, 31337])
        for obj in scene.objects:
            self._bodies[obj.object_id] = scn.spawn_object(self.client, obj)
        scn.settle(self.client, list(self._bodies.values()), max_seconds=1.0)
        self._remove_out_of_workspace()
        self._set_panda_joints(PANDA_HOME)
        return self.object_ids()

    def object_ids(self) -> list[int]:
        return sorted(self._bodies)

    def object_pose(self, object_id: int) -> np.ndarray:
        if object_id not in self._bodies:
            raise InputError(f'no object with id {object_id} in the cell (ids: '
                             f'{self.object_ids()})')
        return scn.body_pose(self.client, self._bodies[object_id])

    def remove_object(self, object_id: int) -> None:
        if object_id not in self._bodies:
            raise InputError(f'no object with id {object_id} in the cell (ids: '
                             f'{self.object_ids()})')
        self.p.removeBody(self._bodies.pop(object_id), physicsClientId=self.client)

    def _remove_out_of_workspace(self) -> list[int]:
        gone = [oid for oid in self.object_ids()
                if not scn.in_workspace(self.object_pose(oid), margin=0.02)]
        for oid in gone:
            self.remove_object(oid)
        return gone

    def current_scene(self) -> scn.Scene:
        """The scene with the objects still present, at their current poses."""
        if self.scene is None:
            raise InputError('the cell has no scene yet: call reset() first')
        objs = []
        for obj in self.scene.objects:
            if obj.object_id in self._bodies:
                obj.pose = self.object_pose(obj.object_id)
                objs.append(obj)
        return scn.Scene(objects=objs, seed=self.scene.seed, layout=self.scene.layout,
                         split=self.scene.split)

    def capture(self, stamp: float = 0.0) -> RGBDFrame:
        """Render the camera: rgb, depth [m] (noisy per config), GT instance labels."""
        frame = scn.render_rgbd(self.current_scene(), self.config.intrinsics,
                                self.T_world_camera, self._rng, noise=self.config.depth_noise)
        frame.frame_id = self.config.camera_frame
        frame.stamp = stamp
        frame.meta['T_base_camera'] = self.T_base_camera.tolist()
        return frame

    # ------------------------------------------------------------------ arm (kinematic)
    def _set_panda_joints(self, q) -> None:
        for j, v in zip(self._panda_joints, q):
            self.p.resetJointState(self.panda, j, float(v), physicsClientId=self._kin)

    def reachable(self, T_world_tcp: np.ndarray) -> tuple[bool, str]:
        """Panda IK to the flange pose for this TCP pose, verified by forward kinematics.

        A parallel gripper is symmetric under a half turn about the approach, so the
        pose flipped that way counts too (the wrist picks whichever is in its limits).
        """
        ok, msg = self._reachable_exact(T_world_tcp)
        if ok:
            return ok, msg
        flipped = T_world_tcp.copy()
        flipped[:3, 1:3] *= -1.0
        ok2, _ = self._reachable_exact(flipped)
        return (True, 'reachable (half-turned about the approach)') if ok2 else (False, msg)

    def _reachable_exact(self, T_world_tcp: np.ndarray) -> tuple[bool, str]:
        p = self.p
        T_flange = T_world_tcp.copy()
        T_flange[:3, :3] = T_world_tcp[:3, :3] @ R_FLANGE_TCP.T
        T_flange[:3, 3] = T_world_tcp[:3, 3] - TCP_OFFSET * T_world_tcp[:3, 0]
        pos, quat = matrix_to_pose(T_flange)
        lower = np.array([-2.9, -1.76, -2.9, -3.07, -2.9, -0.017, -2.9])
        upper = np.array([2.9, 1.76, 2.9, -0.07, 2.9, 3.75, 2.9])
        best = (np.inf, np.inf)
        # pybullet's damped IK ignores hard limits: clip, re-solve from there, and try a
        # few wrist seeds, keeping the first in-limit solution.
        for wrist in (0.0, 1.571, -1.571):
            seed = np.array(PANDA_HOME)
            seed[6] = np.clip(seed[6] + wrist, lower[6], upper[6])
            self._set_panda_joints(seed)
            for _ in range(4):
                q = p.calculateInverseKinematics(
                    self.panda, PANDA_FLANGE_LINK, pos, quat, lowerLimits=lower.tolist(),
                    upperLimits=upper.tolist(), jointRanges=(upper - lower).tolist(),
                    restPoses=seed.tolist(), maxNumIterations=200, residualThreshold=1e-5,
                    physicsClientId=self._kin)
                self._set_panda_joints(np.clip(q[:7], lower, upper))
            state = p.getLinkState(self.panda, PANDA_FLANGE_LINK, computeForwardKinematics=True,
                                   physicsClientId=self._kin)
            T_fk = pose_to_matrix(state[4], state[5])
            pos_err = np.linalg.norm(T_fk[:3, 3] - T_flange[:3, 3])
            ang_err = np.degrees(rotation_angle(T_fk[:3, :3], T_flange[:3, :3]))
            if pos_err <= 0.01 and ang_err <= 5.0:
                return True, 'reachable'
            best = min(best, (pos_err, ang_err))
        return False, (f'pose not reachable by the Panda within its joint limits (IK error '
                       f'{1000 * best[0]:.0f} mm, {best[1]:.1f} deg)')

    # ------------------------------------------------------------------ gripper (physical)
    def _step(self, n: int = 1) -> None:
        for _ in range(n):
            self.p.stepSimulation(physicsClientId=self.client)

    def _drive_base(self, T_world_tcp: np.ndarray) -> None:
        pos, quat = matrix_to_pose(self._base_from_tcp(T_world_tcp))
        self.p.changeConstraint(self._constraint, pos, quat, maxForce=300,
                                physicsClientId=self.client)

    def _teleport(self, T_world_tcp: np.ndarray) -> None:
        pos, quat = matrix_to_pose(self._base_from_tcp(T_world_tcp))
        self.p.resetBasePositionAndOrientation(self.gripper, pos, quat,
                                               physicsClientId=self.client)
        self.p.resetBaseVelocity(self.gripper, [0, 0, 0], [0, 0, 0], physicsClientId=self.client)
        self._drive_base(T_world_tcp)
        self._tcp_world = T_world_tcp.copy()

    def _contacts(self) -> list[tuple[int, int]]:
        """(gripper link, object id or -1 for the table) pairs currently in contact."""
        self.p.performCollisionDetection(physicsClientId=self.client)
        body_to_id = {b: oid for oid, b in self._bodies.items()}
        out = []
        for cp in self.p.getContactPoints(bodyA=self.gripper, physicsClientId=self.client):
            other = cp[2]
            out.append((cp[3], body_to_id.get(other, -1)))
        return out

    def _move_line(self, T_goal: np.ndarray, abort_on_contact: bool = False) -> bool:
        """Drive the TCP along a straight line (orientation slerped); False if aborted."""
        T0 = self._tcp_world
        dist = np.linalg.norm(T_goal[:3, 3] - T0[:3, 3])
        ang = rotation_angle(T0[:3, :3], T_goal[:3, :3])
        dt = 1.0 / scn.PHYSICS_HZ
        n = max(1, int(np.ceil(max(dist / self.config.tcp_speed, ang / 1.5) / dt)))
        for T in interpolate_poses(T0, T_goal, n):
            self._drive_base(T)
            self._tcp_world = T
            self._step()
            if abort_on_contact and self._contacts():
                return False
        self._step(int(0.1 * scn.PHYSICS_HZ))   # let the constraint catch up
        return True

    def _finger_positions(self) -> tuple[float, float]:
        s = [self.p.getJointState(self.gripper, j, physicsClientId=self.client)[0]
             for j in self.fingers]
        return float(s[0]), float(s[1])

    def gripper_width(self) -> float:
        return float(sum(self._finger_positions()))

    def _set_fingers(self, width: float, force: float, teleport: bool = False) -> None:
        half = float(np.clip(width, 0.0, GRIPPER_STROKE)) / 2
        for j in self.fingers:
            if teleport:
                self.p.resetJointState(self.gripper, j, half, physicsClientId=self.client)
            self.p.setJointMotorControl2(self.gripper, j, self.p.POSITION_CONTROL,
                                         targetPosition=half, force=force, maxVelocity=0.15,
                                         physicsClientId=self.client)

    def held_object(self) -> int:
        """Id of the object both fingers touch (0 = none)."""
        touching = {0: set(), 1: set()}
        for link, oid in self._contacts():
            if link in touching and oid > 0:
                touching[link].add(oid)
        both = touching[0] & touching[1]
        return min(both) if both else 0

    def gripper_command(self, width: float, max_effort: float = 0.0) -> tuple[float, int]:
        """Open/close to `width` [m] (negative: close fully) with a force limit [N].

        Returns the measured opening and the id of the held object (0 = none).
        """
        if not np.isfinite(width) or not np.isfinite(max_effort):
            raise InputError(f'gripper command must be finite (width={width}, '
                             f'max_effort={max_effort})')
        if width > GRIPPER_STROKE + 1e-3:
            raise InputError(f'gripper width {width:.3f} m exceeds the 2F-85 stroke '
                             f'({GRIPPER_STROKE} m)')
        if max_effort < 0:
            raise InputError(f'max_effort must be >= 0, got {max_effort}')
        force = max_effort if max_effort > 0 else self.config.grip_force
        target = 0.0 if width < 0 else width
        self._set_fingers(target, force)
        last = self.gripper_width()
        for i in range(int(1.0 * scn.PHYSICS_HZ)):
            self._drive_base(self._tcp_world)
            self._step()
            if i % 12 == 11:
                w = self.gripper_width()
                if abs(w - last) < 2e-4:
                    break
                last = w
        return self.gripper_width(), self.held_object()

    def move_tcp(self, T_base_tcp: np.ndarray, straight_line: bool = False,
                 dry_run: bool = False) -> tuple[bool, str]:
        """Move the TCP to a pose in the base frame (straight line, or via a safe height).

        The pose must be reachable by the Panda (when configured) and above the table.
        Returns (ok, message); contacts on the way are reported in the message.
        """
        T_base_tcp = check_rigid(T_base_tcp, 'T_base_tcp')
        T_goal = self.config.T_world_base @ T_base_tcp
        if T_goal[2, 3] < -0.002:
            return False, f'TCP target {T_goal[2, 3]:.3f} m is below the table top (world z)'
        if np.linalg.norm(T_goal[:2, 3]) > 0.6:
            return False, 'TCP target is more than 0.6 m from the workspace centre'
        if self.config.check_reachability:
            ok, msg = self.reachable(T_goal)
            if not ok:
                return False, msg
        if dry_run:
            return True, 'reachable (dry run, not moved)'
        if straight_line:
            self._move_line(T_goal)
        else:
            up = max(SAFE_HEIGHT, self._tcp_world[2, 3], T_goal[2, 3])
            via1 = self._tcp_world.copy()
            via1[2, 3] = up
            via2 = T_goal.copy()
            via2[2, 3] = up
            for T in (via1, via2, T_goal):
                self._move_line(T)
        contacts = sorted({oid for _, oid in self._contacts()})
        err = np.linalg.norm(self.measured_tcp_world()[:3, 3] - T_goal[:3, 3])
        note = f'; in contact with {contacts} (-1 = table)' if contacts else ''
        if err > 0.01:
            return False, f'motion blocked: TCP {1000 * err:.0f} mm from the target{note}'
        return True, f'moved{note}'

    # ------------------------------------------------------------------ VGN grasp trial
    def execute_grasp(self, T_world_grasp: np.ndarray, width: float | None = None,
                      depth: float = 0.0, remove: bool = True, allow_contact: bool = True,
                      check_reachability: bool = False) -> GraspOutcome:
        """Execute one grasp as in the VGN protocol and report whether it held.

        The fingertips go to translation + depth * approach. The gripper is spawned
        5 cm back along the approach (contact there = failure), moves in and stops at
        the first contact (with `allow_contact` False, as in VGN's single-grasp trials,
        that contact is a failure; clutter removal allows it), closes, lifts 10 cm
        (straight up if the approach is more than 60 deg from vertical, else back
        along the approach); success = both fingers touch the same object and the
        opening is above 10 % of the stroke.
        With `remove`, a held object is removed and the scene settles; objects that
        left the workspace are removed too. `width` opens to that width (+1 cm)
        instead of the full stroke.
        """
        T = check_rigid(T_world_grasp, 'T_world_grasp')
        if not np.isfinite(depth):
            raise InputError(f'grasp depth must be finite, got {depth}')
        if width is not None and not (np.isfinite(width) and width > 0):
            raise InputError(f'grasp width must be finite and positive, got {width}')
        approach = T[:3, 0]
        T_tcp = T.copy()
        T_tcp[:3, 3] = T[:3, 3] + depth * approach
        if check_reachability:
            ok, msg = self.reachable(T_tcp)
            if not ok:
                return GraspOutcome(False, msg)
        T_pre = T_tcp.copy()
        T_pre[:3, 3] -= PRE_GRASP_DISTANCE * approach
        opening = GRIPPER_STROKE if width is None else float(np.clip(width + 0.01, 0.02,
                                                                      GRIPPER_STROKE))
        self._teleport(T_pre)
        self._set_fingers(opening, self.config.grip_force, teleport=True)
        outcome = None
        if self._contacts():
            outcome = GraspOutcome(False, 'collision at the pre-grasp pose')
        elif not self._move_line(T_tcp, abort_on_contact=True) and not allow_contact:
            outcome = GraspOutcome(False, 'contact while approaching')
        else:
            self.gripper_command(-1.0)
            if np.dot(approach, [0.0, 0.0, -1.0]) < np.cos(np.radians(60)):
                lift = np.array([0.0, 0.0, LIFT_HEIGHT])
            else:
                lift = -approach * LIFT_HEIGHT
            T_lift = self._tcp_world.copy()
            T_lift[:3, 3] += lift
            self._move_line(T_lift)
            self._step(int(0.2 * scn.PHYSICS_HZ))
            held = self.held_object()
            if held and self.gripper_width() > 0.1 * GRIPPER_STROKE:
                outcome = GraspOutcome(True, 'success', held)
            elif self.gripper_width() <= 0.1 * GRIPPER_STROKE:
                outcome = GraspOutcome(False, 'gripper closed on nothing')
            else:
                outcome = GraspOutcome(False, 'object slipped during the lift')
        if outcome.success and remove:
            self.remove_object(outcome.object_id)
        self._park_gripper()
        if remove:
            scn.settle(self.client, list(self._bodies.values()), max_seconds=1.5)
            self._remove_out_of_workspace()
        return outcome

    def _park_gripper(self) -> None:
        self._set_fingers(GRIPPER_STROKE, self.config.grip_force, teleport=True)
        self._teleport(self._park)

    def close(self) -> None:
        for c in (self.client, self._kin):
            try:
                self.p.disconnect(physicsClientId=c)
            except Exception:  # already disconnected: nothing to release
                pass
