"""Instance segmentation of objects standing on a table, from one RGB-D frame.

Segmenters, by name (`make_segmenter`; DEFAULT_SEGMENTER is the nodes' default):
* 'learned': a small RGB-D U-Net with centre voting, trained on our synthetic
  scenes (perception/learned_segmentation.py, checkpoints/segnet.pt); it separates
  touching objects in piles;
* 'tabletop': geometric (Open3D RANSAC support plane, then DBSCAN clustering of
  what stands on it); objects that touch come out as one segment;
* 'sam2': SAM 2 with a local checkpoint.
A learned segmenter whose package or weights are missing or corrupt raises
SegmenterUnavailable with a clear message; `make_segmenter(..., fallback='tabletop')`
then logs it and returns the geometric segmenter instead.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from zerograsp_ros.errors import CheckpointError, InputError
from zerograsp_ros.geometry.camera import unproject
from zerograsp_ros.geometry.rgbd import RGBDFrame, validate_frame
from zerograsp_ros.runtime import resolve_device


class SegmenterUnavailable(CheckpointError):
    """A learned segmenter's package or weights are missing."""


def config_from_dict(cls, params: dict, what: str):
    """A segmenter config dataclass from node parameters: unknown names refused, values checked."""
    names = {f.name for f in fields(cls)}
    unknown = set(params) - names
    if unknown:
        raise InputError(f'unknown {what} parameter(s) {sorted(unknown)}; known: {sorted(names)}')
    cfg = cls(**params)
    cfg.validate()
    return cfg


@dataclass
class TabletopConfig:
    """Parameters of the geometric tabletop segmentation (metres)."""

    min_depth: float = 0.10            # ignore depth nearer than this
    max_depth: float = 1.50            # and farther than this (background)
    plane_voxel: float = 0.006         # downsampling for the RANSAC plane fit
    plane_distance: float = 0.008      # RANSAC inlier distance to the plane
    plane_iterations: int = 400
    min_plane_fraction: float = 0.10   # the table must hold this share of the points
    min_height: float = 0.007          # object points lie at least this high above the table
    max_height: float = 0.40           # ... and at most this high
    cluster_voxel: float = 0.004       # voxel size of the clustering grid
    cluster_eps: float = 0.012         # DBSCAN neighbourhood on that grid
    min_cluster_pixels: int = 150      # smaller clusters are noise
    max_objects: int = 32
    workspace_min: list = field(default_factory=lambda: [-1e3, -1e3, -1e3])  # camera frame
    workspace_max: list = field(default_factory=lambda: [1e3, 1e3, 1e3])
    seed: int = 0

    @classmethod
    def from_dict(cls, params: dict) -> 'TabletopConfig':
        return config_from_dict(cls, params, 'tabletop segmentation')

    def validate(self) -> None:
        positive = ('max_depth', 'plane_voxel', 'plane_distance', 'cluster_voxel',
                    'cluster_eps', 'max_height')
        for name in positive:
            if not getattr(self, name) > 0:
                raise InputError(f'tabletop segmentation: {name} must be > 0, '
                                 f'got {getattr(self, name)}')
        if not 0 <= self.min_depth < self.max_depth:
            raise InputError(f'tabletop segmentation: need 0 <= min_depth < max_depth, got '
                             f'{self.min_depth}, {self.max_depth}')
        if not 0 <= self.min_height < self.max_height:
            raise InputError(f'tabletop segmentation: need 0 <= min_height < max_height, got '
                             f'{self.min_height}, {self.max_height}')
        if self.min_cluster_pixels < 1 or self.max_objects < 1 or self.plane_iterations < 1:
            raise InputError('tabletop segmentation: min_cluster_pixels, max_objects and '
                             'plane_iterations must be >= 1')
        if len(self.workspace_min) != 3 or len(self.workspace_max) != 3:
            raise InputError('tabletop segmentation: workspace_min/max need 3 values (x, y, z)')


@dataclass
class Segmentation:
    """A label image with the table plane it was segmented against.

    labels: (H, W) int32, 0 = background; table_plane: (a, b, c, d), unit normal
    pointing towards the camera (a x + b y + c z + d > 0 above the table); scores per id.
    """

    labels: np.ndarray
    table_plane: np.ndarray | None
    scores: dict[int, float]

    @property
    def object_ids(self) -> list[int]:
        return [int(i) for i in np.unique(self.labels) if i > 0]


def _frame_points(frame: RGBDFrame, cfg: TabletopConfig):
    validate_frame(frame)
    depth = np.asarray(frame.depth, dtype=np.float32)
    in_range = frame.valid_depth() & (depth >= cfg.min_depth) & (depth <= cfg.max_depth)
    if not in_range.any():
        raise InputError(f'no depth pixel between {cfg.min_depth} and {cfg.max_depth} m '
                         '(camera too close/far from the table, or depth limits wrong)')
    return unproject(depth, frame.intrinsics, mask=in_range, return_pixels=True)


