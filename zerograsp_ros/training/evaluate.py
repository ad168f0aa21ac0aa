"""Evaluation on a held-out split: reconstruction vs baselines, grasp precision.

    python -m zerograsp_ros.training.evaluate --checkpoint checkpoints/zerograsp_cpu.pt \
        --data datasets/v1/test --out benchmarks/results/reconstruction_eval.json

Reconstruction (per labelled object, camera frame, metres; definitions of the
ZeroGrasp supplement B.2): Chamfer distance = mean of the two directions'
mean nearest-neighbour distances (reported in mm); F-1 at 1 cm from precision
(predicted points within 1 cm of the ground truth) and recall (ground truth
within 1 cm of the prediction); normal consistency = mean of both
directions' |n . n_nearest|. Methods on the same objects:
  * model: the checkpoint's surface points and normals;
  * visible: the object's own observed depth points (no completion), normals
    estimated from the points (Open3D, oriented to the camera);
  * mirror: visible points plus their copy rotated 180 deg about a vertical
    (table normal) axis placed half the visible width behind the visible
    front (a rotational-symmetry heuristic, see `mirror_completion`).
Grasps: the model's grasps per scene, sorted by score ('grasps': raw network
output; 'grasps_refined': after the pipeline's refinement on the
reconstruction, `grasp.refinement.refine_grasps`; 'grasps_refined_paper': the same
without contact-quality re-scoring, free-space carving and depth search), judged by the same
check that labels the data (`labels.judge_grasps`: 2F-85-like gripper boxes
against every scene mesh + the table, antipodal force closure). Precision@k
counts top-k grasps that are collision-free, non-empty and force-closure at
mu = 0.8; AP-style figure = mean over mu in {0.2..1.2} and k in 1..10.

Every method sees the frame the pipeline sees (`observed_frame`): depth-scale
tared against the table plane known from the scene's camera pose, as the
camera node and the simulated cell do (perception/depth_tare.py);
`--no-depth-tare` evaluates on the raw frame (the figures before 2026-12-03).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
import platform
import sys
import time

import numpy as np
from scipy.spatial import cKDTree

from zerograsp_ros.data.dataset import SceneRecord, ShardDataset
from zerograsp_ros.data.labels import (
    FRICTION_COEFFICIENTS,
    LabelConfig,
    ObjectShape,
    build_scene_geometry,
    evaluate_grasp_set,
)
from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import unproject
from zerograsp_ros.sim.benchmark_report import wilson_interval

F1_THRESHOLD_M = 0.01
PRECISION_MU = 0.8
TOP_K = (1, 5, 10)


def reconstruction_metrics(pred_points, pred_normals, gt_points, gt_normals,
                           threshold: float = F1_THRESHOLD_M) -> dict:
    """Chamfer (mm), precision/recall/F-1 at `threshold`, normal consistency."""
    pred_points = np.asarray(pred_points, dtype=np.float64).reshape(-1, 3)
    gt_points = np.asarray(gt_points, dtype=np.float64).reshape(-1, 3)
    if len(pred_points) == 0 or len(gt_points) == 0:
        raise InputError('reconstruction metrics need non-empty predicted and GT point sets')
    d_pg, i_pg = cKDTree(gt_points).query(pred_points)
    d_gp, i_gp = cKDTree(pred_points).query(gt_points)
    precision = float((d_pg < threshold).mean())
    recall = float((d_gp < threshold).mean())
    f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    pn = _unit(pred_normals)
    gn = _unit(gt_normals)
    nc = 0.5 * (np.abs((pn * gn[i_pg]).sum(1)).mean() + np.abs((gn * pn[i_gp]).sum(1)).mean())
    return {'cd_mm': float(500.0 * (d_pg.mean() + d_gp.mean())), 'precision': precision,
            'recall': recall, 'f1': float(f1), 'nc': float(nc)}


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64).reshape(-1, 3)
    return v / np.clip(np.linalg.norm(v, axis=1, keepdims=True), 1e-9, None)


def observed_frame(record: SceneRecord, depth_tare: bool = True):
    """(frame, tare scale) as the pipeline would see the scene.

    With `depth_tare` the depth is divided by the scale measured against the table
    plane known from T_world_camera (world z = 0), as `camera_node` does with the
    cell's extrinsics; a frame the tare refuses stays raw (scale None), and so does
    every frame without `depth_tare`.
    """
    from zerograsp_ros.perception.depth_tare import table_plane_in_camera, tare_frame

    frame = record.frame()
    if not depth_tare:
        return frame, None
    try:
        tared, result = tare_frame(frame, table_plane_in_camera(record['T_world_camera']))
    except InputError:
        return frame, None
    return tared, result.scale


def visible_points(record: SceneRecord, object_id: int,
                   frame=None) -> tuple[np.ndarray, np.ndarray]:
    """Observed depth points of one object with normals oriented towards the camera."""
    import open3d as o3d

    frame = record.frame() if frame is None else frame
    pts = unproject(frame.depth, frame.intrinsics, mask=frame.labels == object_id)
    if len(pts) < 3:
        return pts, np.tile([0.0, 0.0, -1.0], (len(pts), 1))
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(np.float64)))
    pc.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(16))
    pc.orient_normals_towards_camera_location(np.zeros(3))
    return pts, np.asarray(pc.normals)


def mirror_completion(points: np.ndarray, normals: np.ndarray, up: np.ndarray,
                      view_dir=(0.0, 0.0, 1.0)):
    """Visible points plus their copy turned 180 deg about a vertical axis.

    The axis is placed, in the horizontal plane, at the middle of the visible
    width across the view and half that width behind the nearest visible
    point (the visible centroid would sit in front of the true centre).
    """
    up = np.asarray(up, dtype=np.float64)
    up = up / np.linalg.norm(up)
    h = np.asarray(view_dir, dtype=np.float64)
    h = h - (h @ up) * up
    if np.linalg.norm(h) < 1e-6:   # looking straight down: axis through the horizontal bbox
        h = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
        h /= np.linalg.norm(h)
        lateral = np.cross(up, h)
        lo_h, hi_h = np.percentile(points @ h, [2, 98])
        lo, hi = np.percentile(points @ lateral, [2, 98])
        centre = 0.5 * (lo + hi) * lateral + 0.5 * (lo_h + hi_h) * h
    else:
        h = h / np.linalg.norm(h)
        lateral = np.cross(up, h)
        lo, hi = np.percentile(points @ lateral, [2, 98])
        front = np.percentile(points @ h, 2)
        centre = 0.5 * (lo + hi) * lateral + (front + 0.5 * (hi - lo)) * h
    rel = points - centre
    rel_h = rel - (rel @ up)[:, None] * up
    mirrored = points - 2.0 * rel_h
    mirrored_n = 2.0 * (normals @ up)[:, None] * up - normals
    return np.concatenate([points, mirrored]), np.concatenate([normals, mirrored_n])


def labelled_scenes(data: str | Path, max_scenes: int | None, desc: str,
                    progress: bool = True):
    """(index, record, labelled ids) per scene with labelled objects, with a progress bar.

    Of the split's first `max_scenes` scenes (all when None).
    """
    from tqdm import tqdm

    ds = ShardDataset(data)
    n = len(ds) if max_scenes is None else min(max_scenes, len(ds))
    for si in tqdm(range(n), desc=desc, unit='scene', disable=not progress, file=sys.stdout):
        rec = ds.record(si)
        ids = rec.labelled_ids()
        if ids:
            yield si, rec, ids


def scene_geometry(record: SceneRecord, seed: int = 0):
    """The grasp judge's geometry for a stored scene (world frame), rebuilt from its meshes."""
    ids = [int(i) for i in record.object_ids]
    meshes = record.world_meshes()
    shapes = [ObjectShape(meshes[i], record.world_parts(i)) for i in ids]
    return build_scene_geometry(shapes, ids, LabelConfig(), np.random.default_rng(seed))


