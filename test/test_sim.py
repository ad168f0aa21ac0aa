"""Scenes, rendering, the simulated cell, baselines, the clutter-removal benchmark, the node."""
import json
import os
from pathlib import Path
import subprocess
import sys
import time

import numpy as np
import pytest
import trimesh

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import CameraIntrinsics, transform_points, unproject
from zerograsp_ros.geometry.rgbd import load_frame_dir
from zerograsp_ros.sim import objects
from zerograsp_ros.sim import scene as scn

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- scenes

def test_object_splits_are_disjoint_and_exclude_the_broken_mesh():
    splits = {s: set(objects.object_split(s)) for s in objects.SPLITS}
    meshes = {s: names - set(objects.PRIMITIVES) for s, names in splits.items()}
    assert not meshes['train'] & meshes['test']
    assert not meshes['train'] & meshes['val']
    assert not meshes['val'] & meshes['test']
    assert all('urdf_168' not in names for names in splits.values())
    assert {'plate', 'wide_box'} <= splits['test']       # flat and wide objects are included
    with pytest.raises(InputError, match='split'):
        objects.object_split('holdout')


def test_seeded_scene_replays_identically_and_rests_on_the_table():
    a = scn.generate_scene(11, 4, 'pile', 'test')
    b = scn.generate_scene(11, 4, 'pile', 'test')
    c = scn.generate_scene(12, 4, 'pile', 'test')
    assert [o.name for o in a.objects] == [o.name for o in b.objects]
    for oa, ob in zip(a.objects, b.objects):
        np.testing.assert_allclose(oa.pose, ob.pose, atol=1e-9)
        np.testing.assert_allclose(oa.mesh.vertices, ob.mesh.vertices)
    assert [o.name for o in a.objects] != [o.name for o in c.objects] or \
        not np.allclose(a.objects[0].pose, c.objects[0].pose)
    assert [o.object_id for o in a.objects] == list(range(1, len(a.objects) + 1))
    for o in a.objects:
        lowest = o.mesh_world().vertices[:, 2].min()
        assert -0.004 < lowest < 0.2, (o.name, lowest)           # settled on the table
        assert 0.02 <= o.mesh.extents.max() <= 0.151, (o.name, o.mesh.extents)


def test_packed_scene_objects_stand_apart():
    s = scn.generate_scene(3, 4, 'packed', 'test')
    assert len(s.objects) >= 3
    for i, a in enumerate(s.objects):
        for b in s.objects[i + 1:]:
            pts = b.mesh_world().sample(400, seed=0)
            assert not a.contains(pts).any(), (a.name, b.name)


def test_render_depth_and_labels_match_the_geometry():
    s = scn.generate_scene(5, 3, 'packed', 'test')
    intr = CameraIntrinsics.d435(320, 240)
    T = scn.camera_look_at([0.0, -0.4, 0.45], [0, 0, 0.02])
    frame = scn.render_rgbd(s, intr, T, noise=False)
    assert frame.rgb.shape == (240, 320, 3) and frame.rgb.dtype == np.uint8
    assert frame.labels.dtype == np.int32
    assert set(np.unique(frame.labels)) <= {0} | {o.object_id for o in s.objects}
    assert (frame.labels > 0).any() and (frame.labels == 0).mean() > 0.5   # table visible
    np.testing.assert_allclose(frame.meta['T_world_camera'], T)
    # Table pixels back-project onto z = 0; object pixels lie on their own mesh.
    table_pts, table_pix = unproject(frame.depth, intr, mask=frame.labels == 0,
                                     return_pixels=True)
    assert np.abs(transform_points(T, table_pts)[:, 2]).max() < 1e-3
    for o in s.objects:
        pts = unproject(frame.depth, intr, mask=frame.labels == o.object_id)
        if len(pts) == 0:
            continue
        world = transform_points(T, pts)
        _, dist, _ = trimesh.proximity.closest_point(o.mesh_world(), world[:200])
        assert dist.max() < 2e-3, (o.name, dist.max())


