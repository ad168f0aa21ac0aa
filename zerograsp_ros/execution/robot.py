"""Robot + gripper presets (config/robots/<name>.yaml) and the 2F-85 width map.

A preset names everything that differs between arms: planning group, base
frame, flange and TCP links, the flange -> TCP offset of the 2F-85 on its
adapter, velocity/acceleration scaling, the workspace box the TCP must stay in,
the gripper action (type and name, and how its knuckle joint is watched on
/joint_states) and, in section `cell`, the real cell's description and
controller files (read by zerograsp_ros.execution.cell).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.transforms import matrix_from_rpy
from zerograsp_ros.grasp import DEFAULT_GRIPPER
from zerograsp_ros.resources import package_file

GRIPPER_ACTION_TYPES = ('GripperCommand', 'ParallelGripperCommand')


def config_dir() -> Path:
    """The package's config/ folder (source tree first, else the install space)."""
    return package_file('config', 'robots').parent


def available_robot_presets() -> list[str]:
    return sorted(p.stem for p in (config_dir() / 'robots').glob('*.yaml'))


@dataclass(frozen=True)
class GripperPreset:
    model: str = DEFAULT_GRIPPER
    # control_msgs/action/ParallelGripperCommand: what the Jazzy controller
    # (parallel_gripper_action_controller) serves; GripperCommand for the Humble-era
    # position_controllers/GripperActionController.
    action_type: str = 'ParallelGripperCommand'
    action_name: str = '/robotiq_gripper_controller/gripper_cmd'
    joint_name: str = 'robotiq_85_left_knuckle_joint'
    stroke: float = 0.085
    knuckle_open: float = 0.0
    knuckle_closed: float = 0.7929
    max_effort: float = 60.0
    action_timeout: float = 10.0
    # Distance from the fingertip ends back to the TCP link along the approach:
    # 0 when the TCP link sits midway between the fingertips (our xacro's).
    tcp_behind_fingertips: float = 0.0
    # The controller reports "stalled, succeeded" long before the fingers stop (the
    # driver never sets the velocity), so open/close are judged on /joint_states: the
    # knuckle must have stayed within settle_tolerance [rad] for settle_time [s] (and
    # have moved, or motion_start_wait [s] passed without motion) within settle_timeout.
    joint_states_topic: str = '/joint_states'
    settle_time: float = 0.2
    settle_tolerance: float = 0.004
    motion_start_wait: float = 1.0
    settle_timeout: float = 5.0
    # Settled this close to the commanded knuckle angle = reached it [rad]; a close
    # that stops further than this from knuckle_closed stopped on an object.
    position_tolerance: float = 0.03

    def width_to_knuckle(self, width: float) -> float:
        """Knuckle angle [rad] for an opening [m].

        A LINEAR APPROXIMATION of the 2F-85 linkage, exact only fully open and closed.
        """
        if not np.isfinite(width):
            raise InputError(f'gripper width must be finite, got {width}')
        frac = float(np.clip(width / self.stroke, 0.0, 1.0))
        return self.knuckle_closed + frac * (self.knuckle_open - self.knuckle_closed)

    def knuckle_to_width(self, angle: float) -> float:
        """Inverse of width_to_knuckle (same linear approximation), clipped to the stroke."""
        span = self.knuckle_open - self.knuckle_closed
        frac = float(np.clip((angle - self.knuckle_closed) / span, 0.0, 1.0))
        return frac * self.stroke


