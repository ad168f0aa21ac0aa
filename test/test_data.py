"""Synthetic data labels agree with geometry; the generator is deterministic and resumable."""
import numpy as np
import pytest
import trimesh

from zerograsp_ros.data.labels import (
    LabelConfig,
    ObjectShape,
    build_scene_geometry,
    judge_grasps,
    label_object_grasps,
    quality_from_mu,
)
from zerograsp_ros.errors import InputError
from zerograsp_ros.grasp.gripper import gripper_preset
from zerograsp_ros.grasp.representation import rotation_from_axes

DOWN = np.array([0.0, 0.0, -1.0])


def box_on_table(extents, centre_xy=(0.0, 0.0)):
    m = trimesh.creation.box(extents)
    m.apply_translation([centre_xy[0], centre_xy[1], extents[2] / 2])
    return m


def two_part_union():
    """An L-shaped object made of two overlapping boxes (like pybullet's random objects)."""
    a = trimesh.creation.box((0.06, 0.02, 0.02))
    b = trimesh.creation.box((0.02, 0.02, 0.06))
    a.apply_translation((0.0, 0.0, 0.01))
    b.apply_translation((0.02, 0.0, 0.03))
    return trimesh.util.concatenate([a, b]), [a, b]


def test_surface_samples_lie_on_the_outer_surface_with_outward_normals():
    mesh, parts = two_part_union()
    shape = ObjectShape(mesh, parts)
    pts, nrm = shape.sample_surface(2000, np.random.default_rng(0))
    # on the mesh: distance to the nearest triangle is ~0
    dist = np.abs(trimesh.proximity.signed_distance(mesh, pts))
    assert dist.max() < 1e-5
    # outward: a step along the normal leaves the solid, a step against it enters it
    assert not shape.occupancy(pts + 1e-3 * nrm).any()
    assert shape.occupancy(pts - 1e-3 * nrm).mean() > 0.99
    # internal faces of the union are not sampled: no point strictly inside the other part
    inside_a = (np.abs(pts - [0.0, 0.0, 0.01]) < [0.03 - 1e-4, 0.01 - 1e-4, 0.01 - 1e-4]).all(1)
    inside_b = (np.abs(pts - [0.02, 0.0, 0.03]) < [0.01 - 1e-4, 0.01 - 1e-4, 0.03 - 1e-4]).all(1)
    assert not (inside_a | inside_b).any()


def test_sdf_sign_and_magnitude_match_a_box():
    ext = np.array([0.04, 0.06, 0.08])
    shape = ObjectShape(trimesh.creation.box(ext))
    rng = np.random.default_rng(1)
    q = rng.uniform(-0.06, 0.06, size=(3000, 3))
    sdf = shape.signed_distance(q)
    inside = (np.abs(q) < ext / 2).all(1)
    assert (sdf[inside] < 0).all() and (sdf[~inside] > 0).all()
    # exact box SDF (outside part) for points outside
    d = np.abs(q) - ext / 2
    exact = np.linalg.norm(np.maximum(d, 0), axis=1) + np.minimum(d.max(1), 0)
    assert np.allclose(sdf, exact, atol=1e-5)
    pts, vals = shape.sample_sdf(500, 0.005, rng)
    assert np.allclose(vals, shape.signed_distance(pts))


def test_object_shape_rejects_broken_meshes():
    with pytest.raises(InputError, match='empty'):
        ObjectShape(trimesh.Trimesh())
    bad = trimesh.creation.box((0.1, 0.1, 0.1))
    bad.vertices[0] = np.nan
    with pytest.raises(InputError, match='non-finite'):
        ObjectShape(bad)


def _scene(meshes, seed=0):
    shapes = [ObjectShape(m) for m in meshes]
    cfg = LabelConfig()
    return shapes, cfg, build_scene_geometry(shapes, range(1, len(shapes) + 1), cfg,
                                             np.random.default_rng(seed))


