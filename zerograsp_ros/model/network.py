"""ZeroGraspNet: octree CVAE + multi-object transformer + 3D occlusion fields on ocnn.

Data flow for a batch of scenes (every object of every scene is one ocnn
batch entry; all objects of a scene share the scene cube, see inputs.py):
  image encoder (per scene, cropped to the objects)  -> per-pixel features
  input octree per object (leaf feature = local position 3 + image feature)
  octree U-Net encoder, depth `depth` -> `latent_depth` (stride-2 convs)
  latent tokens = input-octree nodes at latent_depth
    + occlusion-field vector (B^3 sub-blocks, self/inter flags, 3D CNN)
    -> multi-object Transformer (RoPE on voxel centres, attention per scene)
  aligned onto the output octree (full at latent_depth), concatenated with the
  CVAE latent z (prior from the input; posterior from input + ground-truth
  octree features during training) broadcast to every latent node
  decoder latent_depth -> depth: deconv up, U-Net skip from the encoder,
  residual blocks, occupancy logits (2) per depth; split + grow from the
  ground truth in training, from the prediction at inference
  finest-depth head (14 channels, DIRECT AXES grasp parameterisation as the
  released code): normal 3, SDF 1, graspness 1, quality 1, approach axis 3,
  closing axis 3, width 1, depth 1.
Deviation: the CVAE MLPs use LayerNorm instead of BatchNorm so that a batch
with a single object trains.
"""
from __future__ import annotations

import numpy as np
import ocnn
from ocnn.modules import (
    Conv1x1,
    Conv1x1BnRelu,
    OctreeConvBnRelu,
    OctreeDeconvBnRelu,
    OctreeResBlocks,
)
from ocnn.octree import Octree
import torch
from torch import nn

from zerograsp_ros.errors import InputError
from zerograsp_ros.model.config import ModelConfig
from zerograsp_ros.model.image_encoder import make_image_encoder
from zerograsp_ros.model.inputs import (
    SceneObservation,
    build_octree,
    leaf_centres_unit,
    merge,
    observe_scene,
)
from zerograsp_ros.model.losses import zerograsp_losses
from zerograsp_ros.model.occlusion import OcclusionEncoder, occlusion_flags
from zerograsp_ros.model.targets import LEAF_TARGET_CHANNELS, SceneSample, leaf_targets
from zerograsp_ros.model.transformer import MultiObjectEncoder
from zerograsp_ros.runtime import StageTimer


class OctreeEncoder(nn.Module):
    """Input conv at `depth`, residual blocks per depth, stride-2 conv down to latent_depth."""

    def __init__(self, channel_in: int, channels, depth: int, latent_depth: int,
                 resblocks: int, bottleneck: int):
        super().__init__()
        self.depth, self.latent_depth = depth, latent_depth
        self.conv1 = OctreeConvBnRelu(channel_in, channels[depth], nempty=False)
        self.blocks = nn.ModuleList([
            OctreeResBlocks(channels[d], channels[d], resblocks, bottleneck, nempty=False)
            for d in range(depth, latent_depth - 1, -1)])
        self.down = nn.ModuleList([
            OctreeConvBnRelu(channels[d], channels[d - 1], kernel_size=[2], stride=2,
                             nempty=False)
            for d in range(depth, latent_depth, -1)])

    def forward(self, data: torch.Tensor, octree: Octree) -> dict[int, torch.Tensor]:
        convs = {}
        x = self.conv1(data, octree, self.depth)
        for i, d in enumerate(range(self.depth, self.latent_depth - 1, -1)):
            x = self.blocks[i](x, octree, d)
            convs[d] = x
            if d > self.latent_depth:
                x = self.down[i](x, octree, d)
        return convs


def _mlp(c_in: int, hidden: int, layers: int, c_out: int) -> nn.Sequential:
    mods = []
    for _ in range(layers):
        mods += [nn.Linear(c_in, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True)]
        c_in = hidden
    mods.append(nn.Linear(c_in, c_out))
    return nn.Sequential(*mods)


