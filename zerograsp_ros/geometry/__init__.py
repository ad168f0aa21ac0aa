"""Camera geometry and RGB-D frames (pure numpy, no ROS)."""
