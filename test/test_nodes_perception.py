"""Tabletop segmentation and the in-process grasp pipeline (pure core, no ROS)."""
from pathlib import Path
import sys

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from support.tabletop_scene import render_tabletop  # noqa: E402

from zerograsp_ros.errors import CheckpointError, InputError  # noqa: E402
from zerograsp_ros.geometry.rgbd import RGBDFrame, load_frame_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / 'samples' / 'tabletop'


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def _plane_error(found, truth):
    angle = np.degrees(np.arccos(np.clip(found[:3] @ truth[:3], -1, 1)))
    return angle, abs(found[3] - truth[3])


def test_tabletop_segmentation_finds_each_object_and_the_table():
    from zerograsp_ros.perception.segmentation import segment_tabletop

    frame, truth, plane_truth = render_tabletop()
    labels, plane = segment_tabletop(frame)
    assert labels.dtype == np.int32 and labels.shape == truth.shape
    ids = [i for i in np.unique(labels) if i > 0]
    assert len(ids) == truth.max() == 3
    matched = set()
    for k in range(1, 4):
        best = max(ids, key=lambda i: _iou(labels == i, truth == k))
        assert _iou(labels == best, truth == k) > 0.85, f'object {k} poorly segmented'
        matched.add(best)
    assert len(matched) == 3, 'two objects share one label'
    angle, offset = _plane_error(plane, plane_truth)
    assert angle < 1.0 and offset < 0.003
    # Normal towards the camera: the camera origin lies above the table.
    assert plane[3] > 0


def test_table_without_objects_gives_empty_labels():
    from zerograsp_ros.perception.segmentation import segment_tabletop

    frame, _, plane_truth = render_tabletop(objects=[])
    labels, plane = segment_tabletop(frame)
    assert not labels.any()
    assert _plane_error(plane, plane_truth)[0] < 1.0


def test_segmentation_bad_input_names_the_cause():
    from zerograsp_ros.perception.segmentation import (
        TabletopConfig,
        make_segmenter,
        segment_tabletop,
    )

    frame, _, _ = render_tabletop()
    with pytest.raises(InputError, match='no depth pixel between'):
        segment_tabletop(frame, {'min_depth': 2.0, 'max_depth': 3.0})
    rng = np.random.default_rng(0)
    noise = RGBDFrame(frame.rgb, rng.uniform(0.3, 1.4, frame.depth.shape).astype(np.float32),
                      frame.intrinsics)
    with pytest.raises(InputError, match='no table plane found'):
        segment_tabletop(noise)
    with pytest.raises(InputError, match='no valid pixel'):
        segment_tabletop(RGBDFrame(frame.rgb, np.zeros_like(frame.depth), frame.intrinsics))
    with pytest.raises(InputError, match="unknown segmenter 'maskrcnn'"):
        make_segmenter('maskrcnn')
    with pytest.raises(InputError, match='unknown tabletop segmentation parameter'):
        TabletopConfig.from_dict({'min_hieght': 0.01})
    with pytest.raises(InputError, match='min_height < max_height'):
        TabletopConfig.from_dict({'min_height': 0.5})


def test_learned_segmenter_seam_fails_clearly_without_package_or_weights(tmp_path):
    from zerograsp_ros.perception.segmentation import SegmenterUnavailable, make_segmenter

    with pytest.raises(SegmenterUnavailable) as info:
        make_segmenter('sam2', checkpoint=str(tmp_path / 'sam2.1_hiera_small.pt'))
    message = str(info.value)
    # Either the package is missing (here) or, where it is installed, the weights file.
    assert "'sam2' package" in message or 'does not exist' in message
    assert isinstance(info.value, CheckpointError)


@pytest.mark.skipif(not SAMPLE.is_dir(), reason='samples/tabletop not shipped')
def test_sample_scene_objects_are_segmented():
    from zerograsp_ros.perception.segmentation import segment_tabletop

    frame = load_frame_dir(SAMPLE)
    truth = frame.labels
    frame.labels = None
    labels, plane = segment_tabletop(frame)
    for k in np.unique(truth)[1:]:
        mask = truth == k
        if mask.sum() < 2000:  # small objects may merge with a touching neighbour
            continue
        ids, counts = np.unique(labels[mask], return_counts=True)
        assert ids[np.argmax(counts)] > 0 and counts.max() > 0.85 * mask.sum()
    # The recorded camera looks down at the table: its normal points up, towards us.
    T = np.asarray(frame.meta['T_world_camera'])
    up_in_camera = T[:3, :3].T @ np.array([0.0, 0.0, 1.0])
    assert np.degrees(np.arccos(plane[:3] @ up_in_camera)) < 2.0


