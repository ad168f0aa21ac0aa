"""Grasp score calibration: isotonic maps, ECE, checkpoint round trip, inference scores."""
from pathlib import Path

import numpy as np
import pytest
import torch

from zerograsp_ros.errors import InputError
from zerograsp_ros.grasp.representation import GraspSet
from zerograsp_ros.model.calibration import (
    CHECKPOINT_KEY,
    IsotonicMap,
    PlattMap,
    ScoreCalibration,
    expected_calibration_error,
    fit_isotonic,
    fit_platt,
    map_from_dict,
)
from zerograsp_ros.model.checkpoint import save_checkpoint, update_checkpoint_extra
from zerograsp_ros.model.config import preset
from zerograsp_ros.model.network import ZeroGraspNet
from zerograsp_ros.model.synthetic import table_scene

SHIPPED = Path(__file__).resolve().parents[1] / 'checkpoints' / 'zerograsp_cpu.pt'


def _noisy_outcomes(n=3000, seed=0):
    """Raw scores on a 1e-4 scale whose true success probability is sqrt(score / 1e-3)."""
    rng = np.random.default_rng(seed)
    raw = rng.random(n) ** 4 * 1e-3
    truth = np.sqrt(raw / 1e-3)
    return raw, (rng.random(n) < truth).astype(int), truth


def test_isotonic_fit_is_monotone_bounded_and_recovers_the_true_probability():
    raw, ok, truth = _noisy_outcomes()
    m = fit_isotonic(raw, ok, min_block=20)
    assert (np.diff(m.knots) > 0).all() and (np.diff(m.probabilities) >= 0).all()
    grid = np.linspace(-1.0, 2e-3, 2000)   # far outside the fitted range too
    p = m(grid)
    assert (np.diff(p) >= 0).all() and p.min() >= 0.0 and p.max() <= 1.0
    assert np.abs(m(raw) - truth).mean() < 0.08
    # raw scores are no probabilities; calibrated ones are, on fresh outcomes
    raw2, ok2, _ = _noisy_outcomes(seed=1)
    assert expected_calibration_error(raw2, ok2)['ece'] > 0.25   # = the success rate, 1/3
    assert expected_calibration_error(m(raw2), ok2)['ece'] < 0.05


def test_isotonic_fit_merges_small_blocks_and_rejects_bad_input():
    raw = np.arange(30, dtype=float)
    ok = np.array([1] + [0] * 28 + [1])     # lone successes at both ends
    m = fit_isotonic(raw, ok, min_block=10)
    assert m.probabilities.max() < 1.0      # no step of fewer than 10 grasps claims certainty
    for bad in ((raw, ok[:-1]), ([], []), ([np.nan], [1]), ([0.1, 0.2], [0, 2])):
        with pytest.raises(InputError):
            fit_isotonic(*bad)
    with pytest.raises(InputError, match='non-decreasing'):
        IsotonicMap(np.array([0.0, 1.0]), np.array([0.5, 0.4]))


def test_platt_fit_recovers_a_logistic_and_round_trips():
    rng = np.random.default_rng(4)
    raw = 10 ** rng.uniform(-6, -2, 4000)
    truth = 1 / (1 + np.exp(-(0.8 * np.log(raw + 1e-6) + 6.0)))
    ok = (rng.random(len(raw)) < truth).astype(int)
    m = fit_platt(raw, ok)
    assert m.slope == pytest.approx(0.8, abs=0.15)
    assert np.abs(m(raw) - truth).mean() < 0.03
    assert (np.diff(m(np.sort(raw))) >= 0).all()
    back = map_from_dict(m.to_dict())
    assert isinstance(back, PlattMap) and np.array_equal(back(raw), m(raw))
    # a score that ranks backwards gets no slope: every grasp gets the base rate
    flat = fit_platt(raw, 1 - ok)
    assert flat.slope == 0.0 and np.allclose(flat(raw), (1 - ok).mean(), atol=0.01)
    with pytest.raises(InputError):
        PlattMap(-1.0, 0.0)


def test_ece_of_known_bins():
    p = np.array([0.05, 0.05, 0.95, 0.95])
    y = np.array([0, 0, 1, 0])
    r = expected_calibration_error(p, y)
    assert r['ece'] == pytest.approx(0.5 * 0.05 + 0.5 * 0.45)
    assert [b['count'] for b in r['bins']] == [2] + [0] * 8 + [2]
    assert expected_calibration_error([1.0], [1])['ece'] == 0.0   # p = 1 lands in the last bin


