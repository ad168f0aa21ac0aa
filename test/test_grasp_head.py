"""The paper's grasp head (views, angle, depth and width bins) next to the direct one."""
import math

import numpy as np
import pytest
import torch

from zerograsp_ros.errors import InputError
from zerograsp_ros.grasp.representation import (
    GRASPNET_DEPTHS,
    fibonacci_views,
    rotation_from_approach,
)
from zerograsp_ros.model.config import ModelConfig, preset
from zerograsp_ros.model.grasp_bins import (
    bin_targets,
    decode_paper_grasps,
    head_slices,
    reachable_views,
)

PAPER = preset('cpu', 'paper').replace(transformer_dropout=0.0)


def _targets(views, angles, width, depth, config=PAPER):
    """Per-leaf label rows (L, 15) for grasps exactly on the given views and angles."""
    R = rotation_from_approach(views, angles)
    t = np.zeros((len(views), 15), np.float32)
    t[:, 6:9], t[:, 9:12] = R[:, :, 0], R[:, :, 1]
    t[:, 12] = width / config.max_grasp_width_m
    t[:, 13] = depth / config.max_grasp_depth_m
    t[:, 14] = 1.0
    return torch.from_numpy(t), R


def test_config_switch_sizes_and_validation():
    assert preset('cpu').grasp_head == 'direct' and preset('cpu').signal_channels == 14
    assert PAPER.signal_channels == 6 + 60 + 12 + len(GRASPNET_DEPTHS) + 10
    assert ModelConfig.from_dict({k: v for k, v in preset('cpu').to_dict().items()
                                  if k != 'grasp_head'}).grasp_head == 'direct'  # old files
    with pytest.raises(InputError, match='grasp_head'):
        preset('cpu', 'views')


def test_bins_round_trip_through_targets_and_decoding():
    rng = np.random.default_rng(0)
    v_idx = rng.integers(0, PAPER.grasp_views, 40)
    a_idx = rng.integers(0, PAPER.grasp_angle_bins, 40)
    views = fibonacci_views(PAPER.grasp_views)[v_idx]
    angles = a_idx * math.pi / PAPER.grasp_angle_bins
    d_idx = rng.integers(0, 4, 40)
    w_idx = rng.integers(0, PAPER.grasp_width_bins, 40)
    width = (w_idx + 0.5) * PAPER.max_grasp_width_m / PAPER.grasp_width_bins
    t, R = _targets(views, angles, width, np.asarray(GRASPNET_DEPTHS)[d_idx])
    bins = bin_targets(t, PAPER)
    assert np.array_equal(bins['view'].numpy(), v_idx)
    assert np.array_equal(bins['angle'].numpy(), a_idx)
    assert np.array_equal(bins['depth'].numpy(), d_idx)
    assert np.array_equal(bins['width'].numpy(), w_idx)
    # a closing axis flipped by the jaw's half turn lands in the same angle bin
    flipped = t.clone()
    flipped[:, 9:12] *= -1
    assert np.array_equal(bin_targets(flipped, PAPER)['angle'].numpy(), a_idx)
    # decoding confident logits at those bins gives back the same grasps
    sl = head_slices(PAPER)
    signal = torch.zeros(40, PAPER.signal_channels)
    for name, idx in (('view', v_idx), ('angle', a_idx), ('depth', d_idx), ('width', w_idx)):
        signal[torch.arange(40), sl[name].start + torch.from_numpy(idx)] = 30.0
    signal[:, sl['graspness']] = 2.0
    dec = decode_paper_grasps(signal, PAPER.replace(grasp_views_per_leaf=1), up=None)
    assert np.allclose(dec['rotation'][:, 0].numpy(), R, atol=1e-5)
    assert np.allclose(dec['depth'][:, 0].numpy(), np.asarray(GRASPNET_DEPTHS)[d_idx])
    assert np.allclose(dec['width'][:, 0].numpy(), width, atol=1e-4)
    assert np.allclose(dec['graspness'][:, 0].numpy(), 1 / (1 + np.exp(-2.0)), atol=1e-4)


