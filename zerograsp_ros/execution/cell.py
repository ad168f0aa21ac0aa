"""The real cell of a robot preset (section `cell` of config/robots/<preset>.yaml).

One combined description (urdf/zerograsp_cell.urdf.xacro: the franka_description arm
without the Franka hand, franka_hardware's ros2_control block, the 2F-85 with its own
block, the adapter and the TCP link), its SRDF, one controller_manager config for arm
and gripper, and the MoveIt files MoveItConfigsBuilder loads. This module only reads
and checks the configuration; `zerograsp_ros.nodes.real_cell` turns it into launch
actions on the robot PC.
"""
from __future__ import annotations

from dataclasses import dataclass

import yaml

from zerograsp_ros.errors import InputError
from zerograsp_ros.execution.robot import RobotPreset

PACKAGE = 'zerograsp_ros'
# Action type the execution node sends -> controller plugins that serve it on ~/gripper_cmd
# (ros2_controllers jazzy: parallel_gripper_controller and gripper_controllers).
GRIPPER_CONTROLLER_TYPES = {
    'ParallelGripperCommand': ('parallel_gripper_action_controller/GripperActionController',),
    'GripperCommand': ('position_controllers/GripperActionController',
                       'effort_controllers/GripperActionController'),
}
CELL_FILES = ('description', 'semantic', 'ros2_controllers', 'moveit_controllers', 'kinematics',
              'joint_limits', 'pilz_cartesian_limits', 'moveit_cpp')


@dataclass(frozen=True)
class PackageFile:
    """A file in a package's share directory."""

    package: str
    file: str

    def __str__(self) -> str:
        return f'{self.package}/{self.file}'


@dataclass(frozen=True)
class CellConfig:
    robot_type: str
    files: dict                       # CELL_FILES name -> PackageFile
    controllers: tuple[str, ...]      # spawned in this order
    hardware_controllers: tuple[str, ...]
    hardware_supported: bool
    notes: str = ''

    def description_mappings(self, robot_ip: str, use_fake_hardware: bool,
                             com_port: str = '/dev/ttyUSB0') -> dict:
        """xacro arguments of urdf/zerograsp_cell.urdf.xacro (strings, as xacro takes them)."""
        return {'robot_type': self.robot_type, 'robot_ip': robot_ip,
                'use_fake_hardware': str(bool(use_fake_hardware)).lower(),
                'com_port': com_port}

    def semantic_mappings(self) -> dict:
        return {'robot_type': self.robot_type}

    def spawned(self, use_fake_hardware: bool) -> tuple[str, ...]:
        return self.controllers + (() if use_fake_hardware else self.hardware_controllers)


def cell_config(preset: RobotPreset) -> CellConfig:
    """The preset's `cell` section; InputError naming what is missing."""
    raw = preset.cell
    if not raw:
        raise InputError(f'robot preset {preset.name!r} has no `cell` section: it cannot '
                         'run the real cell (use_sim:=false)')
    try:
        files = {}
        for key in CELL_FILES:
            entry = raw[key]
            files[key] = PackageFile(str(entry['package']), str(entry['file']))
        cfg = CellConfig(str(raw['robot_type']), files, tuple(raw['controllers']),
                         tuple(raw.get('hardware_controllers') or ()),
                         bool(raw.get('hardware_supported', True)),
                         str(raw.get('notes', '')))
    except (KeyError, TypeError) as exc:
        raise InputError(f'robot preset {preset.name!r}: cell section lacks or mangles {exc}; '
                         f'it needs robot_type, controllers and {", ".join(CELL_FILES)} '
                         '(each {package, file})') from exc
    if not preset.planning_group.startswith(cfg.robot_type + '_'):
        raise InputError(f'robot preset {preset.name!r}: planning group '
                         f'{preset.planning_group!r} is not a group of robot_type '
                         f'{cfg.robot_type!r} (franka_description names it '
                         f'{cfg.robot_type}_arm)')
    return cfg


def check_robot_ip(preset: RobotPreset, cfg: CellConfig, robot_ip: str,
                   use_fake_hardware: bool) -> None:
    """The real arm needs robot_ip (franka_hardware requires it); the Panda has no driver."""
    if use_fake_hardware:
        return
    if not cfg.hardware_supported:
        raise InputError(f'robot {preset.name!r}: the arm hardware is not supported by this '
                         f'bring-up ({cfg.notes}); use use_fake_hardware:=true for planning '
                         'and dry runs')
    if not str(robot_ip).strip():
        raise InputError(f'robot_ip is required for the real cell (use_sim:=false robot:='
                         f'{preset.name}): pass robot_ip:=<the arm\'s address>, or '
                         'use_fake_hardware:=true to bring the cell up without the arm')


def load_controller_config(text: str, source: str = 'controller config') -> dict:
    """A controller_manager parameter file -> {node name: ros__parameters}."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise InputError(f'{source} is not valid YAML: {exc}') from exc
    out = {}
    for node, section in data.items():
        if not isinstance(section, dict) or 'ros__parameters' not in section:
            raise InputError(f'{source}: section {node!r} has no ros__parameters')
        out[str(node).strip('/')] = section['ros__parameters'] or {}
    if 'controller_manager' not in out:
        raise InputError(f'{source} has no controller_manager section')
    return out


def controller_types(controllers: dict) -> dict[str, str]:
    """Controller name -> plugin type, from the controller_manager section."""
    return {name: spec['type'] for name, spec in controllers['controller_manager'].items()
            if isinstance(spec, dict) and 'type' in spec}


def check_cell_controllers(preset: RobotPreset, cfg: CellConfig, controllers: dict) -> None:
    """Spawned controllers are configured, and the gripper action matches its controller.

    The execution node sends `gripper.action_type` to `gripper.action_name`; that name
    is /<controller>/gripper_cmd, and the controller's plugin must serve that type.
    """
    types = controller_types(controllers)
    missing = [c for c in cfg.controllers + cfg.hardware_controllers if c not in types]
    if missing:
        raise InputError(f'robot preset {preset.name!r}: controllers {missing} are spawned but '
                         f'have no type in {cfg.files["ros2_controllers"]}')
    grip = preset.gripper
    parts = grip.action_name.strip('/').split('/')
    if len(parts) != 2 or parts[1] != 'gripper_cmd':
        raise InputError(f'gripper action_name {grip.action_name!r} is not '
                         '/<controller>/gripper_cmd (the action of a GripperActionController)')
    name = parts[0]
    if name not in types:
        raise InputError(f'gripper action {grip.action_name!r}: no controller {name!r} in '
                         f'{cfg.files["ros2_controllers"]} (controllers: {sorted(types)})')
    if name not in cfg.controllers:
        raise InputError(f'gripper controller {name!r} is configured but not spawned')
    served = GRIPPER_CONTROLLER_TYPES.get(grip.action_type, ())
    if types[name] not in served:
        serving = [a for a, plugins in GRIPPER_CONTROLLER_TYPES.items() if types[name] in plugins]
        raise InputError(
            f'gripper action type {grip.action_type} does not match controller {name!r} of type '
            f'{types[name]}, which serves {serving[0] if serving else "no gripper action"}: '
            f'set gripper.action_type in the robot preset or the controller type in '
            f'{cfg.files["ros2_controllers"]}')
    joint = controllers.get(name, {}).get('joint')
    if joint != grip.joint_name:
        raise InputError(f'gripper controller {name!r} drives joint {joint!r}, the preset watches '
                         f'{grip.joint_name!r} on {grip.joint_states_topic}')
