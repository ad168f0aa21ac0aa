"""Training, evaluation and the shipped checkpoint, end to end on real (tiny) data."""
import json
from pathlib import Path

import numpy as np
import pytest

from zerograsp_ros.errors import InputError
from zerograsp_ros.training.evaluate import mirror_completion, reconstruction_metrics

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / 'checkpoints' / 'zerograsp_cpu.pt'
SAMPLE = REPO / 'samples' / 'tabletop'


def _sphere(n, rng, radius=0.03):
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v * radius, v


def test_reconstruction_metrics_on_known_sets():
    rng = np.random.default_rng(0)
    p, n = _sphere(3000, rng)
    same = reconstruction_metrics(p, n, p, n)
    assert same['cd_mm'] == pytest.approx(0.0, abs=1e-9)
    assert same['f1'] == 1.0 and same['nc'] == pytest.approx(1.0)
    shifted = reconstruction_metrics(p + [0.02, 0.0, 0.0], n, p, n)
    assert shifted['f1'] < 0.5
    assert 5.0 < shifted['cd_mm'] < 20.0 + 1e-6   # nearest neighbours are at most 2 cm away
    flipped = reconstruction_metrics(p, -n, p, n)
    assert flipped['nc'] == pytest.approx(1.0)    # orientation-free consistency
    with pytest.raises(InputError):
        reconstruction_metrics(np.zeros((0, 3)), np.zeros((0, 3)), p, n)


def test_mirror_completion_completes_a_symmetric_object():
    rng = np.random.default_rng(1)
    p, n = _sphere(4000, rng)
    p = p * [1.0, 1.0, 2.0] + [0.1, 0.2, 0.0]      # an upright ellipsoid off the origin
    visible = p[:, 0] < 0.1                         # a camera looking along +x sees this half
    up = np.array([0.0, 0.0, 1.0])
    mp, mn = mirror_completion(p[visible], n[visible], up, view_dir=(1.0, 0.0, -0.3))
    half = reconstruction_metrics(p[visible], n[visible], p, n)
    full = reconstruction_metrics(mp, mn, p, n)
    assert full['recall'] > half['recall'] + 0.2
    assert full['cd_mm'] < 0.5 * half['cd_mm']
    # straight down view: the axis goes through the middle of the horizontal extent
    top = p[:, 2] > 0.0
    mp, _ = mirror_completion(p[top], n[top], up, view_dir=(0.0, 0.0, -1.0))
    assert np.allclose(np.median(mp[:, :2], axis=0), [0.1, 0.2], atol=0.005)


@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    from zerograsp_ros.data.generate import generate_split
    from zerograsp_ros.data.labels import LabelConfig
    root = tmp_path_factory.mktemp('data')
    cfg = LabelConfig(grasp_points=4, view_stride=30, angle_stride=4)
    for split in ('train', 'val'):
        generate_split(root, split, 1, seed=11, workers=1, config=cfg, progress=False,
                       num_objects=2)
    return root


def test_tiny_generate_train_resume_evaluate(tiny_data, tmp_path):
    from zerograsp_ros.training.evaluate import evaluate, write_results
    from zerograsp_ros.training.train import build_parser, train
    run = tmp_path / 'run'
    args = build_parser().parse_args(['--data', str(tiny_data), '--out', str(run), '--steps', '2',
                                      '--val-scenes', '1', '--quiet', '--log-every', '1'])
    summary = train(args)
    assert summary['step'] == 2
    # best.pt is chosen by the refined grasp AP on validation (scenes without survivors: 0)
    assert summary['select_by'] == 'val_grasp_ap' and 0.0 <= summary['val_grasp_ap'] <= 1.0
    assert summary['best_score'] == summary['val_grasp_ap'] and (run / 'best.pt').is_file()
    for name in ('last.pt', 'train_state.pt', 'train.log', 'metrics.jsonl'):
        assert (run / name).is_file(), name
    losses = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
    assert all(np.isfinite(r['loss']) for r in losses if r['kind'] == 'train')
    # resume continues the step count instead of starting over
    args = build_parser().parse_args(['--data', str(tiny_data), '--out', str(run), '--steps', '3',
                                      '--val-scenes', '1', '--quiet', '--resume'])
    assert train(args)['step'] == 3
    assert 'resumed at step 2' in (run / 'train.log').read_text()

    result = evaluate(str(run / 'last.pt'), str(tiny_data / 'val'), progress=False)
    assert result['objects_total'] >= 1
    vis = result['reconstruction']['visible']
    assert 0.0 <= vis['f1'] <= 1.0 and vis['cd_mm'] > 0
    assert result['depth_tare']['enabled'] and result['depth_tare']['frames_tared'] >= 1
    for stage in ('grasps', 'grasps_refined'):
        if stage in result:   # P@1 is one top grasp per scene: its interval holds it
            lo, hi = result[stage]['precision@1_ci95']
            assert 0.0 <= lo <= result[stage]['precision@1'] <= hi <= 1.0
    out = write_results(result, tmp_path / 'eval.json', 'test')
    saved = json.loads(out.read_text())
    assert {'machine', 'date', 'command', 'reconstruction'} <= set(saved)
    assert out.with_suffix('.png').is_file()