def _head(c_in: int, hidden: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(Conv1x1BnRelu(c_in, hidden), Conv1x1(hidden, c_out, use_bias=True))


def gt_split_labels(guide: Octree, octree: Octree, depth: int) -> torch.Tensor:
    """1 where a node of `octree` at `depth` is non-empty in `guide` (matched by key)."""
    mask = guide.nempty_mask(depth).float().unsqueeze(1)
    aligned = ocnn.nn.octree_align(mask, guide, octree, depth)
    return (aligned[:, 0] > 0.5).int()


def grow_from_guide(octree: Octree, guide: Octree, from_depth: int, to_depth: int) -> None:
    """Split and grow `octree` from `from_depth` to `to_depth` with the guide's occupancy."""
    for d in range(from_depth, to_depth + 1):
        octree.octree_split(gt_split_labels(guide, octree, d), d)
        if d < to_depth:
            octree.octree_grow(d + 1)


def candidate_octree(octree_in: Octree, config: ModelConfig, guide: Octree | None = None
                     ) -> Octree:
    """Output octree grown to the latent depth over the decoding region only.

    Region: the input's occupied cells one level above the latent depth, dilated
    by `decode_dilation` cells (plus the guide's cells in training, so every
    ground-truth cell is decoded). Far fewer latent nodes than the full grid.
    """
    c = config.latent_depth - 1
    octree = Octree.init_octree(config.depth, c, octree_in.batch_size, octree_in.device)
    mask = octree_in.nempty_mask(c).float().unsqueeze(1)
    occ = ocnn.nn.octree_align(mask, octree_in, octree, c)[:, 0] > 0.5
    neigh = octree.neighs[c]                     # (N, 27), -1 outside the cube
    for _ in range(config.decode_dilation):
        occ = (occ[neigh.clamp(min=0)] & (neigh >= 0)).any(1)
    if guide is not None:   # parents of the guide's occupied latent cells (its level c is full)
        key = guide.key(config.latent_depth, nempty=True)
        batch_bits = (key >> 48) << 48
        parents = torch.unique(((key & ((1 << 48) - 1)) >> 3) | batch_bits)
        occ = occ | torch.isin(octree.keys[c], parents)
    octree.octree_split(occ.int(), c)
    octree.octree_grow(config.latent_depth)
    return octree


def capped_split(prob: torch.Tensor, batch_id: torch.Tensor, cap: int) -> torch.Tensor:
    """Split where p >= 0.5, keeping at most `cap` most likely nodes per object."""
    split = prob >= 0.5
    if cap <= 0 or split.sum() <= cap:
        return split.int()
    # rank nodes inside each object by probability (vectorised: sort by object, then -p)
    order = torch.argsort(batch_id.double() * 2.0 + (1.0 - prob.double()))
    sorted_b = batch_id[order]
    first = torch.searchsorted(sorted_b, sorted_b, right=False)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=prob.device) - first
    return (split & (rank < cap)).int()


def split_cap(config: ModelConfig, depth: int) -> int:
    """Most nodes one object may split at `depth` while decoding.

    12 x the surface cells of a `max_object_extent_m` cube (about 2x its six
    faces); bounds the octree (time, memory) of an untrained or confused model.
    """
    cell = config.scene_cube_m / 2 ** depth
    return int(12 * (config.max_object_extent_m / cell) ** 2) + 64


