"""Bounded requests and checked answers (issue 16): the checks themselves, fast.

Each test here is the regression test of one case the hostile-input review found;
test_robustness.py sends the same cases over DDS to the running nodes, and
benchmarks/fuzz_services.py sends 10,000 of them.
"""
import importlib.util
from pathlib import Path
import resource
import threading
import time

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ros   # the checks read ROS messages


def _camera_info(K, width=640, height=480):
    from sensor_msgs.msg import CameraInfo

    return CameraInfo(width=width, height=height, k=[float(v) for v in np.ravel(K)])


D435 = [[615.0, 0.0, 320.0], [0.0, 615.0, 240.0], [0.0, 0.0, 1.0]]


def test_plausible_intrinsics_pass():
    from zerograsp_ros.nodes.conversions import camera_info_to_intrinsics

    intr = camera_info_to_intrinsics(_camera_info(D435))
    assert (intr.fx, intr.cx) == (615.0, 320.0)


@pytest.mark.parametrize('change, cause', [
    ({(0, 0): 1e-12, (1, 1): 1e-12}, 'focal length fx = 1e-12 px is implausibly small'),
    ({(2, 2): 0.0}, 'last row [0, 0, 1]'),
    ({(0, 1): 300.0}, 'skew K[0][1] = 300 is implausible'),
    ({(1, 0): 2.0}, 'K[1][0] must be 0'),
    ({(0, 2): 5000.0}, 'principal point'),
    ({(1, 1): float('inf')}, 'NaN/inf'),
])
def test_implausible_intrinsics_are_refused_with_the_cause(change, cause):
    """Implausible K: refused, the message names the cause.

    Tiny focal lengths reached Open3D ('voxel_size is too small', in ANSI colours);
    K[2][2] = 0 and an absurd skew were used silently.
    """
    from zerograsp_ros.errors import InputError
    from zerograsp_ros.nodes.conversions import camera_info_to_intrinsics

    K = np.array(D435)
    for index, value in change.items():
        K[index] = value
    with pytest.raises(InputError) as info:
        camera_info_to_intrinsics(_camera_info(K))
    assert cause in str(info.value)
    assert '\x1b' not in str(info.value)


def test_internal_error_text_loses_terminal_colour_codes():
    from zerograsp_ros.nodes.request_limits import plain_message

    text = '\x1b[1;31m[Open3D ERROR] voxel_size is too small.\x1b[0;m\n  more'
    assert plain_message(text) == '[Open3D ERROR] voxel_size is too small. more'
    assert len(plain_message('x' * 5000)) == 400


def test_a_pose_always_carries_a_frame():
    from std_msgs.msg import Header

    from zerograsp_ros.nodes.conversions import DEFAULT_CAMERA_FRAME, response_header

    assert response_header(Header(frame_id='')).frame_id == DEFAULT_CAMERA_FRAME
    assert response_header(Header(frame_id='cam')).frame_id == 'cam'


@pytest.mark.parametrize('ids, scores, cause', [
    ([1, 2], [0.9], '1 scores for 2 object ids'),
    ([1, 2], [0.9, float('nan')], 'finite and within [0, 1]'),
    ([1], [7.0], 'finite and within [0, 1]'),
    ([], [0.5], '1 scores for 0 object ids'),
])
def test_mask_scores_of_the_wrong_length_or_nan_are_refused(ids, scores, cause):
    from zerograsp_ros.errors import InputError
    from zerograsp_ros.msg import InstanceMasks
    from zerograsp_ros.nodes.request_limits import check_mask_scores

    with pytest.raises(InputError, match=cause.replace('[', r'\[').replace(']', r'\]')):
        check_mask_scores(InstanceMasks(object_ids=ids, scores=scores))
    check_mask_scores(InstanceMasks(object_ids=[1, 2], scores=[0.5, 1.0]))
    check_mask_scores(InstanceMasks(object_ids=[1, 2]))