def test_decoding_keeps_only_views_reachable_from_above():
    rng = np.random.default_rng(1)
    up = rng.normal(size=3)
    up /= np.linalg.norm(up)
    ok = reachable_views(PAPER, up).numpy()
    cos_down = fibonacci_views(PAPER.grasp_views) @ -up
    assert 0 < ok.sum() < PAPER.grasp_views
    assert (cos_down[ok] >= math.cos(math.radians(75.0)) - 1e-9).all()
    signal = torch.randn(200, PAPER.signal_channels) * 5.0
    dec = decode_paper_grasps(signal, PAPER, up=up)
    approach = dec['rotation'][..., 0].reshape(-1, 3).numpy().astype(np.float64)
    assert (approach @ -up >= math.cos(math.radians(75.0)) - 1e-5).all()
    assert np.allclose(np.linalg.det(dec['rotation'].reshape(-1, 3, 3).numpy()), 1.0, atol=1e-5)
    # every view allowed without a table
    assert reachable_views(PAPER, None).all()


def _train_a_few_steps(sample, steps: int = 12, config=PAPER) -> tuple[dict, dict]:
    """Loss terms of the first and the last of a few steps on one scene (paper head)."""
    from zerograsp_ros.model.network import ZeroGraspNet, training_step

    torch.manual_seed(0)
    model = ZeroGraspNet(config)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for step in range(steps):
        loss, terms = training_step(model, [sample], step, 'cpu')
        first = first or terms
        opt.zero_grad()
        loss.backward()
        opt.step()
    return first, terms


def test_paper_head_learns_its_bins_on_a_scene():
    """A few steps on one labelled scene lower the view and angle cross-entropy."""
    from zerograsp_ros.model.synthetic import table_sample

    first, terms = _train_a_few_steps(table_sample(2, seed=3))
    assert np.isfinite(terms['total'])
    assert terms['view'] < 0.8 * first['view'] and terms['angle'] < first['angle']


def test_paper_head_predicts_grasps_from_above_the_table():
    from zerograsp_ros.model.inference import ZeroGraspPredictor, estimate_table_up
    from zerograsp_ros.model.network import ZeroGraspNet
    from zerograsp_ros.model.synthetic import table_scene

    frame, _ = table_scene(2, seed=1)
    up = estimate_table_up(frame)
    assert np.allclose(up, [0.0, 0.0, -1.0], atol=0.05)   # the back plane faces the camera
    torch.manual_seed(0)
    model = ZeroGraspNet(PAPER)
    pred = ZeroGraspPredictor(model, PAPER, 'cpu').predict(
        frame, max_grasps_per_object=64, with_mesh=False,
        occupancy_guide=None)
    g = pred.grasps
    assert len(g) > 0 and g.finite_mask().all()
    assert (g.rotations[:, :, 0] @ -up >= math.cos(math.radians(75.0)) - 1e-4).all()
    assert np.allclose(g.scores, g.graspness * g.qualities, rtol=1e-5)


def test_paper_head_started_from_the_shipped_checkpoint_keeps_its_reconstruction(tmp_path):
    from pathlib import Path

    from zerograsp_ros.model.inference import ZeroGraspPredictor
    from zerograsp_ros.model.network import ZeroGraspNet
    from zerograsp_ros.model.synthetic import table_scene
    from zerograsp_ros.training.train import init_from_checkpoint

    shipped = Path(__file__).resolve().parents[1] / 'checkpoints' / 'zerograsp_cpu.pt'
    if not shipped.is_file():
        pytest.skip(f'{shipped} not present')
    direct = ZeroGraspPredictor.from_checkpoint(shipped, device='cpu')
    paper_cfg = direct.config.replace(grasp_head='paper')
    model = ZeroGraspNet(paper_cfg)
    line = init_from_checkpoint(model, str(shipped))
    assert "fresh: []" in line
    frame, _ = table_scene(2, seed=1)
    a = direct.predict(frame, with_mesh=False)
    b = ZeroGraspPredictor(model, paper_cfg, 'cpu').predict(frame, with_mesh=False)
    assert len(a.objects) == len(b.objects) > 0
    for oa, ob in zip(a.objects, b.objects):
        assert np.allclose(oa.points, ob.points, atol=1e-6)


def test_frozen_backbone_trains_only_the_head():
    from zerograsp_ros.model.network import ZeroGraspNet, training_step
    from zerograsp_ros.model.synthetic import table_sample
    from zerograsp_ros.training.train import freeze_backbone

    torch.manual_seed(0)
    model = ZeroGraspNet(PAPER)
    assert 'trainable' in freeze_backbone(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(2):
        loss, _ = training_step(model, [table_sample(2, seed=5)], step, 'cpu')
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])
               and not k.endswith('num_batches_tracked')}   # a counter; momentum is set
    assert changed and all(k.startswith('signal_head.') for k in changed), sorted(changed)[:5]


