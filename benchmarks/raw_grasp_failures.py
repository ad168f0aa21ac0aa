"""Why the network's own (unrefined) grasps fail: a breakdown on validation scenes.

    python benchmarks/raw_grasp_failures.py --checkpoint checkpoints/zerograsp_cpu.pt \
        --max-scenes 40

Per validation scene, the top 10 raw grasps by the network's score (predicted on
the depth-tared frame, `evaluate.observed_frame`) are judged by the label judge
(`labels.judge_grasps`, mu = 0.8) and every failure gets one cause, in this order:
  * table: a gripper box dips below the table;
  * own object: the gripper body hits the object it grasps (judged with that object
    alone, so a neighbour cannot cause it);
  * neighbour: it hits only other objects;
  * empty: nothing between the fingers;
  * force closure: contacts found but not force-closure at mu = 0.8.
Then what-ifs on the same grasps, each changing one decoded parameter (deeper or
shallower by 1-2 cm, fully open; an oracle that keeps the best of 12 in-plane angles,
also fully open, which tells how much of the loss is the regressed closing axis),
and the precision under other rankings of all
decoded grasps (graspness x quality, the shipped score; quality alone; graspness
alone). Settings are read from validation scenes only. Writes
benchmarks/results/raw_grasp_failures.json.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
from pathlib import Path
import platform
import sys

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOP_K = 10
MU = 0.8
CAUSES = ('success', 'table', 'own_object', 'neighbour', 'empty', 'force_closure')


def _about_x(angle: float):
    import numpy as np

    c, s = np.cos(angle), np.sin(angle)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def scene_breakdown(pred, record, config) -> dict:
    """Causes, what-ifs and rankings for one scene's raw grasps (counts over its top k)."""
    import numpy as np

    from zerograsp_ros.data.labels import (
        ObjectShape,
        _table_collision,
        build_scene_geometry,
        judge_grasps,
    )
    from zerograsp_ros.training.evaluate import scene_geometry

    gripper = config.gripper
    T_wc = np.asarray(record['T_world_camera'])
    geometry = scene_geometry(record)
    ids = [int(i) for i in record.object_ids]
    meshes = record.world_meshes()

    def judge(grasps, depths=None, widths=None, geo=geometry):
        return judge_grasps(grasps.rotations, grasps.translations,
                            grasps.depths if depths is None else depths, geo, gripper,
                            widths=np.clip(grasps.widths, 0.0, None) if widths is None
                            else widths)

    rankings = {'graspness_x_quality': pred.grasps.graspness * pred.grasps.qualities,
                'quality': pred.grasps.qualities, 'graspness': pred.grasps.graspness}
    out = {'causes': dict.fromkeys(CAUSES, 0), 'what_if': {}, 'rankings': {}}
    world = pred.grasps.transformed(T_wc)
    for name, key in rankings.items():
        order = np.argsort(-key, kind='stable')[:TOP_K]
        ok = judge(world.subset(order)).success_at(MU)
        out['rankings'][name] = {'top1': bool(ok[0]), 'successes': int(ok.sum()),
                                 'judged': len(ok)}
    top = world.subset(np.argsort(-rankings['graspness_x_quality'], kind='stable')[:TOP_K])
    judged = judge(top)
    ok = judged.success_at(MU)
    boxes = gripper.boxes(np.minimum(np.clip(top.widths, 0.0, None), gripper.max_stroke),
                          top.depths)
    table = _table_collision(top.rotations, top.translations, boxes, geometry)
    own = np.zeros(len(top), bool)
    for oid in np.unique(top.object_ids):
        sel = np.nonzero(top.object_ids == oid)[0]
        if int(oid) not in ids:
            continue
        alone = build_scene_geometry([ObjectShape(meshes[int(oid)], record.world_parts(int(oid)))],
                                     [int(oid)], config, np.random.default_rng(0))
        alone.table_z = -1e3   # the table is counted above
        own[sel] = judge(top.subset(sel), geo=alone).collision
    for i in range(len(top)):
        if ok[i]:
            cause = 'success'
        elif table[i]:
            cause = 'table'
        elif own[i]:
            cause = 'own_object'
        elif judged.collision[i]:
            cause = 'neighbour'
        elif judged.empty[i]:
            cause = 'empty'
        else:
            cause = 'force_closure'
        out['causes'][cause] += 1
    variants = {'deeper_1cm': {'depths': top.depths + 0.01},
                'shallower_1cm': {'depths': np.clip(top.depths - 0.01, 0.0, None)},
                'shallower_2cm': {'depths': np.clip(top.depths - 0.02, 0.0, None)},
                'fully_open': {'widths': np.full(len(top), gripper.max_stroke)}}
    for name, change in variants.items():
        out['what_if'][name] = int(judge(top, **change).success_at(MU).sum())
    any_angle, any_angle_open = ok.copy(), ok.copy()
    for k in range(1, 12):   # about the approach (the grasp frame's x axis)
        turned = dataclasses.replace(top, rotations=top.rotations @ _about_x(k * np.pi / 12))
        any_angle |= judge(turned).success_at(MU)
        any_angle_open |= judge(turned, widths=np.full(len(top), gripper.max_stroke)
                                ).success_at(MU)
    out['what_if']['oracle_best_in_plane_angle'] = int(any_angle.sum())
    out['what_if']['oracle_best_in_plane_angle_fully_open'] = int(any_angle_open.sum())
    out['judged'] = len(top)
    return out


