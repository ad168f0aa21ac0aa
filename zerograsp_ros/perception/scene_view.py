"""What a live 3D view draws, as plain arrays: colours, gripper boxes, the table, the cloud.

Pure numpy (no viewer, no rclpy), shared by the browser view (nodes/web_view.py) and its
tests, which look for these exact colours in a screenshot. Everything stays in the
frame of the messages (the camera's optical frame).
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from zerograsp_ros.geometry.camera import CameraIntrinsics
from zerograsp_ros.grasp.gripper import BOX_NAMES, GripperModel

# Golden-ratio hue steps from 0.13: neighbouring ids get far-apart hues (as in RViz).
_HUE_START, _HUE_STEP = 0.13, 0.618034
EXECUTED_GRASP_RGB = (40, 120, 255)   # blue: far from the red-green score ramp
TABLE_RGB = (176, 160, 138)


def object_rgb(object_id: int) -> tuple[float, float, float]:
    """A distinct colour per object id, components in [0, 1] (the RViz markers' colours)."""
    return colorsys.hsv_to_rgb((_HUE_START + _HUE_STEP * int(object_id)) % 1.0, 0.65, 0.95)


def object_rgb8(object_id: int) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in object_rgb(object_id))


def score_rgb8(scores) -> np.ndarray:
    """(N, 3) uint8 colours from red (score 0) to green (score 1), as the RViz markers."""
    s = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=0.0), 0.0, 1.0)
    rgb = np.stack([1.0 - s, s, np.full_like(s, 0.1)], axis=-1)
    return np.round(255 * rgb).astype(np.uint8)