def test_depth_noise_is_realistic_and_seeded():
    depth = np.full((120, 160), 0.6, np.float32)
    depth[40:80, 60:100] = 0.5                                    # an object edge
    depth[0, 0] = np.nan
    a = scn.apply_depth_noise(depth, np.random.default_rng(1))
    b = scn.apply_depth_noise(depth, np.random.default_rng(1))
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[np.isfinite(a)], b[np.isfinite(b)])
    assert np.isnan(a[0, 0])                                      # invalid stays invalid
    valid = np.isfinite(a)
    assert 0.9 < valid.mean() < 1.0                               # some dropout, not much
    edge = np.zeros_like(valid)
    edge[39:41, 60:100] = True
    assert (~valid[edge]).mean() > (~valid[~edge]).mean()         # dropout at edges
    assert np.nanmax(np.abs(a - depth)) < 0.05


def test_sample_scene_has_frame_and_ground_truth_meshes():
    d = REPO / 'samples' / 'tabletop'
    frame = load_frame_dir(d)
    meshes, T = scn.load_scene_meshes(d)
    assert set(meshes) == set(int(i) for i in np.unique(frame.labels) if i > 0)
    for oid, mesh in meshes.items():
        pts = unproject(frame.depth, frame.intrinsics, mask=frame.labels == oid)
        world = transform_points(T, pts[:: max(1, len(pts) // 100)])
        _, dist, _ = trimesh.proximity.closest_point(mesh, world)
        assert np.median(dist) < 0.01, (oid, np.median(dist))    # depth noise, mm quantised
    assert sum(p.stat().st_size for p in d.iterdir()) < 3e6


# ----------------------------------------------------------------------------- the cell

def _box_scene(size=(0.05, 0.10, 0.06), yaw=0.0, xy=(0.0, 0.0)):
    box = trimesh.creation.box(size)
    pose = np.eye(4)
    pose[:3, :3] = trimesh.transformations.rotation_matrix(yaw, [0, 0, 1])[:3, :3]
    pose[:3, 3] = [xy[0], xy[1], size[2] / 2]
    obj = objects.SceneObject(1, 'box', box, pose, None, 1.0, parts=[box], mass=0.2)
    return scn.Scene([obj], 0, 'packed', 'test')


def _top_down(x, y, z, closing):
    T = np.eye(4)
    T[:3, 0] = [0, 0, -1]
    T[:3, 1] = closing
    T[:3, 2] = np.cross(T[:3, 0], T[:3, 1])
    T[:3, 3] = [x, y, z]
    return T


@pytest.fixture(scope='module')
def cell():
    from zerograsp_ros.sim.cell import SimCell
    c = SimCell()
    yield c
    c.close()


def test_grasp_across_the_narrow_side_holds_and_thin_air_fails(cell):
    cell.load_scene(_box_scene())
    out = cell.execute_grasp(_top_down(0, 0, 0.045, [1, 0, 0]))
    assert out.success and out.object_id == 1, out
    assert cell.object_ids() == []                    # a held object is removed
    cell.load_scene(_box_scene())
    out = cell.execute_grasp(_top_down(0.0, 0.0, 0.25, [1, 0, 0]))
    assert not out.success and out.object_id == 0
    assert cell.object_ids() == [1]
    # Across the 10 cm side (wider than the 85 mm stroke) the fingers land on the box.
    out = cell.execute_grasp(_top_down(0, 0, 0.045, [0, 1, 0]))
    assert not out.success


def test_pick_through_move_tcp_and_gripper_lifts_the_object(cell):
    cell.load_scene(_box_scene(yaw=0.6, xy=(0.03, -0.02)))
    Tb = np.linalg.inv(cell.T_world_base)
    closing = [np.cos(0.6), np.sin(0.6), 0]
    ok, msg = cell.move_tcp(Tb @ _top_down(0.03, -0.02, 0.12, closing))
    assert ok, msg
    ok, msg = cell.move_tcp(Tb @ _top_down(0.03, -0.02, 0.045, closing), straight_line=True)
    assert ok, msg
    width, held = cell.gripper_command(-1.0, 40.0)
    assert held == 1 and 0.04 < width < 0.06
    ok, msg = cell.move_tcp(Tb @ _top_down(0.03, -0.02, 0.20, closing), straight_line=True)
    assert ok, msg
    assert cell.object_pose(1)[2, 3] > 0.1           # lifted with the gripper
    assert cell.gripper_command(0.085)[1] == 0        # released


def test_cell_rejects_bad_requests_with_the_cause(cell):
    Tb = np.linalg.inv(cell.T_world_base)
    far = Tb @ _top_down(1.5, 0, 0.1, [1, 0, 0])
    ok, msg = cell.move_tcp(far, dry_run=True)
    assert not ok and 'workspace' in msg
    below = Tb @ _top_down(0, 0, -0.05, [1, 0, 0])
    ok, msg = cell.move_tcp(below, dry_run=True)
    assert not ok and 'table' in msg
    bad = np.eye(4)
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match='finite'):
        cell.move_tcp(bad)
    with pytest.raises(InputError, match='stroke'):
        cell.gripper_command(0.2)
    with pytest.raises(InputError, match='no object with id'):
        cell.remove_object(99)
    with pytest.raises(InputError, match='width'):
        cell.execute_grasp(_top_down(0, 0, 0.1, [1, 0, 0]), width=float('nan'))
    with pytest.raises(InputError, match='orthonormal'):
        cell.execute_grasp(np.diag([2.0, 1.0, 1.0, 1.0]))
    ok, msg = cell.move_tcp(Tb @ _top_down(0, 0, 0.2, [1, 0, 0]), dry_run=True)
    assert ok, msg


def test_capture_sees_the_scene_from_the_configured_camera(cell):
    ids = cell.reset(seed=2, num_objects=3, layout='packed', split='test')
    frame = cell.capture()
    assert set(int(i) for i in np.unique(frame.labels) if i > 0) <= set(ids)
    assert len(np.unique(frame.labels)) >= 2
    np.testing.assert_allclose(frame.meta['T_world_camera'],
                               cell.T_world_base @ cell.T_base_camera, atol=1e-9)
    assert frame.frame_id == 'camera_color_optical_frame'
    # A reset with the same seed replays the same scene and the same noisy frame.
    cell.reset(seed=2, num_objects=3, layout='packed', split='test')
    again = cell.capture()
    np.testing.assert_array_equal(again.labels, frame.labels)
    np.testing.assert_array_equal(np.isnan(again.depth), np.isnan(frame.depth))
    np.testing.assert_allclose(again.depth[np.isfinite(again.depth)],
                               frame.depth[np.isfinite(frame.depth)])


def test_static_transforms_chain_to_the_camera_that_renders_the_images(cell):
    from dataclasses import replace

    from zerograsp_ros.sim.cell_config import cell_static_transforms

    transforms = cell_static_transforms(cell.config)
    assert [(parent, child) for parent, child, _ in transforms] == [
        ('world', 'panda_link0'), ('panda_link0', 'camera_color_optical_frame')]
    T_world_camera = transforms[0][2] @ transforms[1][2]
    np.testing.assert_allclose(T_world_camera, cell.T_world_camera, atol=1e-9)
    # The composed chain places the rendered table on z = 0 and the objects above it,
    # and its leaf is the frame the images are stamped with.
    cell.reset(seed=3, num_objects=3, layout='packed', split='test')
    frame = cell.capture()
    assert frame.frame_id == transforms[-1][1]
    table_z = transform_points(T_world_camera, unproject(frame.depth, frame.intrinsics,
                                                         mask=frame.labels == 0))[:, 2]
    assert len(table_z) > 1000
    assert abs(np.median(table_z)) < 3e-3 and np.percentile(np.abs(table_z), 90) < 1e-2
    object_z = transform_points(T_world_camera, unproject(frame.depth, frame.intrinsics,
                                                          mask=frame.labels > 0))[:, 2]
    assert np.median(object_z) > 0.005
    # A base frame named 'world' is fine with an identity T_world_base only.
    flat = replace(cell.config, base_frame='world', T_world_base=np.eye(4))
    assert [(a, b) for a, b, _ in cell_static_transforms(flat)] == [
        ('world', 'camera_color_optical_frame')]
    for bad, cause in [(replace(cell.config, base_frame='world'), 'not the identity'),
                       (replace(cell.config, camera_frame='panda_link0'), 'must differ'),
                       (replace(cell.config, camera_frame='/camera'), "leading '/'"),
                       (replace(cell.config, base_frame=''), 'not a valid tf2 frame id')]:
        with pytest.raises(InputError, match=cause):
            cell_static_transforms(bad)


# ----------------------------------------------------------------------------- baselines

def test_baselines_return_camera_frame_grasps_on_the_object(cell):
    from zerograsp_ros.sim import baselines
    from zerograsp_ros.sim.benchmark import table_plane_in_camera
    cell.load_scene(_box_scene(yaw=0.3))
    frame = cell.capture()
    plane = table_plane_in_camera(cell.T_world_camera)
    box = cell.current_scene().objects[0].mesh_world()
    for name, grasps in [
            ('random', baselines.random_grasps(frame, 20, np.random.default_rng(0), plane)),
            ('highest_point', baselines.highest_point_grasps(frame, table_plane=plane)),
            ('antipodal', baselines.antipodal_grasps(frame, 40, np.random.default_rng(0),
                                                     plane))]:
        assert len(grasps) > 0, name
        assert grasps.finite_mask().all()
        assert np.all(np.diff(grasps.scores) <= 1e-6), name
        world = grasps.transformed(cell.T_world_camera)
        best = world.translations[0] + world.depths[0] * world.rotations[0][:, 0]
        _, dist, _ = trimesh.proximity.closest_point(box, best[None].astype(np.float64))
        assert dist[0] < 0.06, (name, dist)
        assert world.rotations[0][2, 0] < 0                       # approaches downwards
    top = baselines.highest_point_grasps(frame, table_plane=plane)
    out = cell.execute_grasp(*_world_pose(top, cell.T_world_camera))
    assert out.success, out


def _world_pose(grasps, T_world_camera):
    world = grasps.transformed(T_world_camera)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = world.rotations[0], world.translations[0]
    return T, float(world.widths[0]), float(world.depths[0])


# ----------------------------------------------------------------------------- benchmark

def test_wilson_interval_and_mcnemar():
    from zerograsp_ros.sim.benchmark import mcnemar_exact, wilson_interval
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.404, abs=2e-3) and hi == pytest.approx(0.596, abs=2e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2 ** 10)


def test_benchmark_runs_end_to_end_on_a_tiny_size(tmp_path):
    out = tmp_path / 'cr'
    cmd = [sys.executable, str(REPO / 'benchmarks' / 'clutter_removal.py'),
           '--methods', 'random,highest_point', '--rounds', '1', '--layouts', 'packed',
           '--objects', '3', '--out', str(out), '--quiet']
    env = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.with_suffix('.json').read_text())
    for key in ('machine', 'date', 'command', 'methods', 'paired_first_attempts'):
        assert key in res
    for m in ('random', 'highest_point'):
        s = res['methods'][m]['all']
        assert s['attempts'] >= 1 and 0 <= s['gsr'] <= 1
        assert s['gsr_ci95'][0] <= s['gsr'] <= s['gsr_ci95'][1]
        assert s['objects_presented'] >= 1
        assert s['planning_s_median'] > 0
    first = {m: res['rounds'][m][0]['scene_seed'] for m in ('random', 'highest_point')}
    assert first['random'] == first['highest_point']              # same scenes for all
    assert out.with_suffix('.png').stat().st_size > 1000
    assert out.with_suffix('.md').read_text().count('|') > 10