def breakdown(checkpoint: str, data: str, max_scenes: int | None, progress: bool = True) -> dict:
    import numpy as np

    from zerograsp_ros.data.labels import LabelConfig
    from zerograsp_ros.model.inference import ZeroGraspPredictor
    from zerograsp_ros.sim.benchmark_report import wilson_interval
    from zerograsp_ros.training.evaluate import labelled_scenes, observed_frame

    predictor = ZeroGraspPredictor.from_checkpoint(checkpoint, device='cpu', calibrated=False)
    config = LabelConfig()
    scenes = []
    for _si, rec, ids in labelled_scenes(data, max_scenes, 'raw grasp failures', progress):
        frame, _ = observed_frame(rec)
        pred = predictor.predict(frame, object_ids=ids, with_mesh=False)
        if len(pred.grasps):
            scenes.append(scene_breakdown(pred, rec, config))
    judged = sum(s['judged'] for s in scenes)
    causes = {c: sum(s['causes'][c] for s in scenes) / max(judged, 1) for c in CAUSES}
    what_if = {k: sum(s['what_if'][k] for s in scenes) / max(judged, 1)
               for k in (scenes[0]['what_if'] if scenes else {})}
    rankings = {}
    for name in (scenes[0]['rankings'] if scenes else {}):
        top1 = sum(s['rankings'][name]['top1'] for s in scenes)
        rankings[name] = {
            'precision@1': top1 / max(len(scenes), 1),
            'precision@1_ci95': list(wilson_interval(top1, len(scenes))),
            f'precision@{TOP_K}': float(np.mean([s['rankings'][name]['successes']
                                                 / max(s['rankings'][name]['judged'], 1)
                                                 for s in scenes])) if scenes else 0.0}
    return {'checkpoint': checkpoint, 'scenes_with_grasps': len(scenes),
            'grasps_judged': judged, 'top_k': TOP_K, 'mu': MU,
            'share_by_cause': causes, 'success_share_if': what_if, 'rankings': rankings}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--checkpoint', default=str(ROOT / 'checkpoints' / 'zerograsp_cpu.pt'))
    ap.add_argument('--data', default=str(ROOT / 'datasets' / 'v1' / 'val'))
    ap.add_argument('--max-scenes', type=int, default=40)
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' /
                                         'raw_grasp_failures.json'))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    result = breakdown(args.checkpoint, args.data, args.max_scenes)
    result.update({
        'data': args.data, 'max_scenes': args.max_scenes,
        'machine': f'{platform.platform()} ({os.cpu_count()} cpus)',
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': 'python benchmarks/raw_grasp_failures.py ' + ' '.join(
            sys.argv[1:] if argv is None else argv)})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ('share_by_cause', 'success_share_if',
                                             'rankings')}, indent=1))
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
