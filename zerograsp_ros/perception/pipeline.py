"""The in-process grasp pipeline: frame [+ labels] -> segmentation -> ZeroGrasp -> refinement.

Used by the grasp and refinement nodes (which split it at the /refine_grasps
service) and by the latency benchmark (which runs it whole, in one process).
Every bad input raises InputError naming the cause; per-stage wall times are
returned with every result.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import logging
import time

import numpy as np

from zerograsp_ros.errors import InputError
from zerograsp_ros.geometry.camera import unproject
from zerograsp_ros.geometry.rgbd import RGBDFrame, validate_frame
from zerograsp_ros.grasp import DEFAULT_GRIPPER
from zerograsp_ros.grasp.representation import GraspSet
from zerograsp_ros.perception.segmentation import (
    DEFAULT_SEGMENTER,
    FALLBACK_SEGMENTER,
    make_segmenter,
)
from zerograsp_ros.runtime import StageTimer


@dataclass
class PipelineResult:
    grasps: GraspSet                     # camera frame, sorted by descending score, finite
    objects: list                        # ObjectReconstruction per object
    labels: np.ndarray                   # (H, W) int32 labels used
    table_plane: np.ndarray | None       # (a, b, c, d), normal towards the camera
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    refined: bool = False
    rejection_counts: dict[str, int] = field(default_factory=dict)


@dataclass
class RefinementOutput:
    grasps: GraspSet
    rejection_counts: dict[str, int]
    seconds: float
    warnings: list[str] = field(default_factory=list)


def check_labels(frame: RGBDFrame, labels: np.ndarray | None) -> np.ndarray:
    """Validate instance labels against the frame; InputError when unusable or empty."""
    if labels is None:
        raise InputError('no instance labels')
    labels = np.asarray(labels)
    if labels.shape != frame.depth.shape:
        raise InputError(f'instance mask size {labels.shape[1] if labels.ndim > 1 else "?"}x'
                         f'{labels.shape[0]} does not match the frame size '
                         f'{frame.depth.shape[1]}x{frame.depth.shape[0]}')
    if (labels < 0).any():
        raise InputError('instance masks contain negative ids')
    labels = labels.astype(np.int32)
    ids = [int(i) for i in np.unique(labels) if i > 0]
    if not ids:
        raise InputError('no objects on the table: the instance masks are empty')
    valid = frame.valid_depth()
    without_depth = [i for i in ids if not (valid & (labels == i)).any()]
    if len(without_depth) == len(ids):
        raise InputError(f'no object mask has valid depth (ids {without_depth}): '
                         'depth is missing where the objects are')
    return labels


def frame_scene_points(frame: RGBDFrame, max_points: int = 60000) -> np.ndarray:
    """Valid depth points of a frame (obstacles for refinement), evenly subsampled."""
    pts = unproject(frame.depth, frame.intrinsics, mask=frame.valid_depth())
    if len(pts) > max_points:
        pts = pts[np.linspace(0, len(pts) - 1, max_points).astype(np.int64)]
    return pts


def finite_top_k(grasps: GraspSet, max_grasps: int) -> GraspSet:
    grasps = grasps.subset(grasps.finite_mask()).sorted_by_score()
    return grasps.subset(slice(0, max_grasps)) if max_grasps > 0 else grasps


def refine_on_reconstruction(grasps: GraspSet, objects, gripper, config=None,
                             frame: RGBDFrame | None = None,
                             table_plane: np.ndarray | None = None,
                             max_grasps: int = 50, device: str = 'cpu') -> RefinementOutput:
    """Contact refinement + collision check of grasps on the reconstructed objects.

    objects: anything with object_id and points (the model's ObjectReconstruction,
    or conversions.ObjectShape read from a message). The frame (same camera frame as the
    grasps) adds its depth points to the obstacle cloud and enables the free-space check.
    """
    from zerograsp_ros.grasp.refinement import RefinementConfig, refine_grasps

    start = time.perf_counter()
    pts = [np.asarray(o.points, dtype=np.float32).reshape(-1, 3) for o in objects]
    if not pts or sum(len(p) for p in pts) == 0:
        raise InputError('refinement needs a reconstruction: no object has surface points')
    ids = np.concatenate([np.full(len(p), int(o.object_id), np.int32)
                          for p, o in zip(pts, objects)])
    object_points = np.concatenate(pts)
    if not np.isfinite(object_points).all():
        raise InputError('reconstruction surface points contain NaN/inf')
    scene = frame_scene_points(frame) if frame is not None else None
    config = config if config is not None else RefinementConfig()
    normals, warnings = None, []
    if config.use_contact_quality:
        normals, missing = reconstruction_normals(objects, pts)
        if missing:
            warnings.append(f'objects {missing} have no valid surface normals: predicted '
                            'grasp scores kept (no contact-quality re-scoring)')
    result = refine_grasps(grasps, object_points, object_point_ids=ids, scene_points=scene,
                           table_plane=table_plane, gripper=gripper, config=config,
                           max_grasps=int(max_grasps), device=device, object_normals=normals,
                           camera_depth=None if frame is None else (frame.depth, frame.intrinsics))
    refined = finite_top_k(result.grasps, int(max_grasps))
    counts = {str(k): int(v) for k, v in dict(result.rejection_counts).items()}
    dropped = len(result.grasps) - len(refined)
    if dropped:
        counts['invalid'] = counts.get('invalid', 0) + dropped
    return RefinementOutput(refined, counts, time.perf_counter() - start, warnings)


def reconstruction_normals(objects, points: list[np.ndarray]):
    """All objects' unit normals stacked like `points`, or None and the ids lacking them."""
    from zerograsp_ros.grasp.representation import unit_normal_rows

    normals, missing = [], []
    for obj, p in zip(objects, points):
        n = getattr(obj, 'normals', None)
        n = np.zeros((0, 3), np.float32) if n is None else np.asarray(n, np.float32)
        if len(p) and (n.shape != p.shape or not unit_normal_rows(n).all()):
            missing.append(int(obj.object_id))
        normals.append(n.reshape(-1, 3))
    if missing:
        return None, missing
    return np.concatenate(normals) if normals else np.zeros((0, 3), np.float32), []


