"""Grasp refinement: contacts, collision/emptiness, table and cone checks, NMS, bad input."""
from dataclasses import replace
import math

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
import torch

from zerograsp_ros.errors import InputError
from zerograsp_ros.grasp.gripper import GRIPPER_PRESETS, GripperModel, gripper_preset
from zerograsp_ros.grasp.refinement import (
    REJECTION_REASONS,
    RefinementConfig,
    check_collisions,
    contact_quality,
    contact_refinement,
    grasp_nms,
    paper_refinement_config,
    refine_grasps,
    seen_free_points,
    voxel_downsample,
)
from zerograsp_ros.grasp.representation import (
    GraspSet,
    quality_from_mu,
    rotation_from_approach,
)

GRIPPER = gripper_preset('robotiq_2f85')
TABLE = np.array([0.0, 0.0, 1.0, 0.0])  # world frame, z up, table at z = 0
DOWN = np.array([[0.0, 0.0, -1.0]])


def make_grasps(rotations, translations, widths, depths, scores=None, object_ids=None):
    n = len(translations)
    scores = np.linspace(1.0, 0.5, n) if scores is None else scores
    object_ids = np.zeros(n) if object_ids is None else object_ids
    return GraspSet(rotations, translations, widths, depths, scores, scores, np.ones(n),
                    object_ids)


def box_surface(half, centre=(0.0, 0.0, 0.0), step=0.002):
    """Points on the surface of an axis-aligned box (a reconstruction stand-in)."""
    axes = [np.arange(-h, h + 1e-9, step) for h in half]
    grid = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 3)
    on_face = np.zeros(len(grid), bool)
    for k, h in enumerate(half):
        on_face |= np.abs(np.abs(grid[:, k]) - h) < step / 2
    return (grid[on_face] + np.asarray(centre)).astype(np.float32)


def table_points(half=0.2, step=0.005):
    xy = np.stack(np.meshgrid(*[np.arange(-half, half, step)] * 2, indexing='ij'), -1)
    xy = xy.reshape(-1, 2)
    return np.c_[xy, np.zeros(len(xy))].astype(np.float32)


def top_down(width, depth, tcp, angle=0.0):
    """A top-down grasp; angle 0 closes along world y (rotation_from_approach convention)."""
    return make_grasps(rotation_from_approach(DOWN, angle), [tcp], [width], [depth])


# A 4 cm (x) by 6 cm (y) by 8 cm tall box standing on the table.
BOX = box_surface((0.02, 0.03, 0.04), centre=(0.0, 0.0, 0.04))
CLOSE_ALONG_X = math.pi / 2   # closing axis along world x -> grasps across the 4 cm side


# ----------------------------------------------------------------------------- gripper

def test_presets_and_unknown_name():
    assert gripper_preset('robotiq_2f85').max_stroke == pytest.approx(0.085)
    assert gripper_preset('franka_hand').tcp_offset == pytest.approx(0.1034)
    with pytest.raises(InputError, match='franka_hand.*robotiq_2f85'):
        gripper_preset('robotiq_3f')
    with pytest.raises(InputError, match='finger_length'):
        GripperModel('bad', -0.01, 0.02, 0.01, 0.01, 0.08, 0.05, 0.1)
    assert set(GRIPPER_PRESETS) >= {'robotiq_2f85', 'franka_hand'}


def test_sim_urdf_collision_boxes_are_the_2f85_model():
    """The simulated cell moves the body refinement and the label judge check."""
    from pathlib import Path
    import xml.etree.ElementTree as ET

    root = ET.parse(Path(__file__).resolve().parents[1] / 'urdf'
                    / 'robotiq_2f85_sim.urdf').getroot()
    g = GRIPPER

    def collision_box(link_name):
        link = root.find(f"link[@name='{link_name}']")
        box = link.find('collision/geometry/box')
        origin = link.find('collision/origin')
        return ([float(v) for v in box.get('size').split()],
                [float(v) for v in origin.get('xyz').split()])

    size, xyz = collision_box('gripper_base')
    assert size == pytest.approx([g.housing_length, g.housing_width, g.housing_height])
    assert xyz == pytest.approx([g.housing_length / 2, 0.0, 0.0])  # from the flange on
    for link, side in (('left_finger', 1.0), ('right_finger', -1.0)):
        size, xyz = collision_box(link)
        assert size == pytest.approx([g.finger_length, g.finger_thickness, g.finger_width])
        # the inner face (pad) at the joint position, the finger past the housing + palm
        assert xyz == pytest.approx([g.housing_length + g.palm_depth + g.finger_length / 2,
                                     side * g.finger_thickness / 2, 0.0])
        joint = root.find(f"joint[@name='{link}_joint']")
        assert float(joint.find('limit').get('upper')) == pytest.approx(g.max_stroke / 2)
    tcp = root.find("joint[@name='tcp_joint']/origin").get('xyz').split()
    assert [float(v) for v in tcp] == pytest.approx([g.tcp_offset, 0.0, 0.0])
    assert g.tcp_offset == pytest.approx(g.housing_length + g.palm_depth + g.finger_length)


def test_swept_approach_is_the_pick_pre_grasp_distance():
    from pathlib import Path

    import yaml

    from zerograsp_ros.execution.pick import PickConfig
    from zerograsp_ros.grasp.gripper import PICK_APPROACH_DISTANCE

    shipped_yaml = Path(__file__).resolve().parents[1] / 'config' / 'execution.yaml'
    params = yaml.safe_load(shipped_yaml.read_text())
    shipped = params['execution_node']['ros__parameters']['pre_grasp_distance']
    assert GRIPPER.approach_distance == PICK_APPROACH_DISTANCE == shipped \
        == PickConfig().pre_grasp_distance