def _calibration():
    raw, ok, _ = _noisy_outcomes()
    return ScoreCalibration({'network': fit_isotonic(raw, ok), 'refined': fit_isotonic(
        raw * 0.5, ok)}, threshold=0.3, info={'data': 'synthetic'})


def test_calibration_apply_keeps_order_and_reads_graspness_times_quality():
    cal = _calibration()
    rng = np.random.default_rng(3)
    n = 50
    g = np.sort(rng.random(n))[::-1] * 1e-3
    grasps = GraspSet(np.tile(np.eye(3), (n, 1, 1)), rng.random((n, 3)), np.full(n, 0.05),
                      np.full(n, 0.02), g, np.ones(n), g, np.zeros(n))
    out = cal.apply(grasps, 'network')
    assert np.allclose(out.scores, cal.probability(g, 'network'), atol=1e-6)
    assert (np.diff(out.scores) <= 1e-7).all()          # still sorted, best first
    assert np.array_equal(grasps.scores, g.astype(np.float32))   # the input is untouched
    # applying twice gives the same scores: the raw score stays graspness x quality
    assert np.array_equal(cal.apply(out, 'network').scores, out.scores)
    with pytest.raises(InputError):
        ScoreCalibration({'nope': cal.maps['network']})
    with pytest.raises(InputError):
        ScoreCalibration(cal.maps, threshold=1.5)


def test_calibration_round_trips_through_the_checkpoint_and_drives_inference(tmp_path):
    from zerograsp_ros.model.inference import ZeroGraspPredictor

    torch.manual_seed(0)
    config = preset('cpu').replace(transformer_dropout=0.0)
    model = ZeroGraspNet(config)
    plain = tmp_path / 'plain.pt'
    save_checkpoint(plain, model, config, {'step': 3})
    cal = _calibration()
    calibrated = tmp_path / 'calibrated.pt'
    update_checkpoint_extra(plain, {CHECKPOINT_KEY: cal.to_dict()}, calibrated)

    raw_pred = ZeroGraspPredictor.from_checkpoint(plain, device='cpu')
    assert raw_pred.calibration is None and raw_pred.score_threshold == 0.0
    cal_pred = ZeroGraspPredictor.from_checkpoint(calibrated, device='cpu')
    back = cal_pred.calibration
    for stage in ('network', 'refined'):
        assert np.array_equal(back.maps[stage].knots, cal.maps[stage].knots)
        assert np.array_equal(back.maps[stage].probabilities, cal.maps[stage].probabilities)
    assert back.threshold == 0.3 and back.info == {'data': 'synthetic'}
    assert ZeroGraspPredictor.from_checkpoint(calibrated, device='cpu',
                                              calibrated=False).calibration is None

    frame, _ = table_scene(2, seed=1)
    a = raw_pred.predict(frame, max_grasps_per_object=32, with_mesh=False).grasps
    b = cal_pred.predict(frame, max_grasps_per_object=32, with_mesh=False).grasps
    assert len(a) == len(b) > 0
    assert np.array_equal(a.translations, b.translations)   # same grasps, same order
    assert np.allclose(a.scores, a.graspness * a.qualities, rtol=1e-5)
    assert np.allclose(b.scores, cal.probability(a.scores, 'network'), atol=1e-6)
    assert (b.scores >= 0).all() and (b.scores <= 1).all()
    refined = cal_pred.calibrate_refined(a)
    assert np.allclose(refined.scores, cal.probability(a.scores, 'refined'), atol=1e-6)
    assert raw_pred.calibrate_refined(a) is a


def test_shipped_checkpoint_reports_probabilities():
    if not SHIPPED.is_file():
        pytest.skip(f'{SHIPPED} not present')
    from zerograsp_ros.model.checkpoint import load_checkpoint

    _, _, extra = load_checkpoint(SHIPPED)
    assert CHECKPOINT_KEY in extra, 'run python -m zerograsp_ros.training.calibrate'
    cal = ScoreCalibration.from_dict(extra[CHECKPOINT_KEY])
    assert 0.0 < cal.threshold < 1.0
    grid = np.concatenate([[0.0], np.logspace(-8, 0, 200)])
    for m in cal.maps.values():
        assert m.samples >= 100
        p = m(grid)
        assert (np.diff(p) >= 0).all() and p.min() >= 0.0 and p.max() <= 1.0