def fit_plane(points: np.ndarray, cfg: TabletopConfig | None = None) -> np.ndarray:
    """Dominant plane of camera-frame points (a, b, c, d), normal towards the camera origin.

    Open3D RANSAC on a voxel-downsampled cloud, refined by least squares on its inliers.
    """
    import open3d as o3d

    cfg = cfg or TabletopConfig()
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(pts) < 3:
        raise InputError(f'cannot fit a table plane to {len(pts)} points')
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    down = pcd.voxel_down_sample(cfg.plane_voxel)
    if len(down.points) < 3:
        raise InputError('too few distinct depth points to fit a table plane')
    o3d.utility.random.seed(int(cfg.seed))
    plane, inliers = down.segment_plane(distance_threshold=cfg.plane_distance, ransac_n=3,
                                        num_iterations=int(cfg.plane_iterations))
    if len(inliers) < cfg.min_plane_fraction * len(down.points) or len(inliers) < 3:
        raise InputError(f'no table plane found: the best plane holds {len(inliers)} of '
                         f'{len(down.points)} points (need {100 * cfg.min_plane_fraction:.0f} %);'
                         ' is the table in view and within the depth limits?')
    inlier_pts = np.asarray(down.points)[inliers]
    centroid = inlier_pts.mean(0)
    normal = np.linalg.svd(inlier_pts - centroid, full_matrices=False)[2][-1]
    if normal @ np.asarray(plane[:3]) < 0:
        normal = -normal
    d = -normal @ centroid
    if d < 0:  # orient the normal towards the camera at the origin
        normal, d = -normal, -d
    return np.array([*normal, d], dtype=np.float64)


def _cluster(points: np.ndarray, cfg: TabletopConfig) -> np.ndarray:
    """DBSCAN cluster index per point (-1 = noise), run on a voxel grid for speed."""
    import open3d as o3d

    cells = np.floor(points / cfg.cluster_voxel).astype(np.int64)
    cells -= cells.min(0)
    span = cells.max(0) + 1
    keys = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]  # 1-D: fast unique
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    centres = np.zeros((len(counts), 3))
    np.add.at(centres, inverse, points)
    centres /= counts[:, None]
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(centres))
    voxel_labels = np.asarray(pcd.cluster_dbscan(eps=cfg.cluster_eps, min_points=3))
    return voxel_labels[inverse]


def segment_tabletop(frame: RGBDFrame, config: TabletopConfig | dict | None = None,
                     table_plane: np.ndarray | None = None):
    """Label objects standing on the table.

    Returns (labels (H, W) int32 with ids 1..K by decreasing size, 0 = background;
    table_plane (a, b, c, d), unit normal towards the camera). No object on the
    table gives all-zero labels (the caller decides whether that is an error).
    """
    seg = TabletopSegmenter(config).segment(frame, table_plane=table_plane)
    return seg.labels, seg.table_plane


class TabletopSegmenter:
    """Geometric tabletop segmentation (the default segmenter)."""

    kind = 'tabletop'

    def __init__(self, config: TabletopConfig | dict | None = None, **params):
        if isinstance(config, dict):
            config = TabletopConfig.from_dict({**config, **params})
        elif config is None:
            config = TabletopConfig.from_dict(params)
        config.validate()
        self.config = config

    def table_plane(self, frame: RGBDFrame) -> np.ndarray:
        pts, _ = _frame_points(frame, self.config)
        return fit_plane(pts, self.config)

    def segment(self, frame: RGBDFrame, table_plane: np.ndarray | None = None) -> Segmentation:
        cfg = self.config
        pts, pix = _frame_points(frame, cfg)
        plane = fit_plane(pts, cfg) if table_plane is None else np.asarray(table_plane, float)
        height = pts @ plane[:3] + plane[3]
        lo, hi = np.asarray(cfg.workspace_min, float), np.asarray(cfg.workspace_max, float)
        above = (height > cfg.min_height) & (height < cfg.max_height) \
            & np.all((pts >= lo) & (pts <= hi), axis=1)
        labels = np.zeros(frame.depth.shape, dtype=np.int32)
        scores: dict[int, float] = {}
        if above.sum() >= cfg.min_cluster_pixels:
            cluster = _cluster(pts[above].astype(np.float64), cfg)
            obj_pix = pix[above]
            ids, sizes = np.unique(cluster[cluster >= 0], return_counts=True)
            order = np.argsort(-sizes, kind='stable')
            next_id = 1
            for k in order:
                if sizes[k] < cfg.min_cluster_pixels or next_id > cfg.max_objects:
                    break
                sel = obj_pix[cluster == ids[k]]
                labels[sel[:, 0], sel[:, 1]] = next_id
                scores[next_id] = 1.0  # geometric clusters carry no confidence of their own
                next_id += 1
        return Segmentation(labels=labels, table_plane=plane, scores=scores)

    __call__ = segment