# ----------------------------------------------------------------------------- contacts

@pytest.mark.parametrize('width', [0.045, 0.06, 0.08])
def test_refined_width_is_box_plus_twice_clamped_margin(width):
    cfg = RefinementConfig()
    grasp = top_down(width, 0.03, (0.0, 0.0, 0.08), CLOSE_ALONG_X)
    assert abs(grasp.rotations[0, :, 1] @ [1, 0, 0]) == pytest.approx(1.0)
    res = refine_grasps(grasp, BOX, scene_points=table_points(), table_plane=TABLE,
                        config=cfg)
    margin = (width - 0.04) / 2
    expected = 0.04 + 2 * min(max(margin, cfg.gamma_min), cfg.gamma_max)
    assert len(res.grasps) == 1, res.rejection_counts
    assert res.grasps.widths[0] == pytest.approx(expected, abs=2e-4)
    # the clamp really acts at both ends for these widths
    if width == 0.045:
        assert res.grasps.widths[0] > width
    if width == 0.08:
        assert res.grasps.widths[0] == pytest.approx(width, abs=2e-4)


def test_clamp_narrows_a_too_wide_grasp_and_widens_a_tight_one():
    wide = top_down(0.084, 0.03, (0.0, 0.0, 0.08), CLOSE_ALONG_X)
    widths, _, found = contact_refinement(wide, BOX)
    assert found[0] and widths[0] == pytest.approx(0.04 + 2 * 0.02, abs=2e-4)
    tight = top_down(0.042, 0.03, (0.0, 0.0, 0.08), CLOSE_ALONG_X)
    widths, _, _ = contact_refinement(tight, BOX, config=RefinementConfig(gamma_min=0.008))
    assert widths[0] == pytest.approx(0.04 + 2 * 0.008, abs=2e-4)


def test_depth_moves_to_the_deepest_contact():
    plate = box_surface((0.02, 0.03, 0.01), centre=(0.0, 0.0, 0.05))  # z in [0.04, 0.06]
    grasp = top_down(0.06, 0.04, (0.0, 0.0, 0.06), CLOSE_ALONG_X)    # tips reach z = 0.02
    _, depths, found = contact_refinement(grasp, plate)
    assert found[0]
    assert depths[0] == pytest.approx(0.02, abs=1e-3)  # tips stop at the plate's bottom
    # a grasp ending inside the object moves to the deepest sampled contact it reaches
    # (the plate's side faces are sampled every 2 mm: z = 0.046 -> depth 0.014)
    _, depths, _ = contact_refinement(top_down(0.06, 0.015, (0.0, 0.0, 0.06), CLOSE_ALONG_X),
                                      plate)
    assert depths[0] == pytest.approx(0.014, abs=1e-4)


def test_off_centre_object_keeps_gamma_min_on_the_tight_side():
    grasp = top_down(0.07, 0.03, (0.012, 0.0, 0.08), CLOSE_ALONG_X)  # box 0.012 off-centre
    widths, _, _ = contact_refinement(grasp, BOX)
    # gaps 0.035 - 0.032 = 0.003 and 0.027 -> widened by 2 * (0.005 - 0.003)
    assert widths[0] == pytest.approx(0.07 + 2 * (0.005 - 0.003), abs=2e-4)


# ----------------------------------------------------------------------------- contact quality

def two_faces(normal_right=(1.0, 0.0, 0.0), half_gap=0.02, half_side=0.03, step=0.002):
    """Two square faces around x = +-half_gap (z in [0.05, 0.11]) with outward normals.

    The left face (x < 0) has normal -x; the right face is turned about z so its
    normal is `normal_right` (a wedge when that is not +x).
    """
    u = np.arange(-half_side, half_side + 1e-9, step)
    a, b = np.meshgrid(u, u, indexing='ij')
    a, b = a.ravel(), b.ravel()
    left = np.c_[np.full_like(a, -half_gap), a, b + 0.08]
    n_r = np.asarray(normal_right, float) / np.linalg.norm(normal_right)
    tangent = np.cross([0.0, 0.0, 1.0], n_r)     # in-face horizontal direction
    right = np.array([half_gap, 0.0, 0.08]) + a[:, None] * tangent + b[:, None] * [0, 0, 1]
    points = np.concatenate([left, right]).astype(np.float32)
    normals = np.concatenate([np.tile([-1.0, 0.0, 0.0], (len(a), 1)),
                              np.tile(n_r, (len(a), 1))]).astype(np.float32)
    return points, normals


@pytest.mark.parametrize('tilt_deg', [0.0, 20.0, 40.0])
def test_contact_quality_of_a_tilted_closing_line_is_tan_of_the_tilt(tilt_deg):
    points, normals = two_faces()
    # closing axis along x, turned by the tilt about the (vertical) approach axis
    grasp = top_down(0.075, 0.02, (0.0, 0.0, 0.09), CLOSE_ALONG_X + math.radians(tilt_deg))
    cosine, mu = contact_quality(grasp, points, normals)
    assert cosine[0] == pytest.approx(math.cos(math.radians(tilt_deg)), abs=1e-3)
    assert mu[0] == pytest.approx(math.tan(math.radians(tilt_deg)), abs=2e-3)