def test_many_ids_label_image_is_refused_fast():
    """Random ids 0..10000 per pixel drove grasp_node to 21.5 GB and the OOM killer."""
    from zerograsp_ros.errors import InputError
    from zerograsp_ros.nodes.request_limits import RequestLimits, check_label_counts

    labels = np.random.default_rng(0).integers(0, 10001, (480, 640)).astype(np.int32)
    start = time.perf_counter()
    with pytest.raises(InputError, match='10000 object ids, more than limits.max_objects = 32'):
        check_label_counts(labels, RequestLimits())
    assert time.perf_counter() - start < 1.0
    few = np.zeros((480, 640), np.int32)
    few[:100, :100], few[200, 200] = 1, 2          # object 2: a single pixel
    with pytest.raises(InputError, match=r'object id\(s\) \[2\] have fewer than'):
        check_label_counts(few, RequestLimits())
    few[200:210, 200:210] = 2
    check_label_counts(few, RequestLimits())


def test_image_size_and_grasp_count_limits_name_the_parameter():
    from sensor_msgs.msg import Image

    from zerograsp_ros.errors import InputError
    from zerograsp_ros.msg import Grasp, GraspArray, SceneReconstruction
    from zerograsp_ros.nodes.request_limits import (
        RequestLimits,
        check_image_size,
        check_max_grasps,
        check_refine_request_size,
    )

    with pytest.raises(InputError, match='3840x2160 = 8294400 pixels, more than '
                                         'limits.max_image_pixels'):
        check_image_size(Image(width=3840, height=2160), 'colour image', RequestLimits())
    check_image_size(Image(width=1920, height=1080), 'colour image', RequestLimits())
    grasps = GraspArray(grasps=[Grasp() for _ in range(21)])
    with pytest.raises(InputError, match='21 grasps, more than limits.max_request_grasps = 20'):
        check_refine_request_size(grasps, SceneReconstruction(),
                                  RequestLimits(max_request_grasps=20))
    with pytest.raises(InputError, match='max_grasps must be >= 0'):
        check_max_grasps(-5)


def test_requests_queue_with_a_bounded_wait_then_busy():
    from zerograsp_ros.errors import InputError
    from zerograsp_ros.nodes.request_limits import Admission, Deadline

    admission = Admission(max_waiting=1, max_wait=0.5)
    release = threading.Event()
    results = []

    def hold():
        with admission.slot():
            release.wait(5)

    def wait_for_model():
        try:
            with admission.slot():
                results.append('ran')
        except InputError as exc:
            results.append(str(exc))

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.1)
    waiter = threading.Thread(target=wait_for_model)
    waiter.start()
    time.sleep(0.1)
    start = time.monotonic()
    with pytest.raises(InputError, match='busy: 1 request'):   # the queue is full: at once
        with admission.slot():
            pass
    assert time.monotonic() - start < 0.1
    waiter.join()                                              # waited 0.5 s, then refused
    assert 'stayed taken by other requests for 0.5 s' in results[0]
    release.set()
    holder.join()
    with admission.slot(Deadline(1.0)):                        # free again
        pass
    deadline = Deadline(0.01)
    time.sleep(0.02)
    with pytest.raises(InputError, match='deadline of 0.01 s'):
        deadline.check('the network')


def test_attention_over_many_objects_needs_no_token_by_token_mask():
    """The transformer's (T, T) scene mask once asked for 114 GB on a many-ids request.

    One scene: no mask, same result as the masked version, memory linear in T.
    """
    import torch

    from zerograsp_ros.model.config import preset
    from zerograsp_ros.model.transformer import MultiObjectEncoder

    torch.manual_seed(0)
    encoder = MultiObjectEncoder(preset('cpu')).eval()
    w = preset('cpu').latent_channels
    x, pos = torch.randn(50, w), torch.rand(50, 3)
    with torch.no_grad():
        unmasked = encoder(x, pos, torch.zeros(50, dtype=torch.long))
        masked = x
        allowed = torch.ones(50, 50, dtype=torch.bool)
        for blk in encoder.blocks:
            masked = blk(masked, pos, allowed)
        assert torch.allclose(unmasked, encoder.norm(masked), atol=1e-5)
        two = encoder(x, pos, torch.arange(50) % 2)          # two scenes stay apart
        assert torch.allclose(two[::2], encoder(x[::2], pos[::2],
                                                torch.zeros(25, dtype=torch.long)), atol=1e-5)
        t = 30000                                   # a (T, T) float mask alone: 3.6 GB
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        encoder(torch.randn(t, w), torch.rand(t, 3), torch.zeros(t, dtype=torch.long))
        grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    assert grown < 1000, f'attention over {t} tokens grew RSS by {grown:.0f} MB'


