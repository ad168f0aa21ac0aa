"""The browser view (nodes/web_view.py): what it draws, its controls, and a real browser.

- The gripper boxes it draws are the refinement's collision model (points in a drawn
  finger count as body points, points between the fingers as inner points).
- In process over DDS: meshes, grasps, the score threshold, show/hide per object, the
  /predict_grasps and dry-run /pick buttons, the executed grasp, the page served offline.
- In headless Chromium (Debian `chromium`, installed by scripts/setup.sh): `bringup
  --web-view` on the sample frame; the test clicks "Predict grasps" in the page and
  checks the screenshot for the objects' colours and the grasps' colours.
  `ZEROGRASP_WRITE_DOCS=1` copies that screenshot to docs/web_view.png.
"""
from __future__ import annotations

import os
from pathlib import Path
import re
import subprocess
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from support.headless_browser import HeadlessBrowser, decode_png, find_chromium  # noqa: E402
from support.ros_helpers import spin_until  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- pure core

def _grasps(rotations, translations, widths, depths, scores=None, object_ids=None):
    from zerograsp_ros.grasp.representation import GraspSet

    n = len(translations)
    scores = np.linspace(0.1, 0.9, n) if scores is None else scores
    object_ids = np.ones(n) if object_ids is None else object_ids
    return GraspSet(rotations, translations, widths, depths, scores, np.ones(n), np.ones(n),
                    object_ids)


def test_drawn_gripper_boxes_are_the_refinement_collision_model():
    from scipy.spatial.transform import Rotation

    from zerograsp_ros.grasp.gripper import BOX_NAMES, gripper_preset
    from zerograsp_ros.grasp.refinement import RefinementConfig, check_collisions
    from zerograsp_ros.perception.scene_view import gripper_boxes

    g = gripper_preset('robotiq_2f85')
    R = Rotation.from_euler('xyz', [0.3, -0.5, 1.1]).as_matrix()
    grasp = _grasps(R[None], [[0.1, -0.05, 0.6]], [0.04], [0.02])
    centres, sizes, rotations = gripper_boxes(grasp.rotations, grasp.translations,
                                              grasp.widths, grasp.depths, g)
    assert centres.shape == sizes.shape == (1, len(BOX_NAMES), 3)
    np.testing.assert_allclose(rotations[0], R, atol=1e-6)
    local = (centres[0] - grasp.translations[0]) @ R           # back in the gripper frame
    parts = dict(zip(BOX_NAMES, range(len(BOX_NAMES))))
    fingers = [parts['left_finger'], parts['right_finger']]
    # Fingers: inner faces at |y| = w/2, tips at the grasp depth, the model's sizes.
    np.testing.assert_allclose(np.abs(local[fingers, 1]) - sizes[0, fingers, 1] / 2, 0.02,
                               atol=1e-6)
    np.testing.assert_allclose(local[fingers, 0] + sizes[0, fingers, 0] / 2, 0.02, atol=1e-6)
    np.testing.assert_allclose(sizes[0, fingers[0]], [g.finger_length, g.finger_thickness,
                                                      g.finger_width])
    # The housing at the grasp pose (not swept back along the approach), behind the fingers.
    housing = parts['housing']
    np.testing.assert_allclose(sizes[0, housing], [g.housing_length, g.housing_width,
                                                   g.housing_height])
    np.testing.assert_allclose(local[housing, 0] + g.housing_length / 2,
                               0.02 - g.finger_length - g.palm_depth, atol=1e-6)
    # The collision check agrees: a point in each drawn box hits the body, one point
    # between the drawn fingers is inside the closing region.
    config = RefinementConfig(collision_voxel=0.0)
    for part in (*fingers, housing):
        hit = check_collisions(grasp, centres[0, part][None].astype(np.float32), g, config)
        assert hit['body_points'][0] == 1 and hit['inner_points'][0] == 0, BOX_NAMES[part]
    between = (grasp.translations[0] + R @ [0.01, 0.0, 0.0])[None].astype(np.float32)
    hit = check_collisions(grasp, between, g, config)
    assert hit['body_points'][0] == 0 and hit['inner_points'][0] == 1
    # A model without a housing draws its palm box once and no housing.
    thin = gripper_boxes(grasp.rotations, grasp.translations, grasp.widths, grasp.depths,
                         gripper_preset('franka_hand'))[1]
    assert (thin[0, parts['housing']] == 0).all() and (thin[0, parts['back']] > 0).all()