def test_decoding_against_the_table_plane_keeps_the_fingers_above_it():
    from zerograsp_ros.grasp import DEFAULT_GRIPPER
    from zerograsp_ros.grasp.gripper import gripper_preset

    gripper = gripper_preset(DEFAULT_GRIPPER)
    rng = np.random.default_rng(2)
    up = np.array([0.0, -0.6, -0.8])                 # a tilted table seen from above
    plane = np.concatenate([up, [0.5]])              # height = up . p + 0.5
    pts = rng.uniform(-0.1, 0.1, (300, 3)) + [0.0, 0.0, 0.6]
    pts += (0.005 + rng.uniform(0, 0.04, (300, 1))) * up - (pts @ up + 0.5)[:, None] * up
    signal = torch.randn(300, PAPER.signal_channels) * 3.0
    dec = decode_paper_grasps(signal, PAPER, points=torch.from_numpy(pts).float(),
                              table_plane=plane, gripper=gripper)
    keep = dec['graspness'] > 0
    assert keep.any()
    R = dec['rotation'][keep].numpy().astype(np.float64)
    t = np.repeat(pts[:, None], dec['graspness'].shape[1], 1)[keep.numpy()]
    d = dec['depth'][keep].numpy()
    w = dec['width'][keep].numpy()
    for sx in (d - gripper.finger_length, d):
        for sy in (-1, 1):
            for sz in (-1, 1):
                corner = np.stack([sx, sy * (w / 2 + gripper.finger_thickness),
                                   np.full_like(d, sz * gripper.finger_width / 2)], 1)
                world = t + np.einsum('nij,nj->ni', R, corner)
                assert (world @ up + 0.5 >= 0.002 - 1e-5).all()
    # without the plane some of the same decoded grasps would reach below it
    loose = decode_paper_grasps(signal, PAPER, up=up)
    low = np.einsum('nkij,j->nki', loose['rotation'].numpy(), up)[..., 0] * \
        loose['depth'].numpy() + (pts @ up + 0.5)[:, None]
    assert (low < 0).any()


def test_dense_view_graspness_is_a_soft_view_target():
    """Dense labels' graspness over views reaches the leaves and trains the view logits."""
    import torch.nn.functional as F

    from zerograsp_ros.model.grasp_bins import paper_grasp_losses
    from zerograsp_ros.model.synthetic import table_sample
    from zerograsp_ros.model.targets import ObjectTarget, leaf_targets, view_map

    templates = fibonacci_views(300)
    # one labelled point whose only graspable template is u: the model views that map to u
    u = int(np.argmax(templates @ fibonacci_views(PAPER.grasp_views)[7]))
    views = np.zeros((1, 300), np.float32)
    views[0, u] = 0.6
    pts = np.array([[0.0, 0.0, 0.5]], np.float32)
    tgt = ObjectTarget(1, pts, np.array([[0.0, 0.0, -1.0]], np.float32), pts,
                       np.ones(1, np.float32), np.ones(1, np.float32),
                       templates[u:u + 1].astype(np.float32), np.array([[0.0, 1.0, 0.0]]),
                       np.full(1, 0.05), np.full(1, 0.02), view_graspness=views)
    rows = leaf_targets(tgt, pts, pts * 0, pts, 0.004, 0.1, 0.04, 0.005, PAPER.grasp_views)
    assert rows.shape == (1, 15 + PAPER.grasp_views)
    assert rows[0, 15 + 7] == pytest.approx(0.6)
    assert set(np.nonzero(rows[0, 15:])[0]) == set(np.nonzero(view_map(300, 60) == u)[0])

    # the loss: a view distribution equal to the target scores better than a uniform one,
    # and rows without view mass fall back to the best view's cross-entropy
    sl = head_slices(PAPER)
    t = torch.zeros((2, 15 + PAPER.grasp_views))
    t[:, 4], t[:, 14] = 1.0, 1.0
    t[:, 6:9] = torch.from_numpy(fibonacci_views(PAPER.grasp_views)[[3, 3]])
    t[:, 9:12] = torch.from_numpy(
        rotation_from_approach(fibonacci_views(PAPER.grasp_views)[[3, 3]])[:, :, 1])
    t[0, 15 + 3], t[0, 15 + 4] = 0.5, 0.5
    sig = torch.zeros((2, sl['width'].stop))
    mask = torch.ones(2, dtype=torch.bool)
    uniform = paper_grasp_losses(sig, t, mask, mask, PAPER, lambda v, m: v[m].mean())['view']
    sig[:, sl['view']][:, [3, 4]] = 8.0
    sharp = paper_grasp_losses(sig, t, mask, mask, PAPER, lambda v, m: v[m].mean())['view']
    hard = F.cross_entropy(sig[1:, sl['view']], torch.tensor([3]))
    soft = -(torch.log_softmax(sig[:1, sl['view']], 1)[0, [3, 4]]).mean()
    assert sharp < uniform and float(sharp) == pytest.approx(float((hard + soft) / 2), rel=1e-5)

    # end to end: a few steps on a scene whose targets carry view graspness lower the term
    sample = table_sample(2, seed=3)
    for target in sample.targets.values():
        near = templates @ np.asarray(target.grasp_approach, np.float64).T      # (300, G)
        target.view_graspness = np.where(near.T > 0.95, near.T, 0.0).astype(np.float16)
    first, terms = _train_a_few_steps(sample)
    assert np.isfinite(terms['total']) and terms['view'] < 0.9 * first['view']


