"""Calibration of the shipped grasp scores on the held-out test split.

    python benchmarks/score_calibration.py             # defaults below
    python benchmarks/score_calibration.py --max-scenes 10

Needs the test split (`python -m zerograsp_ros.data.generate --out datasets/v1
--split test --scenes 40 --seed 0 --scenes-per-shard 2 --grasp-points 10`;
grasp labels are not read, predicted grasps are judged afresh). Per scene the
checkpoint's top-k grasps of the network output and of the full refinement are
judged by the label judge (success at mu = 0.8), exactly as the calibration was
fitted on val (zerograsp_ros/training/calibrate.py). Reports, per stage, the
expected calibration error (10 equal-width bins) of the calibrated scores and
of the raw graspness x quality, the bins, and the test precision of grasps at
or above the checkpoint's default threshold. Writes
benchmarks/results/score_calibration.json and a reliability plot .png.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
import platform
import sys

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerograsp_ros.model.calibration import STAGES, expected_calibration_error  # noqa: E402


def summarise(outcomes: dict, calibration) -> dict:
    out = {}
    for stage in STAGES:
        raw, ok = outcomes[stage]['raw'], outcomes[stage]['success']
        if len(raw) == 0:
            continue
        p = calibration.probability(raw, stage)
        keep = p >= calibration.threshold
        out[stage] = {
            'grasps': int(len(raw)), 'scenes': int(len(np.unique(outcomes[stage]['scene']))),
            'success_rate': float(ok.mean()),
            'calibrated': expected_calibration_error(p, ok),
            'uncalibrated_raw_score': expected_calibration_error(raw, ok),
            'at_default_threshold': {
                'threshold': float(calibration.threshold),
                'share_kept': float(keep.mean()),
                'precision': float(ok[keep].mean()) if keep.any() else None,
                'precision_below': float(ok[~keep].mean()) if (~keep).any() else None}}
    return out


def plot(result: dict, png: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    stages = [s for s in STAGES if s in result['stages']]
    fig, axes = plt.subplots(1, len(stages), figsize=(4.6 * len(stages), 4.2), squeeze=False)
    for ax, stage in zip(axes[0], stages):
        r = result['stages'][stage]
        for key, style, label in (('calibrated', 'o-', 'calibrated'),
                                  ('uncalibrated_raw_score', 's--', 'raw score')):
            bins = [b for b in r[key]['bins'] if b['count']]
            ax.plot([b['mean_probability'] for b in bins], [b['success_rate'] for b in bins],
                    style, label=f"{label} (ECE {r[key]['ece']:.3f})")
        ax.plot([0, 1], [0, 1], color='0.6', lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel('predicted success probability (bin mean)')
        ax.set_ylabel('judged success rate')
        ax.set_title(f"{stage} grasps, test split ({r['grasps']} grasps, "
                     f"{r['scenes']} scenes)", fontsize=9)
        ax.legend(fontsize=8, loc='upper left')
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--checkpoint', default=str(ROOT / 'checkpoints' / 'zerograsp_cpu.pt'))
    ap.add_argument('--data', default=str(ROOT / 'datasets' / 'v1' / 'test'))
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' /
                                         'score_calibration.json'))
    ap.add_argument('--max-scenes', type=int, default=None)
    ap.add_argument('--top-k', type=int, default=20)
    ap.add_argument('--threads', type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    from zerograsp_ros.model.calibration import CHECKPOINT_KEY, ScoreCalibration
    from zerograsp_ros.model.checkpoint import load_checkpoint
    from zerograsp_ros.model.inference import ZeroGraspPredictor
    from zerograsp_ros.training.calibrate import collect_outcomes

    torch.set_num_threads(args.threads)
    _, _, extra = load_checkpoint(args.checkpoint)
    if CHECKPOINT_KEY not in extra:
        raise SystemExit(f'{args.checkpoint} carries no score calibration: run '
                         'python -m zerograsp_ros.training.calibrate first')
    calibration = ScoreCalibration.from_dict(extra[CHECKPOINT_KEY])
    predictor = ZeroGraspPredictor.from_checkpoint(args.checkpoint, device='cpu',
                                                   calibrated=False)
    outcomes = collect_outcomes(predictor, args.data, args.max_scenes, args.top_k)
    result = {
        'ece': None, 'stages': summarise(outcomes, calibration),
        'success': 'label judge (data.labels.judge_grasps): collision-free, non-empty, '
                   'force-closure at mu = 0.8', 'bins': 10, 'top_k_per_scene': args.top_k,
        'calibration_fit': calibration.info, 'checkpoint': str(Path(args.checkpoint).name),
        'data': str(args.data),
        'machine': f'{platform.platform()} ({os.cpu_count()} cpus)',
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': 'python benchmarks/score_calibration.py ' + ' '.join(
            sys.argv[1:] if argv is None else argv)}
    # the headline: the scores users are handed by the pipeline (after refinement)
    refined = result['stages'].get('refined')
    if refined:
        result['ece'] = refined['calibrated']['ece']
        result['ece_uncalibrated'] = refined['uncalibrated_raw_score']['ece']
        result['headline'] = 'refined grasps (what the pipeline hands a robot)'
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(result, out.with_suffix('.png'))
    print(json.dumps({s: {k: (v['ece'] if isinstance(v, dict) and 'ece' in v else v)
                          for k, v in r.items()} for s, r in result['stages'].items()},
                     indent=1))
    print(f"test ECE (refined, calibrated) {result['ece']}; wrote {out}")


if __name__ == '__main__':
    main()
