"""Depth-scale tare against the calibrated table plane (perception/depth_tare.py)."""
from dataclasses import replace

import numpy as np
import pytest

from zerograsp_ros.errors import InputError
from zerograsp_ros.perception.depth_tare import (
    DepthTareConfig,
    measure_depth_scale,
    table_plane_in_camera,
    tare_frame,
)


@pytest.fixture(scope='module')
def scene_view():
    """A val-split pile rendered without noise by the cell's camera, and its table plane."""
    from zerograsp_ros.sim import scene as scn
    from zerograsp_ros.sim.cell_config import load_sim_cell_config
    cfg = load_sim_cell_config()
    scene = scn.generate_scene(2001, 4, 'pile', 'val')
    frame = scn.render_rgbd(scene, cfg.intrinsics, cfg.T_world_camera, np.random.default_rng(0),
                            noise=False)
    # The calibrated table: z = 0 in the world, i.e. the base frame's table plane.
    plane = table_plane_in_camera(cfg.T_base_camera,
                                  (0.0, 0.0, 1.0, -cfg.T_world_base[2, 3]))
    return cfg, scene, frame, plane


def test_known_plane_matches_the_rendered_table(scene_view):
    cfg, _, frame, plane = scene_view
    assert np.linalg.norm(plane[:3]) == pytest.approx(1.0)
    assert plane[3] > 0                                       # normal towards the camera
    table = (frame.labels == 0) & frame.valid_depth()
    result = measure_depth_scale(frame, plane)
    assert result.scale == pytest.approx(1.0, abs=2e-3)
    assert result.tilt_deg < 0.5
    assert result.table_pixels > 0.5 * table.sum()


@pytest.mark.parametrize('scale', [0.95, 1.04, 1.12])
def test_tare_undoes_a_whole_image_depth_scale(scene_view, scale):
    _, _, frame, plane = scene_view
    scaled = replace(frame, depth=frame.depth * np.float32(scale))
    tared, result = tare_frame(scaled, plane)
    assert result.applied and result.scale == pytest.approx(scale, abs=2e-3)
    assert tared.meta['depth_tare_scale'] == pytest.approx(scale, abs=2e-3)
    ok = frame.valid_depth()
    err = np.abs(tared.depth[ok] - frame.depth[ok])
    assert np.percentile(err, 99) < 0.002                     # back within 2 mm
    assert np.array_equal(tared.labels, frame.labels) and tared.rgb is frame.rgb
    assert 'depth_tare_scale' not in frame.meta               # the input is not modified


def test_tare_recovers_the_cells_own_scale_noise():
    from zerograsp_ros.sim import scene as scn
    from zerograsp_ros.sim.cell_config import load_sim_cell_config
    cfg = load_sim_cell_config()
    plane = table_plane_in_camera(cfg.T_world_camera)
    scene = scn.generate_scene(2002, 3, 'packed', 'val')
    for seed in (1, 2):
        replay = np.random.default_rng(seed)       # the renderer's draws: colour noise, scale
        replay.normal(0, 0.01, size=(cfg.intrinsics.height, cfg.intrinsics.width, 3))
        truth = replay.gamma(1000.0, 0.001)
        frame = scn.render_rgbd(scene, cfg.intrinsics, cfg.T_world_camera,
                                np.random.default_rng(seed), noise=True)
        assert measure_depth_scale(frame, plane).scale == pytest.approx(truth, abs=1e-3)


def test_absurd_corrections_are_refused_with_the_numbers(scene_view):
    cfg, _, frame, plane = scene_view
    with pytest.raises(InputError, match=r'refused.*\+30\.0 %.*15 %'):
        tare_frame(replace(frame, depth=frame.depth * np.float32(1.3)), plane)
    # a hand-eye calibration 10 degrees off: the fitted table is not the calibrated one
    tilt = np.radians(10.0)
    R = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    wrong = cfg.T_world_camera.copy()
    wrong[:3, :3] = wrong[:3, :3] @ R
    with pytest.raises(InputError, match='tilted 10.0 deg'):
        tare_frame(frame, table_plane_in_camera(wrong))
    # no table in view
    far = replace(frame, depth=np.where(frame.labels > 0, frame.depth, np.nan).astype(np.float32))
    with pytest.raises(InputError, match='table'):
        tare_frame(far, plane)


def test_disabled_tare_and_bad_settings(scene_view):
    _, _, frame, plane = scene_view
    same, result = tare_frame(frame, plane, DepthTareConfig(enabled=False))
    assert same is frame and result is None
    with pytest.raises(InputError, match='max_scale_error'):
        tare_frame(frame, plane, DepthTareConfig(max_scale_error=2.0))
    with pytest.raises(InputError, match='4 finite numbers'):
        table_plane_in_camera(np.eye(4), (0.0, 0.0, 1.0))