@pytest.mark.parametrize('wedge_deg', [15.0, 35.0, 60.0])
def test_contact_quality_of_a_wedge_is_set_by_the_worse_face(wedge_deg):
    w = math.radians(wedge_deg)
    points, normals = two_faces(normal_right=(math.cos(w), math.sin(w), 0.0))
    grasp = top_down(0.075, 0.02, (0.0, 0.0, 0.09), CLOSE_ALONG_X)
    cosine, mu = contact_quality(grasp, points, normals)
    assert cosine[0] == pytest.approx(math.cos(w), abs=1e-3)
    assert mu[0] == pytest.approx(math.tan(w), rel=1e-2)


def test_contact_quality_without_a_facing_contact_is_zero():
    points, normals = two_faces()
    # normals flipped inwards: no patch point faces its finger
    cosine, mu = contact_quality(top_down(0.075, 0.02, (0.0, 0.0, 0.09), CLOSE_ALONG_X),
                                 points, -normals)
    assert cosine[0] == -1.0 and np.isinf(mu[0]) and quality_from_mu(mu)[0] == 0.0
    # only one face between the fingers: no antipodal pair
    one = points[:, 0] < 0
    _, mu = contact_quality(top_down(0.075, 0.02, (0.0, 0.0, 0.09), CLOSE_ALONG_X),
                            points[one], normals[one])
    assert np.isinf(mu[0])


def test_contact_quality_reranks_grasps_and_is_skipped_without_normals():
    points, normals = two_faces()
    tilts = [50.0, 0.0]   # the predicted-best grasp is the badly tilted one
    grasps = GraspSet.concatenate([top_down(0.075, 0.02, (0.0, 0.0, 0.09),
                                            CLOSE_ALONG_X + math.radians(t)) for t in tilts])
    grasps.scores[:] = grasps.qualities[:] = [0.9, 0.3]
    grasps.graspness[:] = [0.5, 0.5]
    cfg = RefinementConfig(nms_distance=0.0)
    kept = refine_grasps(grasps, points, config=cfg)
    assert kept.source_indices.tolist() == [0, 1]          # no normals: predicted order
    rescored = refine_grasps(grasps, points, config=cfg, object_normals=normals)
    assert rescored.source_indices.tolist() == [1, 0]
    expected_q = quality_from_mu(np.tan(np.radians([0.0, 50.0])))
    assert rescored.grasps.qualities == pytest.approx(expected_q, abs=2e-3)
    assert rescored.grasps.scores == pytest.approx(0.5 * expected_q, abs=1e-3)
    off = refine_grasps(grasps, points, object_normals=normals,
                        config=RefinementConfig(nms_distance=0.0, use_contact_quality=False))
    assert off.source_indices.tolist() == [0, 1]


def test_contact_quality_rejects_bad_normals():
    points, normals = two_faces()
    grasp = top_down(0.075, 0.02, (0.0, 0.0, 0.09), CLOSE_ALONG_X)
    with pytest.raises(InputError, match='one normal per point'):
        contact_quality(grasp, points, normals[:-1])
    with pytest.raises(InputError, match='unit vectors'):
        refine_grasps(grasp, points, object_normals=np.zeros_like(normals))
    bad = normals.copy()
    bad[3] = np.nan
    with pytest.raises(InputError, match='non-finite'):
        contact_quality(grasp, points, bad)


# ----------------------------------------------------------------------------- depth search

def test_depth_search_goes_as_deep_as_the_gripper_clears():
    cfg = RefinementConfig(nms_distance=0.0, use_contact_quality=False)
    # a tall box: the fingers slide down its 4 cm sides to the deepest depth tried
    tall = top_down(0.06, 0.01, (0.0, 0.0, 0.08), CLOSE_ALONG_X)
    res = refine_grasps(tall, BOX, scene_points=table_points(), table_plane=TABLE, config=cfg)
    assert res.grasps.depths[0] == pytest.approx(cfg.depth_search_max, abs=1e-5)
    # a 2 cm plate: the fingertips stop within one step above the table (z = 0.02 - depth)
    plate = box_surface((0.02, 0.03, 0.01), centre=(0.0, 0.0, 0.01))
    low = top_down(0.06, 0.005, (0.0, 0.0, 0.02), CLOSE_ALONG_X)
    res = refine_grasps(low, plate, scene_points=table_points(), table_plane=TABLE, config=cfg)
    assert 0.02 - cfg.depth_search_step < res.grasps.depths[0] <= 0.02 + 1e-6
    off = refine_grasps(low, plate, scene_points=table_points(), table_plane=TABLE,
                        config=RefinementConfig(nms_distance=0.0, use_depth_search=False))
    assert off.grasps.depths[0] == pytest.approx(contact_refinement(low, plate)[1][0])


def test_depth_search_stops_at_a_neighbour_in_the_finger_path():
    cfg = RefinementConfig(nms_distance=0.0, use_contact_quality=False)
    # a flat neighbour 1 cm under the right fingertip's starting height blocks the descent
    neighbour = box_surface((0.01, 0.03, 0.005), centre=(0.037, 0.0, 0.055))
    grasp = top_down(0.06, 0.01, (0.0, 0.0, 0.08), CLOSE_ALONG_X)
    res = refine_grasps(grasp, np.concatenate([BOX, neighbour]), table_plane=TABLE, config=cfg)
    assert len(res.grasps) == 1, res.rejection_counts
    # the right finger (x in [0.03, 0.042]) reaches the neighbour's top (z = 0.06) at depth
    # 0.02 (touching is not a collision) and hits it one step deeper
    assert res.grasps.depths[0] == pytest.approx(0.02, abs=1e-5)


# ----------------------------------------------------------------------------- free space

