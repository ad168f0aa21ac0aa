"""Perception nodes only: camera, segmentation, grasp, refinement, visualisation.

  ros2 launch zerograsp_ros perception.launch.py camera_source:=realsense
  ros2 launch zerograsp_ros perception.launch.py camera_source:=replay replay_dir:=<dir>

The node graph comes from zerograsp_ros.nodes.graph (shared with `bringup`, the
launch-free equivalent). `launch` is imported only inside
generate_launch_description, so this file imports as plain Python anywhere.
"""
from zerograsp_ros.nodes.graph import perception_nodes

ARGUMENTS = {
    'camera_source': ('realsense', 'realsense | sim | replay'),
    'replay_dir': ('', 'recorded frame(s) for camera_source:=replay'),
    'checkpoint': ('', "model checkpoint ('' = share/zerograsp_ros/checkpoints/"
                       "zerograsp_cpu.pt)"),
    'device': ('auto', 'auto | cpu | cuda[:N]'),
    'rviz': ('false', 'start RViz with config/zerograsp.rviz'),
    'web_view': ('false', 'serve the live 3D view in a browser (web_view node, viser)'),
    'web_host': ('127.0.0.1', 'address the web view listens on (127.0.0.1 = this machine '
                              'only)'),
    'web_port': ('8080', 'port of the web view (0 = any free port)'),
}


def _flag(value: str) -> bool:
    v = str(value).strip().lower()
    if v not in ('true', 'false', '1', '0'):
        raise ValueError(f"expected true or false, got '{value}'")
    return v in ('true', '1')


def node_specs(args: dict) -> list:
    """The nodes this launch file starts for the given argument values."""
    values = {k: v for k, (v, _) in ARGUMENTS.items()}
    values.update(args)
    return perception_nodes(values['camera_source'], values['replay_dir'],
                            values['checkpoint'], values['device'],
                            web_view=_flag(values['web_view']), web_host=values['web_host'],
                            web_port=values['web_port'])


def generate_launch_description():
    try:
        from launch.actions import DeclareLaunchArgument, OpaqueFunction

        from launch import LaunchDescription
    except ImportError as exc:
        raise ImportError('perception.launch.py needs the ROS 2 `launch` and `launch_ros` '
                          'packages; without them run the same graph with '
                          '`ros2 run zerograsp_ros bringup --perception-only`') from exc
    from zerograsp_ros.nodes.graph import launch_actions

    def setup(context):
        values = {k: context.launch_configurations[k] for k in ARGUMENTS}
        return launch_actions(node_specs(values), rviz=values['rviz'].lower() == 'true')

    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d)
         for k, (v, d) in ARGUMENTS.items()] + [OpaqueFunction(function=setup)])
