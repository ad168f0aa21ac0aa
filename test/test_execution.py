"""Execution tests.

Robot presets, pick pose maths, the moveit_py adapter (against a recording fake of the
moveit_py API) and the pick sequence on the real simulated cell (pybullet), in-process
and over ROS 2.
"""
from pathlib import Path
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from zerograsp_ros.errors import InputError
from zerograsp_ros.execution.backends import CollisionBox, ExecutionError
from zerograsp_ros.execution.pick import (
    PickConfig,
    PickSequence,
    PickTarget,
    ReconstructedObject,
    collision_mesh,
    grasp_waypoints,
    lift_direction,
)
from zerograsp_ros.execution.robot import (
    available_robot_presets,
    load_robot_preset,
    robot_preset_from_dict,
)
from zerograsp_ros.grasp.representation import GraspSet

sys.path.insert(0, str(Path(__file__).parent))
from support.fake_moveit import FakeMoveIt, fast_gripper, pose_matrix  # noqa: E402

CAMERA = 'camera_color_optical_frame'


def make_grasps(R, t, widths, depths, scores, object_ids) -> GraspSet:
    n = len(t)
    return GraspSet(np.asarray(R).reshape(n, 3, 3), np.asarray(t).reshape(n, 3), widths, depths,
                    scores, np.ones(n), np.ones(n), object_ids)


def top_down(x, y, z, closing=(0.0, 1.0, 0.0)) -> np.ndarray:
    a = np.array([0.0, 0.0, -1.0])
    c = np.asarray(closing, dtype=np.float64)
    return np.stack([a, c, np.cross(a, c)], axis=1), np.array([x, y, z])


def box_object(object_id, center, size=(0.04, 0.06, 0.08)) -> ReconstructedObject:
    import trimesh
    mesh = trimesh.creation.box(extents=size)
    mesh.apply_translation(center)
    return ReconstructedObject(object_id, np.asarray(mesh.vertices), np.asarray(mesh.faces))


# =========================================================================== presets

def test_presets_load_and_name_the_2f85_action():
    names = available_robot_presets()
    assert {'panda', 'fr3'} <= set(names)
    panda, fr3 = load_robot_preset('panda'), load_robot_preset('fr3')
    # The Panda is robot_type 'fer' in franka_description (links fer_link0..8).
    assert (panda.planning_group, panda.base_frame, panda.flange_link) == \
        ('fer_arm', 'fer_link0', 'fer_link8')
    assert (fr3.planning_group, fr3.base_frame, fr3.flange_link) == \
        ('fr3_arm', 'fr3_link0', 'fr3_link8')
    for preset in (panda, fr3):
        # The Jazzy Robotiq controller serves ParallelGripperCommand on ~/gripper_cmd.
        assert preset.gripper.action_type == 'ParallelGripperCommand'
        assert preset.gripper.action_name == '/robotiq_gripper_controller/gripper_cmd'
        assert preset.gripper.joint_name == 'robotiq_85_left_knuckle_joint'
        assert 0 < preset.velocity_scaling <= 0.2, 'velocity scaling must default low'
        assert preset.tcp_offset_xyz[2] == pytest.approx(0.149)
        assert preset.cell['robot_type'] == preset.base_frame.split('_')[0]
    assert fr3.cell['kinematics']['package'] == 'franka_fr3_moveit_config'


def test_width_to_knuckle_map_is_the_linear_approximation():
    g = load_robot_preset('panda').gripper
    assert g.width_to_knuckle(g.stroke) == pytest.approx(0.0)
    assert g.width_to_knuckle(0.0) == pytest.approx(0.7929)
    assert g.width_to_knuckle(g.stroke / 2) == pytest.approx(0.7929 / 2)
    assert g.width_to_knuckle(0.2) == pytest.approx(0.0)          # clipped to the stroke
    widths = np.linspace(0, g.stroke, 7)
    angles = [g.width_to_knuckle(w) for w in widths]
    assert np.all(np.diff(angles) < 0)
    assert [g.knuckle_to_width(a) for a in angles] == pytest.approx(list(widths))
    with pytest.raises(InputError, match='finite'):
        g.width_to_knuckle(float('nan'))


def test_bad_presets_fail_with_the_cause():
    with pytest.raises(InputError, match="unknown robot preset 'ur5'.*panda"):
        load_robot_preset('ur5')
    good = {'arm': {'planning_group': 'g', 'base_frame': 'b', 'flange_link': 'f',
                    'tcp_link': 't', 'workspace_min': [0, 0, 0], 'workspace_max': [1, 1, 1]}}
    assert robot_preset_from_dict(good).velocity_scaling == 0.1
    bad_action = {**good, 'gripper': {'action_type': 'FollowJointTrajectory'}}
    with pytest.raises(InputError, match='action_type'):
        robot_preset_from_dict(bad_action)
    fast = {'arm': {**good['arm'], 'velocity_scaling': 3.0}}
    with pytest.raises(InputError, match='velocity_scaling'):
        robot_preset_from_dict(fast)
    with pytest.raises(InputError, match="lacks the key 'tcp_link'"):
        robot_preset_from_dict({'arm': {k: v for k, v in good['arm'].items() if k != 'tcp_link'}})


# =========================================================================== pose maths

def test_waypoints_follow_the_grasp_convention():
    robot = load_robot_preset('panda')
    cfg = PickConfig(pre_grasp_distance=0.1, lift_height=0.12)
    R, t = top_down(0.5, 0.1, 0.05)
    poses = grasp_waypoints(R, t, 0.02, robot, cfg)
    # The fingertips reach `depth` past the grasp point; our TCP sits at the fingertips.
    np.testing.assert_allclose(poses['grasp'][:3, 3], [0.5, 0.1, 0.03], atol=1e-9)
    np.testing.assert_allclose(poses['pre_grasp'][:3, 3], [0.5, 0.1, 0.13], atol=1e-9)
    np.testing.assert_allclose(poses['lift'][:3, 3], [0.5, 0.1, 0.15], atol=1e-9)  # back = up
    for T in poses.values():
        np.testing.assert_allclose(T[:3, :3], R, atol=1e-9)
    # A side grasp lifts straight up (VGN rule), not back along its approach.
    a = np.array([1.0, 0.0, 0.0])
    side = np.stack([a, [0.0, 1.0, 0.0], np.cross(a, [0.0, 1.0, 0.0])], axis=1)
    poses = grasp_waypoints(side, [0.5, 0.0, 0.05], 0.0, robot, cfg)
    np.testing.assert_allclose(poses['lift'][:3, 3] - poses['grasp'][:3, 3], [0, 0, 0.12],
                               atol=1e-9)
    np.testing.assert_allclose(poses['pre_grasp'][:3, 3], [0.4, 0.0, 0.05], atol=1e-9)
    assert lift_direction(a, 'retreat') == pytest.approx(-a)
    # A z-forward TCP link (e.g. the Franka hand's) gets the rotation of the preset.
    import dataclasses
    zfwd = dataclasses.replace(robot, grasp_to_tcp_rpy=(0.0, np.pi / 2, 0.0))
    T = grasp_waypoints(R, t, 0.02, zfwd, cfg)['grasp']
    np.testing.assert_allclose(T[:3, 2], R[:, 0], atol=1e-9)      # TCP z = approach


