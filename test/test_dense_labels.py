"""Dense grasp labels: per-mesh cache, per-scene collisions, graspness, same judge."""
import numpy as np
import pytest
import trimesh

from zerograsp_ros.data import dense_labels as dl
from zerograsp_ros.data.labels import FRICTION_COEFFICIENTS, SceneGeometry, judge_grasps
from zerograsp_ros.errors import InputError

# small but real: 24 points x 30 views x 4 angles x 4 depths per object
SMALL = dl.DenseLabelConfig(points=24, contact_points=1200, view_stride=10, angle_stride=3)
BOX = (0.05, 0.06, 0.08)


def _pose(x=0.0, y=0.0, z=0.0):
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('dense_cache')


@pytest.fixture(scope='module')
def box_cands(cache_dir):
    return dl.object_candidates(trimesh.creation.box(BOX), None, SMALL, cache_dir)


def test_cache_hit_returns_identical_candidates_and_skips_object_stage(
        box_cands, cache_dir, monkeypatch):
    assert not box_cands.from_cache and len(box_cands) > 0

    def fail(*_a, **_k):
        raise AssertionError('object stage ran despite a cached entry')

    monkeypatch.setattr(dl, '_judge_object_alone', fail)
    again = dl.object_candidates(trimesh.creation.box(BOX), None, SMALL, cache_dir)
    assert again.from_cache
    for name in dl.ObjectCandidates._ARRAYS:
        np.testing.assert_array_equal(getattr(again, name), getattr(box_cands, name))
    # another size is another mesh: not served from this entry
    with pytest.raises(AssertionError, match='object stage ran'):
        dl.object_candidates(trimesh.creation.box((0.05, 0.06, 0.09)), None, SMALL, cache_dir)


def test_neighbour_and_table_collisions_removed_per_scene_but_kept_in_cache(
        box_cands, cache_dir):
    on_table = _pose(z=BOX[2] / 2)
    alone = dl.scene_collision_free([box_cands], [on_table], SMALL)[0]
    R, t, _ = dl.candidate_poses(box_cands, SMALL, on_table)
    from_below = R[:, 2, 0] > 0.5          # approach pointing up: starts under the table
    assert from_below.any() and not alone[from_below].any()
    assert alone[np.abs(R[:, 2, 0]) < 0.3].any()
    # a second box right next to the +x face blocks grasps that approach towards -x
    neighbour = dl.object_candidates(trimesh.creation.box(BOX), None, SMALL, cache_dir)
    next_to = _pose(x=BOX[0] + 0.01, z=BOX[2] / 2)
    with_nb = dl.scene_collision_free([box_cands, neighbour], [on_table, next_to], SMALL)[0]
    assert not (with_nb & ~alone).any()          # a neighbour never frees a candidate
    from_plus_x = (R[:, 0, 0] < -0.7) & alone
    assert from_plus_x.any() and not with_nb[from_plus_x].any()
    assert with_nb[(R[:, 0, 0] > 0.7) & alone].any()   # the free side stays graspable
    cached = dl.object_candidates(trimesh.creation.box(BOX), None, SMALL, cache_dir)
    assert cached.from_cache and len(cached) == len(box_cands)


def test_free_standing_box_graspness_higher_from_the_side_than_from_below(box_cands):
    on_table = _pose(z=BOX[2] / 2)
    free = dl.scene_collision_free([box_cands], [on_table], SMALL)[0]
    labels = dl.view_labels(box_cands, free, SMALL)
    views_z = SMALL.views()[:, 2]   # box is not rotated: object views are world views
    side = labels.graspness[:, np.abs(views_z) < 0.3].mean()
    below = labels.graspness[:, views_z > 0.5].mean()
    assert side > 0.0 and below == 0.0
    # without the table the same views from below are graspable (object stage alone)
    alone = dl.view_labels(box_cands, None, SMALL)
    assert alone.graspness[:, views_z > 0.5].mean() > 0.0