def camera_over_box():
    """Depth image of a camera looking straight down: table at 0.6 m, a 6 cm box top at 0.5 m."""
    from zerograsp_ros.geometry.camera import CameraIntrinsics, unproject
    intr = CameraIntrinsics.d435()
    depth = np.full((intr.height, intr.width), 0.6)
    rays = unproject(np.ones_like(depth), intr)          # (H*W, 3) points at z = 1
    on_box = (np.abs(rays[:, 0] * 0.5) < 0.03) & (np.abs(rays[:, 1] * 0.5) < 0.03)
    depth.reshape(-1)[on_box] = 0.5
    return depth, intr


def camera_grasp(tcp, depth=0.02, width=0.08):
    """Approach along the camera's +z (straight down onto the table), closing along x."""
    return make_grasps(rotation_from_approach(np.array([[0.0, 0.0, 1.0]]), math.pi / 2),
                       [tcp], [width], [depth])


def test_seen_free_points_are_those_the_camera_looks_through():
    depth, intr = camera_over_box()
    points = np.array([[0.0, 0.0, 0.5],      # on the box top: seen, not free
                       [0.0, 0.0, 0.45],     # 5 cm above the box top: free
                       [0.12, 0.0, 0.55],    # in the air beside the box: free
                       [0.0, 0.0, 0.56],     # inside the box: occluded
                       [0.12, 0.0, 0.595],   # 5 mm above the table: within the margin
                       [2.0, 0.0, 0.55],     # outside the image
                       [0.0, 0.0, -0.1]])    # behind the camera
    assert seen_free_points(points, depth, intr).tolist() == \
        [False, True, True, False, False, False, False]
    assert not seen_free_points(points, np.zeros_like(depth), intr).any()  # no valid depth
    with pytest.raises(InputError, match='shape'):
        seen_free_points(points, depth[:-1], intr)


def test_free_space_carving_empties_grasps_on_hallucinated_shape():
    depth, intr = camera_over_box()
    box = box_surface((0.03, 0.03, 0.05), centre=(0.0, 0.0, 0.55))
    # the reconstruction wrongly puts an object where the camera sees the table
    ghost = box_surface((0.02, 0.02, 0.03), centre=(0.12, 0.0, 0.57))
    grasps = GraspSet.concatenate([camera_grasp((0.0, 0.0, 0.5)),
                                   camera_grasp((0.12, 0.0, 0.54))])
    cfg = RefinementConfig(nms_distance=0.0)
    res = refine_grasps(grasps, np.concatenate([box, ghost]), config=cfg,
                        camera_depth=(depth, intr))
    assert res.source_indices.tolist() == [0], res.rejection_counts
    assert res.rejection_counts['empty'] == 1
    off = refine_grasps(grasps, np.concatenate([box, ghost]), camera_depth=(depth, intr),
                        config=RefinementConfig(nms_distance=0.0, use_free_space_check=False))
    assert sorted(off.source_indices.tolist()) == [0, 1]
    # everything carved away: every grasp is empty, no error
    res = refine_grasps(grasps, ghost, config=cfg, camera_depth=(depth, intr))
    assert len(res.grasps) == 0 and res.rejection_counts['empty'] == 2


# ----------------------------------------------------------------------------- collisions

def test_finger_through_box_or_table_is_rejected():
    scene = table_points()
    ok = refine_grasps(top_down(0.07, 0.03, (0, 0, 0.08), CLOSE_ALONG_X), BOX,
                       scene_points=scene, table_plane=TABLE)
    assert len(ok.grasps) == 1
    # closing across the 6 cm side with a 5 cm opening: the fingers cut through the box
    through_box = refine_grasps(top_down(0.05, 0.03, (0, 0, 0.08)), BOX, scene_points=scene,
                                table_plane=TABLE,
                                config=RefinementConfig(use_contact_constraints=False))
    assert len(through_box.grasps) == 0 and through_box.rejection_counts['collision'] == 1
    # contact refinement cannot save it either: widening by 2 * gamma_min still cuts the box
    assert refine_grasps(top_down(0.05, 0.03, (0, 0, 0.08)), BOX, scene_points=scene,
                         table_plane=TABLE).rejection_counts['collision'] == 1
    # fingertips 1 cm into the table
    low = top_down(0.07, 0.04, (0, 0, 0.03), CLOSE_ALONG_X)
    res = refine_grasps(low, BOX, scene_points=scene, table_plane=TABLE,
                        config=RefinementConfig(use_contact_constraints=False))
    assert len(res.grasps) == 0 and res.rejection_counts['below_table'] == 1
    # without a plane the visible table points still catch it
    res = refine_grasps(low, BOX, scene_points=scene,
                        config=RefinementConfig(use_contact_constraints=False))
    assert res.rejection_counts['collision'] == 1
    masks = check_collisions(low, np.r_[BOX, scene], GRIPPER, RefinementConfig(), TABLE)
    assert masks['collision'][0]


def test_housing_hitting_a_neighbour_is_rejected_where_the_pads_fit():
    # a 4 x 2 cm target with a taller neighbour 1 cm beside it (across the closing
    # plane): the 22 mm pads pass, the 65 mm deep housing does not
    target = box_surface((0.02, 0.01, 0.04), centre=(0.0, 0.0, 0.04))
    neighbour = box_surface((0.02, 0.015, 0.07), centre=(0.0, 0.035, 0.07))
    grasp = top_down(0.06, 0.02, (0.0, 0.0, 0.08), CLOSE_ALONG_X)
    cfg = paper_refinement_config(use_contact_constraints=False)
    thin = replace(GRIPPER, housing_length=0.0, housing_width=0.0, housing_height=0.0)
    obstacles = np.r_[target, neighbour]
    assert not check_collisions(grasp, obstacles, thin, cfg, TABLE)['collision'][0]
    masks = check_collisions(grasp, obstacles, GRIPPER, cfg, TABLE)
    assert masks['collision'][0] and not masks['empty'][0]
    res = refine_grasps(grasp, target, scene_points=neighbour, table_plane=TABLE, config=cfg)
    assert res.rejection_counts['collision'] == 1 and len(res.grasps) == 0
    # the same scene without the neighbour keeps the grasp
    assert len(refine_grasps(grasp, target, table_plane=TABLE, config=cfg).grasps) == 1