def test_collision_meshes_are_moved_into_the_planning_frame():
    obj = box_object(3, [0.0, 0.0, 0.5])
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler('z', 90, degrees=True).as_matrix()
    T[:3, 3] = [0.4, 0.0, 0.1]
    mesh = collision_mesh(obj, T)
    assert mesh.name == 'object_3'
    np.testing.assert_allclose(mesh.vertices, obj.vertices @ T[:3, :3].T + T[:3, 3])
    np.testing.assert_array_equal(mesh.faces, obj.faces)
    # No mesh: the hull of the surface points; neither: a clear error.
    pts = np.random.default_rng(0).normal(size=(50, 3))
    hull = collision_mesh(ReconstructedObject(4, None, None, pts), np.eye(4))
    assert len(hull.faces) >= 4 and set(hull.faces.ravel()) <= set(range(50))
    with pytest.raises(InputError, match='object_5.*neither a mesh'):
        collision_mesh(ReconstructedObject(5, None, None, pts[:2]), np.eye(4))
    bad = box_object(6, [0, 0, 0.5])
    bad.vertices[0, 0] = np.nan
    with pytest.raises(InputError, match='NaN'):
        collision_mesh(bad, np.eye(4))


# =========================================================================== moveit_py fake

def camera_scene():
    """A camera looking down from 0.6 m above (0.5, 0, 0) of the base; two boxes on a table."""
    T_base_camera = np.eye(4)
    T_base_camera[:3, :3] = Rotation.from_euler('x', 180, degrees=True).as_matrix()
    T_base_camera[:3, 3] = [0.5, 0.0, 0.6]
    T_camera_base = np.linalg.inv(T_base_camera)
    objects_base = [box_object(1, [0.5, 0.0, 0.04]), box_object(2, [0.5, 0.2, 0.04])]
    objects = [ReconstructedObject(o.object_id, o.vertices @ T_camera_base[:3, :3].T
                                   + T_camera_base[:3, 3], o.faces) for o in objects_base]
    R_b, t_b = top_down(0.5, 0.0, 0.08)
    R_c, t_c = T_camera_base[:3, :3] @ R_b, T_camera_base[:3, :3] @ t_b + T_camera_base[:3, 3]
    R2, t2 = top_down(0.5, 0.2, 0.08)
    grasps = make_grasps([R_c, T_camera_base[:3, :3] @ R2],
                         [t_c, T_camera_base[:3, :3] @ t2 + T_camera_base[:3, 3]],
                         [0.04, 0.04], [0.02, 0.02], [0.9, 0.5], [1, 2])
    return T_base_camera, objects, grasps, objects_base


def table_box():
    pose = np.eye(4)
    pose[:3, 3] = [0.55, 0.0, -0.02]
    return CollisionBox('table', np.array([0.8, 1.2, 0.04]), pose)


def moveit_sequence(fake, robot='panda', **config):
    from zerograsp_ros.execution.moveit_backend import MoveItBackend
    preset = fast_gripper(load_robot_preset(robot))
    backend = MoveItBackend(None, preset, api=fake.api)
    return PickSequence(backend, preset, PickConfig(**config), table_box()), preset


def test_moveit_adapter_call_order_and_content():
    T_base_camera, objects, grasps, objects_base = camera_scene()
    fake = FakeMoveIt(T_base_camera, object_width=0.04)
    seq, robot = moveit_sequence(fake, grasp_effort=35.0)
    result = seq.run(PickTarget(grasps, CAMERA, objects, object_id=1))
    assert result.success, result.message
    assert [s.stage for s in result.stages] == ['request', 'transform', 'planning_scene',
                                                'pre_grasp', 'open_gripper', 'approach',
                                                'grasp', 'lift']
    assert fake.calls[:4] == [('moveit_py', 'zerograsp_moveit_py'), ('component', 'fer_arm'),
                              ('action_client', 'ParallelGripperCommand',
                               '/robotiq_gripper_controller/gripper_cmd'),
                              ('joint_states', '/joint_states')]
    assert fake.provide_planning_service is False   # one /get_planning_scene in the cell
    assert ('tf', 'fer_link0', CAMERA) in fake.calls

    # Planning scene: the table box, then each reconstruction as a mesh in the base frame.
    applied = [c[1] for c in fake.calls if c[0] == 'apply']
    assert [co.id for co in applied] == ['table', 'object_1', 'object_2']
    assert all(co.header.frame_id == 'fer_link0' and co.operation == 0 for co in applied)
    assert list(applied[0].primitives[0].dimensions) == pytest.approx([0.8, 1.2, 0.04])
    assert pose_matrix(applied[0].pose)[:3, 3] == pytest.approx([0.55, 0.0, -0.02])
    for co, obj in zip(applied[1:], objects_base):
        verts = np.array([[p.x, p.y, p.z] for p in co.meshes[0].vertices])
        tris = np.array([list(t.vertex_indices) for t in co.meshes[0].triangles])
        np.testing.assert_allclose(verts, obj.vertices, atol=1e-9)
        np.testing.assert_array_equal(tris, obj.faces)
        np.testing.assert_allclose(pose_matrix(co.mesh_poses[0]), np.eye(4), atol=1e-12)
    # ACM: every gripper link may touch the target, no other object.
    acm = [c[1:] for c in fake.calls if c[0] == 'acm' and c[2] != 'table']
    assert len(acm) == 2 * len(robot.touch_links)
    assert {a for a in acm if a[2]} == {('object_1', link, True) for link in robot.touch_links}
    assert all(a[0] == 'object_2' for a in acm if not a[2])

    # Goals, in order: pre-grasp (free), grasp (straight line), lift (straight line).
    goals = fake.goals()
    assert [g[2] for g in goals] == ['fer_robotiq_tcp'] * 3
    assert all(g[1].header.frame_id == 'fer_link0' for g in goals)
    positions = [pose_matrix(g[1].pose)[:3, 3] for g in goals]
    np.testing.assert_allclose(positions, [[0.5, 0, 0.16], [0.5, 0, 0.06], [0.5, 0, 0.16]],
                               atol=1e-6)
    R_expected = top_down(0, 0, 0)[0]
    for g in goals:
        np.testing.assert_allclose(pose_matrix(g[1].pose)[:3, :3], R_expected, atol=1e-6)
    plans = [c[1:] for c in fake.calls if c[0] == 'plan']
    assert plans == [('ompl', 'RRTConnectkConfigDefault', 0.1),
                     ('pilz_industrial_motion_planner', 'LIN', 0.1),
                     ('pilz_industrial_motion_planner', 'LIN', 0.1)]
    # Interleaving: plan -> execute -> gripper, closing only after the approach.
    order = [n for n in fake.names() if n in ('goal', 'execute', 'gripper_goal', 'attached')]
    assert order == ['goal', 'execute', 'gripper_goal', 'goal', 'execute', 'gripper_goal',
                     'attached', 'goal', 'execute', 'gripper_goal']
    grips = [c[1] for c in fake.calls if c[0] == 'gripper_goal']   # sensor_msgs/JointState
    assert all(list(g.name) == ['robotiq_85_left_knuckle_joint'] for g in grips)
    assert list(grips[0].position) == [pytest.approx(robot.gripper.width_to_knuckle(0.06))]
    assert list(grips[1].position) == [pytest.approx(robot.gripper.knuckle_closed)]
    assert list(grips[1].effort) == [35.0]
    # The result said "stalled" at once; the width comes from the settled knuckle.
    grasp = [st for st in result.stages if st.stage == 'grasp'][0]
    assert 'closed at 0.04' in grasp.message
    execs = [c for c in fake.calls if c[0] == 'execute']
    assert all(len(e[1]) == 1 and e[2] == {'controllers': []} for e in execs)  # Jazzy API
    attached = [c[1] for c in fake.calls if c[0] == 'attached'][0]
    assert attached.link_name == 'fer_robotiq_tcp' and attached.object.id == 'object_1'
    assert list(attached.touch_links) == list(robot.touch_links)
    assert ('acm', 'object_1', 'table', True) in fake.calls   # the lifted object leaves the table
    assert result.grasp is not None and result.grasp.object_ids[0] == 1


