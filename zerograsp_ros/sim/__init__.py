"""Simulation: scenes, the pybullet pick cell, baselines and the clutter-removal benchmark.

scene.py (shared tabletop scenes + rendering), cell.py (the simulated cell),
baselines.py (model-free grasp baselines), benchmark.py (CLI:
benchmarks/clutter_removal.py).
"""
