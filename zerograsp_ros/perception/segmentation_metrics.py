"""Instance segmentation quality against ground-truth labels (unseen-object benchmark style).

Per frame, over the ground-truth objects with at least `min_visible_pixels` labelled
pixels (visible objects) and every predicted segment:

* object_recall_iou50: share of visible objects matched by a segment at IoU above 0.5
  (strictly above, so a match is unique on both sides: a segment merging two equal
  objects matches neither);
* precision: share of segments that match some ground-truth object so;
* under-segmentation: segments that cover two or more objects, where a segment
  covers an object when it holds at least half of that object's pixels;
* over-segmentation: visible objects split two or more ways, i.e. with at least two
  segments each holding at least `split_fraction` of the object's pixels.

Counts add up over frames (`SegmentationCounts.add`), so a scene set's rates weigh
every object (or segment) equally.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from zerograsp_ros.errors import InputError

MIN_VISIBLE_PIXELS = 50       # as the grasp data set's definition of a visible object
COVER_FRACTION = 0.5
SPLIT_FRACTION = 0.2


@dataclass
class SegmentationCounts:
    frames: int = 0
    objects: int = 0              # visible ground-truth objects
    matched_objects: int = 0      # ... matched at IoU > 0.5
    segments: int = 0
    matched_segments: int = 0
    under_segmented: int = 0      # segments covering >= 2 objects
    over_segmented: int = 0       # objects split >= 2 ways

    def add(self, other: 'SegmentationCounts') -> 'SegmentationCounts':
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)
        return self

    def summary(self) -> dict:
        """Counts plus rates (None where the denominator is 0)."""
        def rate(a, b):
            return None if b == 0 else round(a / b, 4)
        return {**asdict(self),
                'object_recall_iou50': rate(self.matched_objects, self.objects),
                'precision': rate(self.matched_segments, self.segments),
                'under_segmentation_rate': rate(self.under_segmented, self.segments),
                'over_segmentation_rate': rate(self.over_segmented, self.objects)}


def overlap_matrix(gt: np.ndarray, pred: np.ndarray):
    """(gt ids, pred ids, pixel counts (G, P) of each pair, gt sizes, pred sizes); 0 excluded."""
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape:
        raise InputError(f'label images differ in size: ground truth {gt.shape}, '
                         f'prediction {pred.shape}')
    if (gt < 0).any() or (pred < 0).any():
        raise InputError('label images must not hold negative ids')
    g_ids, g_inv = np.unique(gt.reshape(-1), return_inverse=True)
    p_ids, p_inv = np.unique(pred.reshape(-1), return_inverse=True)
    joint = np.bincount(g_inv.reshape(-1) * len(p_ids) + p_inv.reshape(-1),
                        minlength=len(g_ids) * len(p_ids)).reshape(len(g_ids), len(p_ids))
    g_keep, p_keep = g_ids > 0, p_ids > 0
    return (g_ids[g_keep], p_ids[p_keep], joint[np.ix_(g_keep, p_keep)],
            joint[g_keep].sum(1), joint[:, p_keep].sum(0))


def frame_counts(gt: np.ndarray, pred: np.ndarray,
                 min_visible_pixels: int = MIN_VISIBLE_PIXELS) -> SegmentationCounts:
    """Counts for one frame: gt/pred (H, W) integer labels, 0 = background."""
    g_ids, p_ids, inter, g_size, p_size = overlap_matrix(gt, pred)
    visible = g_size >= min_visible_pixels
    union = g_size[:, None] + p_size[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    match = iou > 0.5
    share_of_object = inter / np.maximum(g_size[:, None], 1)       # (G, P)
    covers = (share_of_object >= COVER_FRACTION) & visible[:, None]
    pieces = ((share_of_object >= SPLIT_FRACTION) & visible[:, None]).sum(1)
    return SegmentationCounts(
        frames=1, objects=int(visible.sum()),
        matched_objects=int((match.any(1) & visible).sum()),
        segments=len(p_ids), matched_segments=int(match.any(0).sum()),
        under_segmented=int((covers.sum(0) >= 2).sum()),
        over_segmented=int((pieces >= 2).sum()))