@dataclass(frozen=True)
class RobotPreset:
    name: str
    planning_group: str
    base_frame: str
    flange_link: str
    tcp_link: str
    tcp_offset_xyz: tuple[float, float, float]
    grasp_to_tcp_rpy: tuple[float, float, float]
    velocity_scaling: float
    acceleration_scaling: float
    workspace_min: tuple[float, float, float]
    workspace_max: tuple[float, float, float]
    planning_time: float = 5.0
    planning_attempts: int = 3
    free_motion: dict = field(default_factory=lambda: {'pipeline': 'ompl',
                                                       'planner_id': 'RRTConnectkConfigDefault'})
    linear_motion: dict = field(default_factory=lambda: {
        'pipeline': 'pilz_industrial_motion_planner', 'planner_id': 'LIN'})
    controllers: tuple[str, ...] = ()
    touch_links: tuple[str, ...] = ()
    gripper: GripperPreset = field(default_factory=GripperPreset)
    cell: dict = field(default_factory=dict)   # the real cell (zerograsp_ros.execution.cell)

    @property
    def grasp_to_tcp(self) -> np.ndarray:
        """4x4 pose of the TCP link in the grasp frame (rotation only)."""
        T = np.eye(4)
        T[:3, :3] = matrix_from_rpy(self.grasp_to_tcp_rpy)
        return T

    def in_workspace(self, point) -> bool:
        p = np.asarray(point, dtype=np.float64)
        return bool(np.all(np.isfinite(p)) and np.all(p >= self.workspace_min)
                    and np.all(p <= self.workspace_max))

    def validate(self) -> 'RobotPreset':
        if self.gripper.action_type not in GRIPPER_ACTION_TYPES:
            raise InputError(f'robot preset {self.name!r}: gripper action_type '
                             f'{self.gripper.action_type!r} is not one of {GRIPPER_ACTION_TYPES}')
        for label, value in (('velocity_scaling', self.velocity_scaling),
                             ('acceleration_scaling', self.acceleration_scaling)):
            if not 0.0 < value <= 1.0:
                raise InputError(f'robot preset {self.name!r}: {label} must be in (0, 1], '
                                 f'got {value}')
        if not np.all(np.asarray(self.workspace_min) < np.asarray(self.workspace_max)):
            raise InputError(f'robot preset {self.name!r}: workspace_min {self.workspace_min} '
                             f'is not below workspace_max {self.workspace_max}')
        if not 0.0 < self.gripper.stroke <= 0.2:
            raise InputError(f'robot preset {self.name!r}: gripper stroke '
                             f'{self.gripper.stroke} m is implausible')
        g = self.gripper
        if not 0.0 < g.settle_time < g.settle_timeout or g.settle_tolerance <= 0 \
                or g.position_tolerance <= 0 or g.motion_start_wait < 0:
            raise InputError(f'robot preset {self.name!r}: gripper settle_time ({g.settle_time}) '
                             f'must be in (0, settle_timeout = {g.settle_timeout}), '
                             'settle_tolerance and position_tolerance > 0, '
                             'motion_start_wait >= 0')
        return self


def _vec3(raw, key: str, name: str) -> tuple[float, float, float]:
    arr = np.asarray(raw, dtype=np.float64).reshape(-1)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise InputError(f'robot preset {name!r}: {key} must be 3 finite numbers, got {raw}')
    return tuple(float(v) for v in arr)


def robot_preset_from_dict(data: dict, name: str = 'custom') -> RobotPreset:
    """Build a preset from the YAML structure of config/robots/*.yaml."""
    try:
        arm, grip = data['arm'], data.get('gripper', {})
        name = data.get('name', name)
        gripper = GripperPreset(**{k: (float(v) if isinstance(v, (int, float))
                                       and not isinstance(v, bool) else v)
                                   for k, v in grip.items()})
        preset = RobotPreset(
            name=name,
            planning_group=str(arm['planning_group']),
            base_frame=str(arm['base_frame']),
            flange_link=str(arm['flange_link']),
            tcp_link=str(arm['tcp_link']),
            tcp_offset_xyz=_vec3(arm.get('tcp_offset_xyz', [0, 0, 0.149]), 'tcp_offset_xyz',
                                 name),
            grasp_to_tcp_rpy=_vec3(arm.get('grasp_to_tcp_rpy', [0, 0, 0]), 'grasp_to_tcp_rpy',
                                   name),
            velocity_scaling=float(arm.get('velocity_scaling', 0.1)),
            acceleration_scaling=float(arm.get('acceleration_scaling', 0.1)),
            workspace_min=_vec3(arm['workspace_min'], 'workspace_min', name),
            workspace_max=_vec3(arm['workspace_max'], 'workspace_max', name),
            planning_time=float(arm.get('planning_time', 5.0)),
            planning_attempts=int(arm.get('planning_attempts', 3)),
            free_motion=dict(arm.get('free_motion', RobotPreset.__dataclass_fields__[
                'free_motion'].default_factory())),
            linear_motion=dict(arm.get('linear_motion', RobotPreset.__dataclass_fields__[
                'linear_motion'].default_factory())),
            controllers=tuple(arm.get('controllers', []) or []),
            touch_links=tuple(arm.get('touch_links', []) or []),
            gripper=gripper,
            cell=dict(data.get('cell', {}) or {}),
        )
    except KeyError as exc:
        raise InputError(f'robot preset {name!r} lacks the key {exc}') from exc
    except TypeError as exc:
        raise InputError(f'robot preset {name!r} has an unknown or malformed key: {exc}') from exc
    return preset.validate()


def load_robot_preset(name_or_path: str) -> RobotPreset:
    """A preset by name ('panda', 'fr3': config/robots/<name>.yaml) or by YAML path."""
    path = Path(name_or_path)
    if not (path.suffix in ('.yaml', '.yml') and path.is_file()):
        path = config_dir() / 'robots' / f'{name_or_path}.yaml'
        if not path.is_file():
            raise InputError(f'unknown robot preset {name_or_path!r}; available: '
                             f'{", ".join(available_robot_presets())} (or a path to a YAML file)')
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f'robot preset {path} is not valid YAML: {exc}') from exc
    if not isinstance(data, dict):
        raise InputError(f'robot preset {path} must hold a mapping, got {type(data).__name__}')
    return robot_preset_from_dict(data, name=path.stem)