def test_moveit_adapter_place_and_release():
    T_base_camera, objects, grasps, _ = camera_scene()
    fake = FakeMoveIt(T_base_camera)
    place = np.eye(4)
    place[:3, :3] = top_down(0, 0, 0)[0]
    place[:3, 3] = [0.45, 0.30, 0.20]
    seq, robot = moveit_sequence(fake, place_pose=place, retreat_after_place=0.05)
    result = seq.run(PickTarget(grasps, CAMERA, objects, object_id=1))
    assert result.success and 'placed' in result.message and not result.object_held
    assert [s.stage for s in result.stages][-3:] == ['lift', 'place', 'release']
    goals = [pose_matrix(g[1].pose)[:3, 3] for g in fake.goals()]
    np.testing.assert_allclose(goals[3:], [[0.45, 0.30, 0.20], [0.45, 0.30, 0.25]], atol=1e-6)
    plans = [c[2] for c in fake.calls if c[0] == 'plan']
    assert plans[3:] == ['RRTConnectkConfigDefault', 'LIN']   # free to the place, line back
    grips = [c[1] for c in fake.calls if c[0] == 'gripper_goal']
    assert list(grips[-1].position) == [pytest.approx(robot.gripper.knuckle_open)]  # released
    attached = [c[1] for c in fake.calls if c[0] == 'attached']
    assert [a.object.operation for a in attached] == [0, 1]                 # attach, detach
    removed = [c[1] for c in fake.calls if c[0] == 'apply' and c[1].operation == 1]
    assert [co.id for co in removed] == ['object_1']      # its world copy is stale: dropped
    # A place pose outside the workspace is refused before anything moves.
    fake = FakeMoveIt(T_base_camera)
    place[:3, 3] = [0.45, 0.30, 1.50]
    seq, _ = moveit_sequence(fake, place_pose=place)
    result = seq.run(PickTarget(grasps, CAMERA, objects, object_id=1))
    assert result.failed_stage == 'place' and 'outside the workspace' in result.message
    assert 'execute' not in fake.names()


def test_moveit_adapter_dry_run_plans_from_the_previous_goal_and_never_moves():
    T_base_camera, objects, grasps, _ = camera_scene()
    fake = FakeMoveIt(T_base_camera)
    seq, _ = moveit_sequence(fake, robot='fr3')
    result = seq.run(PickTarget(grasps, CAMERA, objects, object_id=2, dry_run=True))
    assert result.success and 'nothing moved' in result.message
    names = fake.names()
    assert 'execute' not in names and 'gripper_goal' not in names and 'attached' not in names
    goals = fake.goals()
    assert [g[2] for g in goals] == ['fr3_robotiq_tcp'] * 3
    starts = [c for c in fake.calls if c[0] in ('start_current', 'start_state')]
    assert starts[0] == ('start_current',)
    # Each later plan starts where the previous plan ended (the trajectory's last state).
    assert starts[1] == ('start_state', ('end_state_of', goals[0][1]))
    assert starts[2] == ('start_state', ('end_state_of', goals[1][1]))
    # The next pick plans from the robot's real state again, not the last dry-run goal.
    seq.run(PickTarget(grasps, CAMERA, objects, object_id=2, dry_run=True))
    starts = [c for c in fake.calls if c[0] in ('start_current', 'start_state')]
    assert starts[3] == ('start_current',)


def test_moveit_adapter_tries_every_candidate_then_fails_clearly():
    T_base_camera, objects, grasps, _ = camera_scene()
    fake = FakeMoveIt(T_base_camera, reject=lambda goal, params: True)
    seq, _ = moveit_sequence(fake)
    result = seq.run(PickTarget(grasps, CAMERA, objects))
    assert not result.success and result.failed_stage == 'pre_grasp'
    assert result.candidates_tried == 2
    assert 'candidate 0 (object 1' in result.message and 'candidate 1 (object 2' in result.message
    assert 'execute' not in fake.names() and 'gripper_goal' not in fake.names()
    # The ACM followed the target: object_2 became touchable for the second candidate.
    assert ('acm', 'object_2', load_robot_preset('panda').touch_links[0], True) in fake.calls

    # Only the straight approach of the first candidate fails: the second one is executed.
    fake = FakeMoveIt(T_base_camera, reject=lambda goal, params: (
        params.planner_id == 'LIN' and abs(goal.pose.position.y) < 0.01))
    seq, _ = moveit_sequence(fake)
    result = seq.run(PickTarget(grasps, CAMERA, objects))
    assert result.success and result.candidates_tried == 2
    assert result.grasp.object_ids[0] == 2


def test_moveit_adapter_stops_when_the_gripper_closes_on_nothing():
    T_base_camera, objects, grasps, _ = camera_scene()
    fake = FakeMoveIt(T_base_camera, object_width=None)
    seq, _ = moveit_sequence(fake)
    result = seq.run(PickTarget(grasps, CAMERA, objects, object_id=1))
    assert not result.success and result.failed_stage == 'grasp'
    assert 'closed on nothing' in result.message
    close = max(i for i, c in enumerate(fake.calls) if c[0] == 'gripper_goal')
    assert not [c for c in fake.calls[close:] if c[0] in ('goal', 'execute', 'attached')]


