"""The node graph of zerograsp_ros, defined once for the launch files and `bringup`.

Pure Python (no `launch` import): the launch files turn these NodeSpecs into
launch_ros Node actions; `bringup` instantiates the same classes in one process.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from zerograsp_ros.errors import InputError

PACKAGE = 'zerograsp_ros'
ROBOTS = ('panda', 'fr3')
CAMERA_SOURCES = ('realsense', 'sim', 'replay')


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


def package_path(*parts: str) -> Path:
    """A shipped file: the source tree when running from it, else the installed share dir."""
    source = Path(__file__).resolve().parents[2].joinpath(*parts)
    if source.exists():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE)).joinpath(*parts)
    except Exception:  # not installed either: report the source path that is missing
        return source


def default_checkpoint() -> Path:
    return package_path('checkpoints', 'zerograsp_cpu.pt')


def _config(name: str) -> tuple[str, ...]:
    path = package_path('config', name)
    return (str(path),) if path.is_file() else ()


def perception_nodes(camera_source: str = 'realsense', replay_dir: str = '',
                     checkpoint: str = '', device: str = 'auto', visualization: bool = True,
                     extra_param_files: tuple[str, ...] = ()) -> list[NodeSpec]:
    """Camera, segmentation, grasp, refinement (and visualisation) nodes."""
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
    return nodes


def pick_scene_nodes(use_sim: bool = True, robot: str = 'panda', checkpoint: str = '',
                     device: str = 'auto', visualization: bool = True) -> list[NodeSpec]:
    """The whole pick cell: perception, execution and (use_sim) the simulated cell.

    With use_sim the simulated cell publishes the realsense topics and stands in for
    camera, arm and gripper; otherwise the camera node listens to realsense2_camera.
    """
    if robot not in ROBOTS and not Path(robot).is_file():
        raise InputError(f"robot '{robot}' is not one of {ROBOTS} (or a preset YAML path)")
    nodes = perception_nodes('sim' if use_sim else 'realsense', checkpoint=checkpoint,
                             device=device, visualization=visualization)
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

def node_actions(specs: list[NodeSpec]) -> list:
    """launch_ros Node actions for NodeSpecs (parameter values after the files, as bringup)."""
    from launch_ros.actions import Node

    return [Node(package=PACKAGE, executable=s.executable, name=s.name, output='screen',
                 parameters=[*s.param_files, dict(s.parameters)] if s.parameters
                 else list(s.param_files),
                 remappings=list(s.remappings), emulate_tty=True) for s in specs]


def include_actions(includes: list[dict]) -> list:
    """IncludeLaunchDescription actions for {'package', 'launch', 'arguments'} dicts."""
    from ament_index_python.packages import get_package_share_directory
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    actions = []
    for inc in includes:
        try:
            share = get_package_share_directory(inc['package'])
        except Exception as exc:  # missing driver package: say which and for what
            raise InputError(f"launch include {inc['package']}/{inc['launch']}: package "
                             f"{inc['package']} is not installed ({exc})") from exc
        actions.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(Path(share) / 'launch' / inc['launch'])),
            launch_arguments=dict(inc['arguments']).items()))
    return actions


def rviz_action():
    from launch_ros.actions import Node

    return Node(package='rviz2', executable='rviz2', name='rviz2', output='screen',
                arguments=['-d', str(package_path('config', 'zerograsp.rviz'))])
