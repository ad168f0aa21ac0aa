"""Fit the grasp score calibration on validation scenes and store it in a checkpoint.

    python -m zerograsp_ros.training.calibrate --checkpoint checkpoints/zerograsp_cpu.pt \
        --data datasets/v1/val --out checkpoints/zerograsp_cpu.pt

Per validation scene: the checkpoint's grasps (raw scores, calibration off),
the top `--top-k` of the network output and the top `--top-k` survivors of
the full refinement on the reconstruction (`evaluate.refine_on_reconstruction`,
table plane fitted on the observed table as a robot would), each judged by the
label judge (`data.labels.judge_grasps` on the true meshes + table; success =
collision-free, non-empty and force-closure at mu = 0.8, the precision
criterion of `evaluate`). Per stage, isotonic regression or Platt scaling of
success on graspness x quality (model/calibration.py), whichever has the lower
expected calibration error in 5-fold cross-validation by scene (3 repeats). The default score
threshold is the calibrated probability that maximises F-1 of "predicted to
succeed" on the refined validation grasps (what a robot is handed).
"""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
import sys

import numpy as np

from zerograsp_ros.errors import InputError
from zerograsp_ros.model.calibration import (
    CHECKPOINT_KEY,
    STAGES,
    ScoreCalibration,
    expected_calibration_error,
    fit_isotonic,
    fit_platt,
)

SUCCESS_MU = 0.8
DEFAULT_TOP_K = 20   # the pipeline's default max_grasps: what a user is handed


def collect_outcomes(predictor, data: str | Path, max_scenes: int | None = None,
                     top_k: int = DEFAULT_TOP_K, progress: bool = True,
                     depth_tare: bool = True) -> dict:
    """Raw scores and judged outcomes per stage: {stage: {'raw', 'success', 'scene'}}.

    On the frames the pipeline sees (`evaluate.observed_frame`: depth tared against
    the known table unless `depth_tare` is False).
    """
    from zerograsp_ros.data.labels import FRICTION_COEFFICIENTS
    from zerograsp_ros.training.evaluate import (
        grasp_success,
        labelled_scenes,
        observed_frame,
        refine_on_reconstruction,
        scene_geometry,
    )

    if predictor.calibration is not None:
        raise InputError('collect outcomes with an uncalibrated predictor '
                         '(ZeroGraspPredictor.from_checkpoint(..., calibrated=False))')
    mu_i = FRICTION_COEFFICIENTS.index(SUCCESS_MU)
    rows = {s: {'raw': [], 'success': [], 'scene': []} for s in STAGES}
    for si, rec, ids in labelled_scenes(data, max_scenes, 'judging grasps', progress):
        frame, _ = observed_frame(rec, depth_tare)
        pred = predictor.predict(frame, object_ids=ids, with_mesh=False)
        if not len(pred.grasps):
            continue
        geometry = scene_geometry(rec)
        stages = {'network': pred.grasps.subset(slice(0, top_k)),
                  'refined': refine_on_reconstruction(pred, rec, max_grasps=top_k,
                                                      frame=frame)}
        for stage, grasps in stages.items():
            if not len(grasps):
                continue
            ok = grasp_success(grasps, rec, geometry)[:, mu_i]
            rows[stage]['raw'].extend((grasps.graspness * grasps.qualities).tolist())
            rows[stage]['success'].extend(ok.astype(int).tolist())
            rows[stage]['scene'].extend([si] * len(grasps))
    return {s: {k: np.asarray(v) for k, v in r.items()} for s, r in rows.items()}


def f1_threshold(probabilities: np.ndarray, outcomes: np.ndarray) -> dict:
    """The threshold (one of the calibrated values) with the best F-1 of p >= threshold."""
    best = {'threshold': 0.0, 'f1': -1.0}
    positives = max(int(outcomes.sum()), 1)
    for t in np.unique(probabilities):
        keep = probabilities >= t
        tp = int((outcomes[keep] == 1).sum())
        precision = tp / max(int(keep.sum()), 1)
        recall = tp / positives
        f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
        if f1 > best['f1']:
            best = {'threshold': float(t), 'f1': float(f1), 'precision': float(precision),
                    'recall': float(recall), 'share_kept': float(keep.mean())}
    return best


