"""Run-time choices every layer shares: the torch device and per-stage wall times.

torch is imported inside the functions, so the numpy-only layers that import this
module do not load it.
"""
from __future__ import annotations

import time

from zerograsp_ros.errors import InputError

__all__ = ['StageTimer', 'resolve_device']


def resolve_device(device=None):
    """'auto' (or None) -> CUDA when available, else CPU; otherwise what torch understands.

    InputError names a device string torch does not know, or a CUDA device this
    machine does not have.
    """
    import torch

    if isinstance(device, torch.device):
        dev = device
    elif device in (None, '', 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InputError(f'unknown device {device!r}: {exc}') from None
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise InputError(f"device '{device}' requested but CUDA is not available")
    if dev.type == 'cuda' and (dev.index or 0) >= torch.cuda.device_count():
        raise InputError(f"device '{device}': only {torch.cuda.device_count()} CUDA devices")
    return dev


class StageTimer:
    """Accumulated wall time per named stage, in seconds (`times`, in first-seen order).

    Two ways to time: `with timer.stage(name):` around a block, or `timer.mark(name)`,
    which books the time since the previous mark (or the start) to `name`. On a CUDA
    device every booking synchronises first, so asynchronous kernels count where
    they ran.
    """

    def __init__(self, device=None):
        self.times: dict[str, float] = {}
        self.cuda = device is not None and str(device).startswith('cuda')
        self._last = time.perf_counter()

    def _now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def add(self, name: str, seconds: float) -> None:
        self.times[name] = self.times.get(name, 0.0) + float(seconds)

    def mark(self, name: str) -> None:
        now = self._now()
        self.add(name, now - self._last)
        self._last = now

    def stage(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.start = timer._now()

            def __exit__(self, *exc):
                timer.add(name, timer._now() - self.start)

        return _Stage()
