"""zerograsp_ros: single-view reconstruction and 6-DoF grasping (ZeroGrasp) for ROS 2.

The generated interfaces (`zerograsp_ros.msg`, `zerograsp_ros.srv`) live in
the colcon install space; `extend_path` lets a source checkout placed first
on sys.path still find them there.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = '0.1.0'