def test_dense_scene_decisions_agree_with_judge_grasps(box_cands, cache_dir):
    cyl = trimesh.creation.cylinder(radius=0.03, height=0.1, sections=24)
    cyl_cands = dl.object_candidates(cyl, None, SMALL, cache_dir)
    yaw = np.eye(4)
    yaw[:3, :3] = trimesh.transformations.rotation_matrix(0.4, (0, 0, 1))[:3, :3]
    poses = [_pose(z=BOX[2] / 2) @ yaw, _pose(x=0.065, y=0.02, z=0.05)]
    exact = dl.DenseLabelConfig(**{**SMALL.__dict__, 'collision_voxel': None})
    cands = [box_cands, cyl_cands]
    free = dl.scene_collision_free(cands, poses, exact)
    posed = [c.contact_points.astype(np.float64) @ T[:3, :3].T + T[:3, 3]
             for c, T in zip(cands, poses)]
    posed_n = [c.contact_normals.astype(np.float64) @ T[:3, :3].T for c, T in zip(cands, poses)]
    geometry = SceneGeometry(np.array([0, 1]), posed, posed_n, np.concatenate(posed), 0.0)
    rng = np.random.default_rng(0)
    agree = total = removed = 0
    for k, (c, T) in enumerate(zip(cands, poses)):
        pick = rng.choice(len(c), size=min(600, len(c)), replace=False)
        R, t, d = dl.candidate_poses(c, exact, T)
        j = judge_grasps(R[pick], t[pick], d[pick], geometry, exact.gripper,
                         width_margin=exact.width_margin)
        judge_ok = j.success_at(FRICTION_COEFFICIENTS[-1]) & (j.object_index == k)
        agree += int((judge_ok == free[k][pick]).sum())
        total += len(pick)
        removed += int((~free[k][pick]).sum())
        both = judge_ok & free[k][pick]
        np.testing.assert_allclose(j.width[both], c.width[pick][both], atol=1e-4)
    assert removed > 20            # the scene does remove candidates (table, neighbour)
    assert agree / total >= 0.99, f'{agree}/{total} decisions agree'


def test_leaf_targets_cover_every_leaf_and_camera_views(box_cands):
    on_table = _pose(z=BOX[2] / 2)
    free = dl.scene_collision_free([box_cands], [on_table], SMALL)[0]
    T_cam = np.linalg.inv(_pose(z=0.6) @ np.diag([1.0, -1.0, -1.0, 1.0]))  # looking down
    tg = dl.dense_point_targets(box_cands, dl.view_labels(box_cands, free, SMALL),
                                T_cam @ on_table, SMALL, num_views=300)
    assert tg.graspness.shape == (SMALL.points, 300)
    has = tg.angle_bin >= 0
    assert has.any() and (tg.depth_bin[has] >= 0).all() and (tg.quality[has] > 0).all()
    assert ((tg.angle_bin >= -1) & (tg.angle_bin < 12)).all()
    leaves = trimesh.creation.box(BOX).sample(200) @ T_cam[:3, :3].T  # camera frame
    leaves = leaves + (T_cam @ on_table)[:3, 3]
    out = dl.leaf_grasp_targets(tg, leaves)
    assert out['labelled'].all() and out['graspness'].shape == (200, 300)
    far = dl.leaf_grasp_targets(tg, leaves + 1.0, max_distance_m=0.005)
    assert not far['labelled'].any() and (far['graspness'] == 0).all()


# digests of (name, object-frame vertices, scale) per object, recorded with the code
# before `size_levels` existed: the benchmark's and the cell's scenes must not move
SCENE_DIGESTS = {(11, 4, 'pile', 'test'): ('d74499efe413bd2b', 3),
                 (3, 5, 'packed', 'train'): ('f33110925843b10e', 5),
                 (2001, 6, 'pile', 'val'): ('a5e295a4b080207c', 5)}