def test_moveit_adapter_refuses_to_move_when_the_scene_update_fails():
    T_base_camera, objects, grasps, _ = camera_scene()
    fake = FakeMoveIt(T_base_camera, scene_error='planning scene monitor not running')
    seq, _ = moveit_sequence(fake)
    result = seq.run(PickTarget(grasps, CAMERA, objects))
    assert not result.success and result.failed_stage == 'planning_scene'
    assert 'monitor not running' in result.message and 'nothing moved' in result.message
    assert not {'goal', 'plan', 'execute', 'gripper_goal'} & set(fake.names())


def test_moveit_adapter_workspace_and_bad_requests():
    T_base_camera, objects, grasps, _ = camera_scene()
    fake = FakeMoveIt(T_base_camera)
    seq, _ = moveit_sequence(fake)
    far = grasps.subset([0])
    far.translations[0, 0] += 2.0                    # 2 m off along camera x
    result = seq.run(PickTarget(far, CAMERA, objects))
    assert result.failed_stage == 'pre_grasp' and 'outside the workspace' in result.message
    assert 'plan' not in fake.names()
    result = seq.run(PickTarget(grasps, CAMERA, objects, object_id=7))
    assert result.failed_stage == 'request' and 'unknown object id 7' in result.message
    assert '[1, 2]' in result.message
    nan = grasps.subset([0])
    nan.translations[0, 1] = np.nan
    result = seq.run(PickTarget(nan, CAMERA, objects))
    assert result.failed_stage == 'request' and 'NaN' in result.message
    # fuzz_services found negative widths planned (the opening margin hid them)
    for field, name in ((lambda g: g.widths, 'width'), (lambda g: g.depths, 'depth')):
        negative = grasps.subset([0])
        field(negative)[0] = -0.01
        result = seq.run(PickTarget(negative, CAMERA, objects))
        assert result.failed_stage == 'request', result.message
        assert f'negative {name} (-0.0100 m)' in result.message
    assert 'plan' not in fake.names()


def test_moveit_adapter_humble_execute_and_selectable_gripper_command():
    import dataclasses
    T_base_camera, objects, grasps, _ = camera_scene()
    fake = FakeMoveIt(T_base_camera, distro='humble')
    from zerograsp_ros.execution.moveit_backend import MoveItBackend
    preset = fast_gripper(load_robot_preset('panda'))
    preset = dataclasses.replace(preset, gripper=dataclasses.replace(
        preset.gripper, action_type='GripperCommand'))
    backend = MoveItBackend(None, preset, api=fake.api)
    result = PickSequence(backend, preset, PickConfig(grasp_effort=30.0)).run(
        PickTarget(grasps, CAMERA, objects, object_id=1))
    assert result.success, result.message
    assert ('action_client', 'GripperCommand',
            '/robotiq_gripper_controller/gripper_cmd') in fake.calls
    execs = [c for c in fake.calls if c[0] == 'execute']
    assert all(e[1][0] == 'fer_arm' and e[2] == {'blocking': True} for e in execs)
    cmd = [c[1] for c in fake.calls if c[0] == 'gripper_goal'][1]   # control_msgs/GripperCommand
    assert cmd.position == pytest.approx(preset.gripper.knuckle_closed)
    assert cmd.max_effort == 30.0


def test_moveit_adapter_checks_the_return_values_moveit_py_gives():
    T_base_camera, objects, grasps, _ = camera_scene()
    # set_goal_state returns False for a pose_link the model lacks: no plan, no motion.
    fake = FakeMoveIt(T_base_camera, model_links={'fer_link8'})
    seq, _ = moveit_sequence(fake)
    result = seq.run(PickTarget(grasps, CAMERA, objects, object_id=1))
    assert not result.success and result.failed_stage == 'pre_grasp'
    assert "rejected the free goal for 'fer_robotiq_tcp'" in result.message
    assert 'plan' not in fake.names() and 'execute' not in fake.names()
    # process_attached_collision_object returns False: the pick stops at the grasp.
    fake = FakeMoveIt(T_base_camera, attach_ok=False)
    seq, _ = moveit_sequence(fake)
    result = seq.run(PickTarget(grasps, CAMERA, objects, object_id=1))
    assert result.failed_stage == 'grasp' and 'refused to attach object_1' in result.message
    close = max(i for i, c in enumerate(fake.calls) if c[0] == 'attached')
    assert 'execute' not in [c[0] for c in fake.calls[close:]]      # no lift
    # An ExecutionStatus that is not SUCCEEDED fails the motion with its text.
    fake = FakeMoveIt(T_base_camera, execute_status='ABORTED')
    seq, _ = moveit_sequence(fake)
    result = seq.run(PickTarget(grasps, CAMERA, objects, object_id=1))
    assert result.failed_stage == 'pre_grasp' and 'failed in the controller (ABORTED)' in \
        result.message


def test_moveit_adapter_detaches_a_kept_object_before_the_next_pick():
    """place: false keeps the object attached after the pick; the next pick detaches it."""
    T_base_camera, objects, grasps, _ = camera_scene()
    fake = FakeMoveIt(T_base_camera)
    seq, robot = moveit_sequence(fake)
    assert seq.run(PickTarget(grasps, CAMERA, objects, object_id=1)).success
    assert seq.backend.attached == ['object_1']
    n = len(fake.calls)
    seq.run(PickTarget(grasps, CAMERA, objects, object_id=2, dry_run=True))
    detach = [c[1] for c in fake.calls[n:] if c[0] == 'attached']
    assert len(detach) == 1 and detach[0].object.operation == 1 and detach[0].object.id == ''
    assert detach[0].link_name == robot.tcp_link                     # '' = everything on it
    removed = [c[1].id for c in fake.calls[n:] if c[0] == 'apply' and c[1].operation == 1]
    assert removed[0] == 'object_1' and seq.backend.attached == []


