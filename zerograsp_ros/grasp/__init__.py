"""Grasp representation, gripper models, refinement and collision checking (no ROS)."""

# The gripper this package is built and trained for (the simulated cell's, and the
# default of every gripper parameter); its model is gripper.gripper_preset(DEFAULT_GRIPPER).
DEFAULT_GRIPPER = 'robotiq_2f85'