class Sam2Segmenter:
    """Learned seam: SAM 2 automatic masks (local checkpoint) of things standing on the table.

    Needs the `sam2` package and its weights on disk (no download at run time).
    """

    kind = 'sam2'

    def __init__(self, checkpoint: str = '',
                 model_config: str = 'configs/sam2.1/sam2.1_hiera_s.yaml',
                 device: str = 'auto', min_area_pixels: int = 150, max_area_fraction: float = 0.25,
                 tabletop: TabletopConfig | dict | None = None):
        try:
            from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
            from sam2.build_sam import build_sam2
        except ImportError as exc:
            raise SegmenterUnavailable(
                "segmenter 'sam2' needs the 'sam2' package, which is not installed "
                f"({exc}); install SAM 2 (github.com/facebookresearch/sam2) or use "
                "segmenter:=tabletop") from exc
        path = Path(checkpoint).expanduser() if checkpoint else None
        if path is None or not path.is_file():
            raise SegmenterUnavailable(
                f"segmenter 'sam2' needs local weights: checkpoint '{checkpoint}' does not exist "
                '(set the sam2_checkpoint parameter to a downloaded sam2.1_*.pt file)')
        device = str(resolve_device(device))
        try:
            model = build_sam2(model_config, str(path), device=device)
        except Exception as exc:  # wrong config / corrupt weights: name both
            raise SegmenterUnavailable(f"cannot load SAM 2 from '{path}' with config "
                                       f"'{model_config}': {exc}") from exc
        self.generator = SAM2AutomaticMaskGenerator(model)
        self.min_area_pixels = int(min_area_pixels)
        self.max_area_fraction = float(max_area_fraction)
        self.tabletop = TabletopSegmenter(tabletop)

    def segment(self, frame: RGBDFrame, table_plane: np.ndarray | None = None) -> Segmentation:
        plane = self.tabletop.table_plane(frame) if table_plane is None else table_plane
        cfg = self.tabletop.config
        masks = sorted(self.generator.generate(np.ascontiguousarray(frame.rgb)),
                       key=lambda m: -float(m.get('predicted_iou', 0.0)))
        labels = np.zeros(frame.depth.shape, dtype=np.int32)
        scores: dict[int, float] = {}
        max_area = self.max_area_fraction * labels.size
        for m in masks:
            mask = np.asarray(m['segmentation'], dtype=bool) & (labels == 0)
            if not self.min_area_pixels <= mask.sum() <= max_area:
                continue
            pts = unproject(frame.depth, frame.intrinsics, mask=mask)
            if len(pts) < self.min_area_pixels:
                continue
            height = np.median(pts @ plane[:3] + plane[3])
            if not cfg.min_height < height < cfg.max_height:  # the table itself or background
                continue
            new_id = len(scores) + 1
            labels[mask] = new_id
            scores[new_id] = float(m.get('predicted_iou', 1.0))
            if new_id >= cfg.max_objects:
                break
        return Segmentation(labels=labels, table_plane=np.asarray(plane), scores=scores)

    __call__ = segment


def _learned_segmenter(**params):
    from zerograsp_ros.perception.learned_segmentation import LearnedSegmenter
    return LearnedSegmenter(**params)


SEGMENTERS = {'learned': _learned_segmenter, 'tabletop': TabletopSegmenter,
              'sam2': Sam2Segmenter}
DEFAULT_SEGMENTER = 'learned'     # val recall 0.95 vs tabletop 0.64 (segmentation_eval)
FALLBACK_SEGMENTER = 'tabletop'


def make_segmenter(kind: str = DEFAULT_SEGMENTER, fallback: str | None = None,
                   log=None, **params):
    """A segmenter by name ('learned', 'tabletop' or 'sam2'); see the module docstring.

    fallback: a segmenter name to use when `kind` is unavailable (its weights or package
    missing or corrupt); the reason goes to `log` (a callable taking a message, e.g. a
    ROS logger's warn). The fallback gets only the 'tabletop' parameters.
    """
    if kind not in SEGMENTERS:
        raise InputError(f"unknown segmenter '{kind}' (available: {', '.join(SEGMENTERS)})")
    if fallback is not None and fallback not in SEGMENTERS:
        raise InputError(f"unknown fallback segmenter '{fallback}' (available: "
                         f"{', '.join(SEGMENTERS)})")
    try:
        return SEGMENTERS[kind](**params)
    except SegmenterUnavailable as exc:
        if fallback is None or fallback == kind:
            raise
        if log is not None:
            log(f"{exc}; falling back to segmenter '{fallback}'")
        tabletop = params.get('tabletop') if kind != 'tabletop' else params.get('config')
        if fallback == 'tabletop':
            return TabletopSegmenter(tabletop)
        return SEGMENTERS[fallback](tabletop=tabletop)


def tabletop_defaults() -> dict:
    return asdict(TabletopConfig())