def test_moveit_gripper_is_judged_on_the_settled_knuckle_not_the_stalled_result():
    """The controller says "stalled, succeeded" at once; only /joint_states tells."""
    T_base_camera = camera_scene()[0]
    from zerograsp_ros.execution.moveit_backend import MoveItBackend
    preset = fast_gripper(load_robot_preset('fr3'))
    g = preset.gripper
    # An object 40 mm wide: the close stops short of closed and holds it.
    fake = FakeMoveIt(T_base_camera, object_width=0.04)
    backend = MoveItBackend(None, preset, api=fake.api)
    res = backend.gripper(-1.0, 40.0)
    assert res.ok and res.object_held is True and res.width == pytest.approx(0.04, abs=0.002)
    res = backend.gripper(g.stroke, 0.0)                             # open fully again
    assert res.ok and res.width == pytest.approx(g.stroke, abs=0.002)
    # Nothing between the pads: fully closed, not held (a stalled result would say held).
    fake = FakeMoveIt(T_base_camera, object_width=None)
    backend = MoveItBackend(None, preset, api=fake.api)
    res = backend.gripper(-1.0, 40.0)
    assert res.ok and res.object_held is False and res.width < 0.002
    # A gripper that never moves: the open fails (blocked), it is not believed.
    fake = FakeMoveIt(T_base_camera, gripper_stuck=True)
    fake.knuckle.start_pos = g.knuckle_closed
    backend = MoveItBackend(None, preset, api=fake.api)
    res = backend.gripper(0.06, 0.0)
    assert not res.ok and 'did not reach the commanded opening' in res.message
    # No joint states at all: a clear failure after settle_timeout.
    fake = FakeMoveIt(T_base_camera)
    fake.api.subscribe_joint_states = lambda *a: None
    import dataclasses
    quick = dataclasses.replace(preset, gripper=dataclasses.replace(g, settle_timeout=0.3))
    backend = MoveItBackend(None, quick, api=fake.api)
    res = backend.gripper(0.06, 0.0)
    assert not res.ok and 'no robotiq_85_left_knuckle_joint position' in res.message


def test_knuckle_monitor_waits_for_motion_then_a_steady_window():
    from zerograsp_ros.execution.backends import ExecutionError
    from zerograsp_ros.execution.knuckle_monitor import KnuckleMonitor
    now = [0.0]
    m = KnuckleMonitor('k', settle_time=0.2, tolerance=0.004, motion_start_wait=1.0,
                       clock=lambda: now[0])

    def feed(until, position):
        while now[0] < until - 1e-9:
            now[0] = round(now[0] + 0.01, 6)
            m.add(position(now[0]))

    feed(0.5, lambda t: 0.0)
    sent = now[0]
    # 0.3 s with no motion yet (command latency): not settled although steady.
    feed(0.8, lambda t: 0.0)
    assert m._settled_since(sent, 0.0, 0.79, now[0]) is None
    feed(1.2, lambda t: min(0.79, (t - 0.8) * 2.0))             # moves, then stops at 0.79
    assert m._settled_since(sent, 0.0, 0.79, now[0]) is None    # stopped 0.2 s ago at most
    feed(1.5, lambda t: 0.79)
    assert m._settled_since(sent, 0.0, 0.79, now[0]) == pytest.approx(0.79)
    # Blocked from the start: settled where it was once motion_start_wait has passed.
    sent = now[0]
    feed(2.0, lambda t: 0.79)
    assert m._settled_since(sent, 0.79, 0.0, now[0]) is None
    feed(2.6, lambda t: 0.79)
    assert m._settled_since(sent, 0.79, 0.0, now[0]) == pytest.approx(0.79)
    with pytest.raises(ExecutionError, match='did not settle'):
        feed(2.7, lambda t: 0.79 if round(t * 100) % 2 else 0.7)
        KnuckleMonitor.wait_settled(m, now[0], 0.79, 0.0, timeout=0.0)
    js = SimpleNamespace(name=['other', 'k'], position=[5.0, 0.25])
    m.on_joint_state(js)
    assert m.latest()[1] == 0.25


def test_moveit_adapter_without_its_configuration_fails_loudly():
    from zerograsp_ros.execution.moveit_backend import MoveItBackend
    fake = FakeMoveIt(np.eye(4), moveit_error='Unable to find robot_description')
    with pytest.raises(ExecutionError, match='robot_description.*moveit_cpp'):
        MoveItBackend(None, load_robot_preset('panda'), api=fake.api)
    fake = FakeMoveIt(np.eye(4), model_groups={'panda_arm'})      # an SRDF of another robot
    with pytest.raises(ExecutionError, match="group 'fer_arm'.*No planning group fer_arm"):
        MoveItBackend(None, load_robot_preset('panda'), api=fake.api)


def test_moveit_live_adapter():
    try:
        import moveit.planning  # noqa: F401
    except ImportError:
        pytest.skip('moveit_py is not installed here (no MoveIt 2 on PyPI); the adapter is '
                    'covered by the recording fake above')
    from zerograsp_ros.execution.moveit_backend import load_moveit_api
    api = load_moveit_api()
    assert api.MoveItPy is not None and api.GripperCommand is not None


def test_moveit_backend_missing_packages_fail_loudly():
    try:
        import moveit.planning  # noqa: F401
        pytest.skip('moveit_py is installed: nothing missing to report')
    except ImportError:
        pass
    from zerograsp_ros.execution.moveit_backend import load_moveit_api
    with pytest.raises(ExecutionError, match='moveit_py'):
        load_moveit_api()


# =========================================================================== simulated cell

@pytest.fixture(scope='module')
def cell():
    pytest.importorskip('pybullet')
    from zerograsp_ros.sim.cell import SimCell
    sim = SimCell()
    yield sim
    sim.close()


def shaf_target(sim) -> PickTarget:
    """SHAF-like top-down grasps on the rendered view.

    Object ids and hull obstacles come from the rendered instance labels (the
    perception nodes give these on the robot).
    """
    from scipy.spatial import cKDTree

    from zerograsp_ros.geometry.camera import unproject
    from zerograsp_ros.sim.baselines import highest_point_grasps
    frame = sim.capture()
    pts, pix = unproject(frame.depth, frame.intrinsics, mask=frame.labels > 0,
                         return_pixels=True)
    labels = frame.labels[pix[:, 0], pix[:, 1]]
    grasps = highest_point_grasps(frame)
    grasps.object_ids = labels[cKDTree(pts).query(grasps.translations)[1]].astype(np.int32)
    objects = [ReconstructedObject(int(i), None, None, pts[labels == i])
               for i in np.unique(labels)]
    return PickTarget(grasps, frame.frame_id, objects)


def sim_sequence(sim, **config):
    from zerograsp_ros.execution.sim_backend import SimCellApiBackend
    return PickSequence(SimCellApiBackend(sim), load_robot_preset('panda'), PickConfig(**config))


# Measured with this file's sequence (SHAF-like grasps, panda preset): 6 of seeds 0-9
# lift an object; the three below lift 3 (deterministic in-process: same seed, same run).
SIM_SEEDS = (0, 4, 5)
MIN_SIM_LIFTS = 2


