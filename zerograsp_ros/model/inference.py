"""Inference API: (rgb, depth, K, labels) -> per-object surfaces, meshes and dense grasps.

Grasps use the DIRECT AXES parameterisation of the network head: each
reconstructed surface point (leaf centre - normal * sdf) carries one grasp
with approach and closing axes (orthonormalised), width, depth, graspness and
quality; score = graspness * quality. The grasp translation (TCP) is that
surface point, as in GraspNet-style dense labels. Everything is in the camera
frame in metres. Tensors stay on the chosen device until the final copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from zerograsp_ros.geometry.meshing import mesh_from_points
from zerograsp_ros.geometry.rgbd import RGBDFrame
from zerograsp_ros.grasp.representation import GraspSet, rotation_from_axes
from zerograsp_ros.model.checkpoint import load_checkpoint
from zerograsp_ros.model.config import ModelConfig
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
    """Head outputs (N,14) at leaf centres (N,3, metres) -> surface, normals, grasp fields."""
    normal = F.normalize(signal[:, 0:3], dim=1)
    sdf = torch.tanh(signal[:, 3]) * config.voxel_size_m
    return {
        'points': centres_m - normal * sdf.unsqueeze(1),
        'normals': normal,
        'graspness': torch.sigmoid(signal[:, 4]),
        'quality': torch.sigmoid(signal[:, 5]),
        'approach': F.normalize(signal[:, 6:9], dim=1),
        'closing': F.normalize(signal[:, 9:12], dim=1),
        'width': torch.sigmoid(signal[:, 12]) * config.max_grasp_width_m,
        'depth': torch.sigmoid(signal[:, 13]) * config.max_grasp_depth_m,
    }


class ZeroGraspPredictor:
    """Runs a ZeroGraspNet on single frames (eval mode, no gradients)."""

    def __init__(self, model: ZeroGraspNet, config: ModelConfig, device='auto'):
        self.device = resolve_device(device)
        self.config = config
        self.model = model.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, path, device='auto') -> 'ZeroGraspPredictor':
        dev = resolve_device(device)
        model, config, _ = load_checkpoint(path, device=dev)
        return cls(model, config, dev)

    @torch.no_grad()
    def predict(self, frame: RGBDFrame, max_grasps_per_object: int = 256,
                object_ids=None, with_mesh: bool = True, *,
                occupancy_guide=None) -> Prediction:
        """Reconstruct and grasp every labelled object (or `object_ids`).

        InputError on bad input; objects with too few valid depth points are
        skipped with a warning in `Prediction.warnings`. `occupancy_guide` (an
        ocnn Octree of the same objects, for benchmarks and tests) makes the
        decoder follow that octree's occupancy instead of its own prediction.
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
        score = fields_['graspness'] * fields_['quality']
        # one device->host copy of everything at the end
        host = {k: v.float().cpu().numpy() for k, v in fields_.items()}
        score_np = score.cpu().numpy()
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
            top = sel[np.argsort(-score_np[sel], kind='stable')[:max_grasps_per_object]]
            if len(top) == 0:
                continue
            rot = rotation_from_axes(host['approach'][top], host['closing'][top])
            grasp_sets.append(GraspSet(
                rotations=rot, translations=host['points'][top], widths=host['width'][top],
                depths=host['depth'][top], scores=score_np[top],
                qualities=host['quality'][top], graspness=host['graspness'][top],
                object_ids=np.full(len(top), int(oid))))
        timer.mark('meshing')
        grasps = GraspSet.concatenate(grasp_sets).sorted_by_score()
        return Prediction(objects, grasps, dict(timer.times), list(scene.warnings))