def test_zerograsp_planners_run_on_a_random_init_checkpoint(cell, tmp_path):
    # Weights are random: this checks the wiring (frames, labels, refinement calls).
    torch = pytest.importorskip('torch')
    from zerograsp_ros.errors import CheckpointError
    from zerograsp_ros.model.checkpoint import save_checkpoint
    from zerograsp_ros.model.config import preset
    from zerograsp_ros.model.network import ZeroGraspNet
    from zerograsp_ros.sim import benchmark as bm
    with pytest.raises(CheckpointError, match='not found'):
        bm.load_predictor(str(tmp_path / 'missing.pt'))
    torch.manual_seed(0)
    ckpt = tmp_path / 'random.pt'
    save_checkpoint(ckpt, ZeroGraspNet(preset('cpu')), preset('cpu'))
    predictor = bm.load_predictor(str(ckpt))
    cell.load_scene(_box_scene())
    frame = cell.capture()
    plane = bm.table_plane_in_camera(cell.T_world_camera)
    sizes = {}
    for m in bm.ZEROGRASP_METHODS:
        grasps = bm.make_planner(m, predictor)(frame, plane, None)
        assert grasps.finite_mask().all(), m
        assert np.all(np.diff(grasps.scores) <= 1e-6), m
        assert set(grasps.object_ids.tolist()) <= {1}, m
        sizes[m] = len(grasps)
    assert sizes['zerograsp_raw'] >= 1
    assert sizes['zerograsp_full'] <= 50 and sizes['zerograsp_depth_cc'] <= 50
    assert sizes['zerograsp_paper_refine'] <= 50


