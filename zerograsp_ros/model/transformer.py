"""Multi-object encoder: pre-norm Transformer blocks over the latent voxels of a scene.

Queries and keys carry a 3D rotary position encoding (RoPE) of the voxel
centres in unit-cube coordinates: head_dim // 6 frequency pairs per axis
(x, y, z concatenated; remaining dims unrotated), frequencies log-spaced from
rope_freq_min to rope_freq_max (x pi). Because RoPE rotates q and k by angles
linear in position, q.k depends only on position differences: attention is
unchanged when the whole scene is translated. Tokens of different scenes in
one batch never attend to each other (boolean attention mask).
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


class Rope3D(nn.Module):
    def __init__(self, head_dim: int, freq_min: float, freq_max: float):
        super().__init__()
        self.n_freq = head_dim // 6
        freqs = torch.logspace(math.log10(freq_min), math.log10(freq_max), self.n_freq) * math.pi
        self.register_buffer('freqs', freqs, persistent=False)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Rotate x (T, heads, head_dim) by positions pos (T, 3)."""
        n = 3 * self.n_freq
        ang = (pos.unsqueeze(-1) * self.freqs).reshape(pos.shape[0], 1, n)    # (T,1,3F)
        cos, sin = torch.cos(ang), torch.sin(ang)
        rot, rest = x[..., :2 * n], x[..., 2 * n:]
        a, b = rot[..., 0::2], rot[..., 1::2]
        rotated = torch.stack([a * cos - b * sin, a * sin + b * cos], -1).flatten(-2)
        return torch.cat([rotated, rest], -1)


class RopeAttention(nn.Module):
    def __init__(self, width: int, heads: int, head_dim: int, dropout: float,
                 freq_min: float, freq_max: float):
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        self.qkv = nn.Linear(width, 3 * heads * head_dim)
        self.out = nn.Linear(heads * head_dim, width)
        self.rope = Rope3D(head_dim, freq_min, freq_max)

    def _qkv(self, x, pos):
        t = x.shape[0]
        q, k, v = self.qkv(x).view(t, 3, self.heads, self.head_dim).unbind(1)
        return self.rope(q, pos), self.rope(k, pos), v

    def scores(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Pre-softmax attention scores (heads, T, T), for inspection and tests."""
        q, k, _ = self._qkv(x, pos)
        return torch.einsum('thd,shd->hts', q, k) / math.sqrt(self.head_dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, pos)
        o = F.scaled_dot_product_attention(
            q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=allowed,
            dropout_p=self.dropout if self.training else 0.0)
        return self.out(o.transpose(0, 1).reshape(x.shape[0], -1))


class TransformerBlock(nn.Module):
    def __init__(self, width, heads, head_dim, ff_mult, dropout, freq_min, freq_max):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = RopeAttention(width, heads, head_dim, dropout, freq_min, freq_max)
        self.norm2 = nn.LayerNorm(width)
        self.ff = nn.Sequential(nn.Linear(width, ff_mult * width), nn.GELU(),
                                nn.Dropout(dropout), nn.Linear(ff_mult * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, pos, allowed):
        x = x + self.drop(self.attn(self.norm1(x), pos, allowed))
        return x + self.drop(self.ff(self.norm2(x)))


class MultiObjectEncoder(nn.Module):
    """Tokens (T, width) at positions (T,3) with scene ids (T,) -> (T, width)."""

    def __init__(self, config):
        super().__init__()
        w = config.latent_channels
        self.blocks = nn.ModuleList([
            TransformerBlock(w, config.transformer_heads, config.transformer_head_dim,
                             config.transformer_ff_mult, config.transformer_dropout,
                             config.rope_freq_min, config.rope_freq_max)
            for _ in range(config.transformer_blocks)])
        self.norm = nn.LayerNorm(w)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, scene_id: torch.Tensor):
        # One scene (every inference request): no mask, so attention runs in O(T) memory;
        # a (T, T) mask of a request with many objects once asked for 114 GB.
        single = scene_id.numel() == 0 or bool((scene_id == scene_id[0]).all())
        allowed = None if single else scene_id.view(-1, 1) == scene_id.view(1, -1)
        for blk in self.blocks:
            x = blk(x, pos, allowed)
        return self.norm(x)