# --------------------------------------------------------------------------- launch plumbing

def test_launch_values_are_written_under_the_node_name_not_the_wildcard():
    """Launch values go to a node-named section, after the config's.

    launch_ros puts a parameter dict under '/**', which a node section of
    config/perception.yaml beats: checkpoint:=, device:=, camera_source:= were ignored.
    """
    import yaml

    from zerograsp_ros.nodes.graph import perception_nodes

    specs = {s.name: s for s in perception_nodes('replay', '/data/frames', '/x.pt', 'cuda')}
    for name, expected in (('grasp_node', {'checkpoint': '/x.pt', 'device': 'cuda'}),
                           ('camera_node', {'source': 'replay', 'replay_dir': '/data/frames'})):
        path = specs[name].override_params_file()
        try:
            assert yaml.safe_load(Path(path).read_text()) == \
                {name: {'ros__parameters': expected}}
        finally:
            Path(path).unlink()
        config = yaml.safe_load((REPO / 'config' / 'perception.yaml').read_text())
        assert name in config, 'the config has a section of the same key, which this follows'
    assert specs['segmentation_node'].override_params_file() is None


def test_missing_optional_package_stops_before_anything_starts(monkeypatch):
    """rviz:=true without rviz2 used to fail after the 7 nodes had started, leaving them."""
    from zerograsp_ros.errors import InputError
    from zerograsp_ros.nodes import graph

    monkeypatch.setattr(graph, 'missing_packages',
                        lambda packages: [p for p in packages if p in ('rviz2', 'franka_x')])
    started = []
    monkeypatch.setattr(graph, 'node_actions', lambda specs: started.append(specs) or [])
    with pytest.raises(InputError) as info:
        graph.launch_actions(graph.pick_scene_nodes(), [
            {'package': 'franka_x', 'launch': 'arm.launch.py', 'arguments': {}}], rviz=True)
    message = str(info.value)
    assert "'rviz2'" in message and "'franka_x'" in message and 'nothing was started' in message
    assert 'rviz:=false' in message
    assert not started


def test_launch_files_pass_every_argument_to_the_graph():
    """Each launch argument changes the NodeSpec of the node that owns it."""
    def load(name):
        spec = importlib.util.spec_from_file_location(name.replace('.', '_'),
                                                      REPO / 'launch' / name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    perception = load('perception.launch.py')
    specs = {s.name: s for s in perception.node_specs(
        {'camera_source': 'replay', 'replay_dir': '/r', 'checkpoint': '/c.pt',
         'device': 'cuda:1'})}
    assert specs['camera_node'].parameters == {'source': 'replay', 'replay_dir': '/r'}
    assert specs['grasp_node'].parameters == {'checkpoint': '/c.pt', 'device': 'cuda:1'}
    pick = load('pick_scene.launch.py')
    specs = {s.name: s for s in pick.node_specs({'use_sim': 'false', 'robot': 'fr3',
                                                 'checkpoint': '/c.pt', 'device': 'cpu'})}
    assert specs['execution_node'].parameters == {'robot': 'fr3', 'backend': 'moveit'}
    assert specs['camera_node'].parameters['source'] == 'realsense'


def test_an_object_spanning_the_scene_is_refused():
    """An 'object' spanning the scene is refused before the network.

    Found by fuzz_services.py: 32 ids scattered over every pixel passed the count
    limits and kept the network busy for minutes (5.5 GB).
    """
    from zerograsp_ros.errors import InputError
    from zerograsp_ros.geometry.rgbd import load_frame_dir
    from zerograsp_ros.nodes.request_limits import RequestLimits, check_object_extent

    frame = load_frame_dir(REPO / 'samples' / 'tabletop')
    check_object_extent(frame.depth, frame.intrinsics, frame.labels, RequestLimits())
    scattered = np.random.default_rng(0).integers(1, 33, frame.depth.shape)
    start = time.perf_counter()
    with pytest.raises(InputError, match=r'spans \d\.\d\d m, more than '
                                         r'limits.max_object_extent = 0.4 m'):
        check_object_extent(frame.depth, frame.intrinsics, scattered, RequestLimits())
    assert time.perf_counter() - start < 2.0
