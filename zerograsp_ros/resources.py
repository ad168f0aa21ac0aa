"""Where the package's shipped files are: checkpoints, config, urdf, samples.

One lookup for every caller: the source tree when running from it (also a
`pip install -e .` checkout), else `share/zerograsp_ros/` of each prefix on
AMENT_PREFIX_PATH (a colcon install space or /opt/ros), in that order.
"""
from __future__ import annotations

import os
from pathlib import Path

from zerograsp_ros.errors import InputError

__all__ = ['PACKAGE', 'default_checkpoint', 'package_file', 'package_path', 'search_roots']

PACKAGE = 'zerograsp_ros'
SOURCE_ROOT = Path(__file__).resolve().parents[1]


def search_roots() -> list[Path]:
    """The source tree, then every install prefix's share/zerograsp_ros."""
    roots = [SOURCE_ROOT]
    for prefix in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep):
        if prefix:
            roots.append(Path(prefix) / 'share' / PACKAGE)
    return roots


def package_path(*parts: str) -> Path:
    """The first existing shipped file or folder `parts`; the source-tree path when none is."""
    for root in search_roots():
        if root.joinpath(*parts).exists():
            return root.joinpath(*parts)
    return SOURCE_ROOT.joinpath(*parts)


def package_file(*parts: str) -> Path:
    """Like package_path, but InputError naming every place looked in when it is missing."""
    candidates = [root.joinpath(*parts) for root in search_roots()]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise InputError(f'{PACKAGE} file {"/".join(parts)} not found (looked in '
                     f'{", ".join(str(c) for c in candidates)})')


def default_checkpoint() -> Path:
    """The shipped `cpu` checkpoint."""
    return package_path('checkpoints', 'zerograsp_cpu.pt')
