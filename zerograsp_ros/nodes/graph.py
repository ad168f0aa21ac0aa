"""The node graph of zerograsp_ros, defined once for the launch files and `bringup`.

Pure Python (no `launch` import): the launch files turn these NodeSpecs into
launch_ros Node actions; `bringup` instantiates the same classes in one process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
import tempfile

import yaml

from zerograsp_ros.errors import InputError
from zerograsp_ros.resources import package_path

PACKAGE = 'zerograsp_ros'
ROBOTS = ('panda', 'fr3')
CAMERA_SOURCES = ('realsense', 'sim', 'replay')
WEB_VIEW_HOST, WEB_VIEW_PORT = '127.0.0.1', 8080


@dataclass(frozen=True)
class NodeSpec:
    """One node: its executable, name, class, parameters (YAML files, then values)."""

    executable: str
    name: str
    class_name: str
    param_files: tuple[str, ...] = ()
    parameters: dict = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()

    @property
    def module(self) -> str:
        return f'{PACKAGE}.nodes.{self.executable}'

    def ros_args(self) -> list[str]:
        """Name, parameter files and remappings as ROS arguments (for in-process nodes).

        The parameter values are not among them: rcl files `-p` values under the
        wildcard node name, so a file's node section would beat them; pass
        `parameter_overrides()` to the node instead (as launch_ros does with a
        node-named file after the others).
        """
        args = ['--ros-args', '-r', f'__node:={self.name}']
        for path in self.param_files:
            args += ['--params-file', str(path)]
        for src, dst in self.remappings:
            args += ['-r', f'{src}:={dst}']
        return args

    def parameter_overrides(self) -> list:
        from rclpy.parameter import Parameter

        return [Parameter(key, value=value) for key, value in self.parameters.items()]

    def override_params_file(self) -> str | None:
        """The parameter values as a YAML file keyed by this node's name (for launch_ros).

        launch_ros writes a `parameters=[{...}]` dict under the wildcard `/**`, and rcl lets
        a node-named section beat a wildcard whatever the file order, so the node sections
        of config/perception.yaml silently won over every launch argument. Keyed by the
        node name like those sections and passed after them, these values win.
        """
        if not self.parameters:
            return None
        with tempfile.NamedTemporaryFile('w', prefix=f'zerograsp_{self.name}_',
                                         suffix='.yaml', delete=False) as f:
            yaml.safe_dump({self.name: {'ros__parameters': dict(self.parameters)}}, f)
        return f.name


def _config(name: str) -> tuple[str, ...]:
    path = package_path('config', name)
    return (str(path),) if path.is_file() else ()


def web_view_node(host: str = WEB_VIEW_HOST, port: int | str = WEB_VIEW_PORT,
                  extra_param_files: tuple[str, ...] = ()) -> NodeSpec:
    """The browser view (nodes/web_view.py) listening on host:port."""
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise InputError(f"web view port '{port}' is not an integer") from None
    if not 0 <= port <= 65535:
        raise InputError(f'web view port {port} is outside 0..65535')
    if not str(host).strip():
        raise InputError('web view host is empty (127.0.0.1 = this machine only)')
    return NodeSpec('web_view', 'web_view', 'WebViewNode',
                    _config('perception.yaml') + tuple(extra_param_files),
                    {'host': str(host), 'port': port})


def perception_nodes(camera_source: str = 'realsense', replay_dir: str = '',
                     checkpoint: str = '', device: str = 'auto', visualization: bool = True,
                     extra_param_files: tuple[str, ...] = (), web_view: bool = False,
                     web_host: str = WEB_VIEW_HOST,
                     web_port: int | str = WEB_VIEW_PORT) -> list[NodeSpec]:
    """Camera, segmentation, grasp, refinement (and visualisation, web view) nodes."""
    if camera_source not in CAMERA_SOURCES:
        raise InputError(f"camera source '{camera_source}' is not one of {CAMERA_SOURCES}")
    if camera_source == 'replay' and not replay_dir:
        raise InputError("camera source 'replay' needs a replay directory")
    files = _config('perception.yaml') + tuple(extra_param_files)
    camera = {'source': camera_source}
    if replay_dir:
        camera['replay_dir'] = str(replay_dir)
    grasp = {'device': device}
    if checkpoint:
        grasp['checkpoint'] = str(checkpoint)
    nodes = [
        NodeSpec('camera_node', 'camera_node', 'CameraNode', files, camera),
        NodeSpec('segmentation_node', 'segmentation_node', 'SegmentationNode', files),
        NodeSpec('grasp_node', 'grasp_node', 'GraspNode', files, grasp),
        NodeSpec('refinement_node', 'refinement_node', 'RefinementNode', files),
    ]
    if visualization:
        nodes.append(NodeSpec('visualization_node', 'visualization_node', 'VisualizationNode',
                              files))
    if web_view:
        nodes.append(web_view_node(web_host, web_port, tuple(extra_param_files)))
    return nodes


def pick_scene_nodes(use_sim: bool = True, robot: str = 'panda', checkpoint: str = '',
                     device: str = 'auto', visualization: bool = True, web_view: bool = False,
                     web_host: str = WEB_VIEW_HOST,
                     web_port: int | str = WEB_VIEW_PORT) -> list[NodeSpec]:
    """The whole pick cell: perception, execution and (use_sim) the simulated cell.

    With use_sim the simulated cell publishes the realsense topics and stands in for
    camera, arm and gripper; otherwise the camera node listens to realsense2_camera.
    """
    if robot not in ROBOTS and not Path(robot).is_file():
        raise InputError(f"robot '{robot}' is not one of {ROBOTS} (or a preset YAML path)")
    nodes = perception_nodes('sim' if use_sim else 'realsense', checkpoint=checkpoint,
                             device=device, visualization=visualization, web_view=web_view,
                             web_host=web_host, web_port=web_port)
    nodes.append(NodeSpec('execution_node', 'execution_node', 'ExecutionNode',
                          _config('execution.yaml'),
                          {'robot': robot, 'backend': 'sim' if use_sim else 'moveit'}))
    if use_sim:
        nodes.append(NodeSpec('sim_cell_node', 'sim_cell_node', 'SimCellNode',
                              _config('sim_cell.yaml')))
    return nodes


def robot_preset_path(robot: str) -> Path:
    path = Path(robot) if robot.endswith('.yaml') else package_path('config', 'robots',
                                                                    f'{robot}.yaml')
    if not path.is_file():
        raise InputError(f"no robot preset '{robot}' ({path} does not exist)")
    return path


def realsense_include(camera_serial: str = '') -> dict:
    """realsense2_camera rs_launch.py with depth aligned to colour and synced stamps."""
    args = {'align_depth.enable': 'true', 'enable_sync': 'true'}
    if camera_serial:
        # rs_launch takes the serial with a leading underscore (kept a string, not a number)
        args['serial_no'] = camera_serial if camera_serial.startswith('_') \
            else f'_{camera_serial}'
    return {'package': 'realsense2_camera', 'launch': 'rs_launch.py', 'arguments': args}


# ----------------------------------------------------------------------------- launch side
# Used by launch/*.launch.py only; `launch`/`launch_ros` are imported here, lazily.

# Exit status of a node that cannot start (bad parameter, missing checkpoint): the launch
# files stop instead of respawning it; any other death (a crash, the OOM killer) respawns.
STARTUP_ERROR_EXIT = 78  # EX_CONFIG of sysexits.h
RESPAWN_DELAY_S = 2.0


def node_actions(specs: list[NodeSpec], respawn: bool = True) -> list:
    """launch_ros Node actions for NodeSpecs (parameter values after the files, as bringup).

    Nodes that die are respawned after RESPAWN_DELAY_S; one that exits with
    STARTUP_ERROR_EXIT stops the whole launch (its message names the cause).
    """
    from launch.actions import RegisterEventHandler, Shutdown
    from launch.event_handlers import OnProcessExit
    from launch_ros.actions import Node

    actions = []
    for s in specs:
        override = s.override_params_file()
        node = Node(package=PACKAGE, executable=s.executable, name=s.name, output='screen',
                    parameters=[*s.param_files, *([override] if override else [])],
                    remappings=list(s.remappings), emulate_tty=True,
                    respawn=respawn, respawn_delay=RESPAWN_DELAY_S)

        def stop_on_startup_error(event, context, name=s.name):
            if event.returncode == STARTUP_ERROR_EXIT:
                return [Shutdown(reason=f'{name} cannot start (its message above names the '
                                        'cause); stopping the launch')]
            return None

        actions += [node, RegisterEventHandler(OnProcessExit(target_action=node,
                                                             on_exit=stop_on_startup_error))]
    return actions


def missing_packages(packages) -> list[str]:
    """The ROS packages among `packages` that ament_index does not know."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    missing = []
    for package in dict.fromkeys(packages):
        try:
            get_package_share_directory(package)
        except PackageNotFoundError:
            missing.append(package)
    return missing