def test_tilted_grasp_with_a_blocked_approach_path_is_rejected():
    # 45 deg from straight down; a post stands where the housing passes on the way in from
    # the pre-grasp pose, but clear of the gripper at the grasp pose itself
    approach = np.array([[1.0, 0.0, -1.0]]) / math.sqrt(2.0)
    R = rotation_from_approach(approach, 0.0)
    assert abs(R[0][:, 1] @ [0.0, 1.0, 0.0]) > 0.99     # closing across the box's 6 cm
    t = np.array([0.0, 0.0, 0.08])
    grasp = make_grasps(R, [t], [0.08], [0.02])
    post_xy = (t - 0.19 * approach[0])[:2]
    post = box_surface((0.015, 0.015, 0.12), centre=(post_xy[0], post_xy[1], 0.12))
    cfg = paper_refinement_config(use_contact_constraints=False)
    no_sweep = replace(GRIPPER, approach_distance=0.0)
    assert not check_collisions(grasp, np.r_[BOX, post], no_sweep, cfg, TABLE)['collision'][0]
    assert check_collisions(grasp, np.r_[BOX, post], GRIPPER, cfg, TABLE)['collision'][0]
    for config in (cfg, RefinementConfig()):
        res = refine_grasps(grasp, BOX, scene_points=post, table_plane=TABLE, config=config)
        assert res.rejection_counts['collision'] == 1
        assert len(refine_grasps(grasp, BOX, table_plane=TABLE, config=config).grasps) == 1


def test_swept_housing_below_the_table_is_a_collision():
    # a nearly horizontal grasp low on the box: pads above the table, housing corners not
    # (fingers' lowest corner 8 mm above the table, the 65 mm housing's 8 mm below it)
    approach = np.array([[1.0, 0.0, -0.1]])
    grasp = make_grasps(rotation_from_approach(approach, 0.0), [(-0.02, 0.0, 0.02)],
                        [0.07], [0.01])
    cfg = paper_refinement_config(use_contact_constraints=False)
    thin = replace(GRIPPER, housing_length=0.0, housing_width=0.0, housing_height=0.0)
    assert not check_collisions(grasp, np.zeros((0, 3)), thin, cfg, TABLE)['collision'][0]
    assert check_collisions(grasp, np.zeros((0, 3)), GRIPPER, cfg, TABLE)['collision'][0]


@pytest.mark.parametrize('seed', [0, 1])
def test_label_judge_and_refinement_check_the_same_body(seed):
    from zerograsp_ros.data.labels import SceneGeometry, judge_grasps

    grasps, points = random_scene(seed)
    grasps.widths = np.minimum(grasps.widths, GRIPPER.max_stroke).astype(np.float32)
    geometry = SceneGeometry(np.array([1]), [points.astype(np.float64)],
                             [np.tile([0.0, 0.0, 1.0], (len(points), 1))],
                             points.astype(np.float64), table_z=-1.0)
    judged = judge_grasps(grasps.rotations, grasps.translations, grasps.depths, geometry,
                          GRIPPER, widths=grasps.widths)
    ours = check_collisions(grasps, points, GRIPPER, RefinementConfig(collision_voxel=0.0))
    assert 0 < judged.collision.sum() < len(grasps)
    np.testing.assert_array_equal(judged.collision, ours['collision'])


def test_nothing_between_fingers_is_empty():
    far = top_down(0.07, 0.03, (0.15, 0.15, 0.08), CLOSE_ALONG_X)
    res = refine_grasps(far, BOX, scene_points=table_points(), table_plane=TABLE)
    assert len(res.grasps) == 0 and res.rejection_counts['empty'] == 1
    masks = check_collisions(far, BOX, GRIPPER, RefinementConfig())
    assert masks['empty'][0] and not masks['collision'][0] and masks['inner_points'][0] == 0


def test_stroke_cone_workspace_and_upward_approach():
    box_small = box_surface((0.045, 0.01, 0.02), centre=(0, 0, 0.02))  # 9 cm wide
    res = refine_grasps(top_down(0.1, 0.02, (0, 0, 0.04), CLOSE_ALONG_X), box_small,
                        table_plane=TABLE,
                        config=RefinementConfig(use_collision_check=False))
    assert res.rejection_counts['stroke'] == 1
    tilted = make_grasps(rotation_from_approach(np.array([[1.0, 0.0, -0.2]])),
                         [(0.0, 0.0, 0.08)], [0.07], [0.02])
    cfg = RefinementConfig(use_collision_check=False)
    assert refine_grasps(tilted, BOX, table_plane=TABLE,
                         config=cfg).rejection_counts['approach_cone'] == 1
    cfg = RefinementConfig(use_collision_check=False, approach_cone_deg=180.0)
    assert len(refine_grasps(tilted, BOX, table_plane=TABLE, config=cfg).grasps) == 1
    upward = make_grasps(rotation_from_approach(np.array([[0.0, 0.0, 1.0]])),
                         [(0.0, 0.0, 0.08)], [0.07], [0.02])
    assert refine_grasps(upward, BOX, table_plane=TABLE,
                         config=cfg).rejection_counts['below_table'] == 1
    cfg = RefinementConfig(workspace_min=(-0.1, -0.1, 0.0), workspace_max=(0.1, 0.1, 0.05))
    res = refine_grasps(top_down(0.07, 0.03, (0, 0, 0.08), CLOSE_ALONG_X), BOX, config=cfg)
    assert res.rejection_counts['workspace'] == 1


