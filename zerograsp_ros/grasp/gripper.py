"""Parallel-jaw gripper bodies: one set of numbers per gripper, used everywhere.

Refinement, the label judge, the oracle and the simulated cell check the same body.

Geometry in the gripper frame (x = approach, y = closing, z = x cross y), for a grasp of
width w and depth d (see `zerograsp_ros.grasp.representation`); every part is a box:

- fingers: x in [d - finger_length, d], w/2 <= |y| <= w/2 + finger_thickness,
  |z| <= finger_width / 2 (the pads are the fingers' inner faces)
- back box: x in [d - finger_length - palm_depth - approach_clearance - approach_distance,
  d - finger_length], |y| <= w/2 + finger_thickness, |z| <= finger_width / 2: the
  width-following palm, the GraspNet detector's approach-clearance box, and the space the
  fingers sweep through on the approach
- housing: x in [d - finger_length - palm_depth - housing_length - approach_distance,
  d - finger_length - palm_depth], |y| <= housing_width / 2, |z| <= housing_height / 2:
  the gripper body (coupling included) at the grasp pose, swept back to the pre-grasp pose
- closing region (not body): x in [d - finger_length, d], |y| < w/2, |z| <= finger_width / 2

`approach_distance` is the straight approach of the pick sequence: the arm stops at the
pre-grasp pose, `approach_distance` back along x, and moves straight in, so everything the
body passes on the way must be free, not only the final pose. Boxes stand for each part's
envelope; the real parts are rounder.

The 'robotiq_2f85' preset is the body the pybullet cell simulates (urdf/robotiq_2f85_sim.urdf;
a test checks that the URDF's collision boxes are these numbers). 'graspnet' and
`graspnet_api_gripper` are the GraspNet family's thin boxes, kept for comparisons with
their tools (graspnetAPI's evaluation check, GSNet-style detectors).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zerograsp_ros.errors import InputError

# The pick's straight approach (config/execution.yaml pre_grasp_distance, PickConfig's
# default); a test keeps them equal.
PICK_APPROACH_DISTANCE = 0.10

BOX_NAMES = ('left_finger', 'right_finger', 'back', 'housing')


@dataclass(frozen=True)
class GripperModel:
    """Box model of a parallel-jaw gripper; all lengths in metres (module notes)."""

    name: str
    finger_length: float      # along x: finger root to fingertip
    finger_width: float       # along z: pad width across the closing plane
    finger_thickness: float   # along y: each finger's thickness in the closing direction
    palm_depth: float         # along x: width-following palm box behind the finger roots
    max_stroke: float         # largest opening between the fingers' inner faces
    approach_clearance: float  # along x: width-following clearance box behind the palm
    tcp_offset: float         # flange -> fingertips along the approach, for execution
    housing_length: float = 0.0   # along x: body behind the palm (0 = no housing box)
    housing_width: float = 0.0    # along y, full width
    housing_height: float = 0.0   # along z, full height
    approach_distance: float = 0.0  # along x: straight approach swept by the whole body

    def __post_init__(self):
        for field_name in ('finger_length', 'finger_width', 'finger_thickness', 'palm_depth',
                           'max_stroke', 'approach_clearance', 'tcp_offset', 'housing_length',
                           'housing_width', 'housing_height', 'approach_distance'):
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not value == value or value < 0.0:
                raise InputError(f'gripper {self.name!r}: {field_name} must be a finite '
                                 f'non-negative number of metres, got {value!r}')
            if value > 1.0:
                raise InputError(f'gripper {self.name!r}: {field_name}={value} m is not a '
                                 'plausible gripper dimension (metres expected)')
        for field_name in ('finger_length', 'finger_width', 'max_stroke'):
            if getattr(self, field_name) <= 0.0:
                raise InputError(f'gripper {self.name!r}: {field_name} must be > 0')
        if self.housing_length > 0 and (self.housing_width <= 0 or self.housing_height <= 0):
            raise InputError(f'gripper {self.name!r}: a housing needs housing_width and '
                             'housing_height > 0')

    @property
    def has_housing(self) -> bool:
        return self.housing_length > 0.0

    @property
    def back_length(self) -> float:
        """Length of the width-following back box behind the finger roots (swept)."""
        return self.palm_depth + self.approach_clearance + self.approach_distance

    @property
    def housing_x_range(self) -> tuple[float, float]:
        """Housing box (swept) along x, relative to the fingertips (x - d)."""
        front = -(self.finger_length + self.palm_depth)
        return front - self.housing_length - self.approach_distance, front

    @property
    def length_behind_tip(self) -> float:
        """Extent of the modelled body along the approach, from the fingertips back."""
        thin = self.finger_length + self.back_length
        return max(thin, -self.housing_x_range[0]) if self.has_housing else thin

    def half_extent_y(self, widths):
        """Largest |y| of the body for grasp widths (numpy or torch)."""
        outer = widths / 2 + self.finger_thickness
        if not self.has_housing:
            return outer
        return outer.clamp(min=self.housing_width / 2) if hasattr(outer, 'clamp') \
            else np.maximum(outer, self.housing_width / 2)

    @property
    def half_extent_z(self) -> float:
        return max(self.finger_width, self.housing_height if self.has_housing else 0.0) / 2

    def boxes(self, widths, depths) -> np.ndarray:
        """(N, 4, 2, 3) min/max corners of BOX_NAMES in the gripper frame.

        A part the model does not have (no back box or no housing) is a zero-volume box at
        the finger roots, inside the fingers' extent, so its corners change nothing.
        """
        widths = np.asarray(widths, dtype=np.float64).reshape(-1)
        depths = np.broadcast_to(np.asarray(depths, dtype=np.float64), widths.shape)
        n = len(widths)
        half = widths / 2.0
        outer = half + self.finger_thickness
        root = depths - self.finger_length
        hz = np.full(n, self.finger_width / 2.0)
        out = np.empty((n, 4, 2, 3))
        out[:, 0, 0] = np.stack([root, half, -hz], 1)
        out[:, 0, 1] = np.stack([depths, outer, hz], 1)
        out[:, 1, 0] = np.stack([root, -outer, -hz], 1)
        out[:, 1, 1] = np.stack([depths, -half, hz], 1)
        out[:, 2, 0] = np.stack([root - self.back_length, -outer, -hz], 1)
        out[:, 2, 1] = np.stack([root, outer, hz], 1)
        if self.has_housing:
            x_lo, x_hi = self.housing_x_range
            hy = np.full(n, self.housing_width / 2.0)
            hh = np.full(n, self.housing_height / 2.0)
            out[:, 3, 0] = np.stack([depths + x_lo, -hy, -hh], 1)
            out[:, 3, 1] = np.stack([depths + x_hi, hy, hh], 1)
        else:
            out[:, 3] = out[:, 2]
            out[:, 3, 0, 0] = root
        return out


GRIPPER_PRESETS: dict[str, GripperModel] = {
    # Robotiq 2F-85, the body the simulated cell moves (urdf/robotiq_2f85_sim.urdf).
    # Sources: stroke 85 mm and pads about 22 mm wide, Robotiq's published 2F-85
    # specifications as quoted in shared/reference/grasp-conventions.md; flange ->
    # fingertips 0.149 m, the published flange -> pinch-point figure for the 2F-85 on a
    # Franka (same note: 0.13-0.15 m from the base). Housing 94 x 86 x 65 mm (x y z,
    # coupling + body) and fingers 55 mm long (0.149 - 0.094), 12 mm thick: the sim URDF's
    # boxes, an envelope of the housing rounded up to a box (issue #15: close to the real
    # housing); the reference note gives no housing drawing figures, so re-measure these
    # against Robotiq's drawing before trusting millimetres. Palm: the housing's front
    # face (no separate box). approach_distance: the pick's pre-grasp distance.
    'robotiq_2f85': GripperModel(
        name='robotiq_2f85', finger_length=0.055, finger_width=0.022, finger_thickness=0.012,
        palm_depth=0.0, max_stroke=0.085, approach_clearance=0.0, tcp_offset=0.149,
        housing_length=0.094, housing_width=0.086, housing_height=0.065,
        approach_distance=PICK_APPROACH_DISTANCE),
    # Franka hand: 80 mm stroke, TCP 0.1034 m from the hand flange (thin box model).
    'franka_hand': GripperModel(
        name='franka_hand', finger_length=0.054, finger_width=0.02, finger_thickness=0.01,
        palm_depth=0.02, max_stroke=0.08, approach_clearance=0.05, tcp_offset=0.1034),
    # The GraspNet-1B model-free detector's gripper (finger 0.06, thickness 0.01, height
    # 0.02, palm 0.01, clearance 0.05, width <= 0.10), no housing, no swept approach.
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


def graspnet_api_gripper(depth: float) -> GripperModel:
    """graspnetAPI's evaluation gripper (`utils.eval_utils.collision_detection`) at a depth.

    Its fingers reach from 0.02 m behind the grasp point to the depth (finger length
    depth + 0.02), 0.01 m thick, 0.02 m high, a 0.01 m bottom behind them, no clearance
    box, no housing, no swept approach; opening up to 0.10 m. Only for comparing our
    kernels with graspnetAPI decision by decision.
    """
    return GripperModel(name=f'graspnet_api_d{depth:.2f}', finger_length=depth + 0.02,
                        finger_width=0.02, finger_thickness=0.01, palm_depth=0.01,
                        max_stroke=0.1, approach_clearance=0.0, tcp_offset=0.0)
