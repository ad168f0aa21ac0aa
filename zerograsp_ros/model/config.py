"""Model configuration: every size of the ZeroGrasp network, with two presets.

`preset('paper')` follows the published scale (facts in the reference note
`zerograsp-model.md`): one 1.28 m scene cube, octree depths 4..9 (2.5 mm
leaves), channels by depth 512,512,256,256,192,192,96,96,48,48, latent depth 4
with D' = 192, 3 transformer blocks of 3 heads x 64, occlusion fields B = 8 with
64 channels, CVAE MLP 4 x 512, latent_dim 16, loss weights of the supplement.

`preset('cpu')` keeps the same structure at a size that trains on 2 CPU cores,
chosen by measurement (5-object 640x480 box scene, untrained forward +
backward, torch CPU with 1 intra-op thread on the shared 2-core machine at load
average 6-11): leaves at depth 7 (10 mm) took 1.5 s with bottleneck 2; depth 8
(5 mm) with channels 64 down to 16 took 0.9-1.0 s with the ocnn bottleneck of 4
(1.7 s with bottleneck 2), so the preset is: depth 8 (5 mm leaves), latent depth 4
(80 mm, 64 channels), channels by depth 64,64,64,64,64,48,32,24,16, one residual
block per depth, bottleneck 4, image features 16, CVAE MLP 2 x 128, 2 transformer
blocks of 2 heads x 24, occlusion fields B = 4 with 16 channels; 0.31 M
parameters. With 2 OpenMP threads the same step ran 2.5-12 s while other jobs held
the cores: set torch.set_num_threads(1) on a shared machine. Decoding only the region around
the input (children of its occupied 160 mm cells, dilated by one cell) instead of
the full 16^3 latent grid cut the CPU time of a training step on the data set's
scenes (5-8 objects) from 0.7-1.1 s to 0.45-0.65 s; the cpu preset uses it, the
paper preset keeps the full grid. benchmarks/model_latency.py (process CPU time,
one thread, about the wall time on an idle core): training step 0.47 s (5
objects); inference 0.06 s (1 object), 0.21 s (5), 0.39 s (10) with a trained-size
octree; the paper preset 1.5 s for 5 objects.

Ablation switches (all presets): use_cvae, use_multi_object_encoder,
use_occlusion_fields.

Grasp heads (`grasp_head`, all presets): 'direct' regresses one approach and
one closing axis per leaf (the released code; the shipped checkpoint);
'paper' classifies per leaf the approach view (60 camera-frame views), the
in-plane angle, depth and width bins, with graspness and quality (the paper's
parameterisation; grasp_bins.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from zerograsp_ros.errors import InputError
from zerograsp_ros.grasp.representation import GRASPNET_DEPTHS

GRASP_HEADS = ('direct', 'paper')
MAX_GRASP_MODES = 8   # grasp modes stored per dense label point (data/dataset.py)


@dataclass(frozen=True)
class ModelConfig:
    """All sizes and switches of ZeroGraspNet; stored inside every checkpoint."""

    name: str = 'paper'
    # --- scene cube and octree (reference: 1280 mm cube, z_min rounded to 80 mm - 400 mm)
    scene_cube_m: float = 1.28
    z_round_m: float = 0.08
    z_margin_m: float = 0.40
    coord_clip: float = 0.99
    depth: int = 9                  # finest octree depth (leaf = cube / 2**depth)
    latent_depth: int = 4           # coarsest level kept; transformer tokens live here
    input_full_depth: int = 3
    min_depth_m: float = 0.10       # depth outside [min, max] is invalid
    max_depth_m: float = 2.50
    min_object_points: int = 30     # fewer valid points -> object skipped with a warning
    max_object_extent_m: float = 0.30   # bounds the decoded octree size (see split_cap)
    # decoding region at the latent depth: the full grid (paper), or only the children of
    # the input's occupied cells one level up, dilated by `decode_dilation` cells (cpu)
    decode_full_latent_grid: bool = True
    decode_dilation: int = 1
    # --- channels by octree depth 0..depth (only latent_depth..depth are used)
    channels: tuple[int, ...] = (512, 512, 256, 256, 192, 192, 96, 96, 48, 48)
    resblocks_per_depth: int = 2
    bottleneck: int = 4
    head_hidden: int = 64
    signal_head_hidden: int = 0      # finest-depth (surface + grasp) head; 0 = head_hidden
    # --- image encoder (trained from scratch; see image_encoder.py for the seam)
    image_encoder: str = 'small_cnn'
    image_feature_channels: int = 32
    image_encoder_width: int = 32
    # --- CVAE
    use_cvae: bool = True
    latent_dim: int = 16
    cvae_hidden: int = 512
    cvae_layers: int = 4
    posterior_channels: int = 32    # width of the GT-octree encoder feeding the posterior
    # --- multi-object encoder
    use_multi_object_encoder: bool = True
    transformer_blocks: int = 3
    transformer_heads: int = 3
    transformer_head_dim: int = 64
    transformer_ff_mult: int = 4
    transformer_dropout: float = 0.1
    rope_freq_min: float = 1.0      # rotary frequencies (x pi) over positions in [-1, 1]
    rope_freq_max: float = 16.0
    # --- 3D occlusion fields
    use_occlusion_fields: bool = True
    occlusion_blocks: int = 8       # B: sub-blocks per axis of a latent voxel
    occlusion_channels: int = 64
    neighbour_dilation_px: int = 5
    # --- grasp parameterisation. 'direct': approach 3, closing 3, width 1, depth 1,
    #     graspness 1, quality 1. 'paper': graspness 1, quality 1, then logits over approach
    #     views (camera frame), in-plane angles, depth bins and width bins
    grasp_head: str = 'direct'
    max_grasp_width_m: float = 0.10
    max_grasp_depth_m: float = 0.04
    grasp_label_radius_m: float = 0.005
    grasp_views: int = 60              # paper head: fibonacci_views(grasp_views), ~26 deg apart
    grasp_angle_bins: int = 12         # paper head: in-plane angles k * pi / bins (GraspNet)
    grasp_width_bins: int = 10         # paper head: equal bins over [0, max_grasp_width_m]
    grasp_views_per_leaf: int = 2      # paper head: decoded views per leaf (best reachable)
    # direct head: with grasp_modes > 0 the axes, width, depth and quality regress towards
    # whichever of a leaf's best grasps in its `grasp_modes` most graspable views lies
    # nearest the prediction (a leaf has several valid grasps; regressing one chosen by
    # label order averages them into none); 0 = always the single best grasp
    grasp_modes: int = 0
    decode_approach_cone_deg: float = 75.0   # both heads: decoded approach within this of
    #                                          straight down onto the table
    # --- losses (paper supplement weights)
    w_occupancy: float = 1.0
    w_normal: float = 1.0
    w_sdf: float = 1.0
    w_graspness: float = 5.0
    w_quality: float = 5.0
    w_approach: float = 1.0         # direct: approach 1 - cos; paper: view cross-entropy
    w_closing: float = 1.0          # direct: closing 1 - |cos|; paper: angle cross-entropy
    w_width: float = 2.5
    w_depth: float = 2.5
    w_kl: float = 0.5
    kl_cycle_steps: int = 2000      # cyclic KL annealing: ramps 0 -> w_kl in the first half
    kl_ramp_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self):
        problems = []
        if not 1 <= self.input_full_depth <= self.latent_depth < self.depth:
            problems.append(f'need 1 <= input_full_depth ({self.input_full_depth}) <= '
                            f'latent_depth ({self.latent_depth}) < depth ({self.depth})')
        if len(self.channels) != self.depth + 1:
            problems.append(f'channels needs depth + 1 = {self.depth + 1} entries, '
                            f'got {len(self.channels)}')
        b = self.occlusion_blocks
        if b < 2 or b & (b - 1):
            problems.append(f'occlusion_blocks must be a power of two >= 2, got {b}')
        if self.transformer_head_dim < 6:
            problems.append('transformer_head_dim must be >= 6 (one rotary pair per axis), '
                            f'got {self.transformer_head_dim}')
        if self.grasp_head not in GRASP_HEADS:
            problems.append(f"grasp_head must be one of {GRASP_HEADS}, got '{self.grasp_head}'")
        if self.grasp_head == 'paper':
            for name in ('grasp_views', 'grasp_angle_bins', 'grasp_width_bins',
                         'grasp_views_per_leaf'):
                if int(getattr(self, name)) < 1:
                    problems.append(f'{name} must be >= 1, got {getattr(self, name)}')
            if not 0.0 < self.decode_approach_cone_deg <= 180.0:
                problems.append('decode_approach_cone_deg must lie in (0, 180], got '
                                f'{self.decode_approach_cone_deg}')
        if not 0 <= self.grasp_modes <= MAX_GRASP_MODES:
            problems.append(f'grasp_modes must lie in 0..{MAX_GRASP_MODES}, got '
                            f'{self.grasp_modes}')
        if self.signal_head_hidden < 0:
            problems.append(f'signal_head_hidden must be >= 0, got {self.signal_head_hidden}')
        if problems:
            raise InputError('invalid ModelConfig: ' + '; '.join(problems))

    @property
    def latent_channels(self) -> int:
        return self.channels[self.latent_depth]

    @property
    def voxel_size_m(self) -> float:
        """Edge of a finest-depth leaf in metres."""
        return self.scene_cube_m / 2 ** self.depth

    @property
    def signal_channels(self) -> int:
        if self.grasp_head == 'paper':
            # normal 3, sdf 1, graspness 1, quality 1, views, angles, depths, widths
            return (6 + self.grasp_views + self.grasp_angle_bins + len(GRASPNET_DEPTHS)
                    + self.grasp_width_bins)
        # normal 3, sdf 1, graspness 1, quality 1, approach 3, closing 3, width 1, depth 1
        return 14

    def to_dict(self) -> dict:
        d = asdict(self)
        d['channels'] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> 'ModelConfig':
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f'unknown ModelConfig fields: {unknown}')
        d = dict(d)
        if 'channels' in d:
            d['channels'] = tuple(int(c) for c in d['channels'])
        return cls(**d)

    def differences(self, other: 'ModelConfig') -> list[str]:
        """Human-readable 'field: mine != theirs' lines."""
        a, b = self.to_dict(), other.to_dict()
        return [f'{k}: {a[k]!r} != {b[k]!r}' for k in a if a[k] != b[k]]

    def replace(self, **changes) -> 'ModelConfig':
        return replace(self, **changes)


def preset(name: str, grasp_head: str = 'direct') -> ModelConfig:
    """'paper' (published scale) or 'cpu' (same structure, trains on 2 CPU cores).

    `grasp_head` picks the grasp parameterisation ('direct' or 'paper') on either.
    """
    if name == 'paper':
        return ModelConfig(name='paper', grasp_head=grasp_head)
    if name == 'cpu':
        return ModelConfig(grasp_head=grasp_head,
            name='cpu', depth=8, latent_depth=4, input_full_depth=3,
            channels=(64, 64, 64, 64, 64, 48, 32, 24, 16),
            resblocks_per_depth=1, bottleneck=4, head_hidden=32,
            image_feature_channels=16, image_encoder_width=16,
            latent_dim=16, cvae_hidden=128, cvae_layers=2, posterior_channels=16,
            transformer_blocks=2, transformer_heads=2, transformer_head_dim=24,
            transformer_ff_mult=2, occlusion_blocks=4, occlusion_channels=16,
            decode_full_latent_grid=False, decode_dilation=1)
    raise InputError(f"unknown model preset '{name}': expected 'paper' or 'cpu'")
