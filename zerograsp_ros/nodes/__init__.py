"""Thin rclpy nodes over the pure core, the message conversions, the node graph and bring-up.

The only package that imports rclpy and ROS message types.
"""
