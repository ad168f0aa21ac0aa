"""Geometry in numpy (no ROS, no torch): camera, RGB-D frames, rigid transforms, meshing."""