def test_scene_view_colours_table_and_cloud():
    from zerograsp_ros.geometry.camera import CameraIntrinsics
    from zerograsp_ros.perception import scene_view

    colours = {scene_view.object_rgb8(i) for i in range(1, 11)}
    assert len(colours) == 10                                   # distinct per object
    np.testing.assert_array_equal(scene_view.score_rgb8([0.0, 1.0]),
                                  [[255, 0, 26], [0, 255, 26]])  # red worst, green best
    np.testing.assert_allclose(scene_view.relative_scores([0.02, 0.05, 0.08],
                                                          [0.02, 0.08]), [0, 0.5, 1])
    assert scene_view.relative_scores([0.3], [0.3]).tolist() == [1.0]
    # A table 0.7 m in front of the camera, normal towards it, with a box on it.
    rng = np.random.default_rng(0)
    table = np.c_[rng.uniform(-0.3, 0.3, 4000), rng.uniform(-0.2, 0.2, 4000),
                  np.full(4000, 0.7)]
    box = np.c_[rng.uniform(0, 0.05, 300), rng.uniform(0, 0.05, 300), np.full(300, 0.65)]
    patch = scene_view.table_patch(np.array([0, 0, -1.0, 0.7]), np.r_[table, box])
    R = scene_view.wxyz_to_matrix(patch.wxyz)
    np.testing.assert_allclose(R[:, 2], [0, 0, -1], atol=1e-9)   # box z = table normal
    np.testing.assert_allclose(patch.position[2] + patch.size[2] / 2 * R[2, 2], 0.7,
                               atol=1e-9)                         # top face on the plane
    np.testing.assert_allclose(sorted(patch.size[:2]), [0.4, 0.6], atol=0.02)
    assert scene_view.table_patch(np.array([0, 0, -1.0, 0.7]), box) is None
    depth = np.full((48, 64), 0.5, np.float32)
    depth[0, 0], depth[0, 4] = 0.0, np.nan
    rgb = np.zeros((48, 64, 3), np.uint8)
    rgb[..., 0] = 200
    intr = CameraIntrinsics(fx=60.0, fy=60.0, cx=32.0, cy=24.0, width=64, height=48)
    points, cloud_rgb = scene_view.visible_cloud(depth, rgb, intr, stride=4)
    assert len(points) == 12 * 16 - 2 and (cloud_rgb[:, 0] == 200).all()
    np.testing.assert_allclose(points[:, 2], 0.5)
    assert (np.diff(np.unique(points[:, 0])) > 0.03).all()        # every 4th pixel only


# ----------------------------------------------------------------------------- in process

def _spin_until(executor, predicate, timeout=15.0):
    return spin_until(executor, predicate, timeout)