# --------------------------------------------------------------------------- pipeline

@pytest.fixture(scope='module')
def pipeline(tmp_path_factory):
    import torch

    from zerograsp_ros.grasp.gripper import gripper_preset
    from zerograsp_ros.model.checkpoint import save_checkpoint
    from zerograsp_ros.model.config import preset
    from zerograsp_ros.model.network import ZeroGraspNet
    from zerograsp_ros.perception.pipeline import GraspPipeline

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('ckpt') / 'random_init.pt'
    save_checkpoint(path, ZeroGraspNet(preset('cpu')), preset('cpu'))
    p = GraspPipeline.from_checkpoint(str(path), device='cpu', max_grasps=5)
    assert p.gripper == gripper_preset('robotiq_2f85')
    return p


def test_pipeline_rejects_bad_input_with_the_cause(pipeline):
    from zerograsp_ros.perception.pipeline import check_labels

    frame, truth, _ = render_tabletop()
    with pytest.raises(InputError, match='no objects on the table'):
        pipeline.run(render_tabletop(objects=[])[0])
    with pytest.raises(InputError, match='instance masks are empty'):
        pipeline.run(frame, labels=np.zeros_like(truth))
    with pytest.raises(InputError, match='does not match the frame size'):
        check_labels(frame, truth[:-1])
    no_depth = frame.depth.copy()
    no_depth[truth > 0] = np.nan
    with pytest.raises(InputError, match='no object mask has valid depth'):
        check_labels(RGBDFrame(frame.rgb, no_depth, frame.intrinsics), truth)
    with pytest.raises(InputError, match='does not match depth size'):
        pipeline.run(RGBDFrame(frame.rgb[:10], frame.depth, frame.intrinsics))


def test_pipeline_unrefined_run_returns_finite_sorted_grasps_and_timings(pipeline):
    frame, truth, _ = render_tabletop()
    result = pipeline.run(frame, labels=truth, refine=False, max_grasps=3)
    assert not result.refined and result.table_plane is not None
    assert {'validation', 'segmentation', 'total'} <= set(result.timings)
    assert result.timings['total'] >= sum(v for k, v in result.timings.items()
                                          if k in ('validation', 'segmentation'))
    assert {o.object_id for o in result.objects} <= {1, 2, 3}
    g = result.grasps
    assert len(g) <= 3 and g.finite_mask().all()
    assert (np.diff(g.scores) <= 0).all()


def test_checkpoint_problems_are_checkpoint_errors(tmp_path):
    from zerograsp_ros.perception.pipeline import GraspPipeline

    with pytest.raises(CheckpointError, match='does not exist'):
        GraspPipeline.from_checkpoint(str(tmp_path / 'missing.pt'), device='cpu')
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(CheckpointError, match='corrupt'):
        GraspPipeline.from_checkpoint(str(bad), device='cpu')


def test_refinement_rescores_with_reconstructed_normals_and_warns_without():
    from types import SimpleNamespace

    from zerograsp_ros.grasp.gripper import gripper_preset
    from zerograsp_ros.grasp.representation import GraspSet, rotation_from_approach
    from zerograsp_ros.perception.pipeline import refine_on_reconstruction

    # two parallel faces 4 cm apart (x = +-2 cm), outward normals -x and +x
    u = np.arange(-0.03, 0.0301, 0.002)
    a, b = (v.ravel() for v in np.meshgrid(u, u))
    points = np.concatenate([np.c_[np.full_like(a, s * 0.02), a, b + 0.08] for s in (-1, 1)])
    normals = np.concatenate([np.tile([s, 0.0, 0.0], (len(a), 1)) for s in (-1.0, 1.0)])
    grasp = GraspSet(rotation_from_approach(np.array([[0.0, 0.0, -1.0]]), np.pi / 2),
                     [[0.0, 0.0, 0.09]], [0.075], [0.02], [0.15], [0.3], [0.5], [7])
    gripper = gripper_preset('robotiq_2f85')
    with_normals = SimpleNamespace(object_id=7, points=points, normals=normals)
    out = refine_on_reconstruction(grasp, [with_normals], gripper)
    assert out.warnings == [] and len(out.grasps) == 1
    assert out.grasps.qualities[0] == pytest.approx(1.0)   # perfectly antipodal faces
    assert out.grasps.scores[0] == pytest.approx(0.5)      # graspness x measured quality
    without = SimpleNamespace(object_id=7, points=points, normals=np.zeros_like(normals))
    out = refine_on_reconstruction(grasp, [without], gripper)
    assert len(out.warnings) == 1 and 'objects [7] have no valid surface normals' in \
        out.warnings[0]
    assert out.grasps.scores[0] == pytest.approx(0.15)     # predicted score kept
