"""Labelled scenes per minute: sparse labels (before) against dense labels (cold, warm cache).

    python benchmarks/label_throughput.py                  # ~20-30 min on 2 busy cores
    python benchmarks/label_throughput.py --scenes 4 --workers 2

The same `--scenes` training scenes (seed 0, random 1-10 objects) are generated three
times with `zerograsp_ros.data.generate.generate_split` and `--workers` processes:

- sparse: today's labels only (24 points per object, continuous object sizes);
- sparse_quantised: the same with sizes quantised to 3 levels, the scenes the dense rows
  label (quantised sizes settle differently, so scene content and cost differ);
- dense_cold: plus `--dense-labels` (DenseLabelConfig defaults, sizes quantised to 3
  levels) with an empty per-mesh cache: every mesh pays its object stage;
- dense_warm: the same scenes again with the cache the cold run filled: only the
  per-scene stage (table + neighbour collisions, targets) is paid;
- dense_only_warm: as dense_warm without the sparse labels, which is what
  `--dense-labels` writes now (`--keep-sparse-labels` gives dense_warm's scenes).

A long campaign sits between cold and warm: primitives (about 30 % of objects, 75 size
variants) are warm after a few dozen scenes, while one of the ~2,400 train mesh variants
(800 meshes x 3 levels) comes back only about every 600 scenes (3.9 mesh objects per
scene).

Figures are wall-clock scenes per minute over the whole run (shards of one scene).
The machine's load average is recorded: on a shared machine the absolute numbers are
lower than on an idle one, the ratios less so.
Writes benchmarks/results/label_throughput.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
import platform
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / 'benchmarks' / 'results'


def _run(out: Path, scenes: int, workers: int, dense, size_levels, cache,
         sparse_labels: bool = True) -> dict:
    from zerograsp_ros.data.generate import generate_split

    load_before = os.getloadavg()
    t0 = time.perf_counter()
    generate_split(out, 'train', scenes, seed=0, workers=workers, scenes_per_shard=1,
                   progress=False, dense=dense, size_levels=size_levels, dense_cache=cache,
                   sparse_labels=sparse_labels)
    seconds = time.perf_counter() - t0
    return {'scenes': scenes, 'seconds': round(seconds, 1),
            'scenes_per_minute': round(60.0 * scenes / seconds, 2),
            'load_average_1min_before_after': [round(load_before[0], 1),
                                               round(os.getloadavg()[0], 1)]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--scenes', type=int, default=6)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--out', default=str(RESULTS / 'label_throughput.json'))
    ap.add_argument('--sparse-again', action='store_true',
                    help='only rerun the sparse row (as sparse_again) and add it to --out: '
                         'the same scenes under the load the dense rows saw')
    args = ap.parse_args(argv)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    from dataclasses import asdict

    from zerograsp_ros.data.dense_labels import DenseLabelConfig
    from zerograsp_ros.data.generate import DEFAULT_DENSE_SIZE_LEVELS, _jsonable

    dense = DenseLabelConfig()
    if args.sparse_again:
        result = json.loads(Path(args.out).read_text())
        with tempfile.TemporaryDirectory(prefix='label_throughput_') as tmp:
            row = _run(Path(tmp), args.scenes, args.workers, None, None, None)
        row['date'] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')
        result['rows']['sparse_again'] = row
        print('sparse_again', row)
        Path(args.out).write_text(json.dumps(result, indent=2) + '\n')
        return
    rows = {}
    with tempfile.TemporaryDirectory(prefix='label_throughput_') as tmp:
        tmp = Path(tmp)
        cache = tmp / 'cache'
        rows['sparse'] = _run(tmp / 'sparse', args.scenes, args.workers, None, None, None)
        print('sparse', rows['sparse'], flush=True)
        rows['sparse_quantised'] = _run(tmp / 'sparse_q', args.scenes, args.workers, None,
                                        DEFAULT_DENSE_SIZE_LEVELS, None)
        print('sparse_quantised', rows['sparse_quantised'], flush=True)
        rows['dense_cold'] = _run(tmp / 'cold', args.scenes, args.workers, dense,
                                  DEFAULT_DENSE_SIZE_LEVELS, cache)
        rows['dense_cold']['meshes_cached'] = len(list(cache.glob('*.npz')))
        print('dense_cold', rows['dense_cold'], flush=True)
        rows['dense_warm'] = _run(tmp / 'warm', args.scenes, args.workers, dense,
                                  DEFAULT_DENSE_SIZE_LEVELS, cache)
        print('dense_warm', rows['dense_warm'], flush=True)
        rows['dense_only_warm'] = _run(tmp / 'warm_only', args.scenes, args.workers, dense,
                                       DEFAULT_DENSE_SIZE_LEVELS, cache, sparse_labels=False)
        print('dense_only_warm', rows['dense_only_warm'], flush=True)
    result = {
        'benchmark': 'label_throughput',
        'command': 'python benchmarks/label_throughput.py ' + ' '.join(
            sys.argv[1:] if argv is None else argv),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'machine': f'{platform.platform()} ({os.cpu_count()} cpus), {args.workers} workers, '
                   'OMP_NUM_THREADS=1; shared with other jobs (see load averages)',
        'dense_label_config': _jsonable(asdict(dense)),
        'size_levels': DEFAULT_DENSE_SIZE_LEVELS,
        'rows': rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + '\n')
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
