"""Direct vs paper grasp heads on validation scenes: refinement rejections and grasp AP.

    python benchmarks/grasp_head_rejections.py \
        --checkpoint direct=checkpoints/zerograsp_cpu.pt \
        --checkpoint paper=checkpoints/campaign/paper_head/best.pt --max-scenes 20

Per checkpoint and validation scene: the network's grasps (256 per object),
predicted on the depth-tared frame the pipeline sees (`evaluate.observed_frame`),
go through the full refinement on the reconstruction (table plane fitted on the
observed table, `training.evaluate.refine_on_reconstruction`); the share of
decoded grasps rejected as `below_table` or `approach_cone` is what a head
wastes on approaches a robot cannot take. Then the evaluation of
`training.evaluate` on the same scenes: grasp precision / AP of the raw and
refined grasps (label judge, mu 0.2-1.2) and reconstruction (sensor frame),
which is how the two heads are chosen between. Writes
benchmarks/results/grasp_head_rejections.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
import platform
import sys

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rejection_shares(checkpoint: str, data: str, max_scenes: int | None) -> dict:
    import numpy as np

    from zerograsp_ros.data.dataset import ShardDataset
    from zerograsp_ros.model.inference import ZeroGraspPredictor
    from zerograsp_ros.training.evaluate import observed_frame, refine_on_reconstruction

    predictor = ZeroGraspPredictor.from_checkpoint(checkpoint, device='cpu', calibrated=False)
    ds = ShardDataset(data)
    n = len(ds) if max_scenes is None else min(max_scenes, len(ds))
    totals: dict[str, int] = {}
    decoded, survivors_none, scenes = 0, 0, 0
    for si in range(n):
        rec = ds.record(si)
        ids = rec.labelled_ids()
        if not ids:
            continue
        frame, _ = observed_frame(rec)   # depth tared against the known table
        pred = predictor.predict(frame, object_ids=ids, with_mesh=False)
        scenes += 1
        decoded += len(pred.grasps)
        result = refine_on_reconstruction(pred, rec, max_grasps=10, full_result=True,
                                          frame=frame)
        for k, v in result.rejection_counts.items():
            totals[k] = totals.get(k, 0) + int(v)
        survivors_none += int(len(result.grasps) == 0)
    unreachable = totals.get('below_table', 0) + totals.get('approach_cone', 0)
    return {'grasp_head': predictor.config.grasp_head, 'scenes': scenes,
            'decoded_grasps': decoded, 'rejections': totals,
            'share_below_table_or_approach_cone': float(unreachable / max(decoded, 1)),
            'share_below_table': float(totals.get('below_table', 0) / max(decoded, 1)),
            'share_approach_cone': float(totals.get('approach_cone', 0) / max(decoded, 1)),
            'scenes_without_survivors': survivors_none,
            'mean_decoded_per_scene': float(np.mean(decoded / max(scenes, 1)))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--checkpoint', action='append', required=True,
                    help='name=path (repeat for each head)')
    ap.add_argument('--data', default=str(ROOT / 'datasets' / 'v1' / 'val'))
    ap.add_argument('--max-scenes', type=int, default=20)
    ap.add_argument('--no-ap', action='store_true', help='rejections only (faster)')
    ap.add_argument('--update', action='store_true',
                    help='keep the other heads already in --out (measure one head at a time)')
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' /
                                         'grasp_head_rejections.json'))
    args = ap.parse_args(argv)
    import torch

    from zerograsp_ros.training.evaluate import evaluate

    torch.set_num_threads(1)
    rows, commands = {}, []
    out = Path(args.out)
    if args.update and out.is_file():
        previous = json.loads(out.read_text())
        rows, commands = previous['heads'], previous.get('commands', [previous['command']])
    for item in args.checkpoint:
        name, _, path = item.partition('=')
        row = {'checkpoint': path, **rejection_shares(path, args.data, args.max_scenes)}
        if not args.no_ap:
            ev = evaluate(path, args.data, args.max_scenes, device='cpu', progress=False)
            row['grasps_raw'] = ev.get('grasps')
            row['grasps_refined'] = ev.get('grasps_refined')
            row['reconstruction_sensor_frame'] = ev['reconstruction_sensor_frame'].get('model')
        rows[name] = row
        print(name, json.dumps({k: v for k, v in row.items() if 'share' in k or k in (
            'grasps_raw', 'grasps_refined')}, indent=1), flush=True)
    command = 'python benchmarks/grasp_head_rejections.py ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    result = {'heads': rows, 'data': args.data, 'max_scenes': args.max_scenes,
              'goal': 'share_below_table_or_approach_cone <= 0.20',
              'machine': f'{platform.platform()} ({os.cpu_count()} cpus)',
              'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
              'command': command, 'commands': commands + [command]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