def require_packages(needed: dict[str, str]) -> None:
    """Check every package a launch needs BEFORE any node starts: one InputError for all.

    needed: package -> what it is for (and how to do without it).
    """
    missing = missing_packages(needed)
    if missing:
        raise InputError('cannot launch, missing ROS package(s) (nothing was started): ' +
                         '; '.join(f"'{p}' ({needed[p]})" for p in missing))


def launch_actions(specs: list[NodeSpec], includes: list[dict] = (), rviz: bool = False,
                   cell_actions: list = ()) -> list:
    """Everything a launch file starts, after checking every package it needs.

    A missing optional package (rviz2, realsense2_camera, the arm's bring-up) stops the
    launch with one message before any process starts, so nothing is left running.
    """
    needed = {PACKAGE: 'this package: source the workspace it was built in'}
    needed.update({inc['package']: f"included for its {inc['launch']}" for inc in includes})
    if rviz:
        needed['rviz2'] = 'rviz:=true; install ros-jazzy-rviz2 or pass rviz:=false'
    require_packages(needed)
    actions = include_actions(includes) + list(cell_actions) + node_actions(specs)
    if rviz:
        actions.append(rviz_action())
    return actions


def include_actions(includes: list[dict]) -> list:
    """IncludeLaunchDescription actions for {'package', 'launch', 'arguments'} dicts."""
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    require_packages({inc['package']: f"launch include {inc['launch']}" for inc in includes})
    actions = []
    for inc in includes:
        share = get_package_share_directory(inc['package'])
        actions.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(Path(share) / 'launch' / inc['launch'])),
            launch_arguments=dict(inc['arguments']).items()))
    return actions


def rviz_action():
    from launch_ros.actions import Node

    return Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                arguments=['-d', str(package_path('config', 'zerograsp.rviz'))])