def test_evaluation_sees_the_depth_tared_frame_the_pipeline_sees(tiny_data):
    from zerograsp_ros.data.dataset import ShardDataset
    from zerograsp_ros.training.evaluate import observed_frame

    rec = ShardDataset(str(tiny_data / 'val')).record(0)
    raw = rec.frame()
    tared, scale = observed_frame(rec)
    # the tare measures the image's depth factor of the noise model and divides it out
    assert scale is not None and abs(scale - rec.depth_scale()) < 0.004
    ok = np.isfinite(raw.depth) & (raw.depth > 0)
    assert np.allclose(tared.depth[ok] * scale, raw.depth[ok], rtol=1e-5)
    assert tared.meta['depth_tare_scale'] == scale
    same, none = observed_frame(rec, depth_tare=False)
    assert none is None and np.array_equal(same.depth[ok], raw.depth[ok])


def test_grasp_ap_selection_refuses_no_grasp_scenes(tiny_data, tmp_path):
    from zerograsp_ros.training.train import build_parser, train
    args = build_parser().parse_args(['--data', str(tiny_data), '--out', str(tmp_path / 'r'),
                                      '--steps', '1', '--quiet', '--val-grasp-scenes', '0'])
    with pytest.raises(InputError, match='val-grasp-scenes'):
        train(args)


def test_training_refuses_missing_data(tmp_path):
    from zerograsp_ros.training.train import build_parser, train
    args = build_parser().parse_args(['--data', str(tmp_path), '--out', str(tmp_path / 'r'),
                                      '--steps', '1', '--quiet'])
    with pytest.raises(InputError, match='does not exist|no shard'):
        train(args)


def test_shipped_checkpoint_reconstructs_and_grasps_the_sample_frame():
    if not SHIPPED.is_file():
        pytest.skip(f'{SHIPPED} not present (train and copy it; see checkpoints/MODEL_CARD.md)')
    if not SAMPLE.is_dir():
        pytest.skip(f'{SAMPLE} not present (written by `python -m zerograsp_ros.sim.scene`)')
    from zerograsp_ros.geometry.rgbd import load_frame_dir
    from zerograsp_ros.model.inference import ZeroGraspPredictor
    assert SHIPPED.stat().st_size <= 50 * 2 ** 20
    frame = load_frame_dir(SAMPLE)
    pred = ZeroGraspPredictor.from_checkpoint(SHIPPED, device='cpu').predict(frame)
    assert pred.objects, pred.warnings
    assert sum(len(o.points) > 0 for o in pred.objects) >= len(pred.objects) // 2 + 1
    for o in pred.objects:
        assert np.isfinite(o.points).all() and np.isfinite(o.normals).all()
    assert len(pred.grasps) > 0
    assert pred.grasps.finite_mask().all()


def test_torchrun_two_cpu_ranks_train_on_their_own_scenes_and_stay_identical(tmp_path):
    """`train` unchanged under torchrun: 2 gloo ranks, own scene shards, same weights."""
    import subprocess
    import sys

    import torch

    from zerograsp_ros.data.generate import generate_split
    from zerograsp_ros.data.labels import LabelConfig
    data = tmp_path / 'data'
    generate_split(data, 'train', 2, seed=12, workers=1, progress=False, num_objects=2,
                   config=LabelConfig(grasp_points=4, view_stride=30, angle_stride=4))
    run = tmp_path / 'run'
    env = {**__import__('os').environ, 'OMP_NUM_THREADS': '1'}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node',
           '2', '-m', 'zerograsp_ros.training.train', '--data', str(data), '--out', str(run),
           '--steps', '3', '--batch', '1', '--quiet', '--log-every', '1',
           '--dump-rank-weights', '--device', 'cpu']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((run / 'summary.json').read_text())
    assert summary['world_size'] == 2 and summary['step'] == 3
    log = (run / 'train.log').read_text()
    assert '1 train / 0 val scenes' in log and 'rank 0 of 2' in log   # one scene per rank
    w0 = torch.load(run / 'rank0_weights.pt', weights_only=True)
    w1 = torch.load(run / 'rank1_weights.pt', weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # the weights moved: training happened (not two untouched copies of the init)
    from zerograsp_ros.model.checkpoint import load_checkpoint
    from zerograsp_ros.model.config import preset
    from zerograsp_ros.model.network import ZeroGraspNet
    model, _, _ = load_checkpoint(run / 'last.pt')
    assert all(torch.equal(v, w0[k]) for k, v in model.state_dict().items())
    torch.manual_seed(0)
    init = ZeroGraspNet(preset('cpu')).state_dict()
    assert any(not torch.equal(init[k], w0[k]) for k in w0 if w0[k].is_floating_point())