class ZeroGraspNet(nn.Module):
    """The ZeroGrasp network; see the module docstring for the data flow."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config.channels
        D, L = config.depth, config.latent_depth
        cl = config.latent_channels
        self.image_encoder = make_image_encoder(config)
        self.encoder = OctreeEncoder(3 + config.image_feature_channels, c, D, L,
                                     config.resblocks_per_depth, config.bottleneck)
        if config.use_occlusion_fields:
            self.occlusion_encoder = OcclusionEncoder(config.occlusion_blocks,
                                                      config.occlusion_channels)
            self.occlusion_fuse = nn.Sequential(
                nn.Linear(cl + config.occlusion_channels, cl), nn.GELU())
        if config.use_multi_object_encoder:
            self.transformer = MultiObjectEncoder(config)
        if config.use_cvae:
            pc = config.posterior_channels
            self.posterior_encoder = OctreeEncoder(
                LEAF_TARGET_CHANNELS, (pc,) * (D + 1), D, L, 1, 2)
            self.prior_mlp = _mlp(cl, config.cvae_hidden, config.cvae_layers,
                                  2 * config.latent_dim)
            self.posterior_mlp = _mlp(cl + pc, config.cvae_hidden, config.cvae_layers,
                                      2 * config.latent_dim)
            self.latent_fuse = Conv1x1BnRelu(cl + config.latent_dim, cl)
        self.up = nn.ModuleList([
            OctreeDeconvBnRelu(c[d - 1], c[d], kernel_size=[2], stride=2, nempty=False)
            for d in range(L + 1, D + 1)])
        self.dec_blocks = nn.ModuleList([
            OctreeResBlocks(c[d], c[d], config.resblocks_per_depth, config.bottleneck,
                            nempty=False) for d in range(L, D + 1)])
        self.occ_heads = nn.ModuleList([_head(c[d], config.head_hidden, 2)
                                        for d in range(L, D + 1)])
        self.signal_head = _head(c[D], config.signal_head_hidden or config.head_hidden,
                                 config.signal_channels)

    # ------------------------------------------------------------------ inputs
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def input_octree(self, scenes: list[SceneObservation], timer: StageTimer | None = None):
        """Image features + per-object input octrees merged into one batch.

        Returns (octree, object_scene (n,) long, object_label (n,) long).
        """
        cfg, dev = self.config, self.device
        stride = self.image_encoder.stride
        fmaps = {}
        for si, scene in enumerate(scenes):
            if not scene.objects:
                continue
            # crop the image to the objects (plus a margin) to save encoder time
            rgb = scene.frame.rgb
            h, w = rgb.shape[:2]
            pix = np.concatenate([o.pixels for o in scene.objects])
            pad = 4 * stride
            r0 = max(0, (int(pix[:, 0].min()) - pad) // stride * stride)
            c0 = max(0, (int(pix[:, 1].min()) - pad) // stride * stride)
            r1 = min(h, int(pix[:, 0].max()) + pad + 1)
            c1 = min(w, int(pix[:, 1].max()) + pad + 1)
            crop = torch.from_numpy(np.ascontiguousarray(rgb[r0:r1, c0:c1])).to(dev)
            crop = crop.permute(2, 0, 1).unsqueeze(0).float() / 255.0
            fmaps[si] = (self.image_encoder(crop), (r0, c0), (r1 - r0, c1 - c0))
        if timer is not None:
            timer.mark('image_encoder')
        octrees, obj_scene, obj_label = [], [], []
        for si, scene in enumerate(scenes):
            if si not in fmaps:
                continue
            fmap, origin, size = fmaps[si]
            offset = torch.tensor(origin, device=dev)
            for obj in scene.objects:
                pixels = torch.from_numpy(obj.pixels).to(dev) - offset
                feat = self.image_encoder.sample(fmap, pixels, size)
                unit = scene.normalization.to_unit(torch.from_numpy(obj.points_m).to(dev))
                unit = unit.clamp(-cfg.coord_clip, cfg.coord_clip)
                octrees.append(build_octree(unit, cfg.depth, cfg.input_full_depth,
                                            features=feat))
                obj_scene.append(si)
                obj_label.append(obj.object_id)
        if not octrees:
            raise InputError('no object with enough valid depth points in the batch')
        merged = merge(octrees)
        if timer is not None:
            timer.mark('octree')
        return (merged, torch.tensor(obj_scene, device=dev),
                torch.tensor(obj_label, device=dev))

    def _occlusion(self, scenes, token_pos, token_obj, obj_scene, obj_label):
        cfg, dev = self.config, self.device
        out = torch.zeros(len(token_pos), 2, cfg.occlusion_blocks, cfg.occlusion_blocks,
                          cfg.occlusion_blocks, device=dev)
        token_scene = obj_scene[token_obj]
        voxel = cfg.scene_cube_m / 2 ** cfg.latent_depth
        for si, scene in enumerate(scenes):
            sel = torch.nonzero(token_scene == si).view(-1)
            if len(sel) == 0:
                continue
            centres = scene.normalization.to_metres(token_pos[sel])
            depth = torch.from_numpy(np.nan_to_num(scene.frame.depth, nan=0.0)).to(dev)
            valid = torch.from_numpy(scene.valid_depth).to(dev)
            labels = torch.from_numpy(np.asarray(scene.frame.labels, dtype=np.int64)).to(dev)
            k = scene.intrinsics
            out[sel] = occlusion_flags(centres, voxel, obj_label[token_obj[sel]], depth, valid,
                                       labels, (k.fx, k.fy, k.cx, k.cy),
                                       cfg.neighbour_dilation_px, cfg.occlusion_blocks)
        return self.occlusion_encoder(out)

    # ------------------------------------------------------------------ forward
    def forward(self, scenes: list[SceneObservation], gt_octree: Octree | None = None,
                gt_features: torch.Tensor | None = None, occupancy_guide: Octree | None = None,
                timer: StageTimer | None = None, cap_split: bool = True) -> dict:
        """Run the network on observed scenes.

        Training: pass the merged ground-truth octree (`gt_octree`, same object
        order) with its per-leaf target features `gt_features` (L, 15); decoding
        then follows the ground truth and the posterior is used. Inference: leave
        both None; the octree grows from predicted occupancy (`occupancy_guide`
        replaces the prediction by a guide octree's occupancy, for tests).
        """
        cfg = self.config
        D, L = cfg.depth, cfg.latent_depth
        timer = timer or StageTimer(self.device)
        octree_in, obj_scene, obj_label = self.input_octree(scenes, timer)
        data = octree_in.get_input_feature('LF', nempty=False)
        convs = self.encoder(data, octree_in)
        n_obj = octree_in.batch_size
        tokens = convs[L]
        token_pos = leaf_centres_unit(octree_in, L, nempty=False)
        token_obj = octree_in.batch_id(L, nempty=False)
        out = {'mu_p': None, 'logvar_p': None, 'mu_q': None, 'logvar_q': None}
        if cfg.use_cvae:
            pooled = ocnn.nn.octree_global_pool(tokens, octree_in, L, nempty=False)
            out['mu_p'], out['logvar_p'] = self.prior_mlp(pooled).chunk(2, dim=1)
        timer.mark('encoder')
        if cfg.use_occlusion_fields:
            occ = self._occlusion(scenes, token_pos, token_obj, obj_scene, obj_label)
            tokens = self.occlusion_fuse(torch.cat([tokens, occ], 1))
        timer.mark('occlusion')
        if cfg.use_multi_object_encoder:
            tokens = self.transformer(tokens, token_pos, obj_scene[token_obj])
        timer.mark('transformer')

        leaf_targets = None
        if gt_octree is not None:
            update = False
            if cfg.decode_full_latent_grid:
                octree_out, leaf_targets = gt_octree, gt_features
            else:   # the ground truth restricted to the decoding region, leaves unchanged
                octree_out = candidate_octree(octree_in, cfg, guide=gt_octree)
                grow_from_guide(octree_out, gt_octree, L, D)
                leaf_targets = ocnn.nn.octree_align(gt_features, gt_octree, octree_out, D,
                                                    nempty=True)
        else:
            update = True
            if cfg.decode_full_latent_grid:
                octree_out = Octree.init_octree(D, L, n_obj, self.device)
            else:
                octree_out = candidate_octree(octree_in, cfg, guide=occupancy_guide)
        x = ocnn.nn.octree_align(tokens, octree_in, octree_out, L)
        if cfg.use_cvae:
            if gt_octree is not None:
                gt_data = ocnn.nn.octree_pad(leaf_targets[:, :LEAF_TARGET_CHANNELS],
                                             octree_out, D)
                post = self.posterior_encoder(gt_data, octree_out)[L]
                post = ocnn.nn.octree_global_pool(post, octree_out, L, nempty=False)
                pooled = ocnn.nn.octree_global_pool(convs[L], octree_in, L, nempty=False)
                out['mu_q'], out['logvar_q'] = self.posterior_mlp(
                    torch.cat([pooled, post], 1)).chunk(2, dim=1)
                z = out['mu_q'] + torch.randn_like(out['mu_q']) * (0.5 * out['logvar_q']).exp()
            else:
                z = out['mu_p']   # prior mean at inference
            z_nodes = z[octree_out.batch_id(L, nempty=False)]
            x = self.latent_fuse(torch.cat([x, z_nodes], 1))

        logits = {}
        for i, d in enumerate(range(L, D + 1)):
            if d > L:
                x = self.up[i - 1](x, octree_out, d - 1)
                x = x + ocnn.nn.octree_align(convs[d], octree_in, octree_out, d)
            x = self.dec_blocks[i](x, octree_out, d)
            logit = self.occ_heads[i](x)
            logits[d] = logit
            if update:
                if occupancy_guide is not None:
                    split = gt_split_labels(occupancy_guide, octree_out, d)
                else:
                    prob = torch.softmax(logit.detach(), 1)[:, 1]
                    cap = split_cap(cfg, d) if cap_split else 0
                    split = capped_split(prob, octree_out.batch_id(d, nempty=False), cap)
                octree_out.octree_split(split, d)
                if d < D:
                    octree_out.octree_grow(d + 1)
        signal = ocnn.nn.octree_depad(self.signal_head(x), octree_out, D)
        timer.mark('decoder')
        out.update(logits=logits, signal=signal, octree_out=octree_out, octree_in=octree_in,
                   leaf_targets=leaf_targets,
                   object_scene=obj_scene, object_label=obj_label, timings=timer.times)
        return out


def ground_truth_octree(samples: list[SceneSample], scenes: list[SceneObservation],
                        config: ModelConfig, device) -> tuple[Octree, torch.Tensor, torch.Tensor]:
    """Ground truth for the observed objects, on `device`.

    Returns the merged ground-truth octree (object order as the input octree),
    per-leaf targets (L, 15) and per-object 'has grasp labels' flags.
    """
    D, L = config.depth, config.latent_depth
    octrees, feats, has_grasps = [], [], []
    for sample, scene in zip(samples, scenes):
        for obj in scene.objects:
            tgt = sample.targets[obj.object_id]
            tgt.validate()
            pts = np.asarray(tgt.surface_points, dtype=np.float32)
            nrm = np.asarray(tgt.surface_normals, dtype=np.float32)
            nrm = nrm / np.clip(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-9, None)
            unit = np.clip(scene.normalization.to_unit(pts), -config.coord_clip,
                           config.coord_clip).astype(np.float32)
            octree = build_octree(torch.from_numpy(unit), D, L, normals=torch.from_numpy(nrm))
            centres_m = scene.normalization.to_metres(leaf_centres_unit(octree, D).numpy())
            avg_m = scene.normalization.to_metres(
                octree.points[D].numpy() * 2.0 ** (1 - D) - 1.0)
            t = leaf_targets(tgt, centres_m, octree.normals[D].numpy(), avg_m,
                             config.voxel_size_m, config.max_grasp_width_m,
                             config.max_grasp_depth_m,
                             tgt.label_radius_m or config.grasp_label_radius_m,
                             config.grasp_views if config.grasp_head == 'paper' else 0,
                             config.grasp_modes if config.grasp_head == 'direct' else 0)
            octrees.append(octree)
            feats.append(torch.from_numpy(t))
            has_grasps.append(tgt.has_grasp_labels)
    merged = merge(octrees).to(device)
    return (merged, torch.cat(feats).to(device),
            torch.tensor(has_grasps, dtype=torch.bool, device=device))


def observe_samples(batch: list[SceneSample], config: ModelConfig) -> list[SceneObservation]:
    """Observations restricted to objects that have targets and are visible."""
    scenes = []
    for sample in batch:
        if sample.frame.labels is None:
            raise InputError('training frame has no instance label image')
        present = set(np.unique(sample.frame.labels).tolist())
        ids = [i for i in sorted(sample.targets) if i in present and i > 0]
        if not ids:
            scenes.append(SceneObservation(sample.frame, [], None, sample.frame.valid_depth()))
            continue
        scenes.append(observe_scene(sample.frame, config, object_ids=ids))
    if not any(s.objects for s in scenes):
        raise InputError('training batch has no visible object with targets and enough valid '
                         'depth points')
    return scenes


def training_step(model: ZeroGraspNet, batch: list[SceneSample], step: int, device):
    """One ground-truth-guided forward pass and the loss: (loss tensor, float terms)."""
    model.train()
    cfg = model.config
    scenes = observe_samples(batch, cfg)
    gt_octree, gt_feats, has_grasps = ground_truth_octree(batch, scenes, cfg, device)
    out = model(scenes, gt_octree=gt_octree, gt_features=gt_feats)
    loss, terms = zerograsp_losses(out, out['leaf_targets'], has_grasps, step, cfg)
    terms['objects'] = float(gt_octree.batch_size)
    return loss, terms