# ----------------------------------------------------------------------------- ROS node

def _start_sim_cell_node(ros_domain, *params):
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain),
               PYTHONPATH=f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    args = [a for p in params for a in ('-p', p)]
    return subprocess.Popen(
        [sys.executable, '-m', 'zerograsp_ros.nodes.sim_cell_node', '--ros-args', *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc) -> str:
    """Terminate a node process and return everything it printed."""
    proc.terminate()
    try:
        return proc.communicate(timeout=10)[0] or ''
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0] or ''


@pytest.mark.ros
def test_sim_cell_node_publishes_realsense_topics_and_serves(ros_domain):
    import importlib.util

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from zerograsp_ros.srv import SimGripper, SimMoveTcp, SimResetScene

    node_proc = _start_sim_cell_node(ros_domain, 'publish_rate_hz:=4.0', 'num_objects:=3')
    output = ''
    rclpy.init()
    node = rclpy.create_node('sim_cell_test_client')
    got = {}
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    ns = '/camera/camera'
    topics = {'color': (Image, f'{ns}/color/image_raw'),
              'color_info': (CameraInfo, f'{ns}/color/camera_info'),
              'depth': (Image, f'{ns}/aligned_depth_to_color/image_raw'),
              'depth_info': (CameraInfo, f'{ns}/aligned_depth_to_color/camera_info')}
    for key, (typ, topic) in topics.items():
        node.create_subscription(typ, topic, lambda m, k=key: got.setdefault(k, m), qos)
    try:
        deadline = time.time() + 60
        while len(got) < 4 and time.time() < deadline and node_proc.poll() is None:
            rclpy.spin_once(node, timeout_sec=0.2)
        assert len(got) == 4, f'received {sorted(got)}; node output: {_drain(node_proc)}'
        color, depth = got['color'], got['depth']
        assert color.encoding == 'rgb8' and (color.width, color.height) == (640, 480)
        assert depth.encoding == '16UC1' and depth.step == 640 * 2
        assert depth.header.frame_id == 'camera_color_optical_frame'
        assert color.header.frame_id == 'camera_color_optical_frame'
        d = np.frombuffer(bytes(depth.data), np.uint16).reshape(480, 640)
        assert 300 < np.median(d[d > 0]) < 1200                     # millimetres
        assert got['color_info'].k[0] == pytest.approx(615.0)
        assert (got['depth_info'].width, got['depth_info'].height) == (640, 480)

        def call(srv_type, name, req):
            client = node.create_client(srv_type, name)
            assert client.wait_for_service(timeout_sec=20), name
            fut = client.call_async(req)
            rclpy.spin_until_future_complete(node, fut, timeout_sec=60)
            assert fut.done(), name
            return fut.result()

        res = call(SimResetScene, '/sim_cell/reset_scene',
                   SimResetScene.Request(seed=4, num_objects=2, layout='packed'))
        assert res.success and 1 <= len(res.object_ids) <= 2, res.message
        bad = call(SimResetScene, '/sim_cell/reset_scene',
                   SimResetScene.Request(seed=4, layout='heap'))
        assert not bad.success and 'layout' in bad.message
        req = SimMoveTcp.Request()
        req.target.header.frame_id = 'world'
        req.target.pose.orientation.w = 1.0
        res = call(SimMoveTcp, '/sim_cell/move_tcp', req)
        assert not res.success and 'base frame' in res.message
        res = call(SimGripper, '/sim_cell/gripper', SimGripper.Request(width=-1.0))
        assert res.success and not res.object_held and res.width < 0.005
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        output = _stop(node_proc)
    # publish_tf is on by default: without tf2_ros the node warned once (and still served
    # everything above); with it, the transforms were latched.
    if importlib.util.find_spec('tf2_ros') is None:
        assert output.count('TF is NOT published: tf2_ros is not installed') == 1, output
        assert "Fixed Frame to 'camera_color_optical_frame'" in output
    else:
        assert 'static TF latched on /tf_static' in output, output


