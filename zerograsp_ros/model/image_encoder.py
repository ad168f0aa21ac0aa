"""Per-pixel image features for the leaves of the input octree.

ImageNet weights cannot be fetched here, so the default encoder is a small
CNN trained with the model. The seam: any `ImageEncoder` subclass (output
`out_channels` features at 1/`stride` resolution) can be registered under a
name with `register_image_encoder` and chosen by `ModelConfig.image_encoder`,
e.g. a frozen pretrained backbone with a trainable head on the robot PC.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from zerograsp_ros.errors import InputError

_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


class ImageEncoder(nn.Module):
    """Interface: (B,3,H,W) RGB in [0,1] -> (B,out_channels,ceil(H/stride),ceil(W/stride))."""

    out_channels: int
    stride: int

    def sample(self, feature_map: torch.Tensor, pixels: torch.Tensor,
               image_hw: tuple[int, int]) -> torch.Tensor:
        """Bilinear features (N,C) at integer pixels (N,2) (row, col) of an image of size HW."""
        h, w = image_hw
        rows = pixels[:, 0].to(feature_map.dtype)
        cols = pixels[:, 1].to(feature_map.dtype)
        # align_corners=False convention: pixel centre c maps to (2c + 1) / size - 1
        gx = (2.0 * cols + 1.0) / w - 1.0
        gy = (2.0 * rows + 1.0) / h - 1.0
        grid = torch.stack([gx, gy], 1).view(1, 1, -1, 2)
        out = F.grid_sample(feature_map, grid, mode='bilinear', padding_mode='border',
                            align_corners=False)
        return out.view(feature_map.shape[1], -1).t()


class SmallCNNEncoder(ImageEncoder):
    """Four conv layers, 1/4 resolution; light enough for CPU training."""

    def __init__(self, out_channels: int = 32, width: int = 32):
        super().__init__()
        self.out_channels = out_channels
        self.stride = 4
        half = max(width // 2, 8)
        self.register_buffer('mean', torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('std', torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        self.net = nn.Sequential(
            nn.Conv2d(3, half, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 1))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.net((rgb - self.mean) / self.std)


_REGISTRY: dict[str, Callable[..., ImageEncoder]] = {
    'small_cnn': lambda config: SmallCNNEncoder(config.image_feature_channels,
                                                config.image_encoder_width),
}


def register_image_encoder(name: str, factory: Callable[..., ImageEncoder]) -> None:
    """Make `factory(config) -> ImageEncoder` selectable as config.image_encoder = name."""
    _REGISTRY[name] = factory


def make_image_encoder(config) -> ImageEncoder:
    if config.image_encoder not in _REGISTRY:
        raise InputError(f"unknown image encoder '{config.image_encoder}'; registered: "
                         f'{sorted(_REGISTRY)}')
    enc = _REGISTRY[config.image_encoder](config)
    if enc.out_channels != config.image_feature_channels:
        raise InputError(f"image encoder '{config.image_encoder}' gives {enc.out_channels} "
                         f'channels, config expects {config.image_feature_channels}')
    return enc