@pytest.mark.ros
def test_web_view_node_draws_and_its_controls_work(rclpy_initialised):
    import urllib.request

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from zerograsp_ros.grasp.representation import rotation_from_approach
    from zerograsp_ros.msg import GraspArray, SceneReconstruction
    from zerograsp_ros.nodes.common import (
        EXECUTED_GRASP_TOPIC,
        GRASPS_TOPIC,
        LATCHED_QOS,
        RECONSTRUCTION_TOPIC,
    )
    from zerograsp_ros.nodes.conversions import (
        ObjectShape,
        grasps_to_msg,
        make_header,
        scene_to_msg,
    )
    from zerograsp_ros.nodes.web_view import WebViewNode
    from zerograsp_ros.srv import PickObject, PredictGrasps

    header = make_header('camera_color_optical_frame', 5.0)
    rng = np.random.default_rng(1)
    cube_v = np.array([[x, y, z] for x in (0, .03) for y in (0, .03) for z in (.6, .63)])
    cube_f = np.array([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1]])
    objects = [ObjectShape(k, rng.normal(size=(30, 3)).astype(np.float32) * 0.01,
                           rng.normal(size=(30, 3)).astype(np.float32),
                           (cube_v + 0.05 * k).astype(np.float32), cube_f, 0.005)
               for k in (1, 2)]
    n = 16
    grasps = _grasps(rotation_from_approach(rng.normal(size=(n, 3))),
                     rng.normal(size=(n, 3)) * 0.05 + [0, 0, 0.6], np.full(n, 0.04),
                     np.full(n, 0.02), np.linspace(0.01, 0.09, n), object_ids=[1, 2] * 8)
    view = WebViewNode(parameter_overrides=[Parameter('port', value=0)])
    source = rclpy.create_node('web_view_source')
    scene_pub = source.create_publisher(SceneReconstruction, RECONSTRUCTION_TOPIC, LATCHED_QOS)
    scene_pub.publish(scene_to_msg(objects, header))
    source.create_publisher(GraspArray, GRASPS_TOPIC, LATCHED_QOS) \
        .publish(grasps_to_msg(grasps, header))
    executed_pub = source.create_publisher(GraspArray, EXECUTED_GRASP_TOPIC, LATCHED_QOS)
    calls = {'pick': [], 'predict': []}

    def on_pick(request, response):
        calls['pick'].append(request)
        executed_pub.publish(grasps_to_msg(grasps.subset([3]), header))  # what execution does
        response.success, response.message = True, 'dry run: every stage planned'
        return response

    def on_predict(request, response):
        calls['predict'].append(request)
        response.success, response.message = True, '0 grasps'
        return response

    source.create_service(PickObject, 'pick', on_pick)
    source.create_service(PredictGrasps, 'predict_grasps', on_predict)
    executor = SingleThreadedExecutor()
    for node in (view, source):
        executor.add_node(node)
    try:
        assert view.server.get_host() == '127.0.0.1'     # localhost only by default
        assert _spin_until(executor, lambda: set(view.objects) == {1, 2}
                           and view.grasps is not None)
        assert view._grasp_handle is not None
        shown = view.visible_grasps()
        assert len(shown) == 10                               # max_grasps, best first
        np.testing.assert_allclose(shown.scores, np.sort(grasps.scores)[::-1][:10], atol=1e-6)
        # Score threshold: the slider spans this prediction's scores.
        assert view.slider.max == pytest.approx(0.09)
        view.slider.value = 0.06
        view._draw_grasps()
        assert len(view.visible_grasps()) == int((grasps.scores >= 0.06).sum()) > 0
        assert (view.visible_grasps().scores >= 0.06).all()
        # Hide object 1: its mesh and its grasps go.
        view.objects[1]['checkbox'].value = False
        view._toggle_object(1)
        assert view.objects[1]['handle'].visible is False
        assert set(view.visible_grasps().object_ids.tolist()) == {2}
        # An unchanged object is not re-sent; a changed one is.
        handle = view.objects[2]['handle']
        scene_pub.publish(scene_to_msg(objects, header))
        assert _spin_until(executor, lambda: view.updates >= 4)
        assert view.objects[2]['handle'] is handle
        moved = [ObjectShape(2, o.points, o.normals, o.vertices + 0.01, o.faces, 0.005)
                 for o in objects[1:]]
        scene_pub.publish(scene_to_msg(moved, header))
        assert _spin_until(executor, lambda: 1 not in view.objects)   # object 1 gone
        assert view.objects[2]['handle'] is not handle
        # The buttons: a dry-run /pick (its grasp is highlighted) and /predict_grasps.
        assert _spin_until(executor, lambda: view.pick_client.service_is_ready()
                           and view.predict_client.service_is_ready())
        future = view.request_dry_run_pick()
        assert _spin_until(executor, lambda: future.done() and view.executed is not None)
        assert calls['pick'][0].dry_run is True and calls['pick'][0].object_id == -1
        assert view._executed_handle is not None and 'dry run' in view.answer.content
        assert 'executing the grasp on object' in view.status.content
        np.testing.assert_allclose(view.executed.translations, grasps.translations[[3]],
                                   atol=1e-6)
        future = view.request_prediction()
        assert _spin_until(executor, future.done)
        assert len(calls['predict']) == 1 and view.executed is None
        # The page and its client come from this server (nothing fetched from the internet).
        with urllib.request.urlopen(view.url, timeout=10) as page:
            html = page.read().decode()
        assert '<html' in html
        assert not re.findall(r'(?:src|href)="https?://', html), 'page loads remote assets'
    finally:
        executor.shutdown()
        view.destroy_node()
        source.destroy_node()


