"""Single nodes in process over real DDS: camera pairing, markers, parameter validation."""
from pathlib import Path
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from support.ros_helpers import FakeRealsense, spin_until  # noqa: E402

pytestmark = pytest.mark.ros


def _image_pair(stamp, width=64, height=48, depth_mm=600):
    from zerograsp_ros.nodes.conversions import make_header, numpy_to_image

    header = make_header('camera_color_optical_frame', stamp)
    color = numpy_to_image(np.full((height, width, 3), 90, np.uint8), 'rgb8', header)
    depth = numpy_to_image(np.full((48, 64), depth_mm, np.uint16), '16UC1',
                           make_header('camera_color_optical_frame', stamp))
    return color, depth


def test_camera_node_pairs_realsense_topics_by_stamp_and_drops_bad_frames(rclpy_initialised):
    from rclpy.parameter import Parameter

    from zerograsp_ros.geometry.camera import CameraIntrinsics
    from zerograsp_ros.nodes.camera_node import CameraNode
    from zerograsp_ros.nodes.conversions import rgbd_msg_to_frame, stamp_to_seconds

    camera = CameraNode(parameter_overrides=[Parameter('sync_tolerance', value=0.01)])
    driver = FakeRealsense(camera)
    frames = driver.frames
    try:
        driver.connect(CameraIntrinsics(60.0, 60.0, 32.0, 24.0, 64, 48))
        # depth 5 ms after colour: within tolerance -> one frame with the colour stamp
        color, depth = _image_pair(100.000)
        _, depth_late = _image_pair(100.005)
        driver.publish(color, depth_late)
        assert driver.spin_until(lambda: len(frames) == 1)
        assert stamp_to_seconds(frames[0].header.stamp) == pytest.approx(100.0)
        frame = rgbd_msg_to_frame(frames[0])
        assert np.allclose(frame.depth, 0.6) and frame.intrinsics.fx == 60.0
        # 50 ms apart: no pair
        color, _ = _image_pair(101.0)
        _, depth = _image_pair(101.05)
        driver.publish(color, depth)
        driver.spin_until(lambda: len(frames) > 1, timeout=1.5)
        assert len(frames) == 1
        # colour size differs from depth: reported, counted, not published
        driver.publish(*_image_pair(102.0, width=32, height=24))
        assert driver.spin_until(lambda: camera.rejected == 1)
        assert 'does not match depth size' in camera.last_problem
        # the newest matching pair wins over an older unmatched colour
        for stamp in (103.0, 103.2):
            driver.publish(*_image_pair(stamp))
        assert driver.spin_until(lambda: len(frames) == 3)
        assert [round(stamp_to_seconds(f.header.stamp), 3) for f in frames[1:]] == \
            [103.0, 103.2]
    finally:
        driver.close()


def test_camera_node_replay_publishes_the_recorded_frame(rclpy_initialised, tmp_path):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from zerograsp_ros.geometry.camera import CameraIntrinsics
    from zerograsp_ros.geometry.rgbd import RGBDFrame as Frame
    from zerograsp_ros.geometry.rgbd import save_frame_dir
    from zerograsp_ros.msg import RGBDFrame
    from zerograsp_ros.nodes.camera_node import CameraNode
    from zerograsp_ros.nodes.common import FRAME_QOS, RGBD_FRAME_TOPIC
    from zerograsp_ros.nodes.conversions import rgbd_msg_to_frame

    rng = np.random.default_rng(1)
    depth = rng.uniform(0.4, 0.9, (48, 64)).astype(np.float32)
    depth[:4] = np.nan
    recorded = Frame(rng.integers(0, 255, (48, 64, 3)).astype(np.uint8), depth,
                     CameraIntrinsics(60.0, 60.0, 32.0, 24.0, 64, 48))
    save_frame_dir(recorded, tmp_path / 'f0')
    save_frame_dir(recorded, tmp_path / 'f1')
    camera = CameraNode(parameter_overrides=[
        Parameter('source', value='replay'), Parameter('replay_dir', value=str(tmp_path)),
        Parameter('replay_rate', value=20.0), Parameter('replay_loop', value=False)])
    probe = rclpy.create_node('replay_probe')
    frames = []
    probe.create_subscription(RGBDFrame, RGBD_FRAME_TOPIC, frames.append, FRAME_QOS)
    executor = SingleThreadedExecutor()
    for n in (camera, probe):
        executor.add_node(n)
    try:
        assert spin_until(executor, lambda: camera.published == 2)
        spin_until(executor, lambda: len(frames) == 2, timeout=3.0)
        assert len(frames) >= 1
        frame = rgbd_msg_to_frame(frames[0])
        np.testing.assert_array_equal(frame.rgb, recorded.rgb)
        assert np.allclose(frame.depth, recorded.depth, atol=0.0006, equal_nan=True)
        time.sleep(0.2)
        executor.spin_once(timeout_sec=0.1)
        assert camera.published == 2  # replay_loop false: stops after the last frame
    finally:
        executor.shutdown()
        camera.destroy_node()
        probe.destroy_node()


