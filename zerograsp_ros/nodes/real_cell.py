"""The real cell on the robot PC: one description, one controller manager, MoveItPy's parameters.

Used by launch/pick_scene.launch.py with use_sim:=false, instead of stacking vendor
launch files that each start their own robot_state_publisher and controller_manager
(franka_fr3_moveit_config's moveit.launch.py also starts move_group, a second RViz and
an arm-only description; robotiq_control.launch.py a gripper-only one rooted at world):

- robot_state_publisher with urdf/zerograsp_cell.urdf.xacro (arm + 2F-85 + TCP link);
- ros2_control_node with config/cell/<robot_type>_ros2_controllers.yaml, its
  ~/robot_description remapped to /robot_description, and one spawner for the arm,
  gripper and broadcaster controllers;
- `MoveItConfigsBuilder(...).to_dict()` built from the same description, the cell's
  SRDF and explicit files (kinematics, joint limits, Pilz limits, controllers,
  moveit_cpp) for the execution node: launch_ros hands a parameter dict to the process
  as a `--params-file` for every node in it ('/**' while the node's namespace is not
  set), which is where MoveItPy reads its configuration.

`launch`, `launch_ros`, `ament_index_python` and `moveit_configs_utils` are imported
inside the functions (robot PC only).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from zerograsp_ros.errors import InputError
from zerograsp_ros.execution.cell import (
    PACKAGE,
    CellConfig,
    PackageFile,
    cell_config,
    check_cell_controllers,
    check_robot_ip,
    load_controller_config,
)
from zerograsp_ros.execution.robot import RobotPreset, load_robot_preset
from zerograsp_ros.nodes.graph import NodeSpec, robot_preset_path
from zerograsp_ros.resources import package_path

PIPELINES = ('ompl', 'pilz_industrial_motion_planner')


def share_file(pf: PackageFile) -> Path:
    """A file of a package's share directory (this package: the source tree first)."""
    if pf.package == PACKAGE:
        return package_path(pf.file)
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(pf.package)) / pf.file
    except Exception as exc:  # PackageNotFoundError, or no ament_index_python at all
        raise InputError(f'the real cell needs {pf}: package {pf.package} is not installed '
                         f'({exc})') from exc


def resolve_cell(robot: str) -> tuple[RobotPreset, CellConfig, dict]:
    """Preset, cell config and {name: absolute path} of every cell file (all must exist)."""
    preset = load_robot_preset(str(robot_preset_path(robot)))
    cfg = cell_config(preset)
    files = {name: share_file(pf) for name, pf in cfg.files.items()}
    missing = [f'{cfg.files[n]} ({p})' for n, p in files.items() if not p.is_file()]
    if missing:
        raise InputError(f'robot {robot!r}: cell files missing: {", ".join(missing)}')
    path = files['ros2_controllers']
    check_cell_controllers(preset, cfg, load_controller_config(path.read_text(), str(path)))
    return preset, cfg, files


def moveit_parameters(robot: str, robot_ip: str, use_fake_hardware: bool) -> dict:
    """MoveItConfigsBuilder(...).to_dict() for the cell, every file given explicitly.

    The builder is rooted at this package (no ompl_planning.yaml here, so the OMPL and
    Pilz pipelines come from moveit_configs_utils' defaults, with their planning
    plugins); kinematics and joint limits are the preset's (for the FR3 the files that
    exist in franka_fr3_moveit_config), Pilz's Cartesian limits and the controllers ours.
    """
    from moveit_configs_utils import MoveItConfigsBuilder

    preset, cfg, files = resolve_cell(robot)
    builder = (
        MoveItConfigsBuilder(cfg.robot_type, package_name=PACKAGE)
        .robot_description(file_path=str(files['description']),
                           mappings=cfg.description_mappings(robot_ip, use_fake_hardware))
        .robot_description_semantic(file_path=str(files['semantic']),
                                    mappings=cfg.semantic_mappings())
        .robot_description_kinematics(file_path=str(files['kinematics']))
        .joint_limits(file_path=str(files['joint_limits']))
        .trajectory_execution(file_path=str(files['moveit_controllers']))
        .planning_pipelines(default_planning_pipeline='ompl', pipelines=list(PIPELINES))
        .pilz_cartesian_limits(file_path=str(files['pilz_cartesian_limits']))
        .moveit_cpp(file_path=str(files['moveit_cpp']))
        .planning_scene_monitor(publish_robot_description=False,
                                publish_robot_description_semantic=True))
    params = builder.to_dict()
    for key in ('robot_description', 'robot_description_semantic', 'planning_pipelines'):
        if not params.get(key):
            raise InputError(f'robot {robot!r}: MoveIt configuration lacks {key}')
    return params


def with_moveit_parameters(specs: list[NodeSpec], moveit_params: dict) -> list[NodeSpec]:
    """The execution node's spec with MoveItPy's parameters added (others unchanged)."""
    return [dataclasses.replace(s, parameters={**moveit_params, **s.parameters})
            if s.executable == 'execution_node' else s for s in specs]


def cell_actions(robot: str, robot_ip: str, use_fake_hardware: bool,
                 robot_description: str) -> list:
    """robot_state_publisher, ros2_control_node and the controller spawner."""
    from launch_ros.actions import Node

    preset, cfg, files = resolve_cell(robot)
    check_robot_ip(preset, cfg, robot_ip, use_fake_hardware)
    description = {'robot_description': robot_description}
    return [
        Node(package='robot_state_publisher', executable='robot_state_publisher',
             name='robot_state_publisher', output='screen', parameters=[description]),
        Node(package='controller_manager', executable='ros2_control_node',
             name='controller_manager', output='screen',
             parameters=[str(files['ros2_controllers'])],
             remappings=[('~/robot_description', '/robot_description')]),
        Node(package='controller_manager', executable='spawner', name='cell_spawner',
             output='screen',
             arguments=[*cfg.spawned(use_fake_hardware), '--controller-manager',
                        '/controller_manager', '--controller-manager-timeout', '60']),
    ]


def real_cell_launch(robot: str, robot_ip: str, use_fake_hardware: bool,
                     specs: list[NodeSpec]) -> tuple[list, list[NodeSpec]]:
    """(cell actions, node specs with MoveItPy's parameters for the execution node)."""
    preset, cfg, _ = resolve_cell(robot)
    check_robot_ip(preset, cfg, robot_ip, use_fake_hardware)   # before any xacro runs
    params = moveit_parameters(robot, robot_ip, use_fake_hardware)
    actions = cell_actions(robot, robot_ip, use_fake_hardware, params['robot_description'])
    return actions, with_moveit_parameters(specs, params)