def _finger_corner_heights(grasps, plane, gripper):
    """(N,) lowest height above `plane` of the finger box corners, computed here in numpy."""
    R, t = grasps.rotations.astype(np.float64), grasps.translations.astype(np.float64)
    d, w = grasps.depths.astype(np.float64), grasps.widths.astype(np.float64)
    lowest = np.full(len(R), np.inf)
    for sx in (d - gripper.finger_length, d):
        for y in (w / 2, w / 2 + gripper.finger_thickness):
            for sy in (-1, 1):
                for sz in (-1, 1):
                    corner = np.stack([sx, sy * y, np.full_like(d, sz * gripper.finger_width / 2)],
                                      1)
                    world = t + np.einsum('nij,nj->ni', R, corner)
                    lowest = np.minimum(lowest, world @ plane[:3] + plane[3])
    return lowest


def test_reachable_from_above_is_the_cone_and_the_finger_boxes_over_the_table():
    from zerograsp_ros.grasp import DEFAULT_GRIPPER
    from zerograsp_ros.grasp.gripper import gripper_preset
    from zerograsp_ros.grasp.representation import GraspSet
    from zerograsp_ros.model.inference import reachable_from_above

    gripper = gripper_preset(DEFAULT_GRIPPER)
    rng = np.random.default_rng(5)
    up = np.array([0.0, -0.6, -0.8])                 # a tilted table seen from above
    plane = np.concatenate([up, [0.5]])
    n = 2000
    pts = rng.uniform(-0.1, 0.1, (n, 3)) + [0.0, 0.0, 0.6]
    pts += (rng.uniform(0.0, 0.06, (n, 1))) * up - (pts @ up + 0.5)[:, None] * up
    R = rotation_from_approach(rng.normal(size=(n, 3)), rng.uniform(0, np.pi, n))
    g = GraspSet(rotations=R, translations=pts, widths=rng.uniform(0.01, 0.085, n),
                 depths=rng.uniform(0.0, 0.04, n), scores=np.ones(n), qualities=np.ones(n),
                 graspness=np.ones(n), object_ids=np.ones(n))
    R, pts = g.rotations, g.translations
    ok = reachable_from_above(R, pts, g.widths, g.depths, 75.0, table_plane=plane,
                              gripper=gripper)
    in_cone = R[:, :, 0] @ -up >= math.cos(math.radians(75.0)) - 1e-9
    above = _finger_corner_heights(g, plane, gripper) >= 0.002
    assert 0.1 < ok.mean() < 0.9
    # the same decisions as this file's own corner arithmetic, bar float rounding at the edge
    disagree = ok != (in_cone & above & (pts @ up + 0.5 >= 0))
    assert disagree.sum() <= 2
    # with only an up direction (no plane), only the cone is left
    assert np.array_equal(reachable_from_above(R, pts, g.widths, g.depths, 75.0, up=up), in_cone)
    assert reachable_from_above(R, pts, g.widths, g.depths, 75.0).all()


def test_direct_head_decodes_only_grasps_reachable_from_above():
    from zerograsp_ros.model.inference import ZeroGraspPredictor, estimate_table_plane
    from zerograsp_ros.model.network import ZeroGraspNet
    from zerograsp_ros.model.synthetic import table_scene

    direct = preset('cpu').replace(transformer_dropout=0.0)
    assert direct.grasp_head == 'direct'
    frame, _ = table_scene(2, seed=1)
    plane = estimate_table_plane(frame)
    plane = plane / np.linalg.norm(plane[:3])
    torch.manual_seed(0)
    predictor = ZeroGraspPredictor(ZeroGraspNet(direct), direct, 'cpu')
    g = predictor.predict(frame, max_grasps_per_object=128, with_mesh=False).grasps
    assert len(g) > 0
    assert (g.rotations[:, :, 0] @ -plane[:3] >= math.cos(math.radians(75.0)) - 1e-4).all()
    assert (_finger_corner_heights(g, plane, predictor.gripper) >= 0.002 - 1e-4).all()


