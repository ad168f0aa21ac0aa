"""ZeroGrasp network: input octrees, occlusion fields, RoPE, decoding, learning, errors."""
import numpy as np
from ocnn.octree import Octree
import pytest
from scipy.spatial import cKDTree
import torch

from zerograsp_ros.errors import CheckpointError, InputError
from zerograsp_ros.geometry.camera import CameraIntrinsics
from zerograsp_ros.geometry.meshing import mesh_from_points
from zerograsp_ros.geometry.rgbd import RGBDFrame
from zerograsp_ros.model.checkpoint import load_checkpoint, save_checkpoint
from zerograsp_ros.model.config import preset
from zerograsp_ros.model.inference import ZeroGraspPredictor
from zerograsp_ros.model.inputs import (
    SceneNormalization,
    build_octree,
    leaf_centres_unit,
    observe_scene,
)
from zerograsp_ros.model.network import (
    ZeroGraspNet,
    ground_truth_octree,
    observe_samples,
    training_step,
)
from zerograsp_ros.model.occlusion import occlusion_flags
from zerograsp_ros.model.synthetic import Box, render_boxes, table_sample, table_scene
from zerograsp_ros.model.transformer import MultiObjectEncoder, RopeAttention

CPU = preset('cpu')
SMALL_INTR = CameraIntrinsics.d435(320, 240)