def test_bad_parameters_stop_a_node_with_the_parameter_named(rclpy_initialised, tmp_path):
    from rclpy.parameter import Parameter

    from zerograsp_ros.errors import InputError
    from zerograsp_ros.nodes.camera_node import CameraNode
    from zerograsp_ros.nodes.refinement_node import RefinementNode
    from zerograsp_ros.nodes.segmentation_node import SegmentationNode

    with pytest.raises(InputError, match="parameter 'source'.*'kinect'"):
        CameraNode(parameter_overrides=[Parameter('source', value='kinect')])
    with pytest.raises(InputError, match='replay_dir'):
        CameraNode(parameter_overrides=[Parameter('source', value='replay')])
    with pytest.raises(InputError, match='no recorded frames'):
        CameraNode(parameter_overrides=[Parameter('source', value='replay'),
                                        Parameter('replay_dir', value=str(tmp_path))])
    with pytest.raises(InputError, match='min_height < max_height'):
        SegmentationNode(parameter_overrides=[Parameter('tabletop.min_height', value=0.9)])
    with pytest.raises(InputError, match="unknown gripper preset 'robotiq_3f'"):
        RefinementNode(parameter_overrides=[Parameter('gripper', value='robotiq_3f')])
    from zerograsp_ros.errors import CheckpointError
    from zerograsp_ros.nodes.grasp_node import GraspNode

    with pytest.raises(CheckpointError, match='does not exist'):
        GraspNode(parameter_overrides=[Parameter('checkpoint', value=str(tmp_path / 'x.pt')),
                                       Parameter('device', value='cpu')])


def test_visualization_markers_meshes_and_scored_grippers(rclpy_initialised):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import PointCloud2
    from visualization_msgs.msg import Marker, MarkerArray

    from zerograsp_ros.grasp.representation import GraspSet, rotation_from_approach
    from zerograsp_ros.msg import GraspArray, SceneReconstruction
    from zerograsp_ros.nodes.common import (
        GRASPS_TOPIC,
        LATCHED_QOS,
        MARKERS_TOPIC,
        RECONSTRUCTION_CLOUD_TOPIC,
        RECONSTRUCTION_TOPIC,
    )
    from zerograsp_ros.nodes.conversions import (
        ObjectShape,
        cloud_to_points,
        grasps_to_msg,
        make_header,
        scene_to_msg,
    )
    from zerograsp_ros.nodes.visualization_node import VisualizationNode

    header = make_header('camera_color_optical_frame', 5.0)
    rng = np.random.default_rng(0)
    objects = [ObjectShape(k, rng.normal(size=(20, 3)).astype(np.float32),
                           rng.normal(size=(20, 3)).astype(np.float32),
                           rng.normal(size=(6, 3)).astype(np.float32),
                           np.array([[0, 1, 2], [3, 4, 5]] * k), 0.005) for k in (1, 2)]
    n = 15
    grasps = GraspSet(rotation_from_approach(rng.normal(size=(n, 3))), rng.normal(size=(n, 3)),
                      np.full(n, 0.05), np.full(n, 0.02), np.linspace(0, 1, n), np.ones(n),
                      np.ones(n), np.ones(n))
    viz = VisualizationNode()
    source = rclpy.create_node('viz_source')
    # Published BEFORE anyone listens: transient local must still deliver it.
    source.create_publisher(SceneReconstruction, RECONSTRUCTION_TOPIC, LATCHED_QOS) \
        .publish(scene_to_msg(objects, header))
    source.create_publisher(GraspArray, GRASPS_TOPIC, LATCHED_QOS) \
        .publish(grasps_to_msg(grasps, header))
    arrays, clouds = [], []
    late = rclpy.create_node('late_rviz')
    executor = SingleThreadedExecutor()
    for node in (viz, source, late):
        executor.add_node(node)
    try:
        assert spin_until(executor, lambda: viz.published >= 2)
        late.create_subscription(MarkerArray, MARKERS_TOPIC, arrays.append, LATCHED_QOS)
        late.create_subscription(PointCloud2, RECONSTRUCTION_CLOUD_TOPIC, clouds.append,
                                 LATCHED_QOS)
        assert spin_until(executor, lambda: arrays and clouds)
        markers = arrays[-1].markers
        assert markers[0].action == Marker.DELETEALL
        meshes = [m for m in markers if m.type == Marker.TRIANGLE_LIST]
        assert [m.ns for m in meshes] == ['object_1', 'object_2']
        assert [len(m.points) for m in meshes] == [6, 12]  # 3 points per triangle
        assert meshes[0].color != meshes[1].color
        grippers = [m for m in markers if m.type == Marker.LINE_LIST]
        assert len(grippers) == 10  # max_grasp_markers default
        assert all(len(m.points) == 10 and m.header.frame_id == header.frame_id
                   for m in grippers)
        # best first, green for high scores, red for low ones
        assert grippers[0].color.g > 0.9 and grippers[0].color.r < 0.1
        assert grippers[0].color.g > grippers[-1].color.g
        cloud = cloud_to_points(clouds[-1], ('x', 'y', 'z', 'object_id'))
        assert len(cloud) == 40 and set(cloud[:, 3]) == {1.0, 2.0}
    finally:
        executor.shutdown()
        for node in (viz, source, late):
            node.destroy_node()