def test_nearest_grasp_mode_is_the_valid_mode_closest_to_the_prediction():
    """Winner takes all: each leaf regresses towards its nearest valid grasp mode."""
    from zerograsp_ros.model.losses import nearest_grasp_mode
    from zerograsp_ros.model.targets import GRASP_MODE_CHANNELS, LEAF_TARGET_CHANNELS

    views = fibonacci_views(60)[[0, 20, 40]]
    R = rotation_from_approach(views, np.array([0.0, 0.5, 1.0]))
    t = torch.zeros((3, LEAF_TARGET_CHANNELS + 3 * GRASP_MODE_CHANNELS))
    t[:, 5], t[:, 6:9], t[:, 9:12] = 0.3, torch.tensor(R[0, :, 0]), torch.tensor(R[0, :, 1])
    modes = t[:, LEAF_TARGET_CHANNELS:].view(3, 3, GRASP_MODE_CHANNELS)
    for m in range(3):
        modes[:2, m, 0:3], modes[:2, m, 3:6] = torch.tensor(R[m, :, 0]), torch.tensor(R[m, :, 1])
        modes[:2, m, 6:9] = torch.tensor([0.1 * m, 0.2 * m, 0.5 + 0.1 * m])
    modes[1, 2] = 0.0                                    # leaf 1: mode 2 does not exist
    # leaf 0 and 1 predict near mode 2 (with the closing axis flipped: same grasp), leaf 2
    # has no modes at all
    approach = torch.tensor(R[[2, 2, 2], :, 0]) + 0.05
    closing = -torch.tensor(R[[2, 2, 2], :, 1])
    chosen = nearest_grasp_mode(torch.nn.functional.normalize(approach, dim=1),
                                closing, t, 3)
    assert chosen.shape == (3, 9)
    torch.testing.assert_close(chosen[0], torch.cat([modes[0, 2, 8:9], modes[0, 2, 0:8]]))
    a, c = torch.nn.functional.normalize(approach, dim=1)[1].numpy(), closing[1].numpy()
    cost = [(1 - a @ R[m, :, 0]) + (1 - abs(c @ R[m, :, 1])) for m in (0, 1)]
    m = int(np.argmin(cost))                             # the nearest mode that exists
    torch.testing.assert_close(chosen[1], torch.cat([modes[1, m, 8:9], modes[1, m, 0:8]]))
    torch.testing.assert_close(chosen[2], t[2, 5:14])    # no modes: the best grasp
    with pytest.raises(InputError, match='carry'):
        nearest_grasp_mode(approach, closing, t[:, :LEAF_TARGET_CHANNELS + 9], 3)


def test_direct_head_with_grasp_modes_trains_towards_them():
    """A few direct-head steps with grasp_modes lower the approach and closing terms."""
    from zerograsp_ros.model.synthetic import table_sample

    sample = table_sample(2, seed=3)
    for target in sample.targets.values():
        a, c = np.asarray(target.grasp_approach), np.asarray(target.grasp_closing)
        turned = np.cross(a, c)      # a second valid grasp: the closing axis turned 90 deg
        target.grasp_modes = np.zeros((len(a), 8, 9), np.float32)
        target.grasp_modes[:, 0, 0:3], target.grasp_modes[:, 0, 3:6] = a, c
        target.grasp_modes[:, 1, 0:3], target.grasp_modes[:, 1, 3:6] = a, turned
        target.grasp_modes[:, :2, 6] = np.asarray(target.grasp_width)[:, None]
        target.grasp_modes[:, :2, 7] = np.asarray(target.grasp_depth)[:, None]
        target.grasp_modes[:, :2, 8] = np.asarray(target.grasp_quality)[:, None]
    direct = preset('cpu').replace(transformer_dropout=0.0, grasp_modes=2)
    first, terms = _train_a_few_steps(sample, config=direct)
    assert np.isfinite(terms['total'])
    assert terms['approach'] < first['approach'] and terms['closing'] < first['closing']
    with pytest.raises(InputError, match='grasp_modes'):
        preset('cpu').replace(grasp_modes=9)
