"""3D occlusion fields (ZeroGrasp): which parts of a latent voxel the camera cannot see.

Every latent voxel is split into B^3 sub-blocks; each sub-block centre is
projected with K and depth-tested against the observed depth. A sub-block
behind the observed surface is occluded; `self` when the occluding pixel
belongs to the object's own mask, `inter` when it belongs to a neighbouring
object's mask (neighbours: masks that touch after a dilation). The (T, 2, B,
B, B) flags are encoded by strided 3D convolutions (B -> 1) to one vector per
voxel. All tensor ops, no Python loop over voxels; runs on CPU or CUDA.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


def neighbour_matrix(labels: torch.Tensor, ids: torch.Tensor, dilation_px: int) -> torch.Tensor:
    """(n,n) bool: object i's mask dilated by a dilation_px square touches object j's mask."""
    k = max(int(dilation_px), 1)
    fg = torch.nonzero(labels > 0)
    if len(fg) == 0:
        return torch.zeros(len(ids), len(ids), dtype=torch.bool, device=labels.device)
    # only the box around the masks matters (saves most of a full-image pooling per object)
    lo = (fg.min(0).values - k).clamp(min=0)
    hi = fg.max(0).values + k + 1
    labels = labels[lo[0]:hi[0], lo[1]:hi[1]]
    masks = (labels.unsqueeze(0) == ids.view(-1, 1, 1)).float().unsqueeze(1)   # (n,1,h,w)
    dilated = F.max_pool2d(masks, k, stride=1, padding=k // 2)
    if dilated.shape[-2:] != masks.shape[-2:]:   # even kernel sizes grow the map by one
        dilated = dilated[..., :masks.shape[-2], :masks.shape[-1]]
    touch = torch.einsum('ichw,jchw->ij', dilated, masks) > 0
    touch.fill_diagonal_(False)
    return touch


def sub_block_offsets(blocks: int, voxel_size: float, device) -> torch.Tensor:
    """(B^3, 3) offsets of sub-block centres from the voxel centre, x-major order."""
    g = ((torch.arange(blocks, device=device, dtype=torch.float32) + 0.5) / blocks - 0.5) \
        * voxel_size
    gx, gy, gz = torch.meshgrid(g, g, g, indexing='ij')
    return torch.stack([gx, gy, gz], -1).view(-1, 3)


def occlusion_flags(centres_m: torch.Tensor, voxel_size_m: float, token_label: torch.Tensor,
                    depth: torch.Tensor, valid: torch.Tensor, labels: torch.Tensor,
                    intrinsics: tuple[float, float, float, float], dilation_px: int,
                    blocks: int) -> torch.Tensor:
    """Self / inter-object occlusion flags, (T, 2, B, B, B) float in {0, 1}.

    centres_m: (T,3) camera-frame centres of latent voxels; token_label: (T,) the
    label id of the object each voxel belongs to; depth (H,W) metres with `valid`
    (H,W) bool; labels (H,W) integer instance ids (0 = background).
    """
    device = centres_m.device
    fx, fy, cx, cy = intrinsics
    h, w = depth.shape
    labels = labels.long()
    ids = torch.unique(labels)
    ids = ids[ids > 0]
    lookup = torch.full((int(labels.max().item()) + 1 if labels.numel() else 1,), -1,
                        dtype=torch.long, device=device)
    lookup[ids] = torch.arange(len(ids), device=device)
    touch = neighbour_matrix(labels, ids, dilation_px)   # (n,n)
    token_local = lookup[token_label.long().clamp(0, len(lookup) - 1)]

    pts = centres_m.unsqueeze(1) + sub_block_offsets(blocks, voxel_size_m, device)   # (T,S,3)
    z = pts[..., 2]
    in_front = z > 1e-6
    zs = torch.where(in_front, z, torch.ones_like(z))
    col = torch.round(fx * pts[..., 0] / zs + cx).long()
    row = torch.round(fy * pts[..., 1] / zs + cy).long()
    inside = in_front & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    flat = (row.clamp(0, h - 1) * w + col.clamp(0, w - 1))
    d_obs = depth.reshape(-1)[flat]
    seen = valid.reshape(-1)[flat] & inside
    occluded = seen & (z > d_obs)
    pix_local = lookup[labels.reshape(-1)[flat]]                       # (T,S), -1 background
    own = token_local.unsqueeze(1)
    self_flag = occluded & (pix_local == own) & (own >= 0)
    other = (pix_local >= 0) & (pix_local != own) & (own >= 0)
    neigh = touch[own.clamp(min=0).expand_as(pix_local), pix_local.clamp(min=0)]
    inter_flag = occluded & other & neigh
    flags = torch.stack([self_flag, inter_flag], 1).float()            # (T,2,S)
    return flags.view(len(centres_m), 2, blocks, blocks, blocks)


class OcclusionEncoder(nn.Module):
    """log2(B) stride-2 3D convolutions: (T,2,B,B,B) flags -> (T,channels)."""

    def __init__(self, blocks: int, channels: int):
        super().__init__()
        layers, c_in = [], 2
        for _ in range(int(round(math.log2(blocks)))):
            layers += [nn.Conv3d(c_in, channels, 3, stride=2, padding=1), nn.GELU()]
            c_in = channels
        self.net = nn.Sequential(*layers)

    def forward(self, flags: torch.Tensor) -> torch.Tensor:
        return self.net(flags).flatten(1)