def test_grasp_node_continuous_mode_publishes_while_frames_keep_flowing(rclpy_initialised,
                                                                      tmp_path):
    """Inference runs in its own callback group: frames arrive during it; results are published."""
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter
    import torch

    from zerograsp_ros.geometry.rgbd import load_frame_dir
    from zerograsp_ros.model.checkpoint import save_checkpoint
    from zerograsp_ros.model.config import preset
    from zerograsp_ros.model.network import ZeroGraspNet
    from zerograsp_ros.msg import GraspArray, RGBDFrame
    from zerograsp_ros.nodes.common import FRAME_QOS, GRASPS_TOPIC, LATCHED_QOS, RGBD_FRAME_TOPIC
    from zerograsp_ros.nodes.conversions import frame_to_rgbd_msg, msg_to_grasps
    from zerograsp_ros.nodes.grasp_node import GraspNode

    sample = Path(__file__).resolve().parents[1] / 'samples' / 'tabletop'
    if not sample.is_dir():
        pytest.skip('samples/tabletop not shipped')
    torch.manual_seed(0)
    save_checkpoint(tmp_path / 'random.pt', ZeroGraspNet(preset('cpu')), preset('cpu'))
    node = GraspNode(parameter_overrides=[
        Parameter('checkpoint', value=str(tmp_path / 'random.pt')),
        Parameter('device', value='cpu'), Parameter('continuous', value=True),
        Parameter('continuous_period', value=0.2),
        Parameter('continuous_refine', value=False)])
    frame = load_frame_dir(sample)
    camera = rclpy.create_node('fake_camera')
    pub = camera.create_publisher(RGBDFrame, RGBD_FRAME_TOPIC, FRAME_QOS)
    stamps, results = [], []

    def publish():
        stamps.append(round(time.time(), 3))
        pub.publish(frame_to_rgbd_msg(frame, stamp=stamps[-1]))

    camera.create_timer(0.1, publish)
    camera.create_subscription(GraspArray, GRASPS_TOPIC, results.append, LATCHED_QOS)
    executor = MultiThreadedExecutor(num_threads=4)
    for n in (node, camera):
        executor.add_node(n)
    try:
        assert spin_until(executor, lambda: node.predictions >= 1 and results, timeout=120)
        before = node.frames_received
        started = time.monotonic()
        assert spin_until(executor, lambda: node.predictions >= 2, timeout=120)
        elapsed = time.monotonic() - started
        # 10 Hz camera: frames kept arriving while the second prediction ran.
        assert node.frames_received - before >= max(1, int(0.4 * 10 * elapsed))
        g = msg_to_grasps(results[-1])
        assert len(g) >= 1 and g.finite_mask().all()
        assert round(results[-1].header.stamp.sec + results[-1].header.stamp.nanosec * 1e-9,
                     3) in stamps
    finally:
        executor.shutdown()
        node.destroy_node()
        camera.destroy_node()