@pytest.mark.ros
def test_sim_cell_node_latches_static_tf_from_base_to_camera(ros_domain):
    tf2_ros = pytest.importorskip(
        'tf2_ros', reason='tf2_ros is not installed (not on PyPI; it comes with a full ROS 2 '
                          'install): the static TF of the sim cell is checked there')
    import rclpy
    from rclpy.duration import Duration
    from rclpy.time import Time

    from zerograsp_ros.nodes.conversions import transform_stamped_to_matrix
    from zerograsp_ros.sim.cell_config import load_sim_cell_config

    config = load_sim_cell_config()
    node_proc = _start_sim_cell_node(ros_domain, 'publish_rate_hz:=1.0', 'num_objects:=1')
    rclpy.init()
    node = rclpy.create_node('sim_cell_tf_test')
    buffer = tf2_ros.Buffer()
    listener = tf2_ros.TransformListener(buffer, node)  # noqa: F841 (keeps the subscription)
    try:
        deadline = time.time() + 60
        while (not buffer.can_transform('panda_link0', 'camera_color_optical_frame', Time())
               and time.time() < deadline and node_proc.poll() is None):
            rclpy.spin_once(node, timeout_sec=0.2)
        base_camera = buffer.lookup_transform('panda_link0', 'camera_color_optical_frame',
                                              Time(), timeout=Duration(seconds=1))
        parent, child, T = transform_stamped_to_matrix(base_camera)
        assert (parent, child) == ('panda_link0', 'camera_color_optical_frame')
        np.testing.assert_allclose(T, config.T_base_camera, atol=1e-5)
        world_camera = buffer.lookup_transform('world', 'camera_color_optical_frame', Time())
        np.testing.assert_allclose(transform_stamped_to_matrix(world_camera)[2],
                                   config.T_world_camera, atol=1e-5)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        _stop(node_proc)


def _drain(proc) -> str:
    if proc.poll() is None:
        return '(still running)'
    return (proc.stdout.read() or '')[-2000:]