def grasp_success(grasps_camera, record: SceneRecord, geometry=None) -> np.ndarray:
    """(N, len(FRICTION_COEFFICIENTS)) success of camera-frame grasps at each mu."""
    geometry = geometry if geometry is not None else scene_geometry(record)
    world = grasps_camera.transformed(np.asarray(record['T_world_camera']))
    judged = evaluate_grasp_set(world, geometry, LabelConfig().gripper)
    return np.stack([judged.success_at(mu) for mu in FRICTION_COEFFICIENTS], axis=1)


def evaluate(checkpoint: str | None, data: str, max_scenes: int | None = None,
             device: str = 'auto', progress: bool = True, predictor=None,
             depth_tare: bool = True) -> dict:
    """Run every method on the split; returns the result dictionary (see module doc)."""
    from zerograsp_ros.model.inference import ZeroGraspPredictor

    if predictor is None and checkpoint is not None:
        # raw scores: precision and AP measure the ranking, which calibration keeps
        predictor = ZeroGraspPredictor.from_checkpoint(checkpoint, device=device,
                                                       calibrated=False)
    rows, grasp_rows, refined_rows, paper_rows, times = [], [], [], [], []
    tare_scales, tare_refused = [], 0
    for si, rec, ids in labelled_scenes(data, max_scenes, 'evaluating scenes', progress):
        T_wc = np.asarray(rec['T_world_camera'])
        up_cam = T_wc[:3, :3].T @ np.array([0.0, 0.0, 1.0])
        frame, tare_scale = observed_frame(rec, depth_tare)
        if tare_scale is not None:
            tare_scales.append(tare_scale)
        tare_refused += int(depth_tare and tare_scale is None)
        pred = None
        if predictor is not None:
            t0 = time.perf_counter()
            pred = predictor.predict(frame, object_ids=ids, with_mesh=False)
            times.append(time.perf_counter() - t0)
        by_id = {o.object_id: o for o in pred.objects} if pred is not None else {}
        for oid in ids:
            gt = rec.target(oid, with_grasps=False)
            vis_p, vis_n = visible_points(rec, oid, frame)
            row = {'scene': si, 'object_id': oid,
                   'name': str(rec['object_names'][list(rec.object_ids).index(oid)]),
                   'visible_points': len(vis_p)}
            outputs = {}
            if len(vis_p) >= 3:
                outputs['visible'] = (vis_p, vis_n)
                outputs['mirror'] = mirror_completion(vis_p, vis_n, up_cam, vis_p.mean(0))
            o = by_id.get(oid)
            if o is not None and len(o.points):
                outputs['model'] = (o.points, o.normals)
            # the sensor's scale left after the tare: shape quality without it
            scale = rec.depth_scale() / (tare_scale or 1.0)
            for method, (p, nrm) in outputs.items():
                row[method] = reconstruction_metrics(p, nrm, gt.surface_points,
                                                     gt.surface_normals)
                row[method + '@sensor'] = reconstruction_metrics(
                    p, nrm, gt.surface_points * scale, gt.surface_normals)
            row['depth_scale'] = scale
            rows.append(row)
        if pred is not None and len(pred.grasps):
            geometry = scene_geometry(rec)
            ranked = pred.grasps.sorted_by_score().subset(slice(0, max(TOP_K)))
            ok = grasp_success(ranked, rec, geometry)
            grasp_rows.append({'scene': si, 'success': ok.tolist(),
                               'scores': ranked.scores.tolist()})
            refined = refine_on_reconstruction(pred, rec, frame=frame)
            if len(refined):
                ok = grasp_success(refined.subset(slice(0, max(TOP_K))), rec, geometry)
                refined_rows.append({'scene': si, 'success': ok.tolist()})
            refined = refine_on_reconstruction(pred, rec, paper_only=True, frame=frame)
            if len(refined):
                ok = grasp_success(refined.subset(slice(0, max(TOP_K))), rec, geometry)
                paper_rows.append({'scene': si, 'success': ok.tolist()})
    out = summarise(rows, grasp_rows, times, refined_rows, paper_rows)
    out['depth_tare'] = {'enabled': depth_tare, 'frames_tared': len(tare_scales),
                         'frames_refused': tare_refused,
                         'scale_mean': float(np.mean(tare_scales)) if tare_scales else None}
    return out


