"""Bounded work per service request: size limits, a deadline and a bounded queue.

Every check runs on the message before the expensive work and refuses with an
InputError naming the limit and the parameter that sets it, so one hostile request
(a 4K image, a label image with thousands of ids, a million grasps) is answered in
milliseconds instead of taking the node's memory or its service for minutes.

Concurrency (documented in the README): requests are QUEUED, not run in parallel.
The checks above run concurrently in every request's own thread; the model then
runs one request at a time. At most `max_queued_requests` wait for it, each at most
`max_queue_wait` seconds (and never past its own deadline); beyond that a request
is refused at once with 'busy'. The deadline is checked between stages (a stage
already running on the network is not interrupted), and the /refine_grasps call
only gets the time that is left.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, fields
import re
import threading
import time

import numpy as np

from zerograsp_ros.errors import InputError
from zerograsp_ros.nodes.common import Param, group


@dataclass(frozen=True)
class RequestLimits:
    max_image_pixels: int = 1920 * 1200     # per image (a D435 colour stream: 1920x1080)
    max_objects: int = 32                   # object ids in a request's label image
    min_object_pixels: int = 30             # pixels per object (the model skips < 30 points)
    max_request_grasps: int = 20000         # grasps in a /refine_grasps request
    max_reconstruction_points: int = 2_000_000  # surface points in a /refine_grasps request
    max_object_extent: float = 0.4          # [m] 1st-99th percentile span of an object's points
    deadline: float = 60.0                  # [s] per request, queueing included
    max_queued_requests: int = 8            # requests waiting for the model
    max_queue_wait: float = 30.0            # [s] the longest one waits

    def validate(self) -> None:
        for name in ('max_image_pixels', 'max_objects', 'min_object_pixels',
                     'max_request_grasps', 'max_reconstruction_points'):
            if getattr(self, name) < 1:
                raise InputError(f'request limit {name} must be >= 1')
        if not (self.deadline > 0 and self.max_queue_wait >= 0 and self.max_queued_requests >= 0):
            raise InputError('request limits: deadline > 0, max_queue_wait >= 0 and '
                             'max_queued_requests >= 0 are required')


def limit_params(names: tuple[str, ...] | None = None) -> tuple[Param, ...]:
    """Parameters `limits.<name>` for the limits (all, or `names`) a node enforces."""
    return tuple(Param(f'limits.{f.name}', getattr(RequestLimits, f.name),
                       f'bound on one service request: {f.name}')
                 for f in fields(RequestLimits) if names is None or f.name in names)


def limits_from_parameters(values: dict) -> RequestLimits:
    limits = RequestLimits(**group(values, 'limits'))
    limits.validate()
    return limits


# --------------------------------------------------------------------------- sizes

def check_image_size(image, what: str, limits: RequestLimits) -> None:
    """Refuse an image message larger than max_image_pixels, before decoding it."""
    pixels = int(image.width) * int(image.height)
    if pixels > limits.max_image_pixels:
        raise InputError(f'{what} is {image.width}x{image.height} = {pixels} pixels, more than '
                         f'limits.max_image_pixels = {limits.max_image_pixels}')


def check_frame_size(frame_msg, limits: RequestLimits) -> None:
    check_image_size(frame_msg.color, 'colour image', limits)
    check_image_size(frame_msg.depth, 'depth image', limits)


def check_mask_scores(masks_msg) -> None:
    """InstanceMasks.scores: one finite score in [0, 1] per listed id, or none at all."""
    scores = np.asarray(masks_msg.scores, dtype=np.float64)
    n_ids = len(masks_msg.object_ids)
    if len(scores) and len(scores) != n_ids:
        raise InputError(f'instance masks carry {len(scores)} scores for {n_ids} object ids '
                         '(one score per id, or none)')
    if len(scores) and not (np.isfinite(scores).all() and (scores >= 0).all()
                            and (scores <= 1).all()):
        raise InputError('instance mask scores must be finite and within [0, 1], got '
                         f'{[float(s) for s in scores[:8]]}')


def _object_ids(labels: np.ndarray, limits: RequestLimits):
    """(ids, pixel counts) of a label image, refused above max_objects ids."""
    flat = labels.reshape(-1)
    ids, counts = np.unique(flat[flat > 0], return_counts=True)
    if len(ids) > limits.max_objects:
        raise InputError(f'the label image holds {len(ids)} object ids, more than '
                         f'limits.max_objects = {limits.max_objects}')
    return ids, counts


def check_object_count(labels: np.ndarray, limits: RequestLimits) -> None:
    """At most max_objects ids: the cheap bound checked before a request queues.

    Pixel counts wait for the frame to be decoded, so that a request with a bad frame
    is answered with the frame's cause first.
    """
    _object_ids(labels, limits)


def check_label_counts(labels: np.ndarray, limits: RequestLimits) -> None:
    """At most max_objects ids, each with at least min_object_pixels pixels."""
    ids, counts = _object_ids(labels, limits)
    if len(ids) == 0:
        return  # 'no objects' is reported by the pipeline with its own message
    small = ids[counts < limits.min_object_pixels]
    if len(small):
        raise InputError(f'object id(s) {[int(i) for i in small[:8]]} have fewer than '
                         f'limits.min_object_pixels = {limits.min_object_pixels} pixels '
                         f'(smallest: {int(counts.min())})')


def check_object_extent(depth: np.ndarray, intrinsics, labels: np.ndarray,
                        limits: RequestLimits) -> None:
    """Each object's valid depth points span at most max_object_extent on every axis.

    Found by the fuzzer: 32 ids scattered over every pixel passed the count limits, but
    each 'object' then spanned the whole scene, and the network worked on 32 scene-sized
    octrees for minutes (5.5 GB). A graspable object is far smaller than 0.4 m; the
    span is taken between the 1st and 99th percentiles, so stray mask pixels do not count.
    """
    from zerograsp_ros.geometry.camera import unproject

    valid = np.isfinite(depth) & (depth > 0) & (labels > 0)
    points, pixels = unproject(depth, intrinsics, mask=valid, return_pixels=True)
    if len(points) == 0:
        return
    ids = labels[pixels[:, 0], pixels[:, 1]]
    order = np.argsort(ids, kind='stable')
    ids, points = ids[order], points[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    for begin, end in zip(starts, np.r_[starts[1:], len(ids)]):
        lo, hi = np.percentile(points[begin:end], [1, 99], axis=0)
        span = float((hi - lo).max())
        if span > limits.max_object_extent:
            raise InputError(f'object {int(ids[begin])} spans {span:.2f} m, more than '
                             f'limits.max_object_extent = {limits.max_object_extent} m '
                             '(is its mask one object?)')


def check_refine_request_size(grasps_msg, reconstruction_msg, limits: RequestLimits) -> None:
    n = len(grasps_msg.grasps)
    if n > limits.max_request_grasps:
        raise InputError(f'the request carries {n} grasps, more than '
                         f'limits.max_request_grasps = {limits.max_request_grasps}')
    points = sum(int(o.surface.width) * int(o.surface.height)
                 for o in reconstruction_msg.objects)
    if points > limits.max_reconstruction_points:
        raise InputError(f'the reconstruction carries {points} surface points, more than '
                         f'limits.max_reconstruction_points = '
                         f'{limits.max_reconstruction_points}')
    if len(reconstruction_msg.objects) > limits.max_objects:
        raise InputError(f'the reconstruction holds {len(reconstruction_msg.objects)} objects, '
                         f'more than limits.max_objects = {limits.max_objects}')


def check_max_grasps(value: int) -> None:
    if int(value) < 0:
        raise InputError(f'max_grasps must be >= 0 (0 = the node default), got {value}')


# --------------------------------------------------------------------------- time

class Deadline:
    """The time one request may take; checked between stages."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.end = time.monotonic() + self.seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def check(self, before: str) -> None:
        if self.remaining() <= 0:
            raise InputError(f'request deadline of {self.seconds:g} s (limits.deadline) passed '
                             f'before {before}')


