"""Perception: tabletop segmentation, meshing and the in-process grasp pipeline."""