def test_sim_pick_physically_lifts_objects(cell):
    lifted = 0
    for seed in SIM_SEEDS:
        cell.reset(seed=seed)
        target = shaf_target(cell)
        z_before = {i: cell.object_pose(i)[2, 3] for i in cell.object_ids()}
        result = sim_sequence(cell).run(target)
        if not result.success:
            assert result.failed_stage in ('approach', 'grasp', 'lift', 'pre_grasp'), \
                result.message
            continue
        obj = int(result.grasp.object_ids[0])
        assert result.object_held and result.stages[-1].stage == 'lift'
        # Physically up in the air, in the closed fingers.
        assert cell.object_pose(obj)[2, 3] > z_before[obj] + 0.05
        assert cell.held_object() == obj
        lifted += 1
    assert lifted >= MIN_SIM_LIFTS, f'only {lifted}/{len(SIM_SEEDS)} seeded scenes lifted'


def test_sim_pick_and_place_releases_the_object_at_the_place_pose(cell):
    cell.reset(seed=0)
    target = shaf_target(cell)
    place = np.eye(4)
    place[:3, :3] = top_down(0, 0, 0)[0]
    place[:3, 3] = [0.45, 0.30, 0.15]                 # base frame, beside the workspace
    result = sim_sequence(cell, place_pose=place).run(target)
    assert result.success, result.message
    assert [s.stage for s in result.stages][-2:] == ['place', 'release']
    cell._step(240)                                    # let it settle (1 s of physics)
    obj = int(result.grasp.object_ids[0])              # rendered labels = the cell's ids
    p_base = (np.linalg.inv(cell.T_world_base) @ cell.object_pose(obj))[:3, 3]
    assert np.linalg.norm(p_base[:2] - place[:2, 3]) < 0.05 and p_base[2] < 0.08
    assert cell.held_object() == 0


def test_sim_planning_scene_refuses_sweeping_through_other_objects(cell):
    """The sim backends' planning scene: contact with the target only, never the table."""
    from zerograsp_ros.execution.sim_backend import SimCellApiBackend
    backend = SimCellApiBackend(cell)
    other = collision_mesh(box_object(2, [0.55, 0.0, 0.05], (0.04, 0.12, 0.10)), np.eye(4))
    target = collision_mesh(box_object(1, [0.55, 0.15, 0.05], (0.04, 0.04, 0.10)),
                            np.eye(4))
    table = table_box()
    backend.update_planning_scene([other, target], table, target.name)
    R, _ = top_down(0, 0, 0)
    start, through, onto = np.eye(4), np.eye(4), np.eye(4)
    for T, xyz in ((start, [0.55, 0.0, 0.30]), (through, [0.55, 0.0, 0.06]),
                   (onto, [0.55, 0.15, 0.06])):
        T[:3, :3], T[:3, 3] = R, xyz
    backend.tcp, backend.opening = start, 0.085
    res = backend.move(through, straight_line=True, dry_run=True)
    assert not res.planned and 'object_2' in res.message
    backend.tcp = start.copy()
    backend.tcp[1, 3] = 0.15
    assert backend.move(onto, straight_line=True, dry_run=True).ok   # the target: allowed
    below = onto.copy()
    below[2, 3] = -0.02                                              # fingers in the table
    res = backend.move(below, straight_line=True, dry_run=True)
    assert not res.planned and 'the table' in res.message
    assert np.allclose(cell.tcp_pose_base(), SimCellApiBackend(cell).tcp)  # nothing moved


def free_spot_grasp(sim, z_world=0.03, reach=0.12, clearance=0.12):
    """A top-down grasp (camera frame) over an empty part of the table."""
    T_wb = sim.T_world_base
    positions = np.array([sim.object_pose(i)[:3, 3] for i in sim.object_ids()])
    for x in np.linspace(-reach, reach, 9):
        for y in np.linspace(-reach, reach, 9):
            if np.min(np.linalg.norm(positions[:, :2] - [x, y], axis=1)) > clearance:
                R_w, t_w = top_down(x, y, z_world)
                T_bw = np.linalg.inv(T_wb)
                T_cb = np.linalg.inv(sim.T_base_camera)
                R_c = T_cb[:3, :3] @ T_bw[:3, :3] @ R_w
                t_c = T_cb[:3, :3] @ (T_bw[:3, :3] @ t_w + T_bw[:3, 3]) + T_cb[:3, 3]
                return make_grasps([R_c], [t_c], [0.04], [0.0], [1.0], [0])
    pytest.skip('no free spot on this table')


def test_sim_gripper_closing_on_nothing_fails_at_the_grasp_stage(cell):
    cell.reset(seed=2)
    grasps = free_spot_grasp(cell)
    result = sim_sequence(cell).run(PickTarget(grasps, CAMERA))
    assert not result.success and result.failed_stage == 'grasp', result.message
    assert 'closed on nothing' in result.message and result.candidates_tried == 1
    # Stopped where it closed: no lift after the failure.
    T_tcp = grasp_waypoints(*_base_grasp(cell, grasps), load_robot_preset('panda'),
                            PickConfig())['grasp']
    np.testing.assert_allclose(cell.tcp_pose_base()[:3, 3], T_tcp[:3, 3], atol=0.01)


def test_sim_a_failed_grasp_is_tried_last_next_time_until_a_pick_succeeds(cell):
    from zerograsp_ros.grasp.representation import GraspSet

    def target_with_a_decoy():
        cell.reset(seed=SIM_SEEDS[0])   # a scene whose best SHAF-like grasp lifts
        target = shaf_target(cell)
        # closes on nothing (objects are at most ~15 cm across), scored above every real grasp
        decoy = free_spot_grasp(cell, reach=0.16, clearance=0.09)
        decoy.scores[:] = target.grasps.scores.max() + 1.0
        decoy.object_ids[:] = target.grasps.object_ids[0]
        return PickTarget(GraspSet.concatenate([decoy, target.grasps]), target.frame_id,
                          target.objects)

    seq = sim_sequence(cell)
    first = seq.run(target_with_a_decoy())
    assert not first.success and 'closed on nothing' in first.message, first.message
    second = seq.run(target_with_a_decoy())   # same scene, same candidates
    assert second.success, second.message
    transform = [r for r in second.stages if r.stage == 'transform'][0]
    assert '1 candidate(s) repeat an earlier failed grasp' in transform.message
    # the success cleared the memory: the decoy is tried first again
    third = seq.run(target_with_a_decoy())
    assert not third.success and 'closed on nothing' in third.message
    # switched off, a static scene repeats the same failure
    plain = sim_sequence(cell, avoid_failed_grasps=False)
    for _ in range(2):
        result = plain.run(target_with_a_decoy())
        assert not result.success and 'closed on nothing' in result.message


def _base_grasp(sim, grasps):
    g = grasps.transformed(sim.T_base_camera)
    return g.rotations[0], g.translations[0], float(g.depths[0])