class Admission:
    """One request on the model at a time; a bounded number wait, each a bounded time."""

    def __init__(self, max_waiting: int, max_wait: float):
        self.max_waiting, self.max_wait = int(max_waiting), float(max_wait)
        self._model = threading.Lock()
        self._count = threading.Lock()
        self.waiting = 0

    @contextmanager
    def slot(self, deadline: Deadline | None = None):
        with self._count:
            if self.waiting >= self.max_waiting and self._model.locked():
                raise InputError(f'busy: {self.waiting} request(s) already wait for the model '
                                 f'(limits.max_queued_requests = {self.max_waiting}); '
                                 'try again later')
            self.waiting += 1
        wait = self.max_wait if deadline is None else max(0.0, min(self.max_wait,
                                                                   deadline.remaining()))
        try:
            acquired = self._model.acquire(timeout=wait)
        finally:
            with self._count:
                self.waiting -= 1
        if not acquired:
            raise InputError(f'busy: the model stayed taken by other requests for {wait:.1f} s '
                             '(limits.max_queue_wait / limits.deadline); try again later')
        try:
            yield
        finally:
            self._model.release()


# --------------------------------------------------------------------------- messages

_ANSI = re.compile(r'\x1b\[[0-9;]*[A-Za-z]')


def plain_message(text: str, limit: int = 400) -> str:
    """An error text fit for a response: no terminal colour codes, one line, bounded."""
    text = _ANSI.sub('', str(text))
    text = ' '.join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + '...'