# ----------------------------------------------------------------------------- reference

def reference_check(grasps, points, gripper, cfg):
    """Plain per-grasp loops in float64: the definitions of the module notes."""
    g = gripper
    collision, empty = [], []
    for i in range(len(grasps)):
        R = grasps.rotations[i].astype(np.float64)
        q = (points.astype(np.float64) - grasps.translations[i]) @ R
        w, d = float(grasps.widths[i]), float(grasps.depths[i])
        body = inner = 0
        root = d - g.finger_length
        for x, y, z in q:
            in_housing = (g.housing_length > 0 and abs(z) <= g.housing_height / 2
                          and abs(y) <= g.housing_width / 2
                          and root - g.palm_depth - g.housing_length - g.approach_distance
                          <= x <= root - g.palm_depth)
            in_thin = (abs(z) <= g.finger_width / 2 and abs(y) <= w / 2 + g.finger_thickness
                       and root - g.palm_depth - g.approach_clearance - g.approach_distance
                       <= x <= d)
            if in_thin and abs(y) < w / 2 and x >= root:
                inner += 1
            elif in_thin or in_housing:
                body += 1
        collision.append(body > cfg.collision_tolerance_points)
        empty.append(inner < cfg.empty_min_points)
    return np.array(collision), np.array(empty)


def reference_contacts(grasps, points, gripper, cfg):
    g = gripper
    widths, depths = [], []
    for i in range(len(grasps)):
        q = (points.astype(np.float64) - grasps.translations[i]) @ grasps.rotations[i]
        w, d = float(grasps.widths[i]), float(grasps.depths[i])
        sides = []
        for sign in (1.0, -1.0):
            best, deepest = math.inf, -math.inf
            inside = [(x, w / 2 + sign * y) for x, y, z in q
                      if abs(z) <= g.finger_width / 2 and abs(y) < w / 2
                      and d - g.finger_length <= x <= d]
            for _, gap in inside:
                best = min(best, gap)
            for x, gap in inside:
                if gap <= best + cfg.contact_tolerance:
                    deepest = max(deepest, x)
            sides.append((best, deepest))
        if math.isinf(sides[0][0]):
            widths.append(w)
            depths.append(d)
            continue
        dw = min(sides[0][0], sides[1][0])
        widths.append(w + 2 * (min(max(dw, cfg.gamma_min), cfg.gamma_max) - dw))
        depths.append(min(max(max(sides[0][1], sides[1][1]), 0.0), d))
    return np.array(widths), np.array(depths)