def cross_validated_ece(fit, raw: np.ndarray, ok: np.ndarray, scene: np.ndarray,
                        folds: int = 5, repeats: int = 3) -> float:
    """Mean ECE of out-of-fold predictions, folds by scene (a scene's grasps stay together)."""
    scenes = np.unique(scene)
    if len(scenes) < folds:
        return float('nan')
    eces = []
    for seed in range(repeats):
        order = np.random.default_rng(seed).permutation(scenes)
        pred = np.zeros(len(raw))
        for held in np.array_split(order, folds):
            test = np.isin(scene, held)
            pred[test] = fit(raw[~test], ok[~test])(raw[test])
        eces.append(expected_calibration_error(pred, ok)['ece'])
    return float(np.mean(eces))


def fit_calibration(outcomes: dict, min_block: int = 10, info: dict | None = None,
                    method: str = 'auto') -> ScoreCalibration:
    """Per stage the isotonic or Platt map ('auto': lower scene-wise CV ECE)."""
    fitters = {'isotonic': lambda r, o: fit_isotonic(r, o, min_block=min_block),
               'platt': fit_platt}
    if method not in ('auto', *fitters):
        raise InputError(f"calibration method must be 'auto', 'isotonic' or 'platt', "
                         f"got '{method}'")
    maps, fit_info = {}, dict(info or {})
    for stage in STAGES:
        raw, ok = outcomes[stage]['raw'], outcomes[stage]['success']
        if len(raw) == 0:
            continue
        cv = {name: cross_validated_ece(f, raw, ok, outcomes[stage]['scene'])
              for name, f in fitters.items()}
        chosen = method if method != 'auto' else min(
            cv, key=lambda k: np.inf if np.isnan(cv[k]) else cv[k])
        maps[stage] = fitters[chosen](raw, ok)
        p = maps[stage](raw)
        fit_info[f'{stage}_fit'] = {
            'method': chosen, 'cv_ece': cv,
            'grasps': int(len(raw)), 'scenes': int(len(np.unique(outcomes[stage]['scene']))),
            'success_rate': float(ok.mean()),
            'ece_raw': expected_calibration_error(raw, ok)['ece'],
            'ece_calibrated': expected_calibration_error(p, ok)['ece']}
    if 'refined' not in maps:
        raise InputError('no refined grasp survived on the calibration scenes')
    raw, ok = outcomes['refined']['raw'], outcomes['refined']['success']
    choice = f1_threshold(maps['refined'](raw), ok)
    fit_info['threshold_choice'] = {'rule': 'max F-1 of p >= threshold on refined val grasps',
                                    **choice}
    return ScoreCalibration(maps, choice['threshold'], fit_info)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description='Fit the grasp score calibration on val scenes.')
    ap.add_argument('--checkpoint', default='checkpoints/zerograsp_cpu.pt')
    ap.add_argument('--data', default='datasets/v1/val')
    ap.add_argument('--out', default=None, help='checkpoint to write (default: --checkpoint)')
    ap.add_argument('--max-scenes', type=int, default=None)
    ap.add_argument('--top-k', type=int, default=DEFAULT_TOP_K)
    ap.add_argument('--min-block', type=int, default=10,
                    help='fewest grasps behind one isotonic step')
    ap.add_argument('--method', default='auto', choices=('auto', 'isotonic', 'platt'),
                    help="'auto': the map with the lower scene-wise cross-validated ECE")
    ap.add_argument('--outcomes', default=None,
                    help='npz cache of judged outcomes (read if present, else written)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    from zerograsp_ros.model.checkpoint import update_checkpoint_extra
    from zerograsp_ros.model.inference import ZeroGraspPredictor

    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.outcomes) if args.outcomes else None
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            outcomes = {s: {k: z[f'{s}_{k}'] for k in ('raw', 'success', 'scene')}
                        for s in STAGES}
    else:
        predictor = ZeroGraspPredictor.from_checkpoint(args.checkpoint, device=args.device,
                                                       calibrated=False)
        outcomes = collect_outcomes(predictor, args.data, args.max_scenes, args.top_k)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, **{f'{s}_{k}': v for s, r in outcomes.items() for k, v in r.items()})
    command = 'python -m zerograsp_ros.training.calibrate ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    calibration = fit_calibration(outcomes, args.min_block, method=args.method, info={
        'data': str(args.data), 'top_k': args.top_k, 'success': f'judge_grasps at mu '
        f'{SUCCESS_MU}', 'command': command,
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')})
    out = args.out or args.checkpoint
    update_checkpoint_extra(args.checkpoint, {CHECKPOINT_KEY: calibration.to_dict()}, out)
    print(json.dumps({k: v for k, v in calibration.info.items()}, indent=1))
    print(f'threshold {calibration.threshold:.3f}; wrote {out}')


if __name__ == '__main__':
    main()