def relative_scores(scores, reference) -> np.ndarray:
    """Scores mapped linearly to [0, 1] over the reference scores' range (all 1 if flat)."""
    s = np.asarray(scores, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if not len(ref) or np.ptp(ref) < 1e-9:
        return np.ones_like(s)
    return np.clip((s - ref.min()) / np.ptp(ref), 0.0, 1.0)


def wxyz_to_matrix(wxyz) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    w, x, y, z = np.asarray(wxyz, dtype=np.float64)
    return Rotation.from_quat([x, y, z, w]).as_matrix()


def matrix_to_wxyz(R: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations -> (N, 4) unit quaternions, scalar first."""
    from scipy.spatial.transform import Rotation

    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    if not len(R):
        return np.zeros((0, 4))
    return np.roll(Rotation.from_matrix(R).as_quat(), 1, axis=1)


@dataclass
class BoxInstances:
    """Oriented boxes to draw as instances of one unit cube."""

    positions: np.ndarray   # (M, 3)
    wxyzs: np.ndarray       # (M, 4)
    sizes: np.ndarray       # (M, 3)
    colours: np.ndarray     # (M, 3) uint8
    opacities: np.ndarray   # (M,)

    def __len__(self) -> int:
        return len(self.positions)


def gripper_boxes(rotations, translations, widths, depths,
                  gripper: GripperModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The gripper's body at each grasp pose as oriented boxes (BOX_NAMES order).

    The model's own boxes (`GripperModel.boxes`) without the approach sweep: what the
    gripper occupies once at the grasp, not the volume it passes on the way. A part the
    model lacks has size 0 (drawn as nothing). Returns centres (N, 4, 3) in the grasps'
    frame, sizes (N, 4, 3) along the gripper axes and the (N, 3, 3) rotations.
    """
    import dataclasses

    R = np.asarray(rotations, dtype=np.float64).reshape(-1, 3, 3)
    t = np.asarray(translations, dtype=np.float64).reshape(-1, 3)
    at_grasp = dataclasses.replace(gripper, approach_distance=0.0)
    corners = at_grasp.boxes(widths, depths)                      # (N, 4, 2, 3)
    sizes = corners[:, :, 1] - corners[:, :, 0]
    local = corners.mean(axis=2)
    if not gripper.has_housing:
        sizes[:, 3] = 0.0   # BOX_NAMES' housing slot repeats the back box: drawn once
    centres = np.einsum('nij,nbj->nbi', R, local) + t[:, None, :]
    return centres, sizes, R


# The housing is drawn see-through: at 94 x 86 x 65 mm it would hide the objects.
BOX_OPACITY = {'housing': 0.25}


def grasp_box_instances(rotations, translations, widths, depths, colours,
                        gripper: GripperModel) -> BoxInstances:
    """Every grasp as the gripper model's boxes, each box in its grasp's colour."""
    centres, sizes, R = gripper_boxes(rotations, translations, widths, depths, gripper)
    assert centres.shape[1] == len(BOX_NAMES)
    n, parts = centres.shape[:2]
    wxyz = np.repeat(matrix_to_wxyz(R), parts, axis=0)
    colours = np.repeat(np.asarray(colours, dtype=np.uint8).reshape(n, 3), parts, axis=0)
    opacity = np.tile([BOX_OPACITY.get(name, 1.0) for name in BOX_NAMES], n)
    return BoxInstances(centres.reshape(-1, 3), wxyz, sizes.reshape(-1, 3), colours,
                        opacity.astype(np.float32))


def unit_cube() -> tuple[np.ndarray, np.ndarray]:
    """Vertices (8, 3) and outward-facing triangles (12, 3) of a cube of side 1 at 0."""
    v = np.array([[x, y, z] for x in (-.5, .5) for y in (-.5, .5) for z in (-.5, .5)])
    f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                  [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return v.astype(np.float32), f.astype(np.uint32)


def visible_cloud(depth: np.ndarray, rgb: np.ndarray | None, intrinsics: CameraIntrinsics,
                  stride: int = 4, max_depth: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Every `stride`-th pixel's valid depth as camera-frame points (M, 3) and colours.

    Colours are the image's (uint8), grey without one. Depth 0, NaN or beyond
    max_depth is left out.
    """
    s = max(1, int(stride))
    z = np.asarray(depth, dtype=np.float32)[::s, ::s]
    rows, cols = np.mgrid[0:z.shape[0], 0:z.shape[1]]
    valid = np.isfinite(z) & (z > 0) & (z <= max_depth)
    zz = z[valid]
    u, v = cols[valid] * s, rows[valid] * s
    pts = np.stack([(u - intrinsics.cx) * zz / intrinsics.fx,
                    (v - intrinsics.cy) * zz / intrinsics.fy, zz], axis=1).astype(np.float32)
    if rgb is None:
        return pts, np.full((len(pts), 3), 160, np.uint8)
    colours = np.asarray(rgb)[::s, ::s][valid]
    if colours.ndim == 1:   # mono8
        colours = np.repeat(colours[:, None], 3, axis=1)
    return pts, colours[:, :3].astype(np.uint8)


@dataclass
class TablePatch:
    """The table as a thin box under the visible points on the plane."""

    position: np.ndarray    # (3,) centre, camera frame
    wxyz: np.ndarray        # (4,) box z axis = table normal (towards the camera)
    size: np.ndarray        # (3,) extent along the box axes


def table_patch(plane: np.ndarray, points: np.ndarray, inlier_distance: float = 0.01,
                thickness: float = 0.004) -> TablePatch | None:
    """The rectangle of the plane (a, b, c, d) that holds the points within inlier_distance.

    Its top face lies on the plane; None when fewer than 3 points are on it.
    """
    plane = np.asarray(plane, dtype=np.float64)
    normal = plane[:3] / np.linalg.norm(plane[:3])
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    on = np.abs(pts @ normal + plane[3] / np.linalg.norm(plane[:3])) <= inlier_distance
    if on.sum() < 3:
        return None
    pts = pts[on]
    # In-plane axes: the camera's x projected onto the plane, then normal x that.
    ax = np.array([1.0, 0.0, 0.0]) - normal[0] * normal
    if np.linalg.norm(ax) < 1e-6:
        ax = np.array([0.0, 1.0, 0.0]) - normal[1] * normal
    ax /= np.linalg.norm(ax)
    ay = np.cross(normal, ax)
    R = np.stack([ax, ay, normal], axis=1)
    local = pts @ R
    lo, hi = np.percentile(local[:, :2], 1, axis=0), np.percentile(local[:, :2], 99, axis=0)
    level = -plane[3] / np.linalg.norm(plane[:3])
    centre = R @ np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, level - thickness / 2])
    return TablePatch(centre, matrix_to_wxyz(R[None])[0],
                      np.array([hi[0] - lo[0], hi[1] - lo[1], thickness]))