# ----------------------------------------------------------------------------- real browser

def _chromium_or_skip():
    if find_chromium() is None:
        pytest.skip('chromium is not installed (scripts/setup.sh installs Debian `chromium`; '
                    'its apt-get failed or was not run here)')


def colour_mask(image: np.ndarray, rgb, tolerance: float = 0.035) -> np.ndarray:
    """Pixels of the colour `rgb` under any lighting: same chromaticity, clearly coloured."""
    img = image[..., :3].astype(np.float64)
    total = img.sum(-1, keepdims=True)
    target = np.asarray(rgb, dtype=np.float64)
    chroma = img / np.maximum(total, 1.0)
    distance = np.abs(chroma - target / target.sum()).max(-1)
    saturated = img.max(-1) - img.min(-1) > 40
    return (distance < tolerance) & saturated & (total[..., 0] > 90)


# Share of the pixels the grasps change that must be in the score colours: the opaque
# fingers are; the see-through housing mixes its colour with what lies behind it.
RAMP_SHARE = 0.35


def settled_change(browser, reference: np.ndarray, timeout: float = 30.0) -> np.ndarray:
    """The page once it differs from `reference` and has stopped changing.

    Software WebGL on a busy machine can take seconds per frame.
    """
    deadline = time.monotonic() + timeout
    image = decode_png(browser.screenshot())
    while (np.abs(image.astype(int) - reference.astype(int)).sum(-1) > 60).sum() < 300 \
            and time.monotonic() < deadline:
        time.sleep(0.5)
        image = decode_png(browser.screenshot())
    while time.monotonic() < deadline:
        time.sleep(1.0)
        again = decode_png(browser.screenshot())
        if (np.abs(again.astype(int) - image.astype(int)).sum(-1) > 60).sum() < 50:
            return again
        image = again
    return image


def score_ramp_mask(image: np.ndarray) -> np.ndarray:
    """Pixels in the grasps' red-yellow-green score ramp (hue -20..135 deg, saturated)."""
    img = image[..., :3].astype(np.float64)
    hi, lo = img.max(-1), img.min(-1)
    chroma = np.maximum(hi - lo, 1e-9)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    hue = np.where(hi == r, ((g - b) / chroma) % 6, np.where(hi == g, (b - r) / chroma + 2,
                                                              (r - g) / chroma + 4)) * 60.0
    return ((hue >= 340) | (hue <= 135)) & ((hi - lo) > 0.2 * hi) & (hi > 60)