def refine_on_reconstruction(pred, record: SceneRecord, paper_only: bool = False,
                             max_grasps: int = max(TOP_K), full_result: bool = False,
                             frame=None):
    """The pipeline's refinement (contacts, collision vs reconstruction + depth, NMS).

    The table plane is fitted to the observed table pixels (as a robot would),
    not taken from the ground truth. `paper_only`: without the contact-quality
    re-scoring, free-space carving and depth search (the paper's refinement).
    Returns the survivors, or with `full_result` the whole RefinementResult
    (rejection counts per reason). `frame`: the frame `pred` was made from (default
    the record's raw frame; `observed_frame` gives the tared one).
    """
    import open3d as o3d

    from zerograsp_ros.grasp.refinement import (
        REJECTION_REASONS,
        RefinementConfig,
        paper_refinement_config,
        refine_grasps,
    )

    frame = record.frame() if frame is None else frame
    objects = [o for o in pred.objects if len(o.points)]
    if not objects:
        empty = pred.grasps.subset(slice(0, 0))
        if full_result:
            from zerograsp_ros.grasp.refinement import RefinementResult
            return RefinementResult(empty, {r: 0 for r in REJECTION_REASONS})
        return empty
    obj_pts = np.concatenate([o.points for o in objects])
    obj_ids = np.concatenate([np.full(len(o.points), o.object_id) for o in objects])
    scene_pts = unproject(frame.depth, frame.intrinsics)
    table = unproject(frame.depth, frame.intrinsics, mask=frame.labels == 0)
    plane = None
    if len(table) > 100:
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(table.astype(np.float64)))
        model, _ = pc.segment_plane(0.005, 3, 200)
        plane = np.asarray(model, dtype=np.float64)
        if plane[:3] @ np.array([0.0, 0.0, -1.0]) < 0:  # normal towards the camera = up
            plane = -plane
    obj_normals = np.concatenate([o.normals for o in objects])
    result = refine_grasps(pred.grasps, obj_pts, obj_ids, scene_points=scene_pts[::4],
                           table_plane=plane, max_grasps=max_grasps, object_normals=obj_normals,
                           camera_depth=(frame.depth, frame.intrinsics),
                           config=paper_refinement_config() if paper_only
                           else RefinementConfig())
    return result if full_result else result.grasps


