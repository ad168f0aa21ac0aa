"""Grasp score calibration: raw score -> probability that the grasp succeeds.

The network's raw score (graspness x quality) ranks grasps but is no
probability: on the shipped checkpoint it is about 1e-4 for grasps that
succeed a third of the time. A monotone map fitted on judged outcomes turns it
into one without changing the ranking: isotonic regression
(pool-adjacent-violators) or Platt scaling (logistic on the log score), the
one with the lower expected calibration error in scene-wise cross-validation
on the fitting scenes.

Two maps, because refinement changes what the raw score means:
  * ``network``: for the network's own grasps (graspness x predicted quality);
  * ``refined``: for grasps after the full refinement (graspness x the
    contact quality refinement measured on the reconstruction).
Both read ``graspness x quality`` of a GraspSet, which refinement keeps equal
to the raw score whether or not it re-scores, so a calibrated set can be
calibrated again after refinement.

Fitting (`zerograsp_ros.training.calibrate`) uses validation scenes and the
label judge (`data.labels.judge_grasps`, success = collision-free, non-empty
and force-closure at mu = 0.8); the maps and a default score threshold are
stored in the checkpoint's ``extra['score_calibration']``. A checkpoint without
them still loads and reports raw scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from zerograsp_ros.errors import InputError

CHECKPOINT_KEY = 'score_calibration'
STAGES = ('network', 'refined')


def pool_adjacent_violators(values: np.ndarray, weights: np.ndarray) -> tuple[list, list, list]:
    """Blocks of the non-decreasing least-squares fit: (start indices, means, weights)."""
    starts, means, sums = [], [], []
    for i, (v, w) in enumerate(zip(values, weights)):
        starts.append(i)
        means.append(float(v))
        sums.append(float(w))
        while len(means) > 1 and means[-2] > means[-1]:
            w2 = sums[-2] + sums[-1]
            means[-2] = (means[-2] * sums[-2] + means[-1] * sums[-1]) / w2
            sums[-2] = w2
            del starts[-1], means[-1], sums[-1]
    return starts, means, sums


@dataclass(frozen=True)
class IsotonicMap:
    """Piecewise-linear monotone map through (knots, probabilities); flat outside the knots."""

    knots: np.ndarray          # (K,) increasing raw scores (weighted block means)
    probabilities: np.ndarray  # (K,) non-decreasing, in [0, 1]
    samples: int = 0

    def __post_init__(self):
        x = np.asarray(self.knots, dtype=np.float64).reshape(-1)
        y = np.asarray(self.probabilities, dtype=np.float64).reshape(-1)
        if len(x) == 0 or len(x) != len(y):
            raise InputError(f'calibration map needs as many knots as probabilities (> 0), '
                             f'got {len(x)} and {len(y)}')
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise InputError('calibration map contains NaN/inf')
        if (np.diff(x) <= 0).any() or (np.diff(y) < 0).any():
            raise InputError('calibration map must have increasing knots and non-decreasing '
                             'probabilities')
        if y.min() < 0.0 or y.max() > 1.0:
            raise InputError('calibration probabilities must lie in [0, 1]')
        object.__setattr__(self, 'knots', x)
        object.__setattr__(self, 'probabilities', y)

    def __call__(self, raw) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        out = np.interp(np.nan_to_num(raw, nan=-np.inf), self.knots, self.probabilities)
        return np.clip(out, 0.0, 1.0)

    def to_dict(self) -> dict:
        return {'knots': self.knots.tolist(), 'probabilities': self.probabilities.tolist(),
                'samples': int(self.samples)}

    @classmethod
    def from_dict(cls, d: dict) -> 'IsotonicMap':
        return cls(np.asarray(d['knots']), np.asarray(d['probabilities']),
                   int(d.get('samples', 0)))


@dataclass(frozen=True)
class PlattMap:
    """Logistic map p = sigmoid(slope * log(raw + eps) + intercept), slope >= 0 (monotone)."""

    slope: float
    intercept: float
    eps: float = 1e-6
    samples: int = 0

    def __post_init__(self):
        vals = (self.slope, self.intercept, self.eps)
        if not all(np.isfinite(v) for v in vals) or self.slope < 0 or self.eps <= 0:
            raise InputError(f'Platt map needs finite slope >= 0, intercept and eps > 0, '
                             f'got {vals}')

    def __call__(self, raw) -> np.ndarray:
        raw = np.nan_to_num(np.asarray(raw, dtype=np.float64), nan=0.0)
        z = self.slope * np.log(np.clip(raw, 0.0, None) + self.eps) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        return {'kind': 'platt', 'slope': float(self.slope), 'intercept': float(self.intercept),
                'eps': float(self.eps), 'samples': int(self.samples)}

    @classmethod
    def from_dict(cls, d: dict) -> 'PlattMap':
        return cls(float(d['slope']), float(d['intercept']), float(d.get('eps', 1e-6)),
                   int(d.get('samples', 0)))


def fit_platt(raw_scores, outcomes, eps: float = 1e-6) -> PlattMap:
    """Logistic regression of 0/1 outcomes on log(raw + eps) (Newton steps, slope >= 0)."""
    raw, y = _checked(raw_scores, outcomes)
    x = np.log(np.clip(raw, 0.0, None) + eps)
    w = np.array([0.0, np.log((y.sum() + 0.5) / (len(y) - y.sum() + 0.5))])
    X = np.stack([x, np.ones_like(x)], 1)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - y)
        hess = (X * (p * (1 - p))[:, None]).T @ X + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w = w - step
        if np.abs(step).max() < 1e-10:
            break
    if w[0] < 0:   # a score that ranks backwards gets no slope: the base rate
        w = np.array([0.0, np.log((y.sum() + 0.5) / (len(y) - y.sum() + 0.5))])
    return PlattMap(float(w[0]), float(w[1]), eps, len(raw))


def map_from_dict(d: dict):
    """An IsotonicMap or PlattMap from its to_dict() form."""
    return PlattMap.from_dict(d) if d.get('kind') == 'platt' else IsotonicMap.from_dict(d)


def _checked(raw_scores, outcomes) -> tuple[np.ndarray, np.ndarray]:
    raw = np.asarray(raw_scores, dtype=np.float64).reshape(-1)
    y = np.asarray(outcomes, dtype=np.float64).reshape(-1)
    if len(raw) != len(y) or len(raw) == 0:
        raise InputError(f'calibration needs as many outcomes as scores (> 0), got '
                         f'{len(y)} and {len(raw)}')
    if not np.isfinite(raw).all():
        raise InputError('calibration scores contain NaN/inf')
    if ((y != 0) & (y != 1)).any():
        raise InputError('calibration outcomes must be 0 or 1')
    return raw, y


def fit_isotonic(raw_scores, outcomes, min_block: int = 10) -> IsotonicMap:
    """Isotonic regression of 0/1 outcomes on raw scores.

    Equal raw scores are pooled first (one knot each); blocks with fewer than
    `min_block` samples are merged into a neighbour, which keeps the fit
    monotone and stops a handful of grasps at either end from claiming 0 or 1.
    """
    raw, y = _checked(raw_scores, outcomes)
    xs, inverse, counts = np.unique(raw, return_inverse=True, return_counts=True)
    ys = np.bincount(inverse, weights=y) / counts
    starts, means, weights = pool_adjacent_violators(ys, counts.astype(np.float64))
    bounds = starts + [len(xs)]
    blocks = [[bounds[i], bounds[i + 1], means[i], weights[i]] for i in range(len(means))]
    merged = True
    while merged and len(blocks) > 1:   # merge the smallest under-filled block into a neighbour
        merged = False
        small = [i for i, b in enumerate(blocks) if b[3] < min_block]
        if small:
            i = min(small, key=lambda j: blocks[j][3])
            j = i - 1 if i == len(blocks) - 1 or (
                i > 0 and blocks[i - 1][3] <= blocks[i + 1][3]) else i + 1
            a, b = sorted((i, j))
            w = blocks[a][3] + blocks[b][3]
            m = (blocks[a][2] * blocks[a][3] + blocks[b][2] * blocks[b][3]) / w
            blocks[a:b + 1] = [[blocks[a][0], blocks[b][1], m, w]]
            merged = True
    knots = np.array([np.average(xs[s:e], weights=counts[s:e]) for s, e, _, _ in blocks])
    probs = np.array([m for _, _, m, _ in blocks])
    knots, first = np.unique(knots, return_index=True)   # guards float ties after averaging
    return IsotonicMap(knots, np.maximum.accumulate(probs[first]), len(raw))


@dataclass
class ScoreCalibration:
    """The two stage maps, the default score threshold and where they were fitted."""

    maps: dict[str, IsotonicMap | PlattMap]
    threshold: float = 0.0
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.maps) - set(STAGES))
        if unknown or not self.maps:
            raise InputError(f'calibration stages must be among {STAGES}, got '
                             f'{sorted(self.maps)}')
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise InputError(f'calibration threshold must lie in [0, 1], got {self.threshold}')

    def probability(self, raw, stage: str) -> np.ndarray:
        if stage not in self.maps:
            raise InputError(f"calibration has no '{stage}' map (has {sorted(self.maps)})")
        return self.maps[stage](raw)

    def apply(self, grasps, stage: str):
        """A copy of a GraspSet with scores = P(success | graspness x quality); order kept."""
        out = grasps.subset(slice(None))
        if len(out):
            raw = out.graspness.astype(np.float64) * out.qualities.astype(np.float64)
            out.scores = self.probability(raw, stage).astype(np.float32)
        return out

    def to_dict(self) -> dict:
        return {'maps': {k: m.to_dict() for k, m in self.maps.items()},
                'threshold': float(self.threshold), 'info': dict(self.info)}

    @classmethod
    def from_dict(cls, d: dict) -> 'ScoreCalibration':
        try:
            return cls({k: map_from_dict(m) for k, m in d['maps'].items()},
                       float(d.get('threshold', 0.0)), dict(d.get('info', {})))
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f'unusable score calibration: {exc}') from exc


def expected_calibration_error(probabilities, outcomes, bins: int = 10) -> dict:
    """ECE over `bins` equal-width probability bins, with the bins (count, mean p, rate)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64).reshape(-1), 0.0, 1.0)
    y = np.asarray(outcomes, dtype=np.float64).reshape(-1)
    if len(p) != len(y) or len(p) == 0:
        raise InputError('ECE needs as many outcomes as probabilities (> 0)')
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        row = {'lo': float(edges[b]), 'hi': float(edges[b + 1]), 'count': n,
               'mean_probability': float(p[sel].mean()) if n else None,
               'success_rate': float(y[sel].mean()) if n else None}
        if n:
            ece += n / len(p) * abs(row['mean_probability'] - row['success_rate'])
        rows.append(row)
    return {'ece': float(ece), 'bins': rows, 'samples': int(len(p)),
            'success_rate': float(y.mean())}