def test_judge_accepts_a_top_down_antipodal_grasp_and_rejects_bad_ones():
    box = box_on_table((0.03, 0.06, 0.08))
    _, cfg, geo = _scene([box])
    top = np.array([0.0, 0.0, 0.08])
    R_good = rotation_from_axes(DOWN[None], np.array([[1.0, 0.0, 0.0]]))  # close across 3 cm
    R_wide = rotation_from_axes(DOWN[None], np.array([[0.0, 1.0, 0.0]]))  # 6 cm side
    R_up = rotation_from_axes(-DOWN[None], np.array([[1.0, 0.0, 0.0]]))   # from below the table
    R = np.concatenate([R_good, R_wide, R_good, R_up])
    t = np.stack([top, top, top + [0.2, 0.0, 0.0], [0.0, 0.0, 0.0]])
    j = judge_grasps(R, t, np.full(4, 0.02), geo, cfg.gripper)
    assert not j.collision[0] and not j.empty[0] and j.mu_min[0] < 1e-3
    assert j.width[0] == pytest.approx(0.03 + 2 * cfg.width_margin, abs=2e-3)
    assert not j.collision[1] and j.width[1] == pytest.approx(0.07, abs=3e-3)
    assert j.empty[2]                        # nothing between the fingers
    assert j.collision[3]                    # palm below the table
    # closing across the 8 cm height does not fit the 85 mm stroke with margins
    side = rotation_from_axes(np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 0.0, 1.0]]))
    j2 = judge_grasps(side, np.array([[-0.015, 0.0, 0.04]]), np.array([0.02]), geo, cfg.gripper)
    assert j2.collision[0] or j2.width[0] > cfg.gripper.max_stroke - 1e-9


def test_judge_detects_a_neighbour_in_the_finger():
    box = box_on_table((0.03, 0.06, 0.08))
    neighbour = box_on_table((0.02, 0.02, 0.1), centre_xy=(0.03, 0.0))
    _, cfg, geo = _scene([box, neighbour])
    R = rotation_from_axes(DOWN[None], np.array([[1.0, 0.0, 0.0]]))
    j = judge_grasps(R, np.array([[0.0, 0.0, 0.08]]), np.array([0.02]), geo, cfg.gripper)
    assert j.collision[0]


def test_no_candidates_give_empty_labels():
    shapes, cfg, geo = _scene([box_on_table((0.03, 0.03, 0.03))])
    none = label_object_grasps(np.zeros((0, 3)), np.zeros((0, 3)), 0, geo, cfg)
    assert len(none.points) == 0 and none.valid.shape == (0,)
    j = judge_grasps(np.zeros((0, 3, 3)), np.zeros((0, 3)), np.zeros(0), geo, cfg.gripper)
    assert j.collision.shape == (0,)


def test_evaluation_width_is_respected():
    box = box_on_table((0.03, 0.06, 0.08))
    _, cfg, geo = _scene([box])
    R = rotation_from_axes(np.repeat(DOWN[None], 2, 0), np.array([[1.0, 0.0, 0.0]] * 2))
    t = np.array([[0.0, 0.0, 0.08]] * 2)
    j = judge_grasps(R, t, np.array([0.02, 0.02]), geo, cfg.gripper,
                     widths=np.array([0.05, 0.02]))
    assert not j.collision[0] and j.success_at(0.2)[0]
    assert j.collision[1]                    # a 2 cm opening puts the fingers into the box


def _box_grid(lo, hi, step=0.002):
    axes = [np.arange(a + step / 2, b, step) for a, b in zip(lo, hi)]
    if any(len(a) == 0 for a in axes):
        return np.zeros((0, 3))
    return np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 3)


