"""The whole pick cell: perception + execution, on the simulated cell or real hardware.

  ros2 launch zerograsp_ros pick_scene.launch.py                       # simulated cell
  ros2 launch zerograsp_ros pick_scene.launch.py use_sim:=false robot:=fr3 \
      robot_ip:=172.16.0.2 camera_serial:=123456789012

use_sim:=true: the simulated cell (sim_cell_node) publishes the realsense topics and
stands in for camera, arm and gripper. use_sim:=false: realsense2_camera's
rs_launch.py with align_depth.enable:=true, plus the real cell of
config/robots/<robot>.yaml (section cell; zerograsp_ros.nodes.real_cell): one
robot_state_publisher and one controller_manager for arm + 2F-85, and MoveItPy's
parameters for the execution node.
The node graph comes from zerograsp_ros.nodes.graph (shared with `bringup`).
`launch` is imported only inside generate_launch_description.
"""
from zerograsp_ros.nodes.graph import pick_scene_nodes, realsense_include

ARGUMENTS = {
    'use_sim': ('true', 'true: simulated cell; false: RealSense + robot bring-up'),
    'robot': ('panda', 'robot preset: panda | fr3 (config/robots/<robot>.yaml)'),
    'robot_ip': ('', 'the arm\'s IP address (required with use_sim:=false unless '
                     'use_fake_hardware:=true)'),
    'use_fake_hardware': ('false', 'use_sim:=false: mock arm and gripper hardware (bring-up '
                                   'checks and dry runs)'),
    'camera_serial': ('', 'RealSense serial number (empty = the first camera found)'),
    'checkpoint': ('', "model checkpoint ('' = share/zerograsp_ros/checkpoints/"
                       "zerograsp_cpu.pt)"),
    'device': ('auto', 'auto | cpu | cuda[:N]'),
    'rviz': ('true', 'start RViz with config/zerograsp.rviz'),
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
    return pick_scene_nodes(_flag(values['use_sim']), values['robot'], values['checkpoint'],
                            values['device'], web_view=_flag(values['web_view']),
                            web_host=values['web_host'], web_port=values['web_port'])


def includes(args: dict) -> list[dict]:
    """The other packages' launch files included (none with use_sim:=true)."""
    values = {k: v for k, (v, _) in ARGUMENTS.items()}
    values.update(args)
    if _flag(values['use_sim']):
        return []
    return [realsense_include(values['camera_serial'])]


def generate_launch_description():
    try:
        from launch.actions import DeclareLaunchArgument, OpaqueFunction

        from launch import LaunchDescription
    except ImportError as exc:
        raise ImportError('pick_scene.launch.py needs the ROS 2 `launch` and `launch_ros` '
                          'packages; without them run the same graph with '
                          '`ros2 run zerograsp_ros bringup`') from exc
    from zerograsp_ros.nodes.graph import launch_actions

    def setup(context):
        values = {k: context.launch_configurations[k] for k in ARGUMENTS}
        specs, cell = node_specs(values), []
        if not _flag(values['use_sim']):
            from zerograsp_ros.nodes.real_cell import real_cell_launch

            cell, specs = real_cell_launch(values['robot'], values['robot_ip'],
                                           _flag(values['use_fake_hardware']), specs)
        return launch_actions(specs, includes(values), rviz=_flag(values['rviz']),
                              cell_actions=cell)

    return LaunchDescription(
        [DeclareLaunchArgument(k, default_value=v, description=d)
         for k, (v, d) in ARGUMENTS.items()] + [OpaqueFunction(function=setup)])