def test_sim_every_candidate_tried_then_a_clear_failure(cell):
    cell.reset(seed=3)
    base = free_spot_grasp(cell)
    far = base.subset([0])
    far.translations[0] += [1.5, 0.0, 0.0]                 # far outside the workspace
    wide = base.subset([0])
    wide.widths[0] = 0.12                                  # beyond the 85 mm stroke
    # In the workspace box but beyond the Panda's reach: the IK check refuses it.
    T_cb = np.linalg.inv(cell.T_base_camera)
    R_b, t_b = top_down(0.78, 0.40, 0.05)
    reach = base.subset([0])
    reach.rotations[0] = T_cb[:3, :3] @ R_b
    reach.translations[0] = T_cb[:3, :3] @ t_b + T_cb[:3, 3]
    grasps = GraspSet.concatenate([far, wide, reach])
    grasps.scores[:] = [0.9, 0.8, 0.7]
    tcp_before = cell.tcp_pose_base()
    result = sim_sequence(cell).run(PickTarget(grasps, CAMERA))
    assert not result.success and result.candidates_tried == 3
    assert result.failed_stage == 'pre_grasp'
    for i, why in ((0, 'outside the workspace'), (1, 'exceeds the stroke'),
                   (2, 'pre-grasp not planned: pose not reachable')):
        assert f'candidate {i}' in result.message and why in result.message, result.message
    np.testing.assert_allclose(cell.tcp_pose_base(), tcp_before, atol=1e-9)


def test_sim_dry_run_and_bad_requests_move_nothing(cell):
    cell.reset(seed=4)
    target = shaf_target(cell)
    poses = {i: cell.object_pose(i) for i in cell.object_ids()}
    tcp_before = cell.tcp_pose_base()
    target.dry_run = True
    result = sim_sequence(cell).run(target)
    assert result.success and 'nothing moved' in result.message
    assert [s.stage for s in result.stages][-3:] == ['pre_grasp', 'approach', 'lift']
    target.dry_run = False
    unknown = PickTarget(target.grasps, target.frame_id, target.objects, object_id=42)
    result = sim_sequence(cell).run(unknown)
    assert result.failed_stage == 'request' and 'unknown object id 42' in result.message
    broken = [ReconstructedObject(o.object_id, None, None, o.points[:3]) for o in target.objects]
    result = sim_sequence(cell).run(PickTarget(target.grasps, target.frame_id, broken))
    assert result.failed_stage == 'planning_scene' and 'refusing to move' in result.message
    np.testing.assert_allclose(cell.tcp_pose_base(), tcp_before, atol=1e-9)
    for i, T in poses.items():
        np.testing.assert_allclose(cell.object_pose(i), T, atol=1e-6)


# =========================================================================== over ROS 2

@pytest.fixture(scope='module')
def ros(ros_domain):
    """A private rclpy context spun by a MultiThreadedExecutor in a background thread."""
    import threading

    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = MultiThreadedExecutor(num_threads=6, context=context)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    client = rclpy.create_node('execution_test_client', context=context)
    executor.add_node(client)
    yield SimpleNamespace(context=context, executor=executor, client=client)
    executor.shutdown(timeout_sec=10)
    thread.join(timeout=10)
    client.destroy_node()
    rclpy.try_shutdown(context=context)


def start_execution_node(ros, name, **params):
    from rclpy.parameter import Parameter

    from zerograsp_ros.nodes.execution_node import ExecutionNode
    node = ExecutionNode(name, context=ros.context, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])
    ros.executor.add_node(node)
    return node


def call(ros, srv_type, name, request, timeout=120.0):
    from zerograsp_ros.execution.backends import wait_for_future
    client = ros.client.create_client(srv_type, name)
    try:
        assert client.wait_for_service(timeout_sec=30.0), f'{name} never appeared'
        return wait_for_future(client.call_async(request), timeout, name)
    finally:
        ros.client.destroy_client(client)


@pytest.mark.ros
def test_ros_bad_requests_answer_clearly_and_the_node_keeps_serving(ros):
    from zerograsp_ros.srv import PickObject
    node = start_execution_node(ros, 'execution_bad_requests',
                                predict_service='/no_such_predict_grasps')
    service = '/pick'
    # The sim backend drops picked objects into a bin out of the camera's view by default.
    np.testing.assert_allclose(node.config.place_pose[:3, 3], [0.25, -0.44, 0.25])
    np.testing.assert_allclose(node.config.place_pose[:3, 0], [0, 0, -1], atol=1e-4)
    try:
        req = PickObject.Request()
        req.use_explicit_grasp = True
        req.grasp_header.frame_id = CAMERA
        req.grasp.pose.position.x = float('nan')
        req.grasp.pose.orientation.w = 1.0
        res = call(ros, PickObject, service, req)
        assert not res.success and res.failed_stage == 'request' and 'NaN' in res.message
        req.grasp.pose.position.x = 0.1
        req.grasp.pose.orientation.w = 0.0                 # zero quaternion
        res = call(ros, PickObject, service, req)
        assert not res.success and res.failed_stage == 'request' and 'quaternion' in res.message
        req.grasp.pose.orientation.w = 1.0
        req.grasp.width = -0.01                            # fuzz_services: was planned
        res = call(ros, PickObject, service, req)
        assert not res.success and res.failed_stage == 'request'
        assert 'negative width' in res.message
        req = PickObject.Request()
        req.object_id = 0
        res = call(ros, PickObject, service, req)
        assert res.failed_stage == 'request' and 'object_id' in res.message
        req.object_id = -1                                 # no /predict_grasps running
        res = call(ros, PickObject, service, req)
        assert res.failed_stage == 'perception' and 'no_such_predict_grasps' in res.message
    finally:
        ros.executor.remove_node(node)
        node.destroy_node()


@pytest.mark.ros
def test_ros_knuckle_is_watched_on_real_joint_states(ros):
    """The gripper check subscribes like the backend does and settles on DDS samples."""
    import threading
    import time

    import rclpy
    from sensor_msgs.msg import JointState

    from zerograsp_ros.execution.knuckle_monitor import KnuckleMonitor
    from zerograsp_ros.execution.moveit_backend import joint_state_subscription
    joint = 'robotiq_85_left_knuckle_joint'
    node = rclpy.create_node('knuckle_watch_test', context=ros.context)
    ros.executor.add_node(node)
    # settle_time well above a publishing hiccup of the Python thread below: with 0.1 s a
    # stalled thread once looked like a finger at rest mid-stroke (0.32 of 0.45)
    monitor = KnuckleMonitor(joint, settle_time=0.3, tolerance=0.004, motion_start_wait=0.5)
    sub = joint_state_subscription(node, '/joint_states', monitor.on_joint_state)
    pub = ros.client.create_publisher(JointState, '/joint_states', 10)  # reliable, as JSB
    try:
        deadline = time.monotonic() + 10
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pub.get_subscription_count() > 0, 'best-effort subscriber never matched'
        t0 = time.monotonic()

        def publish():   # still for 0.2 s (command latency), then closes onto an object
            while (t := time.monotonic() - t0) < 1.5:
                msg = JointState(name=['fr3_joint1', joint],
                                 position=[0.3, min(0.45, max(0.0, (t - 0.2) * 2.0))])
                pub.publish(msg)
                time.sleep(0.01)

        thread = threading.Thread(target=publish, daemon=True)
        thread.start()
        position = monitor.wait_settled(t0, 0.0, 0.7929, timeout=5.0)
        assert position == pytest.approx(0.45, abs=0.005)
        assert time.monotonic() - t0 > 0.2 + 0.45 / 2.0      # not before it stopped
        thread.join()
    finally:
        node.destroy_subscription(sub)
        ros.client.destroy_publisher(pub)
        ros.executor.remove_node(node)
        node.destroy_node()