def test_labelled_collision_free_grasps_do_not_intersect_any_mesh():
    meshes = [box_on_table((0.03, 0.05, 0.07)),
              box_on_table((0.04, 0.04, 0.05), centre_xy=(0.055, 0.0)),
              trimesh.creation.cylinder(0.02, 0.09)]
    meshes[2].apply_translation((-0.05, 0.0, 0.045))
    shapes, cfg, geo = _scene(meshes)
    rng = np.random.default_rng(3)
    pts, nrm = shapes[0].sample_surface(200, rng)
    pts, nrm = pts[pts[:, 2] > 0.004][:20], nrm[pts[:, 2] > 0.004][:20]
    labels = label_object_grasps(pts, nrm, 0, geo, cfg)
    assert labels.valid.sum() >= 3
    assert (labels.graspness[~labels.valid] == 0).all()
    assert np.allclose(labels.quality[labels.valid], quality_from_mu(labels.mu_min[labels.valid]))
    gripper = cfg.gripper
    for i in np.nonzero(labels.valid)[0]:
        R = rotation_from_axes(labels.approach[i][None], labels.closing[i][None])[0]
        boxes = gripper.boxes(np.array([labels.width[i]]), np.array([labels.depth[i]]))[0]
        for lo, hi in boxes:
            # dense grid inside each gripper box, shrunk by 2 mm (the obstacle points are
            # a 4 mm sample), must lie outside every solid and above the table
            grid = _box_grid(lo + 0.002, hi - 0.002) @ R.T + labels.points[i]
            assert (grid[:, 2] > 0.0).all()
            for shape in shapes:
                assert not shape.occupancy(grid).any()


def test_the_label_judge_checks_the_refinement_gripper():
    assert LabelConfig().gripper == gripper_preset('robotiq_2f85')


@pytest.fixture(scope='module')
def tiny_split(tmp_path_factory):
    from zerograsp_ros.data.generate import generate_split
    out = tmp_path_factory.mktemp('ds')
    cfg = LabelConfig(grasp_points=4, view_stride=30, angle_stride=4)
    manifest = generate_split(out, 'test', 2, seed=5, workers=1, scenes_per_shard=1,
                              config=cfg, progress=False)
    return out, cfg, manifest


def test_generator_writes_versioned_shards_and_resumes(tiny_split):
    from zerograsp_ros.data.generate import SCHEMA_VERSION, generate_split
    out, cfg, manifest = tiny_split
    assert manifest['schema_version'] == SCHEMA_VERSION
    assert manifest['generated_shards_this_run'] == 2
    assert (out / 'test' / 'manifest.json').is_file()
    again = generate_split(out, 'test', 2, seed=5, workers=1, scenes_per_shard=1,
                           config=cfg, progress=False)
    assert again['generated_shards_this_run'] == 0       # resume: finished shards skipped


def test_dataset_samples_match_the_rendered_frame(tiny_split):
    from zerograsp_ros.data.dataset import ShardDataset
    from zerograsp_ros.geometry.camera import project
    out, _, _ = tiny_split
    ds = ShardDataset(out / 'test')
    assert len(ds) == 2
    rec = ds.record(0)
    sample = rec.sample()
    assert sample.targets, 'no visible labelled object'
    frame = sample.frame
    for oid, tgt in sample.targets.items():
        tgt.validate()
        # the nearest surface points project onto the object's own label pixels
        uv, z = project(tgt.surface_points, frame.intrinsics)
        u = np.round(uv).astype(int)
        ok = (u[:, 0] >= 0) & (u[:, 0] < 640) & (u[:, 1] >= 0) & (u[:, 1] < 480)
        lab = frame.labels[u[ok, 1], u[ok, 0]]
        assert (lab == oid).mean() > 0.2
        if tgt.has_grasp_labels:
            assert 0.0 <= tgt.graspness.min() and tgt.graspness.max() <= 1.0
    assert 0.9 < rec.depth_scale() < 1.1


