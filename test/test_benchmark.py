"""Clutter-removal benchmark integrity: round cache key, distinct baseline proposals, oracle."""
import json

import numpy as np
import pytest

from zerograsp_ros.geometry.camera import project
from zerograsp_ros.sim import benchmark as bm
from zerograsp_ros.sim import scene as scn


@pytest.fixture(scope='module')
def cell():
    from zerograsp_ros.sim.cell import SimCell
    c = SimCell()
    yield c
    c.close()


def test_stale_rounds_are_not_reused_when_the_object_set_changes(cell, tmp_path, monkeypatch):
    # The old cache key (split, seed, ...) let a run with other objects reuse a round.
    partial = tmp_path / 'cr.partial.json'
    cfg = bm.BenchmarkConfig(methods=('random',), layouts=('packed',), rounds=1,
                             num_objects=3, seed=7, split='val')
    real_split = scn.object_split
    monkeypatch.setattr(scn, 'object_split', lambda split: ['bunny', *scn.PRIMITIVES])
    patched = bm.run_benchmark(cfg, cell=cell, partial_path=partial, progress=False)
    patched_objects = patched.rounds['random'][0]['objects']
    assert set(patched_objects) <= {'bunny', *scn.PRIMITIVES}
    monkeypatch.setattr(scn, 'object_split', real_split)
    fresh = bm.run_benchmark(cfg, cell=cell, partial_path=partial, progress=False)
    assert fresh.rounds['random'][0]['objects'] != patched_objects   # run again, not cached
    saved = json.loads(partial.read_text())
    assert len(saved['keys']) == 2                                  # both kept, apart
    again = bm.run_benchmark(cfg, cell=cell, partial_path=partial, progress=False)
    assert again.rounds['random'][0] == fresh.rounds['random'][0]   # same key: reused


def test_cache_key_covers_checkpoint_content_and_method_settings(tmp_path):
    ckpt = tmp_path / 'model.pt'
    ckpt.write_bytes(b'weights one')
    cfg = bm.BenchmarkConfig(checkpoint=str(ckpt))
    key = bm.round_cache_key(cfg)
    assert bm.round_cache_key(bm.BenchmarkConfig(checkpoint=str(ckpt))) == key
    ckpt.write_bytes(b'weights two')                  # same name and size, other content
    assert bm.round_cache_key(cfg) != key
    others = [bm.BenchmarkConfig(checkpoint=str(ckpt), depth_tare=False),
              bm.BenchmarkConfig(checkpoint=str(ckpt), depth_noise=False),
              bm.BenchmarkConfig(checkpoint=str(ckpt), grasps_per_object=64)]
    assert len({bm.round_cache_key(c) for c in others} | {bm.round_cache_key(cfg)}) == 4
    parts = bm.round_cache_components(cfg)
    for name in ('object_set', 'scene_generator', 'cell_config', 'method_config', 'checkpoint',
                 'code_version'):
        assert parts[name], name


def test_highest_point_proposals_are_distinct_objects_and_spots_inside_the_workspace(cell):
    from zerograsp_ros.sim.baselines import highest_point_grasps
    inside = bm.workspace_filter(cell.T_world_camera)
    plane = bm.table_plane_in_camera(cell.T_world_camera)
    objects_hit = []
    for seed in (3001, 3002):
        cell.reset(seed=seed, num_objects=5, layout='pile', split='val')
        frame = cell.capture()
        grasps = highest_point_grasps(frame, table_plane=plane, in_workspace=inside)
        assert len(grasps) >= 5
        assert inside(grasps.translations).all()
        gap = np.linalg.norm(grasps.translations[:, None] - grasps.translations[None], axis=-1)
        assert gap[~np.eye(len(grasps), dtype=bool)].min() > 0.02    # distinct spots
        # which object each of the first proposals lies on (GT label at its pixel)
        uv = np.round(project(grasps.translations[:5], frame.intrinsics)[0]).astype(int)
        labels = frame.labels[np.clip(uv[:, 1], 0, 479), np.clip(uv[:, 0], 0, 639)]
        objects_hit.append(len(set(labels[labels > 0].tolist())))
        assert grasps.scores[0] == grasps.scores.max()
    assert max(objects_hit) >= 3, objects_hit                    # spread over objects


def test_oracle_grasps_are_judged_on_the_true_meshes_and_hold(cell):
    from zerograsp_ros.sim.baselines import oracle_grasps
    cell.reset(seed=3003, num_objects=3, layout='packed', split='val')
    grasps = oracle_grasps(cell.current_scene(), cell.T_world_camera, np.random.default_rng(0))
    assert len(grasps) >= 3 and grasps.finite_mask().all()
    assert (grasps.scores > 0).all() and np.all(np.diff(grasps.scores) <= 1e-6)
    assert set(grasps.object_ids.tolist()) <= set(cell.object_ids())
    chosen = bm.select_grasp(grasps, cell.T_world_camera)
    assert chosen is not None
    idx, T = chosen
    out = cell.execute_grasp(T, width=float(grasps.widths[idx]), depth=float(grasps.depths[idx]))
    assert out.success, out