@pytest.mark.ros
@pytest.mark.slow
def test_web_view_in_headless_chromium_shows_meshes_and_grasps(rclpy_initialised, tmp_path):
    _chromium_or_skip()
    import rclpy

    from zerograsp_ros.msg import GraspArray, SceneReconstruction
    from zerograsp_ros.nodes.common import GRASPS_TOPIC, LATCHED_QOS, RECONSTRUCTION_TOPIC
    from zerograsp_ros.nodes.conversions import msg_to_grasps
    from zerograsp_ros.perception import scene_view

    params = tmp_path / 'params.yaml'
    params.write_text('grasp_node:\n  ros__parameters:\n    torch_threads: 1\n'
                      'refinement_node:\n  ros__parameters:\n    torch_threads: 1\n')
    log_path = tmp_path / 'bringup.log'
    log = open(log_path, 'w')
    graph = subprocess.Popen(
        [sys.executable, '-m', 'zerograsp_ros.nodes.bringup', '--no-respawn',
         '--perception-only', '--camera-source', 'replay', '--replay-dir',
         str(REPO / 'samples' / 'tabletop'), '--device', 'cpu', '--no-visualization',
         '--params-file', str(params), '--web-view', '--web-port', '0'],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO))
    node = rclpy.create_node('web_view_probe')
    received = {}
    node.create_subscription(GraspArray, GRASPS_TOPIC,
                             lambda m: received.__setitem__('grasps', m), LATCHED_QOS)
    node.create_subscription(SceneReconstruction, RECONSTRUCTION_TOPIC,
                             lambda m: received.__setitem__('scene', m), LATCHED_QOS)
    try:
        deadline = time.monotonic() + 180
        url = None
        while url is None and time.monotonic() < deadline:
            assert graph.poll() is None, log_path.read_text()[-3000:]
            found = re.search(r'open (http://127\.0\.0\.1:\d+) in a browser',
                              log_path.read_text())
            url = found.group(1) if found else None
            time.sleep(0.5)
        assert url, f'no web view URL in the log:\n{log_path.read_text()[-3000:]}'
        with HeadlessBrowser() as browser:
            browser.open(url)
            while not browser.has_button('Predict grasps'):   # the page is up
                assert time.monotonic() < deadline, 'the page never showed its controls'
                time.sleep(1.0)
            time.sleep(3.0)   # camera cloud and table, no prediction yet
            browser.dismiss_notifications()
            before = decode_png(browser.screenshot())
            assert browser.click_button('Predict grasps')
            waited = last_click = time.monotonic()
            while 'scene' not in received or 'grasps' not in received:
                rclpy.spin_once(node, timeout_sec=0.5)
                assert graph.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() - waited < 300, 'no prediction arrived within 300 s'
                if time.monotonic() - last_click > 60:   # clicked before the service was up
                    browser.click_button('Predict grasps')
                    last_click = time.monotonic()
            scene, grasps = received['scene'], msg_to_grasps(received['grasps'])
            ids = [o.object_id for o in scene.objects if o.mesh.triangles]
            assert ids and len(grasps)

            def object_counts(image):
                return {i: int(colour_mask(image, scene_view.object_rgb8(i)).sum()) for i in ids}

            base_objects = object_counts(before)
            shot_deadline = time.monotonic() + 120
            while True:
                time.sleep(2.0)
                browser.dismiss_notifications()   # 'software WebGL' notice of SwiftShader
                png = browser.screenshot()
                with_grasps = decode_png(png)
                assert browser.click_checkbox('Grasps')      # hide the grasps ...
                without = settled_change(browser, with_grasps)
                assert browser.click_checkbox('Grasps')      # ... and show them again
                settled_change(browser, without)
                objects = object_counts(without)
                seen = [i for i in ids if objects[i] >= 40 and objects[i] > 3 * base_objects[i]]
                grasp_pixels = np.abs(with_grasps.astype(int) - without.astype(int)).sum(-1) > 60
                in_ramp = score_ramp_mask(with_grasps) & grasp_pixels
                ok = (len(seen) >= max(1, len(ids) - 1) and grasp_pixels.sum() >= 400
                      and in_ramp.sum() >= max(400, RAMP_SHARE * grasp_pixels.sum()))
                if ok or time.monotonic() > shot_deadline:
                    break
            (tmp_path / 'web_view.png').write_bytes(png)
            background = np.abs(with_grasps.astype(int)
                                - with_grasps[5, 400].astype(int)).sum(-1) > 30
            report = (f'objects {ids}: pixels {objects} (before the prediction '
                      f'{base_objects}); grasp pixels {int(grasp_pixels.sum())}, '
                      f'{int(in_ramp.sum())} of them in the score colours; non-background '
                      f'{background.mean():.2f}; screenshot {tmp_path / "web_view.png"}')
            assert background.mean() > 0.1, report
            # Every object's mesh in its colour (one may hide behind the others) ...
            assert len(seen) >= max(1, len(ids) - 1), report
            # ... and the grasps: what the 'Grasps' checkbox hides, in the red-green ramp.
            assert grasp_pixels.sum() >= 400, report
            assert in_ramp.sum() >= max(400, RAMP_SHARE * grasp_pixels.sum()), report
            if os.environ.get('ZEROGRASP_WRITE_DOCS'):
                (REPO / 'docs' / 'web_view.png').write_bytes(png)
            print(report)
    finally:
        node.destroy_node()
        graph.send_signal(2)
        try:
            graph.wait(timeout=30)
        except subprocess.TimeoutExpired:
            graph.kill()
            graph.wait()
        log.close()
