"""Grasp execution: the backend-independent pick sequence, robot presets and backends.

`pick.py` holds the sequence (stages, candidate loop, safety checks), `robot.py` the
robot/gripper presets (config/robots/*.yaml), `backends.py` the interface every
backend implements, `moveit_backend.py` the moveit_py adapter for the robot PC (the
one module here that imports ROS, inside the adapter) and `sim_backend.py` the
simulated cell's planning scene and in-process backend (its ROS client lives in
`zerograsp_ros.nodes.sim_cell_client`). Pose maths: `zerograsp_ros.geometry.transforms`.
"""