@pytest.mark.ros
def test_ros_moveit_backend_without_moveit_fails_loudly(ros):
    try:
        import moveit.planning  # noqa: F401
        pytest.skip('moveit_py is installed here: the live adapter test covers it')
    except ImportError:
        pass
    from zerograsp_ros.srv import PickObject
    node = start_execution_node(ros, 'execution_no_moveit', backend='moveit', robot='fr3')
    try:
        assert node.sequence is None and 'moveit_py' in node.setup_error
        res = call(ros, PickObject, '/pick', PickObject.Request())
        assert not res.success and 'moveit_py' in res.message and res.failed_stage == 'request'
    finally:
        ros.executor.remove_node(node)
        node.destroy_node()


def _spawn(args):
    import os
    import subprocess
    import sys
    import tempfile
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join([str(repo), env.get('PYTHONPATH', '')])
    log = tempfile.TemporaryFile(mode='w+')   # a file, not a pipe nobody drains
    proc = subprocess.Popen([sys.executable, *args], cwd=repo, env=env, text=True,
                            stdout=log, stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _stop(proc):
    import subprocess
    proc.terminate()
    try:
        proc.wait(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log.seek(0)
    out = proc.log.read()
    proc.log.close()
    return out


# Measured over ROS (sim_cell_node + SHAF-like grasp server + execution node, 3 processes):
# 5 of 8 first attempts lifted an object (seeds 0-7; the frame the server segments carries
# fresh depth noise, so outcomes vary from run to run). With a second attempt per scene
# (the clutter-removal rule: stop after 2 failures) a scene fails ~16 % of the time, so
# >= 2 of 4 scenes fails by chance in ~1.4 % of runs.
ROS_SEEDS = (0, 1, 2, 3)
MIN_ROS_LIFTS = 2


@pytest.mark.ros
def test_ros_full_pick_lifts_objects_in_the_simulated_cell(ros):
    """The full pick over DDS on the simulated cell.

    sim_cell_node and a /predict_grasps server run in their own processes; the execution
    node picks with its sim backend and the cell's gripper confirms the hold.
    """
    pytest.importorskip('pybullet')
    from zerograsp_ros.srv import PickObject, SimGripper, SimResetScene
    sim = _spawn(['-m', 'zerograsp_ros.nodes.sim_cell_node', '--ros-args', '-p',
                  'publish_rate_hz:=2.0'])
    server = _spawn(['test/support/baseline_grasp_server.py'])
    node = None
    try:
        # Keep the object in the fingers (no drop into the sim's bin) to check the hold.
        node = start_execution_node(ros, 'execution_sim_pick', sim_place=False)
        assert node.sequence is not None, node.setup_error
        lifted, outcomes = 0, []
        for seed in ROS_SEEDS:
            reset = call(ros, SimResetScene, '/sim_cell/reset_scene',
                         SimResetScene.Request(seed=seed))
            assert reset.success, reset.message
            for attempt in (1, 2):
                res = call(ros, PickObject, '/pick', PickObject.Request(object_id=-1),
                           timeout=180)
                outcomes.append((seed, attempt, res.success, res.failed_stage, res.message))
                if res.success:
                    break
                assert res.failed_stage in ('pre_grasp', 'approach', 'grasp', 'lift'), \
                    res.message
            if not res.success:
                continue
            assert res.executed_grasp_header.frame_id == 'panda_link0'
            assert res.candidates_tried >= 1 and res.executed_grasp.object_id > 0
            # Independently of the node: the cell's gripper still holds an object in the air.
            grip = call(ros, SimGripper, '/sim_cell/gripper', SimGripper.Request(width=-1.0))
            assert grip.success and grip.object_held and grip.held_object_id > 0
            lifted += 1
        print('pick outcomes (seed, attempt, success, stage, message):', *outcomes, sep='\n  ')
        assert lifted >= MIN_ROS_LIFTS, outcomes
        # A bad request against the live scene: an object id segmentation never produced.
        res = call(ros, PickObject, '/pick', PickObject.Request(object_id=99), timeout=180)
        assert res.failed_stage == 'request' and 'unknown object id 99' in res.message
    finally:
        if node is not None:
            ros.executor.remove_node(node)
            node.destroy_node()
        for proc in (server, sim):
            out = _stop(proc)
            if proc.returncode not in (0, -15, 1) or 'Traceback' in out:
                print(out[-3000:])


@pytest.mark.ros
def test_prediction_message_to_moveit_collision_objects():
    """A /predict_grasps answer (camera frame) becomes base-frame MoveIt meshes unchanged."""
    from std_msgs.msg import Header

    from zerograsp_ros.nodes.conversions import ObjectShape, grasps_to_msg, scene_to_msg
    from zerograsp_ros.nodes.execution_node import pick_target_from_prediction
    from zerograsp_ros.srv import PredictGrasps
    T_base_camera, objects, grasps, objects_base = camera_scene()
    header = Header(frame_id=CAMERA)
    response = PredictGrasps.Response(success=True)
    response.grasps = grasps_to_msg(grasps, header)
    response.reconstruction = scene_to_msg(
        [ObjectShape(o.object_id, o.vertices[:4], np.zeros((4, 3)), o.vertices, o.faces, 0.005)
         for o in objects], header)
    target = pick_target_from_prediction(response)
    target.object_id = 2
    fake = FakeMoveIt(T_base_camera)
    seq, _ = moveit_sequence(fake)
    assert seq.run(target).success
    applied = {c[1].id: c[1] for c in fake.calls if c[0] == 'apply'}
    for obj in objects_base:
        mesh = applied[f'object_{obj.object_id}'].meshes[0]
        verts = np.array([[p.x, p.y, p.z] for p in mesh.vertices])
        np.testing.assert_allclose(verts, obj.vertices, atol=2e-6)   # float32 round trip
    response.reconstruction.header = Header(frame_id='some_other_frame')
    with pytest.raises(InputError, match='differs'):
        pick_target_from_prediction(response)
