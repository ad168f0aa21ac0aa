"""ZeroGrasp losses (paper eq. 5-8, supplement weights as ModelConfig defaults).

L = w_occ * sum_depth CE(occupancy) + w_nrm * L1(normal) + w_sdf * L1(SDF)
  + grasp terms + w_kl(step) * KL(posterior || prior).
Grasp terms follow the DIRECT AXES parameterisation built here (the paper's
cross-entropy over angle / width / depth bins becomes regression):
graspness L1 on every leaf of objects that carry grasp labels, and only on
leaves with a label ("economic supervision"): quality L1, approach 1 - cos,
closing 1 - |cos| (a parallel jaw is symmetric under closing -> -closing),
width and depth L1 on values normalised by their maxima; with `grasp_modes` these
targets are the leaf's grasp mode nearest the prediction (`nearest_grasp_mode`).
With `grasp_head='paper'` (grasp_bins.py) the axes, width and depth terms
become cross-entropy over view, in-plane angle, depth and width bins (paper
eq. 7), weighted by w_approach (view), w_closing (angle), w_depth, w_width.
KL weight is annealed cyclically: it ramps from 0 to w_kl over the first
kl_ramp_fraction of every kl_cycle_steps steps, then stays at w_kl.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zerograsp_ros.errors import InputError
from zerograsp_ros.model.config import ModelConfig
from zerograsp_ros.model.targets import GRASP_MODE_CHANNELS, LEAF_TARGET_CHANNELS


def kl_weight(step: int, config: ModelConfig) -> float:
    ramp = max(1.0, config.kl_cycle_steps * config.kl_ramp_fraction)
    return config.w_kl * min(1.0, (step % max(1, config.kl_cycle_steps)) / ramp)


def gaussian_kl(mu_q, logvar_q, mu_p, logvar_p) -> torch.Tensor:
    """Mean over objects of KL(N(mu_q, var_q) || N(mu_p, var_p)), summed over dims."""
    kl = 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p) ** 2) / logvar_p.exp()
                - 1.0)
    return kl.sum(1).mean()


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.any():
        return values[mask].mean()
    return values.sum() * 0.0   # keeps the graph (and the device) without NaN


def nearest_grasp_mode(approach: torch.Tensor, closing: torch.Tensor, t: torch.Tensor,
                       modes: int) -> torch.Tensor:
    """(L, 9) per leaf the grasp target nearest the predicted axes, as t[:, 5:14] is laid out.

    Among the leaf's `modes` grasp modes (targets.leaf_targets) the one with the least
    (1 - cos approach) + (1 - |cos closing|) to the prediction; leaves without a mode keep
    the best grasp. The choice carries no gradient (winner takes all).
    """
    m = t[:, LEAF_TARGET_CHANNELS:LEAF_TARGET_CHANNELS + modes * GRASP_MODE_CHANNELS]
    if m.shape[1] < modes * GRASP_MODE_CHANNELS:
        raise InputError(f'grasp_modes = {modes} but the leaf targets carry '
                         f'{m.shape[1] // GRASP_MODE_CHANNELS} modes')
    m = m.reshape(len(t), modes, GRASP_MODE_CHANNELS)
    valid = m[..., 0:3].abs().sum(-1) > 0
    with torch.no_grad():
        cost = ((1.0 - (approach[:, None] * m[..., 0:3]).sum(-1))
                + (1.0 - (closing[:, None] * m[..., 3:6]).sum(-1).abs()))
        pick = cost.masked_fill(~valid, float('inf')).argmin(1)
    chosen = m[torch.arange(len(t), device=t.device), pick]
    # mode layout: approach 3, closing 3, width, depth, quality -> quality first
    chosen = torch.cat([chosen[:, 8:9], chosen[:, 0:8]], dim=1)
    return torch.where(valid.any(1, keepdim=True), chosen, t[:, 5:14])


def zerograsp_losses(out: dict, leaf_targets: torch.Tensor, object_has_grasps: torch.Tensor,
                     step: int, config: ModelConfig) -> tuple[torch.Tensor, dict]:
    """Total loss and its float terms from a ground-truth-guided forward pass.

    out: ZeroGraspNet.forward output on the ground-truth octree; leaf_targets
    (L, 15) rows aligned with the finest non-empty nodes of that octree (see
    targets.leaf_targets); object_has_grasps (n_objects,) bool.
    """
    octree = out['octree_out']
    terms = {}
    occ = 0.0
    for d, logit in out['logits'].items():
        label = octree.nempty_mask(d).long()
        ce = F.cross_entropy(logit, label)
        terms[f'occ_d{d}'] = ce
        occ = occ + ce
    terms['occupancy'] = occ
    s = out['signal']
    t = leaf_targets
    normal = F.normalize(s[:, 0:3], dim=1)
    terms['normal'] = (normal - t[:, 0:3]).abs().sum(1).mean()
    terms['sdf'] = (torch.tanh(s[:, 3]) - t[:, 3]).abs().mean()

    leaf_obj = octree.batch_id(octree.depth, nempty=True)
    graspable = object_has_grasps[leaf_obj]
    labelled = graspable & (t[:, 14] > 0.5) & (t[:, 4] > 0)
    if config.grasp_head == 'paper':
        from zerograsp_ros.model.grasp_bins import paper_grasp_losses

        terms.update(paper_grasp_losses(s, t, graspable, labelled, config, _masked_mean))
    else:
        terms['graspness'] = _masked_mean((torch.sigmoid(s[:, 4]) - t[:, 4]).abs(), graspable)
        approach, closing = F.normalize(s[:, 6:9], dim=1), F.normalize(s[:, 9:12], dim=1)
        grasp = t[:, 5:14]   # quality, approach 3, closing 3, width, depth: the best grasp
        if config.grasp_modes:
            grasp = nearest_grasp_mode(approach, closing, t, config.grasp_modes)
        terms['quality'] = _masked_mean((torch.sigmoid(s[:, 5]) - grasp[:, 0]).abs(), labelled)
        cos_a = (approach * grasp[:, 1:4]).sum(1)
        cos_c = (closing * grasp[:, 4:7]).sum(1)
        terms['approach'] = _masked_mean(1.0 - cos_a, labelled)
        terms['closing'] = _masked_mean(1.0 - cos_c.abs(), labelled)
        terms['width'] = _masked_mean((torch.sigmoid(s[:, 12]) - grasp[:, 7]).abs(), labelled)
        terms['depth'] = _masked_mean((torch.sigmoid(s[:, 13]) - grasp[:, 8]).abs(), labelled)

    if out.get('mu_q') is not None:
        terms['kl'] = gaussian_kl(out['mu_q'], out['logvar_q'], out['mu_p'], out['logvar_p'])
    else:
        terms['kl'] = s.sum() * 0.0
    w_kl = kl_weight(step, config)
    total = (config.w_occupancy * occ + config.w_normal * terms['normal']
             + config.w_sdf * terms['sdf'] + config.w_graspness * terms['graspness']
             + config.w_quality * terms['quality']
             + config.w_approach * terms['view' if 'view' in terms else 'approach']
             + config.w_closing * terms['angle' if 'angle' in terms else 'closing']
             + config.w_width * terms['width']
             + config.w_depth * terms['depth'] + w_kl * terms['kl'])
    floats = {k: float(v.detach()) for k, v in terms.items()}
    floats['kl_weight'] = w_kl
    floats['total'] = float(total.detach())
    return total, floats
