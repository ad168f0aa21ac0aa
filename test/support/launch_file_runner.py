"""Run one of launch/*.launch.py with arguments, as `ros2 launch` does (for test_launch.py).

    python test/support/launch_file_runner.py pick_scene.launch.py use_sim:=true device:=cpu

Needs the ROS 2 `launch` and `launch_ros` packages; exits with the launch's return code.
"""
from pathlib import Path
import sys


def main(argv):
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchDescription, LaunchService

    path = Path(__file__).resolve().parents[2] / 'launch' / argv[1]
    arguments = [tuple(a.split(':=', 1)) for a in argv[2:]]
    service = LaunchService(argv=argv[2:])
    service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(path)), launch_arguments=arguments)]))
    return service.run()


if __name__ == '__main__':
    sys.exit(main(sys.argv))
