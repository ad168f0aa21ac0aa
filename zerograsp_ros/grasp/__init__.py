"""Grasp representation, gripper models, refinement and collision checking (no ROS)."""