def refined_grasp_ap(pred, record: SceneRecord, frame=None) -> float:
    """One scene's AP (mu 0.2-1.2, k 1-10) after the full refinement; 0 without survivors."""
    refined = refine_on_reconstruction(pred, record, frame=frame)
    if not len(refined):
        return 0.0
    return float(np.mean(_scene_ap(grasp_success(refined.subset(slice(0, max(TOP_K))), record))))


def _scene_ap(success) -> np.ndarray:
    """Per mu, the mean over k = 1..10 of the precision of one scene's ranked grasps."""
    s = np.asarray(success, dtype=float)
    return np.mean([s[:k].mean(0) for k in range(1, min(10, len(s)) + 1)], axis=0)


def _precision(grasp_rows: list[dict]) -> dict:
    mu_i = FRICTION_COEFFICIENTS.index(PRECISION_MU)
    out = {'scenes': len(grasp_rows), 'mu': PRECISION_MU}
    for k in TOP_K:
        hits = [np.asarray(g['success'])[:k, mu_i] for g in grasp_rows]
        out[f'precision@{k}'] = float(np.mean(np.concatenate(hits)))
    # one top grasp per scene: a binomial over scenes
    top1 = int(sum(bool(np.asarray(g['success'])[0, mu_i]) for g in grasp_rows))
    out['precision@1_ci95'] = list(wilson_interval(top1, len(grasp_rows)))
    ap = [_scene_ap(g['success']) for g in grasp_rows]
    out['ap_mu_0.2_to_1.2_k_1_to_10'] = float(np.mean(ap))
    out['ap_per_mu'] = dict(zip(map(str, FRICTION_COEFFICIENTS),
                                np.mean(ap, axis=0).round(4).tolist()))
    return out