@pytest.fixture(autouse=True, scope='module')
def one_thread():
    """The CPU is shared; one intra-op thread avoids OpenMP spin contention."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def small_model(**changes):
    torch.manual_seed(0)
    return ZeroGraspNet(CPU.replace(transformer_dropout=0.0, **changes))


# ------------------------------------------------------------------ input octree
def test_points_to_octree_leaf_centres_within_half_voxel_and_normalisation_round_trip():
    rng = np.random.default_rng(0)
    pts_m = rng.uniform([-0.2, -0.15, 0.45], [0.2, 0.15, 0.8], (3000, 3)).astype(np.float32)
    norm = SceneNormalization.from_depths(float(pts_m[:, 2].min()), CPU)
    assert norm.z_min_m == pytest.approx(np.floor(0.45 / 0.08) * 0.08 - 0.40)
    unit = norm.to_unit(pts_m)
    assert np.abs(unit).max() < 0.99
    np.testing.assert_allclose(norm.to_metres(unit), pts_m, atol=1e-6)
    unit_t = norm.to_unit(torch.from_numpy(pts_m))
    np.testing.assert_allclose(unit_t.numpy(), unit, atol=1e-6)

    octree = build_octree(torch.from_numpy(unit.astype(np.float32)), CPU.depth, 3)
    centres = leaf_centres_unit(octree, CPU.depth).numpy()
    half = 2.0 ** (1 - CPU.depth) / 2
    # every input point lies in a leaf whose centre is within half a voxel on each axis
    d_pt, _ = cKDTree(centres).query(unit, p=np.inf)
    assert d_pt.max() <= half + 1e-6
    # every leaf holds at least one input point
    d_leaf, _ = cKDTree(unit).query(centres, p=np.inf)
    assert d_leaf.max() <= half + 1e-6
    assert len(centres) == len({tuple(k) for k in np.floor((unit + 1) / (2 * half)).astype(int)})
    # the same in metres: half of the configured leaf size
    d_m, _ = cKDTree(norm.to_metres(centres)).query(pts_m, p=np.inf)
    assert d_m.max() <= CPU.voxel_size_m / 2 + 1e-6


# ------------------------------------------------------------------ occlusion fields
def test_occlusion_fields_self_and_inter_flags_on_two_boxes():
    # box 1 in front, box 2 behind and partly hidden by it, box 3 far off to the side
    boxes = [Box(1, (-0.05, -0.05, 0.50), (0.05, 0.05, 0.55)),
             Box(2, (0.0, -0.05, 0.60), (0.12, 0.05, 0.65)),
             Box(3, (-0.30, -0.05, 0.60), (-0.25, 0.05, 0.65))]
    frame = render_boxes(boxes, SMALL_INTR)
    assert set(np.unique(frame.labels)) == {0, 1, 2, 3}
    centres = torch.tensor([
        [-0.03, 0.0, 0.53],   # 1: inside box 1, behind its visible face      -> self
        [0.02, 0.0, 0.62],    # 2: box 2 part hidden by box 1 (neighbour)    -> inter
        [0.10, 0.0, 0.63],    # 2: box 2 part behind its own visible face    -> self
        [0.02, 0.0, 0.30],    # 2: free space in front of everything         -> none
        [0.02, 0.0, 0.62],    # 3: hidden by box 1, but 1 is not 3's neighbour -> none
    ])
    token_label = torch.tensor([1, 2, 2, 2, 3])
    depth = torch.from_numpy(np.nan_to_num(frame.depth))
    valid = torch.from_numpy(frame.valid_depth())
    labels = torch.from_numpy(frame.labels)
    k = SMALL_INTR
    flags = occlusion_flags(centres, 0.01, token_label, depth, valid, labels,
                            (k.fx, k.fy, k.cx, k.cy), 5, 4)
    assert flags.shape == (5, 2, 4, 4, 4)
    frac = flags.mean(dim=(2, 3, 4)).numpy()
    np.testing.assert_array_equal(frac, [[1, 0], [0, 1], [1, 0], [0, 0], [0, 0]])
    # a voxel straddling box 1's visible face: only the sub-blocks behind it are occluded
    half = occlusion_flags(torch.tensor([[-0.03, 0.0, 0.50]]), 0.01, torch.tensor([1]), depth,
                           valid, labels, (k.fx, k.fy, k.cx, k.cy), 5, 4)
    z_layers = half[0, 0].mean(dim=(0, 1))      # x-major order: last axis is z
    np.testing.assert_array_equal(z_layers.numpy(), [0, 0, 1, 1])


# ------------------------------------------------------------------ transformer
def test_rope_attention_scores_invariant_to_scene_translation():
    torch.manual_seed(0)
    attn = RopeAttention(32, 2, 24, 0.0, 1.0, 16.0).eval()
    x = torch.randn(6, 32)
    pos = torch.rand(6, 3) * 1.2 - 0.6
    shift = torch.tensor([0.31, -0.17, 0.23])
    s0, s1 = attn.scores(x, pos), attn.scores(x, pos + shift)
    torch.testing.assert_close(s0, s1, atol=1e-4, rtol=1e-4)
    moved = pos.clone()
    moved[0] += shift            # moving a single token does change its scores
    assert (attn.scores(x, moved) - s0).abs().max() > 1e-2


def test_transformer_attention_stays_inside_each_scene():
    torch.manual_seed(0)
    enc = MultiObjectEncoder(CPU.replace(transformer_dropout=0.0)).eval()
    w = CPU.latent_channels
    x, pos = torch.randn(10, w), torch.rand(10, 3)
    scene = torch.tensor([0] * 4 + [1] * 6)
    out = enc(x, pos, scene)
    x2 = x.clone()
    x2[4:] = torch.randn(6, w)   # change scene 1 only
    out2 = enc(x2, pos, scene)
    torch.testing.assert_close(out[:4], out2[:4])
    assert (out[4:] - out2[4:]).abs().max() > 1e-3


# ------------------------------------------------------------------ decoder
@pytest.mark.parametrize('full_grid', [True, False])
def test_ground_truth_occupancy_reproduces_ground_truth_octree(full_grid):
    sample = table_sample(2, SMALL_INTR, seed=3)
    model = small_model(decode_full_latent_grid=full_grid).eval()
    cfg = model.config
    scenes = observe_samples([sample], cfg)
    gt, feats, _ = ground_truth_octree([sample], scenes, cfg, 'cpu')
    with torch.no_grad():
        out = model(scenes, occupancy_guide=gt)
    grown = out['octree_out']
    assert isinstance(grown, Octree)
    for d in range(cfg.latent_depth, cfg.depth + 1):
        assert torch.equal(grown.key(d, nempty=True), gt.key(d, nempty=True)), \
            f'occupied nodes differ at depth {d}'
        if full_grid or d > cfg.latent_depth:   # the region mode decodes fewer latent nodes
            assert torch.equal(grown.keys[d], gt.keys[d]), f'nodes differ at depth {d}'
    if not full_grid:
        assert grown.nnum[cfg.latent_depth] < gt.nnum[cfg.latent_depth] / 4
    assert out['signal'].shape == (int(gt.nnum_nempty[cfg.depth]), cfg.signal_channels)
    # training on the decoding region keeps every ground-truth leaf and its target
    model.train()
    out = model(scenes, gt_octree=gt, gt_features=feats)
    torch.testing.assert_close(out['leaf_targets'], feats)


# ------------------------------------------------------------------ learning
def test_model_overfits_one_small_scene():
    """Stated factor: total loss falls to < 1/4 of its start within 60 AdamW steps."""
    sample = table_sample(2, SMALL_INTR, seed=1)
    model = small_model()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(60):
        loss, terms = training_step(model, [sample], step, 'cpu')
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(terms['total'])
        if step >= 10 and np.mean(losses[-3:]) < 0.25 * losses[0]:
            break
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.25 * losses[0], f'loss {losses[0]:.3f} -> {losses[-1]:.3f}'


def test_batches_with_different_object_counts_and_seeded_determinism():
    batch = [table_sample(1, SMALL_INTR, seed=4), table_sample(3, SMALL_INTR, seed=5)]

    def run():
        torch.manual_seed(0)
        model = ZeroGraspNet(CPU)
        torch.manual_seed(1)
        loss, terms = training_step(model, batch, 0, 'cpu')
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return loss.detach(), terms, grads

    loss_a, terms_a, grads_a = run()
    loss_b, _, grads_b = run()
    assert terms_a['objects'] == 4
    assert torch.isfinite(loss_a)
    assert torch.equal(loss_a, loss_b)
    assert torch.equal(grads_a, grads_b)
    assert grads_a.abs().sum() > 0


def test_training_with_all_ablations_off():
    cfg = CPU.replace(use_cvae=False, use_multi_object_encoder=False,
                      use_occlusion_fields=False)
    torch.manual_seed(0)
    model = ZeroGraspNet(cfg)
    assert not hasattr(model, 'transformer') and not hasattr(model, 'prior_mlp')
    loss, terms = training_step(model, [table_sample(2, SMALL_INTR, seed=2)], 0, 'cpu')
    loss.backward()
    assert np.isfinite(terms['total']) and terms['kl'] == 0.0


# ------------------------------------------------------------------ inference API
def test_predictor_end_to_end_on_random_init_model():
    frame, _ = table_scene(3, SMALL_INTR, seed=1)
    frame.labels[frame.labels == 3] = 0
    frame.labels[100, 100] = 7          # a 1-pixel object: skipped with a warning
    pred = ZeroGraspPredictor(small_model(), CPU, device='cpu').predict(
        frame, max_grasps_per_object=5)
    assert [o.object_id for o in pred.objects] == [1, 2]
    assert any('object 7 skipped' in w for w in pred.warnings)
    for stage in ('octree', 'image_encoder', 'encoder', 'occlusion', 'transformer', 'decoder',
                  'grasp_decoding', 'meshing'):
        assert stage in pred.timings
    g = pred.grasps
    assert len(g) <= 10 and set(np.unique(g.object_ids)) <= {1, 2}
    assert np.all(np.diff(g.scores) <= 0)
    if len(g):
        np.testing.assert_allclose(g.rotations @ g.rotations.transpose(0, 2, 1),
                                   np.broadcast_to(np.eye(3), g.rotations.shape), atol=1e-4)
        assert g.widths.max() <= CPU.max_grasp_width_m and g.depths.max() <= 0.04


def test_checkpoint_round_trip_and_clear_errors(tmp_path):
    model = small_model()
    path = tmp_path / 'm.pt'
    save_checkpoint(path, model, model.config, {'step': 7})
    loaded, cfg, extra = load_checkpoint(path, expected_config=model.config)
    assert extra == {'step': 7} and cfg == model.config
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointError, match=r'depth: 8 != 7|depth: 7 != 8'):
        load_checkpoint(path, expected_config=model.config.replace(
            depth=7, channels=model.config.channels[:8]))
    with pytest.raises(CheckpointError, match='does not exist'):
        load_checkpoint(tmp_path / 'missing.pt')
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match='corrupt'):
        load_checkpoint(bad)


def test_a_wider_signal_head_leaves_the_occupancy_heads_alone(tmp_path):
    narrow, wide = small_model(), small_model(signal_head_hidden=96)
    assert wide.signal_head[-1].linear.weight.shape == (14, 96)
    assert narrow.signal_head[-1].linear.weight.shape == (14, CPU.head_hidden)
    for a, b in zip(narrow.occ_heads.parameters(), wide.occ_heads.parameters()):
        assert a.shape == b.shape
    path = tmp_path / 'wide.pt'
    save_checkpoint(path, wide, wide.config)
    loaded, cfg, _ = load_checkpoint(path)
    assert cfg.signal_head_hidden == 96 and loaded.signal_head[-1].linear.in_features == 96
    with pytest.raises(InputError, match='signal_head_hidden'):
        CPU.replace(signal_head_hidden=-1)


# ------------------------------------------------------------------ bad input
def _frame(**changes):
    frame, _ = table_scene(2, SMALL_INTR, seed=0)
    for k, v in changes.items():
        setattr(frame, k, v)
    return frame


@pytest.mark.parametrize('make, message', [
    (lambda f: _frame(labels=np.zeros_like(f.labels)), 'no object'),
    (lambda f: _frame(depth=np.full_like(f.depth, np.nan)), 'no valid pixel'),
    (lambda f: _frame(depth=np.zeros_like(f.depth)), 'no valid pixel'),
    (lambda f: _frame(rgb=f.rgb[:-2]), 'colour size'),
    (lambda f: _frame(labels=f.labels[:, :-3]), 'label image size'),
    (lambda f: _frame(labels=None), 'no instance label image'),
    (lambda f: _frame(intrinsics=CameraIntrinsics(0.0, 0.0, 0.0, 0.0, 320, 240)),
     'focal length'),
])
def test_bad_input_raises_clear_error(make, message):
    predictor = ZeroGraspPredictor(small_model(), CPU, device='cpu')
    frame, _ = table_scene(2, SMALL_INTR, seed=0)
    with pytest.raises(InputError, match=message):
        predictor.predict(make(frame))


def test_requested_object_with_empty_mask_is_named():
    frame, _ = table_scene(2, SMALL_INTR, seed=0)
    with pytest.raises(InputError, match=r'object ids \[9\] have empty masks'):
        observe_scene(frame, CPU, object_ids=[1, 9])


def test_object_outside_scene_cube_is_reported():
    boxes = [Box(1, (-0.05, -0.05, 0.50), (0.05, 0.05, 0.55)),
             Box(2, (0.15, -0.05, 1.60), (0.25, 0.05, 1.65))]   # beyond z_min + 1.28 m
    scene = observe_scene(render_boxes(boxes, SMALL_INTR), CPU)
    assert [o.object_id for o in scene.objects] == [1, 2]
    assert any('object 2' in w and 'clipped' in w for w in scene.warnings)
    assert not any('object 1' in w for w in scene.warnings)


def test_objects_beyond_depth_range_are_reported_not_crashed():
    frame, _ = table_scene(2, SMALL_INTR, seed=0)
    far = RGBDFrame(frame.rgb, frame.depth + 5.0, frame.intrinsics, frame.labels)
    with pytest.raises(InputError, match='no valid pixel'):
        observe_scene(far, CPU)


# ------------------------------------------------------------------ meshing
def test_mesh_from_points_sphere_and_degenerate_input():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(4000, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    pts = 0.05 * n + np.array([0.0, 0.0, 0.6])
    for method in ('ball_pivoting', 'poisson'):
        v, f = mesh_from_points(pts, n, 0.005, method=method)
        assert v.dtype == np.float32 and f.dtype == np.int32 and len(f) > 100
        r = np.linalg.norm(v - np.array([0.0, 0.0, 0.6]), axis=1)
        assert np.abs(r - 0.05).max() < 0.006, method
        # the faces cover the sphere: total area close to 4 pi r^2
        tri = v[f]
        area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]),
                                    axis=1).sum()
        assert 0.7 * 4 * np.pi * 0.05 ** 2 < area < 1.1 * 4 * np.pi * 0.05 ** 2, method
    for bad in (pts[:5], np.full((50, 3), np.nan), np.zeros((0, 3))):
        v, f = mesh_from_points(bad, np.ones_like(bad), 0.005)
        assert v.shape == (0, 3) and f.shape == (0, 3)
