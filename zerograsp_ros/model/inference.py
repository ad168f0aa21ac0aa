"""Inference API: (rgb, depth, K, labels) -> per-object surfaces, meshes and dense grasps.

Grasps: with the DIRECT AXES head (config grasp_head='direct') each
reconstructed surface point (leaf centre - normal * sdf) carries one grasp
with approach and closing axes (orthonormalised), width, depth, graspness and
quality; with the paper head ('paper', grasp_bins.py) it carries the best
views reachable from above the table, each with its angle, depth and width
bins. The grasp translation (TCP) is that surface point, as in
GraspNet-style dense labels. Grasps are ranked by the raw score graspness *
quality; when the checkpoint carries a score calibration (model/calibration.py)
the reported score is the calibrated probability that the grasp succeeds (its
'network' map; `ZeroGraspPredictor.calibrate_refined` maps scores after
refinement), otherwise the raw score. Everything is in the camera
frame in metres. Tensors stay on the chosen device until the final copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from zerograsp_ros.geometry.meshing import mesh_from_points
from zerograsp_ros.geometry.rgbd import RGBDFrame
from zerograsp_ros.grasp import DEFAULT_GRIPPER
from zerograsp_ros.grasp.gripper import gripper_preset
from zerograsp_ros.grasp.representation import GraspSet, rotation_from_axes
from zerograsp_ros.model.calibration import CHECKPOINT_KEY, ScoreCalibration
from zerograsp_ros.model.checkpoint import load_checkpoint
from zerograsp_ros.model.config import ModelConfig
from zerograsp_ros.model.grasp_bins import DECODE_CLEARANCE_M, decode_paper_grasps
from zerograsp_ros.model.inputs import leaf_centres_unit, observe_scene
from zerograsp_ros.model.network import ZeroGraspNet
from zerograsp_ros.runtime import StageTimer, resolve_device


@dataclass
class ObjectReconstruction:
    object_id: int
    points: np.ndarray    # (N,3) float32 camera frame metres (surface = leaf centre - normal*sdf)
    normals: np.ndarray   # (N,3)
    vertices: np.ndarray  # (V,3) mesh
    faces: np.ndarray     # (F,3) int32
    voxel_size: float     # metres


@dataclass
class Prediction:
    objects: list[ObjectReconstruction]
    grasps: GraspSet      # camera frame, sorted by score, object_ids set
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def decode_leaves(signal: torch.Tensor, centres_m: torch.Tensor, config: ModelConfig) -> dict:
    """Head outputs (N, C) at leaf centres (N,3, metres) -> surface, normals, grasp fields.

    Direct head: one grasp per leaf (approach, closing, width, depth, graspness,
    quality). Paper head: only the surface here (see grasp_bins.decode_paper_grasps).
    """
    normal = F.normalize(signal[:, 0:3], dim=1)
    sdf = torch.tanh(signal[:, 3]) * config.voxel_size_m
    surface = {'points': centres_m - normal * sdf.unsqueeze(1), 'normals': normal}
    if config.grasp_head == 'paper':
        return surface
    return {
        **surface,
        'graspness': torch.sigmoid(signal[:, 4]),
        'quality': torch.sigmoid(signal[:, 5]),
        'approach': F.normalize(signal[:, 6:9], dim=1),
        'closing': F.normalize(signal[:, 9:12], dim=1),
        'width': torch.sigmoid(signal[:, 12]) * config.max_grasp_width_m,
        'depth': torch.sigmoid(signal[:, 13]) * config.max_grasp_depth_m,
    }


def estimate_table_up(frame: RGBDFrame, max_points: int = 20000) -> np.ndarray | None:
    """Up direction (unit, camera frame) of the table plane (estimate_table_plane)."""
    plane = estimate_table_plane(frame, max_points)
    return None if plane is None else plane[:3]


def estimate_table_plane(frame: RGBDFrame, max_points: int = 20000) -> np.ndarray | None:
    """(a, b, c, d), unit normal up: the dominant plane among background pixels.

    Background = label 0 (all pixels without labels); the normal is turned towards
    the camera, so a x + b y + c z + d is the height above the table. None when
    no plane holds a fifth of the points.
    """
    import open3d as o3d

    from zerograsp_ros.geometry.camera import unproject

    mask = frame.valid_depth()
    if frame.labels is not None:
        mask = mask & (np.asarray(frame.labels) == 0)
    pts = unproject(frame.depth, frame.intrinsics, mask=mask)
    if len(pts) < 100:
        return None
    if len(pts) > max_points:
        pts = pts[np.linspace(0, len(pts) - 1, max_points).astype(np.int64)]
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(np.float64)))
    o3d.utility.random.seed(0)
    plane, inliers = pc.segment_plane(0.008, 3, 200)
    if len(inliers) < 0.2 * len(pts):
        return None
    plane = np.asarray(plane, dtype=np.float64) / np.linalg.norm(plane[:3])
    centre = pts[inliers].mean(0)
    return -plane if plane[:3] @ centre > 0 else plane   # the camera lies above the table


def reachable_from_above(rotations: np.ndarray, points: np.ndarray, widths: np.ndarray,
                         depths: np.ndarray, cone_deg: float, up: np.ndarray | None = None,
                         table_plane: np.ndarray | None = None, gripper=None,
                         clearance_m: float = DECODE_CLEARANCE_M) -> np.ndarray:
    """(N,) bool: grasps a robot can take from above the table.

    The approach lies within `cone_deg` of straight down (-up); with `table_plane`
    (a, b, c, d; normal up) and a `gripper`, also every corner of both finger boxes
    at the grasp's width and depth lies `clearance_m` above the plane (the refinement's
    approach_cone and below_table decisions, decided before the per-object top-k so
    that budget goes to grasps that can survive them). All True without up or plane.
    """
    import math

    from zerograsp_ros.grasp.kernels import finger_and_body_table_distance

    n = len(rotations)
    if table_plane is not None:
        up = np.asarray(table_plane, dtype=np.float64)[:3]
    if up is None or n == 0:
        return np.ones(n, bool)
    up = np.asarray(up, dtype=np.float64).reshape(3)
    up = up / max(np.linalg.norm(up), 1e-12)
    approach = np.asarray(rotations, dtype=np.float64)[:, :, 0]
    ok = approach @ -up >= math.cos(math.radians(cone_deg)) - 1e-9
    if table_plane is not None and gripper is not None:
        plane = np.asarray(table_plane, dtype=np.float64)
        plane = plane / np.linalg.norm(plane[:3])
        fingers, _ = finger_and_body_table_distance(
            torch.as_tensor(rotations, dtype=torch.float64),
            torch.as_tensor(points, dtype=torch.float64),
            torch.as_tensor(widths, dtype=torch.float64).reshape(-1),
            torch.as_tensor(depths, dtype=torch.float64).reshape(-1), gripper, plane)
        height = np.asarray(points, dtype=np.float64) @ plane[:3] + plane[3]
        ok &= (fingers.numpy() >= clearance_m) & (height >= 0.0)
    return ok


class ZeroGraspPredictor:
    """Runs a ZeroGraspNet on single frames (eval mode, no gradients)."""

    def __init__(self, model: ZeroGraspNet, config: ModelConfig, device='auto',
                 calibration: ScoreCalibration | None = None):
        self.device = resolve_device(device)
        self.config = config
        self.model = model.to(self.device).eval()
        self.calibration = calibration
        self.gripper = gripper_preset(DEFAULT_GRIPPER)   # paper head: reachable decoding

    @classmethod
    def from_checkpoint(cls, path, device='auto', calibrated: bool = True
                        ) -> 'ZeroGraspPredictor':
        """`calibrated=False` ignores a stored score calibration (raw scores)."""
        dev = resolve_device(device)
        model, config, extra = load_checkpoint(path, device=dev)
        stored = extra.get(CHECKPOINT_KEY) if calibrated else None
        calibration = ScoreCalibration.from_dict(stored) if stored else None
        return cls(model, config, dev, calibration)

    @property
    def score_threshold(self) -> float:
        """The checkpoint's default threshold on calibrated scores (0 without calibration)."""
        return float(self.calibration.threshold) if self.calibration is not None else 0.0

    def calibrate_refined(self, grasps: GraspSet) -> GraspSet:
        """Scores of refined grasps as success probabilities (unchanged without calibration)."""
        if self.calibration is None or 'refined' not in self.calibration.maps:
            return grasps
        return self.calibration.apply(grasps, 'refined')

    @torch.no_grad()
    def predict(self, frame: RGBDFrame, max_grasps_per_object: int = 256,
                object_ids=None, with_mesh: bool = True, *,
                occupancy_guide=None, table_up=None) -> Prediction:
        """Reconstruct and grasp every labelled object (or `object_ids`).

        InputError on bad input; objects with too few valid depth points are
        skipped with a warning in `Prediction.warnings`. `occupancy_guide` (an
        ocnn Octree of the same objects, for benchmarks and tests) makes the
        decoder follow that octree's occupancy instead of its own prediction.
        `table_up` (3,): the table's up direction in the camera frame, for the
        paper head's reachable views; estimated from the frame's background
        (label 0) when None.
        """
        cfg = self.config
        timer = StageTimer(self.device)
        scene = observe_scene(frame, cfg, object_ids)
        timer.mark('octree')   # the model books its own octree building here too
        if not scene.objects:
            return Prediction([], GraspSet.empty(), dict(timer.times), list(scene.warnings))
        out = self.model([scene], timer=timer, occupancy_guide=occupancy_guide)
        octree = out['octree_out']
        D = cfg.depth
        centres = scene.normalization.to_metres(leaf_centres_unit(octree, D, nempty=True))
        leaf_obj = octree.batch_id(D, nempty=True)
        fields_ = decode_leaves(out['signal'], centres, cfg)
        warnings = list(scene.warnings)
        # both heads decode only grasps reachable from above the table
        plane = None
        if table_up is None:
            plane = estimate_table_plane(frame)
            if plane is None:
                warnings.append('no table plane found in the frame: grasps are decoded '
                                'from every direction, also from below the table')
        views = 1   # grasps per leaf
        if cfg.grasp_head == 'paper':
            dec = decode_paper_grasps(out['signal'], cfg, table_up, points=fields_['points'],
                                      table_plane=plane, gripper=self.gripper)
            views = dec['graspness'].shape[1]
            fields_.update({k: dec[k].reshape(-1, *dec[k].shape[2:]) for k in
                            ('graspness', 'quality', 'rotation', 'width', 'depth')})
        score = fields_['graspness'] * fields_['quality']
        # one device->host copy of everything at the end
        host = {k: v.float().cpu().numpy() for k, v in fields_.items()}
        score_np = score.cpu().numpy()
        reachable = np.ones(len(score_np), bool)
        if 'rotation' not in host:   # direct head: one grasp per leaf, kept if reachable
            host['rotation'] = rotation_from_axes(host['approach'], host['closing'])
            reachable = reachable_from_above(host['rotation'], host['points'], host['width'],
                                             host['depth'], cfg.decode_approach_cone_deg,
                                             table_up, plane, self.gripper)
        leaf_obj_np = leaf_obj.cpu().numpy()
        labels = out['object_label'].cpu().numpy()
        timer.mark('grasp_decoding')

        objects, grasp_sets = [], []
        for i, oid in enumerate(labels):
            sel = np.nonzero(leaf_obj_np == i)[0]
            pts, nrm = host['points'][sel], host['normals'][sel]
            if with_mesh:
                verts, faces = mesh_from_points(pts, nrm, cfg.voxel_size_m)
            else:
                verts, faces = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
            objects.append(ObjectReconstruction(int(oid), pts.astype(np.float32),
                                                nrm.astype(np.float32), verts, faces,
                                                cfg.voxel_size_m))
            # candidate rows: leaf * views + view (views = 1 for the direct head)
            cand = (sel[:, None] * views + np.arange(views)).reshape(-1)
            cand = cand[reachable[cand]]
            top = cand[np.argsort(-score_np[cand], kind='stable')[:max_grasps_per_object]]
            if len(top) == 0:
                continue
            grasp_sets.append(GraspSet(
                rotations=host['rotation'][top], translations=host['points'][top // views],
                widths=host['width'][top],
                depths=host['depth'][top], scores=score_np[top],
                qualities=host['quality'][top], graspness=host['graspness'][top],
                object_ids=np.full(len(top), int(oid))))
        timer.mark('meshing')
        grasps = GraspSet.concatenate(grasp_sets).sorted_by_score()   # by raw score
        if self.calibration is not None and 'network' in self.calibration.maps:
            grasps = self.calibration.apply(grasps, 'network')   # monotone: order kept
        return Prediction(objects, grasps, dict(timer.times), warnings)
