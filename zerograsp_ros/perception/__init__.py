"""Perception: tabletop segmentation, depth-scale tare and the in-process grasp pipeline."""
