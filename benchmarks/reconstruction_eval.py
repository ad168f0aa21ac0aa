"""Reconstruction + grasp evaluation of the shipped checkpoint on the held-out test split.

    python benchmarks/reconstruction_eval.py            # defaults below
    python benchmarks/reconstruction_eval.py --checkpoint runs/cpu_v1/best.pt

Needs the test split (`python -m zerograsp_ros.data.generate --out datasets/v1
--split test --scenes 24 --seed 0 --workers 2`). Writes
benchmarks/results/reconstruction_eval.json and .png (model vs visible-only
vs mirror completion; grasp precision). Metric definitions:
zerograsp_ros/training/evaluate.py.
"""
from __future__ import annotations

from pathlib import Path
import sys

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zerograsp_ros.training import evaluate  # noqa: E402


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = {'--checkpoint': str(ROOT / 'checkpoints' / 'zerograsp_cpu.pt'),
                '--data': str(ROOT / 'datasets' / 'v1' / 'test'),
                '--out': str(ROOT / 'benchmarks' / 'results' / 'reconstruction_eval.json')}
    for flag, value in defaults.items():
        if flag not in argv:
            argv += [flag, value]
    evaluate.main(argv)


if __name__ == '__main__':
    main()