def test_generation_is_deterministic_per_seed(tiny_split):
    from zerograsp_ros.data.generate import generate_scene_record, scene_seed
    out, cfg, _ = tiny_split
    a = generate_scene_record(scene_seed(5, 'test', 1), 'test', cfg)
    with np.load(out / 'test' / 'shard_00001.npz') as data:
        for key, value in a.items():
            assert np.array_equal(np.asarray(value), data[f's0_{key}']), key


def test_machines_split_a_split_by_shard_number_into_the_same_files(tiny_split, tmp_path):
    from zerograsp_ros.data.generate import generate_split
    out, cfg, _ = tiny_split
    m = generate_split(tmp_path, 'test', 2, seed=5, workers=1, scenes_per_shard=1, config=cfg,
                       progress=False, part=1, parts=2)
    assert m['generated_shards_this_run'] == 1 and m['part'] == [1, 2]
    assert sorted(p.name for p in (tmp_path / 'test').glob('shard_*.npz')) == \
        ['shard_00001.npz']
    with np.load(tmp_path / 'test' / 'shard_00001.npz') as mine, \
            np.load(out / 'test' / 'shard_00001.npz') as whole:
        assert np.array_equal(mine['s0_rgb'], whole['s0_rgb'])
        assert np.array_equal(mine['s0_depth_mm'], whole['s0_depth_mm'])
    with pytest.raises(InputError, match='--part'):
        generate_split(tmp_path, 'test', 2, seed=5, part=2, parts=2, progress=False)


def test_raw_grasp_failure_breakdown_names_each_cause(tiny_split):
    """The raw-grasp failure breakdown (benchmarks/raw_grasp_failures.py) names causes.

    A finger through the grasped object, a grasp under the table and one in mid-air get
    own_object, table and empty.
    """
    import importlib.util
    from pathlib import Path

    from zerograsp_ros.data.dataset import ShardDataset
    from zerograsp_ros.grasp.representation import GraspSet
    from zerograsp_ros.model.inference import Prediction

    path = Path(__file__).resolve().parents[1] / 'benchmarks' / 'raw_grasp_failures.py'
    spec = importlib.util.spec_from_file_location('raw_grasp_failures', path)
    rgf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rgf)
    out, _, _ = tiny_split
    rec = ShardDataset(out / 'test').record(0)
    config = LabelConfig()
    gripper = config.gripper
    meshes = rec.world_meshes()
    oid = max(meshes, key=lambda i: np.ptp(meshes[i].vertices[:, 2]))   # the tallest object
    top = meshes[oid].vertices[np.argmax(meshes[oid].vertices[:, 2])]
    R = rotation_from_axes(np.array([0.0, 0.0, -1.0]), np.array([1.0, 0.0, 0.0]))[0]
    width, depth = 0.04, 0.02
    finger = gripper.boxes([width], [depth])[0, 0].mean(0)   # centre of the +y finger box
    world = np.stack([top - R @ finger,                       # that finger around the top
                      np.array([top[0], top[1], -0.05]),       # under the table
                      np.array([top[0], top[1], 0.6])])        # in mid-air
    T_cw = np.linalg.inv(np.asarray(rec['T_world_camera'], dtype=np.float64))
    n = len(world)
    grasps = GraspSet(rotations=np.repeat((T_cw[:3, :3] @ R)[None], n, 0),
                      translations=world @ T_cw[:3, :3].T + T_cw[:3, 3],
                      widths=np.full(n, width), depths=np.full(n, depth),
                      scores=np.array([0.9, 0.8, 0.7]), qualities=np.array([0.9, 0.8, 0.7]),
                      graspness=np.ones(n), object_ids=np.full(n, oid))
    result = rgf.scene_breakdown(Prediction([], grasps), rec, config)
    assert result['judged'] == 3
    assert result['causes'] == {'success': 0, 'table': 1, 'own_object': 1, 'neighbour': 0,
                                'empty': 1, 'force_closure': 0}
    assert all(0 <= v <= 3 for v in result['what_if'].values())
    assert result['rankings']['quality']['judged'] == 3