def _scene_digest(scene):
    import hashlib
    h = hashlib.sha256()
    for o in scene.objects:
        h.update(o.name.encode())
        h.update(np.ascontiguousarray(o.mesh.vertices).tobytes())
        h.update(np.float64(o.scale).tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize('args', sorted(SCENE_DIGESTS))
def test_benchmark_scenes_unchanged_by_size_levels_option(args):
    from zerograsp_ros.sim import scene as scn
    default = scn.generate_scene(*args)
    assert (_scene_digest(default), len(default.objects)) == SCENE_DIGESTS[args]
    explicit = scn.generate_scene(*args, size_levels=None)
    assert _scene_digest(explicit) == SCENE_DIGESTS[args][0]
    for a, b in zip(default.objects, explicit.objects):
        np.testing.assert_array_equal(a.pose, b.pose)


def test_size_levels_make_meshes_repeat():
    from zerograsp_ros.sim import objects
    from zerograsp_ros.sim import scene as scn
    for name, levels, most in (('box', 2, 8), ('cylinder', 3, 9), ('urdf_001', 2, 2)):
        seen = set()
        for seed in range(24):
            parts, _ = objects._make_object_parts(name, np.random.default_rng(seed), levels)
            seen.add(np.concatenate([p.vertices for p in parts]).round(12).tobytes())
        assert 1 < len(seen) <= most, (name, len(seen))
    with pytest.raises(Exception, match='size_levels'):
        scn.generate_scene(1, 2, 'pile', 'train', size_levels=0)


def test_generate_dense_switch_adds_targets_and_keeps_sparse_labels(tmp_path):
    from zerograsp_ros.data.dataset import ShardDataset
    from zerograsp_ros.data.generate import generate_split, main
    tiny = dl.DenseLabelConfig(points=16, contact_points=800, view_stride=20, angle_stride=4)
    cache = tmp_path / 'cache'
    manifest = generate_split(tmp_path / 'data', 'train', 1, seed=3, progress=False,
                              num_objects=2, dense=tiny, size_levels=3, dense_cache=cache)
    assert manifest['size_levels'] == 3 and manifest['dense_label_config']['points'] == 16
    data = ShardDataset(tmp_path / 'data' / 'train')     # the existing reader
    rec = data.record(0).arrays
    assert int(rec['dense_num_views']) == 300
    assert len(list(cache.glob('*.npz'))) >= 1
    visible = [k[:-len('grasp_valid')] for k in rec if k.endswith('grasp_valid')]
    assert visible and data.record(0).labelled_ids()
    for k in visible:
        assert rec[k + 'dense_points'].shape == (16, 3)
        g = rec[k + 'dense_graspness']
        assert g.shape == (16, 300) and 0.0 <= g.min() and g.max() <= 1.0
        assert rec[k + 'dense_angle_bin'].shape == g.shape
        assert k + 'grasp_points' in rec and k + 'surface_points' in rec   # sparse stays
    assert data[0].targets      # old readers still build samples from the shard
    with pytest.raises(SystemExit):
        main(['--out', str(tmp_path), '--split', 'train', '--scenes', '1',
              '--dense-points', 'many'])


def test_dense_only_scenes_train_on_best_view_labels_the_judge_accepts(tmp_path):
    """Without sparse labels, training targets come from the dense ones, and they are grasps.

    Each labelled point's best grasp (exact view, angle, depth, width) is judged on the
    stored scene by the same judge: voxel-thinned obstacles may lose a few, a wrong frame
    or axis would lose most.
    """
    from zerograsp_ros.data.dataset import ShardDataset
    from zerograsp_ros.data.generate import generate_split
    from zerograsp_ros.grasp.representation import GraspSet
    from zerograsp_ros.training.evaluate import grasp_success, scene_geometry
    cfg = dl.DenseLabelConfig(points=48, contact_points=1500, view_stride=10, angle_stride=2)
    manifest = generate_split(tmp_path / 'data', 'train', 1, seed=5, progress=False,
                              num_objects=3, dense=cfg, size_levels=3,
                              dense_cache=tmp_path / 'cache', sparse_labels=False)
    assert manifest['sparse_labels'] is False
    rec = ShardDataset(tmp_path / 'data' / 'train').record(0)
    assert not any(k.endswith('grasp_points') for k in rec.arrays)
    assert rec.has_dense_labels and rec.labelled_ids()
    judged = 0
    for oid in rec.labelled_ids():
        tgt = rec.target(oid, sensor_frame=False, grasp_modes=True)
        tgt.validate()
        assert rec.target(oid).grasp_modes is None       # only when asked for
        assert len(tgt.grasp_points) == 48 and tgt.label_radius_m > 0.005
        assert 0.0 <= tgt.graspness.min() and tgt.graspness.max() <= 1.0
        np.testing.assert_allclose(np.linalg.norm(tgt.grasp_approach, axis=1), 1.0, atol=1e-5)
        assert np.abs((tgt.grasp_approach * tgt.grasp_closing).sum(1)).max() < 1e-5
        good = tgt.graspness > 0
        if not good.any():
            continue
        R = np.stack([tgt.grasp_approach, tgt.grasp_closing,
                      np.cross(tgt.grasp_approach, tgt.grasp_closing)], axis=2)[good]
        n = int(good.sum())
        grasps = GraspSet(R, tgt.grasp_points[good], tgt.grasp_width[good],
                          tgt.grasp_depth[good], np.ones(n), tgt.grasp_quality[good],
                          tgt.graspness[good], np.full(n, oid, np.int32))
        ok = grasp_success(grasps, rec, scene_geometry(rec))[:, -1]
        judged += n
        assert ok.mean() >= 0.7, f'object {oid}: {ok.mean():.2f} of {n} best-view labels succeed'
        # the other grasp modes (other views, rebuilt from the template copies) are exact
        # grasps too: a wrong recovered rotation or angle would lose most
        modes = tgt.grasp_modes
        has = rec['obj%d_dense_has_grasp' % oid].astype(bool)
        np.testing.assert_allclose(modes[has, 0, 0:3], tgt.grasp_approach[has])
        more = np.abs(modes[:, 1:, 0:3]).sum(-1) > 0                      # (P, modes - 1)
        assert more[has].any(1).mean() > 0.5 and not more[~has].any()
        p, m = np.nonzero(more)
        a, c = modes[p, 1 + m, 0:3], modes[p, 1 + m, 3:6]
        grasps = GraspSet(np.stack([a, c, np.cross(a, c)], axis=2), tgt.grasp_points[p],
                          modes[p, 1 + m, 6], modes[p, 1 + m, 7], np.ones(len(p)),
                          modes[p, 1 + m, 8], np.ones(len(p)), np.full(len(p), oid, np.int32))
        ok = grasp_success(grasps, rec, scene_geometry(rec))[:, -1]
        assert ok.mean() >= 0.7, f'object {oid}: {ok.mean():.2f} of {len(p)} modes succeed'
    assert judged >= 10
    samples = ShardDataset(tmp_path / 'data' / 'train')[0]
    assert all(t.has_grasp_labels for t in samples.targets.values())
    # dense labels of an older generator (no exact best grasp) are refused by name
    old = ShardDataset(tmp_path / 'data' / 'train').record(0)
    old.arrays = {k: v for k, v in old.arrays.items() if 'dense_best_approach' not in k}
    with pytest.raises(InputError, match='regenerate'):
        old.target(rec.labelled_ids()[0])
    # modes of labels on another grid are refused by name, not guessed
    other = ShardDataset(tmp_path / 'data' / 'train').record(0)
    oid = rec.labelled_ids()[0]
    turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) @ \
        np.array([[1.0, 0.0, 0.0], [0.0, 0.6, -0.8], [0.0, 0.8, 0.6]])
    other.arrays = dict(other.arrays)
    other.arrays[f'obj{oid}_dense_best_approach'] = \
        np.roll(other.arrays[f'obj{oid}_dense_best_approach'], 1, axis=0) @ turn.T
    with pytest.raises(InputError, match='label grid'):
        other.target(oid, grasp_modes=True)