def calibrate_refined(predictor, grasps: GraspSet) -> GraspSet:
    """Refined grasps with the predictor's calibrated scores (success probability), if any."""
    calibrate = getattr(predictor, 'calibrate_refined', None)
    return calibrate(grasps) if calibrate is not None else grasps


class GraspPipeline:
    """Segmentation, reconstruction + grasp prediction and refinement, in one process."""

    def __init__(self, predictor, segmenter=None, gripper=None, refinement_config=None,
                 max_grasps: int = 20, max_grasps_per_object: int = 256,
                 refinement_device: str = 'cpu'):
        self.predictor = predictor
        self.segmenter = segmenter if segmenter is not None else make_segmenter(
            DEFAULT_SEGMENTER, fallback=FALLBACK_SEGMENTER,
            log=logging.getLogger(__name__).warning)
        self.gripper = gripper
        self.refinement_config = refinement_config
        if max_grasps < 1 or max_grasps_per_object < 1:
            raise InputError('max_grasps and max_grasps_per_object must be >= 1')
        self.max_grasps = int(max_grasps)
        self.max_grasps_per_object = int(max_grasps_per_object)
        self.refinement_device = refinement_device

    @classmethod
    def from_checkpoint(cls, checkpoint: str, device: str = 'auto',
                        segmenter: str = DEFAULT_SEGMENTER,
                        segmenter_params: dict | None = None,
                        gripper: str = DEFAULT_GRIPPER, **kwargs) -> 'GraspPipeline':
        from zerograsp_ros.grasp.gripper import gripper_preset
        from zerograsp_ros.model.inference import ZeroGraspPredictor

        predictor = ZeroGraspPredictor.from_checkpoint(checkpoint, device=device)
        seg = make_segmenter(segmenter, fallback=FALLBACK_SEGMENTER,
                             log=logging.getLogger(__name__).warning, **(segmenter_params or {}))
        return cls(predictor, seg,
                   gripper_preset(gripper), **kwargs)

    # ----------------------------------------------------------------- stages

    def prepare(self, frame: RGBDFrame, labels: np.ndarray | None = None,
                watch: StageTimer | None = None, need_plane: bool = True):
        """Validate, segment when no labels are given, fit the table plane (if needed).

        Returns (frame with labels, table_plane or None, warnings).
        """
        watch = watch or StageTimer()
        warnings: list[str] = []
        with watch.stage('validation'):
            validate_frame(frame)
        plane = None
        with watch.stage('segmentation'):
            if labels is None:
                seg = self.segmenter.segment(frame)
                labels, plane = seg.labels, seg.table_plane
                if not seg.object_ids:
                    raise InputError('no objects on the table: segmentation found nothing '
                                     'standing on the support plane')
            elif need_plane:
                try:
                    plane = self.segmenter.table_plane(frame) \
                        if hasattr(self.segmenter, 'table_plane') else None
                except InputError as exc:  # refinement then checks collisions without a table
                    warnings.append(f'no table plane for refinement: {exc}')
            labels = check_labels(frame, labels)
        out = RGBDFrame(rgb=frame.rgb, depth=frame.depth, intrinsics=frame.intrinsics,
                        labels=labels, frame_id=frame.frame_id, stamp=frame.stamp,
                        meta=dict(frame.meta))
        return out, plane, warnings

    def predict(self, frame: RGBDFrame, watch: StageTimer | None = None):
        """Run the network on a labelled frame; returns the model's Prediction."""
        watch = watch or StageTimer()
        start = time.perf_counter()
        prediction = self.predictor.predict(frame,
                                            max_grasps_per_object=self.max_grasps_per_object)
        total = time.perf_counter() - start
        stage_times = {str(k): float(v) for k, v in dict(prediction.timings).items()
                       if k != 'total'}
        if not stage_times:
            stage_times = {'network': total}
        for k, v in stage_times.items():
            watch.times[k] = watch.times.get(k, 0.0) + v
        return prediction

    def refine(self, grasps: GraspSet, objects, frame: RGBDFrame | None = None,
               table_plane: np.ndarray | None = None,
               max_grasps: int | None = None) -> RefinementOutput:
        if self.gripper is None:
            raise InputError('this pipeline has no gripper model: refinement is unavailable')
        out = refine_on_reconstruction(grasps, objects, self.gripper, self.refinement_config,
                                       frame=frame, table_plane=table_plane,
                                       max_grasps=max_grasps or self.max_grasps,
                                       device=self.refinement_device)
        out.grasps = calibrate_refined(self.predictor, out.grasps)
        return out

    # ----------------------------------------------------------------- whole

    def run(self, frame: RGBDFrame, labels: np.ndarray | None = None, refine: bool = True,
            max_grasps: int | None = None) -> PipelineResult:
        """The whole pipeline in process; InputError names the cause of any bad input."""
        watch = StageTimer()
        start = time.perf_counter()
        k = int(max_grasps) if max_grasps else self.max_grasps
        labelled, plane, warnings = self.prepare(frame, labels, watch)
        prediction = self.predict(labelled, watch)
        warnings += [str(w) for w in prediction.warnings]
        grasps = prediction.grasps
        refined = False
        counts: dict[str, int] = {}
        if refine:
            out = self.refine(grasps, prediction.objects, frame=labelled, table_plane=plane,
                              max_grasps=k)
            watch.times['refinement'] = out.seconds
            grasps, counts, refined = out.grasps, out.rejection_counts, True
        else:
            grasps = finite_top_k(grasps, k)
        watch.times['total'] = time.perf_counter() - start
        return PipelineResult(grasps=grasps, objects=list(prediction.objects),
                              labels=labelled.labels, table_plane=plane, timings=watch.times,
                              warnings=warnings, refined=refined, rejection_counts=counts)