def summarise(rows: list[dict], grasp_rows: list[dict], times: list[float],
              refined_rows: list[dict] | None = None,
              paper_rows: list[dict] | None = None) -> dict:
    methods = [m for m in ('model', 'visible', 'mirror') if any(m in r for r in rows)]
    common = [r for r in rows if all(m in r for m in methods)]
    from zerograsp_ros.sim.objects import PRIMITIVES
    # mesh objects of the test split are never seen in training; primitive families are
    # shared between splits (fresh random sizes), so they are also reported apart
    unseen = [r for r in common if r['name'] not in PRIMITIVES]
    tables = {}
    for suffix, name, subset in (('', 'reconstruction', common),
                                 ('@sensor', 'reconstruction_sensor_frame', common),
                                 ('', 'reconstruction_unseen_meshes', unseen),
                                 ('@sensor', 'reconstruction_unseen_meshes_sensor_frame', unseen)):
        recon = {'objects': len(subset)}
        for m in methods:
            vals = [r[m + suffix] for r in subset]
            recon[m] = {k: float(np.mean([v[k] for v in vals])) if vals else None
                        for k in ('cd_mm', 'f1', 'precision', 'recall', 'nc')}
            recon[m]['cd_mm_median'] = (float(np.median([v['cd_mm'] for v in vals]))
                                        if vals else None)
        tables[name] = recon
    out = {'objects_total': len(rows), 'objects_compared': len(common),
           'objects_without_model_output': sum('model' not in r for r in rows)
           if 'model' in methods else None,
           **tables, 'f1_threshold_m': F1_THRESHOLD_M}
    if grasp_rows:
        out['grasps'] = _precision(grasp_rows)
    if refined_rows:
        out['grasps_refined'] = _precision(refined_rows)
        out['grasps_refined']['scenes_without_survivors'] = len(grasp_rows) - len(refined_rows)
    if paper_rows:
        out['grasps_refined_paper'] = _precision(paper_rows)
        out['grasps_refined_paper']['scenes_without_survivors'] = \
            len(grasp_rows) - len(paper_rows)
    if times:
        out['model_seconds_per_frame'] = float(np.mean(times))
    out['per_object'] = rows
    return out


def write_results(result: dict, path: str | Path, command: str, extra: dict | None = None):
    result = dict(result)
    result.update(extra or {})
    result['machine'] = f'{platform.platform()} ({os.cpu_count()} cpus)'
    result['date'] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
    result['command'] = command
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    plot_results(result, path.with_suffix('.png'))
    return path


def plot_results(result: dict, png: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    recon = result['reconstruction']
    methods = [m for m in recon if m != 'objects']
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, key, label in zip(axes, ('cd_mm', 'f1', 'nc'),
                              ('Chamfer distance [mm] (lower is better)', 'F-1 at 1 cm',
                               'normal consistency')):
        vals = [recon[m][key] or 0.0 for m in methods]
        ax.bar(methods, vals, color=['tab:blue', 'tab:gray', 'tab:orange'][:len(methods)])
        ax.set_title(label, fontsize=9)
        for i, v in enumerate(vals):
            ax.text(i, v, f'{v:.3g}', ha='center', va='bottom', fontsize=8)
    fig.suptitle(f"held-out test objects: {result['objects_compared']} objects", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description='Evaluate a checkpoint on a held-out split.')
    ap.add_argument('--checkpoint', default='checkpoints/zerograsp_cpu.pt')
    ap.add_argument('--data', default='datasets/v1/test')
    ap.add_argument('--out', default='benchmarks/results/reconstruction_eval.json')
    ap.add_argument('--max-scenes', type=int, default=None)
    ap.add_argument('--device', default='auto')
    ap.add_argument('--threads', type=int, default=1, help='torch CPU threads (0 = default)')
    ap.add_argument('--no-depth-tare', action='store_true',
                    help='evaluate on the raw frames (no depth-scale tare against the table)')
    args = ap.parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    result = evaluate(args.checkpoint, args.data, args.max_scenes, args.device,
                      depth_tare=not args.no_depth_tare)
    cmd = 'python -m zerograsp_ros.training.evaluate ' + ' '.join(
        sys.argv[1:] if argv is None else argv)
    path = write_results(result, args.out, cmd, {'checkpoint': args.checkpoint,
                                                 'data': args.data})
    summary = {k: v for k, v in result.items() if k != 'per_object'}
    print(json.dumps(summary, indent=1))
    print(f'wrote {path}')


if __name__ == '__main__':
    main()