def random_scene(seed, num_grasps=150, num_points=1500):
    """A few box-shaped objects (random surface samples) and grasps near them."""
    rng = np.random.default_rng(seed)
    parts = []
    for centre in rng.uniform((-0.15, -0.15, 0.03), (0.15, 0.15, 0.06), (5, 3)):
        half = rng.uniform(0.01, 0.04, 3)
        p = rng.uniform(-1.0, 1.0, (num_points // 5, 3))
        face = rng.integers(0, 3, len(p))
        p[np.arange(len(p)), face] = np.sign(p[np.arange(len(p)), face])
        parts.append(p * half + centre)
    points = np.concatenate(parts)
    approach = rng.normal(size=(num_grasps, 3))
    rotations = rotation_from_approach(approach, rng.uniform(0, np.pi, num_grasps))
    grasps = make_grasps(rotations, points[rng.integers(0, len(points), num_grasps)]
                         + rng.normal(0, 0.01, (num_grasps, 3)),
                         rng.uniform(0.01, 0.09, num_grasps), rng.uniform(0.0, 0.05, num_grasps),
                         rng.uniform(size=num_grasps))
    return grasps, points.astype(np.float32)


@pytest.mark.parametrize('seed', [0, 1])
def test_vectorised_checks_match_per_grasp_reference(seed):
    grasps, points = random_scene(seed)
    for gripper, cfg in ((GRIPPER, RefinementConfig(collision_voxel=0.0)),
                         (gripper_preset('graspnet'),
                          RefinementConfig(collision_voxel=0.0, collision_tolerance_points=3,
                                           empty_min_points=10, chunk_size=997))):
        masks = check_collisions(grasps, points, gripper, cfg)
        collision, empty = reference_check(grasps, points, gripper, cfg)
        # the scenes exercise both outcomes of both decisions
        assert 0 < collision.sum() < len(grasps) and 0 < empty.sum() < len(grasps)
        np.testing.assert_array_equal(masks['collision'], collision)
        np.testing.assert_array_equal(masks['empty'], empty)
    cfg = RefinementConfig()
    widths, depths, found = contact_refinement(grasps, points, GRIPPER, cfg)
    ref_w, ref_d = reference_contacts(grasps, points, GRIPPER, cfg)
    assert found.mean() > 0.5
    np.testing.assert_allclose(widths, ref_w, atol=1e-5)
    np.testing.assert_allclose(depths, ref_d, atol=1e-5)


def test_chunking_does_not_change_decisions():
    grasps, points = random_scene(3, num_grasps=200, num_points=3000)
    big = check_collisions(grasps, points, GRIPPER, RefinementConfig())
    small = check_collisions(grasps, points, GRIPPER, RefinementConfig(chunk_size=1))
    for key in ('collision', 'empty', 'body_points', 'inner_points'):
        np.testing.assert_array_equal(big[key], small[key])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device on this machine')
def test_cuda_matches_cpu():
    grasps, points = random_scene(4, num_grasps=500, num_points=5000)
    cpu = refine_grasps(grasps, points, device='cpu')
    gpu = refine_grasps(grasps, points, device='cuda')
    assert cpu.rejection_counts == gpu.rejection_counts
    np.testing.assert_allclose(cpu.grasps.widths, gpu.grasps.widths, atol=1e-5)


def test_voxel_downsample_keeps_one_centroid_per_voxel():
    pts = np.array([[0.001, 0.001, 0.001], [0.003, 0.003, 0.003], [0.011, 0.0, 0.0]])
    out = voxel_downsample(pts, 0.005)
    assert len(out) == 2
    assert any(np.allclose(p, [0.002, 0.002, 0.002]) for p in out)


# ----------------------------------------------------------------------------- NMS, top-k

def test_nms_keeps_best_of_each_cluster_and_nothing_else():
    rng = np.random.default_rng(7)
    centres = np.array([[0.0, 0.0, 0.5], [0.2, 0.0, 0.5], [0.0, 0.2, 0.5]])
    base = rotation_from_approach(rng.normal(size=(3, 3)))
    rotations, translations, scores, cluster = [], [], [], []
    for k in range(3):
        for _ in range(6):
            small = rotation_from_approach(np.array([[1.0, 0.0, 0.0]]) + rng.normal(0, 0.05, 3),
                                           rng.normal(0, 0.05))[0]
            rotations.append(base[k] @ small)  # a few degrees away from the cluster's frame
            translations.append(centres[k] + rng.normal(0, 0.003, 3))
            scores.append(rng.uniform())
            cluster.append(k)
    # a grasp at cluster 0's place but rotated far away is not a duplicate
    rotations.append(base[0] @ rotation_from_approach(np.array([[0.0, 1.0, 1.0]]))[0])
    translations.append(centres[0])
    scores.append(0.01)
    cluster.append(3)
    grasps = make_grasps(np.array(rotations), np.array(translations), np.full(19, 0.05),
                         np.full(19, 0.02), np.array(scores), np.array(cluster))
    kept = grasp_nms(grasps, 0.03, 30.0)
    scores, cluster = np.array(scores), np.array(cluster)
    expected = [int(np.flatnonzero(cluster == k)[np.argmax(scores[cluster == k])])
                for k in range(4)]
    assert sorted(kept.tolist()) == sorted(expected)
    assert np.all(np.diff(grasps.scores[kept]) <= 0)  # best first
    assert set(grasps.object_ids[kept]) == {0, 1, 2, 3}


def test_nms_symmetric_flip_is_a_duplicate():
    R = rotation_from_approach(DOWN, 0.3)[0]
    flipped = R @ np.diag([1.0, -1.0, -1.0])
    grasps = make_grasps(np.array([R, flipped]), [(0, 0, 0), (0.001, 0, 0)], [0.05, 0.05],
                         [0.02, 0.02], np.array([0.4, 0.9]))
    assert grasp_nms(grasps).tolist() == [1]
    assert grasp_nms(grasps, symmetric=False).tolist() == [1, 0]


def test_refine_counts_every_grasp_once_and_keeps_object_ids():
    grasps, points = random_scene(5, num_grasps=400, num_points=3000)
    grasps.object_ids[:] = np.arange(400) % 4
    res = refine_grasps(grasps, points, max_grasps=5,
                        config=RefinementConfig(collision_tolerance_points=40))
    assert set(res.rejection_counts) == set(REJECTION_REASONS)
    assert sum(res.rejection_counts.values()) + len(res.grasps) == len(grasps)
    assert len(res.grasps) == 5 and res.rejection_counts['top_k'] > 0
    assert np.all(np.diff(res.grasps.scores) <= 0)
    np.testing.assert_array_equal(res.grasps.object_ids, grasps.object_ids[res.source_indices])
    np.testing.assert_allclose(res.grasps.translations,
                               grasps.translations[res.source_indices])


def test_object_ids_assigned_from_nearest_points():
    grasp = top_down(0.07, 0.03, (0, 0, 0.08), CLOSE_ALONG_X)
    grasp.object_ids[:] = -1
    other = BOX + np.float32([0.3, 0.0, 0.0])
    ids = np.r_[np.full(len(BOX), 7), np.full(len(other), 8)]
    res = refine_grasps(grasp, np.r_[BOX, other], object_point_ids=ids)
    assert res.grasps.object_ids.tolist() == [7]


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_raise_clear_errors():
    grasp = top_down(0.07, 0.03, (0, 0, 0.08), CLOSE_ALONG_X)
    with pytest.raises(InputError, match='object_points is empty'):
        refine_grasps(grasp, np.zeros((0, 3)))
    with pytest.raises(InputError, match=r'shape \(N, 3\)'):
        refine_grasps(grasp, np.zeros((10, 2)))
    nan_points = BOX.copy()
    nan_points[3] = np.nan
    with pytest.raises(InputError, match='1 non-finite'):
        refine_grasps(grasp, nan_points)
    with pytest.raises(InputError, match='scene_points'):
        refine_grasps(grasp, BOX, scene_points=np.full((4, 3), np.inf))
    with pytest.raises(InputError, match='table_plane'):
        refine_grasps(grasp, BOX, table_plane=[0, 0, 1])
    with pytest.raises(InputError, match='zero normal'):
        refine_grasps(grasp, BOX, table_plane=[0, 0, 0, 1])
    with pytest.raises(InputError, match='max_grasps'):
        refine_grasps(grasp, BOX, max_grasps=0)
    with pytest.raises(InputError, match='gamma_min'):
        refine_grasps(grasp, BOX, config=RefinementConfig(gamma_min=0.03))
    with pytest.raises(InputError, match='GraspSet'):
        refine_grasps(np.zeros((1, 17)), BOX)
    with pytest.raises(InputError, match='object_point_ids'):
        refine_grasps(grasp, BOX, object_point_ids=np.zeros(3))
    with pytest.raises(InputError, match='CUDA|device'):
        refine_grasps(grasp, BOX, device='cuda:99' if torch.cuda.is_available() else 'cuda')


def test_invalid_grasps_are_rejected_explicitly():
    good = top_down(0.07, 0.03, (0, 0, 0.08), CLOSE_ALONG_X)
    nan_pose = top_down(0.07, 0.03, (np.nan, 0, 0.08), CLOSE_ALONG_X)
    skewed = top_down(0.07, 0.03, (0, 0, 0.08), CLOSE_ALONG_X)
    skewed.rotations[0, :, 1] *= 1.5  # not orthonormal
    mirrored = top_down(0.07, 0.03, (0, 0, 0.08), CLOSE_ALONG_X)
    mirrored.rotations[0, :, 2] *= -1  # det -1
    negative = top_down(-0.02, 0.03, (0, 0, 0.08), CLOSE_ALONG_X)
    too_deep = top_down(0.07, 0.2, (0, 0, 0.08), CLOSE_ALONG_X)
    grasps = GraspSet.concatenate([good, nan_pose, skewed, mirrored, negative, too_deep])
    res = refine_grasps(grasps, BOX, scene_points=table_points(), table_plane=TABLE)
    assert res.rejection_counts['invalid'] == 5 and len(res.grasps) == 1
    assert res.source_indices.tolist() == [0]
    assert np.isfinite(res.grasps.widths).all()
    with pytest.raises(InputError, match='5 of 6 grasps are invalid'):
        check_collisions(grasps, BOX, GRIPPER, RefinementConfig())


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), corrupt=st.lists(
    st.sampled_from(['nan_rotation', 'inf_translation', 'negative_width', 'zero_width',
                     'nan_depth', 'huge_depth', 'skew', 'nan_score']), max_size=6))
