"""Grasp execution: the backend-independent pick sequence, robot presets and backends.

`pick.py` holds the sequence (stages, candidate loop, safety checks, pose maths),
`robot.py` the robot/gripper presets (config/robots/*.yaml), `backends.py` the
interface every backend implements, `moveit_backend.py` the moveit_py adapter for
the robot PC and `sim_backend.py` the clients of the simulated cell.
"""
