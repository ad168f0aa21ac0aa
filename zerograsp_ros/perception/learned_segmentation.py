"""Learned segmentation of unseen objects in piles: a small RGB-D U-Net with centre voting.

No downloaded weights: the network is trained on our own synthetic scenes
(`zerograsp_ros/training/train_segmentation.py`, views from
`zerograsp_ros/data/segmentation_views.py`) and shipped as `checkpoints/segnet.pt`.

Per frame:
1. reduce the frame to about 320 px wide (every `stride`-th pixel; intrinsics scaled);
2. fit the table plane on the reduced depth (as the tabletop segmenter does) and
   compute each pixel's height above it: a depth-scale-robust geometric cue;
3. the U-Net predicts, per pixel, foreground and the 2D offset to its object's
   centre (the mean of the object's pixels);
4. foreground pixels vote for centres; the vote density on a coarse grid is
   thresholded and its connected blobs are the instances (a grid DBSCAN: fast and
   deterministic); every foreground pixel takes the blob its vote falls in or nearest to;
5. labels are upsampled back to the frame's size.

Touching objects are separated because their pixels vote for different centres,
which geometry alone (clustering of 3D points) cannot tell apart.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
import os
from pathlib import Path

import numpy as np

from zerograsp_ros.errors import CheckpointError, InputError
from zerograsp_ros.geometry.camera import CameraIntrinsics, unproject
from zerograsp_ros.geometry.rgbd import RGBDFrame, validate_frame
from zerograsp_ros.perception.segmentation import (
    Segmentation,
    SegmenterUnavailable,
    TabletopConfig,
    config_from_dict,
    fit_plane,
)
from zerograsp_ros.resources import package_path

FORMAT_VERSION = 1
_MAGIC = 'zerograsp_ros.segnet'
INPUT_CHANNELS = 6            # rgb (3), height above the table, valid depth, relative depth
TARGET_WIDTH = 320            # the network runs on frames reduced to about this width
OFFSET_UNIT = 10.0            # centre offsets are predicted in units of 10 reduced pixels
HEIGHT_CLIP = (-0.05, 0.35)   # [m] heights beyond are clipped (table edge, tall clutter)


def default_checkpoint() -> Path:
    """checkpoints/segnet.pt of the source tree, else of the installed share directory."""
    return package_path('checkpoints', 'segnet.pt')


# ----------------------------------------------------------------------------- inputs

@dataclass
class ReducedView:
    """A frame at network resolution: every `stride`-th pixel, heights above the table."""

    rgb: np.ndarray          # (h, w, 3) uint8
    depth: np.ndarray        # (h, w) float32 m, 0 = invalid
    height: np.ndarray       # (h, w) float32 m above the table plane, 0 where invalid
    valid: np.ndarray        # (h, w) bool
    stride: int
    table_plane: np.ndarray  # (a, b, c, d) in the camera frame (normal towards the camera)


def reduction_stride(width: int) -> int:
    return max(1, int(round(width / TARGET_WIDTH)))


def reduce_frame(frame: RGBDFrame, tabletop: TabletopConfig | None = None,
                 table_plane: np.ndarray | None = None) -> ReducedView:
    """Subsample the frame, fit (or take) the table plane and compute heights above it.

    InputError when the frame is unusable or no table plane can be found.
    """
    cfg = tabletop or TabletopConfig()
    validate_frame(frame)
    s = reduction_stride(frame.depth.shape[1])
    depth = np.asarray(frame.depth, dtype=np.float32)[::s, ::s]
    rgb = np.ascontiguousarray(np.asarray(frame.rgb)[::s, ::s])
    intr = frame.intrinsics
    small = CameraIntrinsics(intr.fx / s, intr.fy / s, intr.cx / s, intr.cy / s,
                             depth.shape[1], depth.shape[0])
    with np.errstate(invalid='ignore'):
        valid = np.isfinite(depth) & (depth >= cfg.min_depth) & (depth <= cfg.max_depth)
    if not valid.any():
        raise InputError(f'no depth pixel between {cfg.min_depth} and {cfg.max_depth} m '
                         '(camera too close/far from the table, or depth limits wrong)')
    pts, pix = unproject(depth, small, mask=valid, return_pixels=True)
    if table_plane is None:
        plane = fit_plane(pts, cfg)
    else:
        plane = np.asarray(table_plane, dtype=np.float64).reshape(4)
        if not np.isfinite(plane).all():
            raise InputError(f'table plane must be finite, got {plane.tolist()}')
    height = np.zeros(depth.shape, np.float32)
    height[pix[:, 0], pix[:, 1]] = pts @ plane[:3].astype(np.float32) + np.float32(plane[3])
    depth = np.where(valid, depth, np.float32(0.0))
    return ReducedView(rgb=rgb, depth=depth, height=height, valid=valid, stride=s,
                       table_plane=plane)


def input_features(rgb: np.ndarray, depth: np.ndarray, height: np.ndarray,
                   valid: np.ndarray) -> np.ndarray:
    """(INPUT_CHANNELS, h, w) float32 network input, insensitive to the depth's overall scale.

    Depth enters only relative to the frame's median valid depth, and as height
    above the fitted table (a few per cent scale error changes it by millimetres).
    """
    valid = np.asarray(valid, dtype=bool)
    feats = np.empty((INPUT_CHANNELS,) + depth.shape, np.float32)
    feats[:3] = np.moveaxis(np.asarray(rgb, np.float32) / 255.0 - 0.5, -1, 0)
    feats[3] = np.where(valid, np.clip(height, *HEIGHT_CLIP) * 10.0, 0.0)
    feats[4] = valid
    median = float(np.median(depth[valid])) if valid.any() else 1.0
    feats[5] = np.where(valid, (np.asarray(depth, np.float32) / median - 1.0) * 4.0, 0.0)
    return feats


# ----------------------------------------------------------------------------- network

def _block(torch_nn, c_in: int, c_out: int):
    nn = torch_nn
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


def build_network(widths=(8, 24, 48, 64)):
    """A 4-level U-Net: INPUT_CHANNELS -> (foreground logit, offset x, offset y)."""
    import torch
    from torch import nn

    class SegNet(nn.Module):
        def __init__(self):
            super().__init__()
            w = list(widths)
            self.widths = tuple(w)
            self.enc = nn.ModuleList([_block(nn, INPUT_CHANNELS, w[0])] +
                                     [_block(nn, w[i - 1], w[i]) for i in range(1, len(w))])
            self.dec = nn.ModuleList([_block(nn, w[i] + w[i + 1], w[i])
                                      for i in range(len(w) - 1)])
            self.head = nn.Conv2d(w[0], 3, 1)

        def forward(self, x):
            skips = []
            for i, enc in enumerate(self.enc):
                if i:
                    x = nn.functional.max_pool2d(x, 2)
                x = enc(x)
                skips.append(x)
            for i in reversed(range(len(self.dec))):
                x = nn.functional.interpolate(x, size=skips[i].shape[-2:], mode='nearest')
                x = self.dec[i](torch.cat([skips[i], x], dim=1))
            return self.head(x)

    return SegNet()


def pad_to_multiple(x, multiple: int = 8):
    """Pad (N, C, H, W) at the bottom/right so H and W divide by `multiple`."""
    from torch.nn import functional as F
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def save_segnet(path, model, extra: dict | None = None) -> None:
    """Weights (stored as float16: half the file size) + widths + format version, atomically."""
    import torch
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
               for k, v in model.state_dict().items()}
    state = {'magic': _MAGIC, 'format_version': FORMAT_VERSION, 'widths': list(model.widths),
             'state_dict': weights,
             'extra': dict(extra or {})}
    tmp = path.with_name(path.name + '.tmp')
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_segnet(path):
    """(model in eval mode, extra) from a segnet checkpoint; CheckpointError names the problem."""
    import torch
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f'segmentation checkpoint {path} does not exist')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:   # truncated / not a torch file
        raise CheckpointError(f'segmentation checkpoint {path} is corrupt or not a torch '
                              f'file: {exc}') from exc
    if not isinstance(state, dict) or state.get('magic') != _MAGIC:
        raise CheckpointError(f'{path} is not a zerograsp_ros segmentation (segnet) checkpoint')
    if state.get('format_version') != FORMAT_VERSION:
        raise CheckpointError(f"segmentation checkpoint {path} has format version "
                              f"{state.get('format_version')}, this code reads {FORMAT_VERSION}")
    try:
        model = build_network(tuple(int(w) for w in state['widths']))
        weights = {k: (v.float() if v.is_floating_point() else v)
                   for k, v in dict(state['state_dict']).items()}
        model.load_state_dict(weights, strict=True)
    except Exception as exc:   # wrong shapes / missing keys / not tensors
        raise CheckpointError(f'segmentation checkpoint {path} does not fit the network: '
                              f'{exc}') from exc
    model.eval()
    return model, dict(state.get('extra', {}))


# ----------------------------------------------------------------------------- clustering

@dataclass
class VotingConfig:
    """Turning foreground + centre votes into instances (reduced-resolution pixels)."""

    foreground_threshold: float = 0.5
    cell: float = 2.0               # vote grid cell size
    min_density: float = 5.0        # votes per cell (3x3 mean) that make a centre blob (val)
    max_assign_cells: float = 6.0   # votes farther than this from every blob: background
    min_pixels: int = 40            # smaller instances are dropped (about 160 full pixels)
    max_objects: int = 32

    @classmethod
    def from_dict(cls, params: dict) -> 'VotingConfig':
        return config_from_dict(cls, params, 'learned segmentation')

    def validate(self) -> None:
        if not 0 < self.foreground_threshold < 1:
            raise InputError('learned segmentation: foreground_threshold must be in (0, 1), '
                             f'got {self.foreground_threshold}')
        if not (self.cell > 0 and self.min_density > 0 and self.max_assign_cells >= 0):
            raise InputError('learned segmentation: cell and min_density must be > 0 and '
                             'max_assign_cells >= 0')
        if self.min_pixels < 1 or self.max_objects < 1:
            raise InputError('learned segmentation: min_pixels and max_objects must be >= 1')


def cluster_votes(foreground: np.ndarray, offsets: np.ndarray, probability: np.ndarray,
                  cfg: VotingConfig) -> tuple[np.ndarray, dict[int, float]]:
    """Instance labels (h, w) int32, ids 1..K by decreasing size, and a score per id.

    foreground: (h, w) bool; offsets: (2, h, w) predicted centre - pixel (x, y) in pixels.
    """
    from scipy import ndimage

    h, w = foreground.shape
    labels = np.zeros((h, w), np.int32)
    rows, cols = np.nonzero(foreground)
    if len(rows) < cfg.min_pixels:
        return labels, {}
    vx = cols + offsets[0, rows, cols]
    vy = rows + offsets[1, rows, cols]
    gw, gh = int(np.ceil(w / cfg.cell)), int(np.ceil(h / cfg.cell))
    gx = np.clip((vx / cfg.cell).astype(np.int64), 0, gw - 1)
    gy = np.clip((vy / cfg.cell).astype(np.int64), 0, gh - 1)
    density = np.bincount(gy * gw + gx, minlength=gh * gw).reshape(gh, gw).astype(np.float32)
    density = ndimage.uniform_filter(density, size=3, mode='constant')
    blobs, count = ndimage.label(density >= cfg.min_density, structure=np.ones((3, 3)))
    if count == 0:
        return labels, {}
    # every cell takes its nearest blob; votes too far from any blob are background
    dist, (iy, ix) = ndimage.distance_transform_edt(blobs == 0, return_indices=True)
    cell_label = blobs[iy, ix]
    cell_label[dist > cfg.max_assign_cells] = 0
    pixel_label = cell_label[gy, gx]
    sizes = np.bincount(pixel_label, minlength=count + 1)
    sizes[0] = 0
    order = [k for k in np.argsort(-sizes, kind='stable') if sizes[k] >= cfg.min_pixels]
    order = order[:cfg.max_objects]
    remap = np.zeros(count + 1, np.int32)
    remap[np.asarray(order, dtype=np.int64)] = np.arange(1, len(order) + 1, dtype=np.int32)
    labels[rows, cols] = remap[pixel_label]
    prob_sum = np.bincount(labels[rows, cols], weights=probability[rows, cols],
                           minlength=len(order) + 1)
    n = np.bincount(labels[rows, cols], minlength=len(order) + 1)
    scores = {i: float(prob_sum[i] / n[i]) for i in range(1, len(order) + 1)}
    return labels, scores


# ----------------------------------------------------------------------------- segmenter

class LearnedSegmenter:
    """Centre-voting RGB-D U-Net (checkpoints/segnet.pt) on the frame reduced to ~320 px wide."""

    kind = 'learned'

    def __init__(self, checkpoint: str = '', config: VotingConfig | dict | None = None,
                 tabletop: TabletopConfig | dict | None = None, torch_threads: int = 0,
                 **params):
        import torch

        if isinstance(config, dict) or config is None:
            config = VotingConfig.from_dict({**(config or {}), **params})
        elif params:
            raise InputError(f'learned segmentation: unexpected parameters {sorted(params)}')
        config.validate()
        self.config = config
        if isinstance(tabletop, dict) or tabletop is None:
            tabletop = TabletopConfig.from_dict(dict(tabletop or {}))
        self.tabletop = tabletop
        path = Path(checkpoint).expanduser() if checkpoint else default_checkpoint()
        try:
            self.model, self.extra = load_segnet(path)
        except CheckpointError as exc:
            raise SegmenterUnavailable(f"segmenter 'learned': {exc} (train one with "
                                       'python -m zerograsp_ros.training.train_segmentation, or '
                                       'use segmenter:=tabletop)') from exc
        self.checkpoint = str(path)
        if torch_threads > 0:
            torch.set_num_threads(int(torch_threads))

    def table_plane(self, frame: RGBDFrame) -> np.ndarray:
        return reduce_frame(frame, self.tabletop).table_plane

    def predict_maps(self, view: ReducedView) -> tuple[np.ndarray, np.ndarray]:
        """Foreground probability (h, w) and centre offsets (2, h, w) in reduced pixels."""
        import torch

        feats = input_features(view.rgb, view.depth, view.height, view.valid)
        h, w = feats.shape[1:]
        with torch.inference_mode():
            out = self.model(pad_to_multiple(torch.from_numpy(feats)[None]))[0, :, :h, :w]
        prob = torch.sigmoid(out[0]).numpy()
        return prob, out[1:].numpy() * OFFSET_UNIT

    def segment(self, frame: RGBDFrame, table_plane: np.ndarray | None = None) -> Segmentation:
        view = reduce_frame(frame, self.tabletop, table_plane)
        prob, offsets = self.predict_maps(view)
        fg = prob > self.config.foreground_threshold
        small, scores = cluster_votes(fg, offsets, prob, self.config)
        s = view.stride
        H, W = frame.depth.shape
        labels = np.repeat(np.repeat(small, s, axis=0), s, axis=1)[:H, :W]
        if labels.shape != (H, W):   # frame size not a multiple of the stride: edge padding
            labels = np.pad(labels, ((0, H - labels.shape[0]), (0, W - labels.shape[1])),
                            mode='edge')
        return Segmentation(labels=np.ascontiguousarray(labels, dtype=np.int32),
                            table_plane=view.table_plane, scores=scores)

    __call__ = segment


def learned_defaults() -> dict:
    return asdict(VotingConfig())