def test_corrupted_grasps_never_crash_and_are_all_accounted_for(seed, corrupt):
    grasps, points = random_scene(seed % 1000, num_grasps=40, num_points=500)
    rng = np.random.default_rng(seed)
    for kind in corrupt:
        i = int(rng.integers(0, len(grasps)))
        if kind == 'nan_rotation':
            grasps.rotations[i, 0, 0] = np.nan
        elif kind == 'inf_translation':
            grasps.translations[i, 2] = np.inf
        elif kind == 'negative_width':
            grasps.widths[i] = -0.01
        elif kind == 'zero_width':
            grasps.widths[i] = 0.0
        elif kind == 'nan_depth':
            grasps.depths[i] = np.nan
        elif kind == 'huge_depth':
            grasps.depths[i] = 5.0
        elif kind == 'skew':
            grasps.rotations[i] *= 2.0
        else:
            grasps.scores[i] = np.nan
    invalid = len({int(i) for i in np.flatnonzero(
        ~grasps.finite_mask() | ~(grasps.widths > 0) | ~(grasps.depths >= 0)
        | (grasps.depths > GRIPPER.finger_length)
        | (np.abs(np.linalg.det(np.nan_to_num(grasps.rotations)) - 1) > 1e-3))})
    res = refine_grasps(grasps, points, table_plane=[0, 0, 1, 0.0],
                        config=RefinementConfig(collision_tolerance_points=20))
    assert res.rejection_counts['invalid'] == invalid
    assert sum(res.rejection_counts.values()) + len(res.grasps) == len(grasps)
    for name in ('rotations', 'translations', 'widths', 'depths', 'scores'):
        assert np.isfinite(getattr(res.grasps, name)).all()
    assert np.all(res.grasps.widths > 0) and np.all(res.grasps.widths <= GRIPPER.max_stroke)


def test_empty_grasp_set_is_not_an_error():
    res = refine_grasps(GraspSet.empty(), BOX)
    assert len(res.grasps) == 0 and sum(res.rejection_counts.values()) == 0
    assert check_collisions(GraspSet.empty(), BOX)['collision'].shape == (0,)
    assert grasp_nms(GraspSet.empty()).shape == (0,)


# ----------------------------------------------------------------------------- recorded

def test_decisions_match_the_recording_of_the_unsplit_refinement():
    """Every public call decides as the refinement did before its split (#17).

    Recorded in test/fixtures/refinement_decisions.npz by test/support/refinement_decisions.py.
    """
    from pathlib import Path
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from support.refinement_decisions import FIXTURE, decisions

    recorded = np.load(FIXTURE)
    inputs = {k[3:]: recorded[k] for k in recorded.files if k.startswith('in_')}
    now = decisions(inputs)
    expected = {k[4:]: recorded[k] for k in recorded.files if k.startswith('out_')}
    assert set(now) == set(expected)
    for key, value in expected.items():
        if value.dtype.kind == 'f':
            np.testing.assert_allclose(now[key], value, rtol=0, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(now[key], value, err_msg=key)
