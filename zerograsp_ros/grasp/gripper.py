"""Parallel-jaw gripper models used by refinement, collision checks and execution.

Geometry in the gripper frame (x = approach, y = closing, z = x cross y), for a
grasp of width w and depth d (see `zerograsp_ros.grasp.representation`):

- fingers: two boxes x in [d - finger_length, d], w/2 <= |y| <= w/2 + finger_thickness
- palm: x in [d - finger_length - palm_depth, d - finger_length), |y| <= w/2 + finger_thickness
- approach clearance (the wrist / arm sweeping in): a box of length
  approach_clearance behind the palm, same cross-section
- every box spans |z| <= finger_width / 2 (the pad width across the closing plane)

This is the model-free two-finger model of the GraspNet family (boxes that follow the
grasp width); it is an approximation of the real housing, which is wider than the palm box
when the fingers are nearly closed.
"""
from __future__ import annotations

from dataclasses import dataclass

from zerograsp_ros.errors import InputError


@dataclass(frozen=True)
class GripperModel:
    """Box model of a parallel-jaw gripper; all lengths in metres."""

    name: str
    finger_length: float      # along x: finger root to fingertip
    finger_width: float       # along z: pad width across the closing plane
    finger_thickness: float   # along y: each finger's thickness in the closing direction
    palm_depth: float         # along x: palm box behind the finger roots
    max_stroke: float         # largest opening between the fingers' inner faces
    approach_clearance: float  # along x: free space needed behind the palm for the approach
    tcp_offset: float         # flange -> TCP along the approach, for execution

    def __post_init__(self):
        for field_name in ('finger_length', 'finger_width', 'finger_thickness', 'palm_depth',
                           'max_stroke', 'approach_clearance', 'tcp_offset'):
            value = getattr(self, field_name)
            if not isinstance(value, (int, float)) or not value == value or value < 0.0:
                raise InputError(f'gripper {self.name!r}: {field_name} must be a finite '
                                 f'non-negative number of metres, got {value!r}')
            if value > 1.0:
                raise InputError(f'gripper {self.name!r}: {field_name}={value} m is not a '
                                 'plausible gripper dimension (metres expected)')
        for field_name in ('finger_length', 'finger_width', 'max_stroke'):
            if getattr(self, field_name) <= 0.0:
                raise InputError(f'gripper {self.name!r}: {field_name} must be > 0')

    @property
    def length_behind_tip(self) -> float:
        """Extent of the modelled gripper along the approach, from the fingertips back."""
        return self.finger_length + self.palm_depth + self.approach_clearance


GRIPPER_PRESETS: dict[str, GripperModel] = {
    # Robotiq 2F-85: 85 mm stroke, ~22 mm wide pads; flange -> pinch point 0.149 m on the
    # upstream Franka adapter kit (robot-cell notes). Finger length is the part of the
    # fingers reaching past the housing when open.
    'robotiq_2f85': GripperModel(
        name='robotiq_2f85', finger_length=0.055, finger_width=0.022, finger_thickness=0.012,
        palm_depth=0.02, max_stroke=0.085, approach_clearance=0.05, tcp_offset=0.149),
    # Franka hand: 80 mm stroke, TCP 0.1034 m from the hand flange.
    'franka_hand': GripperModel(
        name='franka_hand', finger_length=0.054, finger_width=0.02, finger_thickness=0.01,
        palm_depth=0.02, max_stroke=0.08, approach_clearance=0.05, tcp_offset=0.1034),
    # The GraspNet-1B model-free detector's gripper (finger 0.06, thickness 0.01, height
    # 0.02, palm 0.01, clearance 0.05, width <= 0.10); for comparisons and labels.
    'graspnet': GripperModel(
        name='graspnet', finger_length=0.06, finger_width=0.02, finger_thickness=0.01,
        palm_depth=0.01, max_stroke=0.10, approach_clearance=0.05, tcp_offset=0.0),
}


def gripper_preset(name: str) -> GripperModel:
    """The named preset; InputError listing the valid names otherwise."""
    try:
        return GRIPPER_PRESETS[name]
    except (KeyError, TypeError):
        raise InputError(f'unknown gripper preset {name!r}; valid presets: '
                         f'{", ".join(sorted(GRIPPER_PRESETS))}') from None
