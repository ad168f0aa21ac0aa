"""Throughput of the batched grasp collision check, side by side with graspnetAPI.

    python benchmarks/refinement_throughput.py                 # ~5-10 min on 2 busy cores
    python benchmarks/refinement_throughput.py --threads 2 --graspnet-max-grasps 500

Scenes: synthetic table tops (a 0.6 m table plus 6 box-shaped objects, points sampled on
their surfaces, half on the table) with 20k or 100k points, and 1k or 10k grasps near the
objects (GraspNet depth bins 0.01-0.04 m, widths 0.02-0.09 m, approaches within ~50 deg of
straight down). Inputs are saved to an .npz that both implementations read.

Compared: ours (`zerograsp_ros.grasp.refinement.check_collisions`, torch CPU) against
graspnetAPI's `utils.eval_utils.collision_detection` (graspnetAPI 1.2.11, the public
GraspNet-1B evaluation check: numpy, points transformed into every grasp frame). Its
gripper is a finger of thickness 0.01 m and height 0.02 m reaching from 0.02 m behind
the grasp point to the grasp depth, a 0.01 m bottom behind it, no approach-clearance box,
a collision on any point and "empty" below 10 points between the fingers. Ours is run
with exactly that geometry, the `grasp.gripper.graspnet_api_gripper` preset (per depth
bin: finger_length = depth + 0.02, palm_depth 0.01, no clearance box, no housing, no swept
approach; collision_tolerance_points 0, empty_min_points 10, no voxel downsampling), so
the decisions are comparable one by one; our 2F-85 body is never compared with it.
graspnetAPI is installed in a separate venv created here on first use
(~/.cache/zerograsp_ros/graspnetapi-venv; `pip install --no-deps graspnetAPI==1.2.11`
plus what its import chain needs), which reuses this venv's
numpy/scipy/open3d/matplotlib through a .pth file instead of downloading them again, and
runs in a subprocess with one BLAS thread. Its dense (grasps x points x 3) arrays are
fed in grasp chunks of 50 (its per-object list API) so memory stays bounded; it is timed
on the first --graspnet-max-grasps grasps of each case (its cost is linear in the number
of grasps).

Also timed: our full `refine_grasps` (contacts, table/cone checks, collision on the 5 mm
voxelised cloud, NMS, top 50) with the default Robotiq 2F-85 preset.
Writes benchmarks/results/refinement_throughput.json and .png.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
from pathlib import Path
import platform
import subprocess
import sys
import sysconfig
import tempfile
import time

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'benchmarks' / 'results'
GRASPNET_VENV = Path.home() / '.cache' / 'zerograsp_ros' / 'graspnetapi-venv'
# graspnetAPI itself without its (Python 3.11-incompatible) pins, plus the packages its
# eval_utils import chain needs (dex-net modules import autolab_core and cvxopt).
GRASPNET_PACKAGES_NO_DEPS = ['graspnetAPI==1.2.11', 'transforms3d==0.4.2']
GRASPNET_PACKAGES = ['autolab_core==1.1.1', 'cvxopt==1.3.3', 'opencv-python-headless==5.0.0.93']
DEPTH_BINS = (0.01, 0.02, 0.03, 0.04)
GRASPNET_CHUNK = 50

# --------------------------------------------------------------------------- scenes


def tabletop_scene(num_points: int, num_grasps: int, seed: int = 0, num_objects: int = 6):
    """Table (z = 0, normal +z) and box objects as surface samples; grasps near objects."""
    rng = np.random.default_rng(seed)
    n_objects = num_points // 2
    n_table = num_points - n_objects
    table = np.c_[rng.uniform(-0.3, 0.3, (n_table, 2)), np.zeros(n_table)]
    parts = []
    centres = rng.uniform(-0.18, 0.18, (num_objects, 2))
    per_object = n_objects // num_objects
    for k in range(num_objects):
        m = per_object if k < num_objects - 1 else n_objects - per_object * (num_objects - 1)
        half = np.r_[rng.uniform(0.015, 0.04, 2), rng.uniform(0.02, 0.06)]
        p = rng.uniform(-1.0, 1.0, (m, 3))
        face = rng.integers(0, 3, m)
        p[np.arange(m), face] = np.sign(p[np.arange(m), face])
        p = p * half
        p[:, 2] += half[2]
        yaw = rng.uniform(0, np.pi)
        c, s = np.cos(yaw), np.sin(yaw)
        p[:, :2] = p[:, :2] @ np.array([[c, -s], [s, c]]).T + centres[k]
        parts.append(p)
    objects = np.concatenate(parts)
    pick = rng.integers(0, len(objects), num_grasps)
    approach = np.c_[rng.normal(0, 0.5, (num_grasps, 2)), -np.ones(num_grasps)]
    return dict(objects=objects.astype(np.float32), table=table.astype(np.float32),
                approach=approach, angle=rng.uniform(0, np.pi, num_grasps),
                translations=(objects[pick] + rng.normal(0, 0.01, (num_grasps, 3))),
                widths=rng.uniform(0.02, 0.09, num_grasps),
                depths=rng.choice(DEPTH_BINS, num_grasps), scores=rng.uniform(size=num_grasps))


# --------------------------------------------------------------------------- graspnetAPI


def graspnet_worker(inputs: str, outputs: str) -> None:
    """Runs inside the graspnetAPI venv: only numpy + graspnetAPI are imported here."""
    from graspnetAPI.utils.eval_utils import collision_detection

    data = np.load(inputs)
    grasps, points = data['grasps'], data['points']
    bounds = np.stack([points.min(0), points.max(0)])  # its crop then keeps every point
    chunks = [grasps[i:i + GRASPNET_CHUNK] for i in range(0, len(grasps), GRASPNET_CHUNK)]
    start, cpu_start = time.perf_counter(), time.process_time()
    unused = [None] * len(chunks)  # dex-net models and poses: only for return_dexgrasps
    collision, empty = collision_detection(chunks, [bounds] * len(chunks), unused, unused,
                                           points, outlier=0.05, empty_thresh=10)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    np.savez(outputs, collision=np.concatenate(collision), empty=np.concatenate(empty),
             seconds=seconds, cpu_seconds=cpu_seconds)


def ensure_graspnet_venv(log: list[str]) -> Path | None:
    """The venv's python with graspnetAPI importable, or None (reason appended to log)."""
    python = GRASPNET_VENV / 'bin' / 'python'
    probe = [str(python), '-c', 'import graspnetAPI.utils.eval_utils']
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    try:
        if not python.exists():
            subprocess.run([sys.executable, '-m', 'venv', str(GRASPNET_VENV)], check=True,
                           capture_output=True, text=True)
        site = subprocess.run([str(python), '-c', 'import sysconfig; '
                               'print(sysconfig.get_paths()["purelib"])'],
                              check=True, capture_output=True, text=True).stdout.strip()
        # Reuse this venv's numpy/scipy/open3d/matplotlib (searched after the venv's own).
        Path(site, 'zz_zerograsp_reuse.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
        pip = [str(python), '-m', 'pip', 'install', '-q', '--disable-pip-version-check']
        subprocess.run(pip + ['--no-deps'] + GRASPNET_PACKAGES_NO_DEPS, check=True,
                       capture_output=True, text=True, timeout=900)
        subprocess.run(pip + GRASPNET_PACKAGES, check=True, capture_output=True, text=True,
                       timeout=900)
        check = subprocess.run(probe, capture_output=True, text=True)
        if check.returncode != 0:
            log.append('graspnetAPI installed but does not import: ' + check.stderr[-800:])
            return None
        return python
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, 'stderr', '') or ''
        log.append(f'could not set up the graspnetAPI venv: {exc} {str(detail)[-800:]}')
        return None


def run_graspnet(python: Path, grasp_rows: np.ndarray, points: np.ndarray, log: list[str]):
    with tempfile.TemporaryDirectory() as tmp:
        inputs, outputs = Path(tmp, 'in.npz'), Path(tmp, 'out.npz')
        np.savez(inputs, grasps=grasp_rows.astype(np.float32), points=points)
        env = dict(os.environ, OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1',
                   MKL_NUM_THREADS='1', PYTHONPATH='')
        proc = subprocess.run([str(python), __file__, '--graspnet-worker', str(inputs),
                               str(outputs)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            log.append('graspnetAPI worker failed: ' + proc.stderr[-800:])
            return None
        out = np.load(outputs)
        return (out['collision'].astype(bool), out['empty'].astype(bool),
                float(out['seconds']), float(out['cpu_seconds']))


# --------------------------------------------------------------------------- ours


def ours_matched(grasps, points):
    """Our check with graspnetAPI's geometry: (collision, empty, cpu seconds, seconds)."""
    from zerograsp_ros.grasp.checks import forget_point_grids
    from zerograsp_ros.grasp.gripper import graspnet_api_gripper
    from zerograsp_ros.grasp.refinement import RefinementConfig, check_collisions

    cfg = RefinementConfig(collision_voxel=0.0, collision_tolerance_points=0,
                           empty_min_points=10)
    collision = np.zeros(len(grasps), bool)
    empty = np.zeros(len(grasps), bool)
    forget_point_grids()   # every timed run sorts the cloud itself (once for the 4 calls)
    start, cpu_start = time.perf_counter(), time.process_time()
    for depth in DEPTH_BINS:
        index = np.flatnonzero(np.isclose(grasps.depths, depth))
        if len(index):
            masks = check_collisions(grasps.subset(index), points, graspnet_api_gripper(depth),
                                     cfg)
            collision[index], empty[index] = masks['collision'], masks['empty']
    return collision, empty, time.process_time() - cpu_start, time.perf_counter() - start


def best_of(repeats, fn):
    """The last result and the best (cpu seconds, wall seconds) over the repeats."""
    cpu, wall, result = [], [], None
    for _ in range(repeats):
        result = fn()
        cpu.append(result[-2])
        wall.append(result[-1])
    return result, min(cpu), min(wall)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--points', type=int, nargs='+', default=[20000, 100000])
    parser.add_argument('--grasps', type=int, nargs='+', default=[1000, 10000])
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads for ours')
    parser.add_argument('--repeats', type=int, default=2, help='best of N timings (ours)')
    parser.add_argument('--graspnet-max-grasps', type=int, default=2000)
    parser.add_argument('--no-graspnet', action='store_true')
    parser.add_argument('--graspnet-worker', nargs=2, metavar=('IN', 'OUT'),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.graspnet_worker:
        graspnet_worker(*args.graspnet_worker)
        return 0

    sys.path.insert(0, str(ROOT))
    import torch
    from tqdm import tqdm

    from zerograsp_ros.grasp.refinement import refine_grasps
    from zerograsp_ros.grasp.representation import GraspSet, rotation_from_approach

    torch.set_num_threads(args.threads)
    log: list[str] = []
    python = None if args.no_graspnet else ensure_graspnet_venv(log)
    if args.no_graspnet:
        log.append('graspnetAPI comparison skipped (--no-graspnet)')
    cases = [(m, n) for m in args.points for n in args.grasps]
    rows = []
    for num_points, num_grasps in tqdm(cases, desc='cases'):
        scene = tabletop_scene(num_points, num_grasps, seed=num_points + num_grasps)
        rotations = rotation_from_approach(scene['approach'], scene['angle'])
        n = num_grasps
        grasps = GraspSet(rotations, scene['translations'], scene['widths'], scene['depths'],
                          scene['scores'], scene['scores'], np.ones(n), np.zeros(n))
        points = np.concatenate([scene['objects'], scene['table']])
        ours_matched(grasps, points)   # warm-up (torch's first calls), not timed
        (collision, empty, *_), ours_cpu, ours_s = best_of(
            args.repeats, functools.partial(ours_matched, grasps, points))
        row = dict(points=num_points, grasps=num_grasps, ours_seconds=ours_s,
                   ours_grasps_per_s=num_grasps / ours_s, ours_cpu_seconds=ours_cpu,
                   ours_grasps_per_cpu_s=num_grasps / ours_cpu,
                   collision_rate=float(collision.mean()), empty_rate=float(empty.mean()))
        start, cpu_start = time.perf_counter(), time.process_time()
        result = refine_grasps(grasps, scene['objects'], scene_points=scene['table'],
                               table_plane=np.array([0.0, 0.0, 1.0, 0.0]), max_grasps=50)
        refine_s, refine_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        row.update(refine_seconds=refine_s, refine_grasps_per_s=num_grasps / refine_s,
                   refine_cpu_seconds=refine_cpu, refine_grasps_per_cpu_s=num_grasps / refine_cpu,
                   refine_rejections=result.rejection_counts, refine_kept=len(result.grasps))
        if python is not None:
            k = min(num_grasps, args.graspnet_max_grasps)
            theirs = run_graspnet(python, grasps.subset(slice(0, k)).to_graspnet_array(),
                                  points, log)
            if theirs is not None:
                g_collision, g_empty, g_s, g_cpu = theirs
                ours_any = collision[:k] | empty[:k]  # theirs reports empty grasps as colliding
                row.update(graspnet_grasps=k, graspnet_seconds=g_s,
                           graspnet_grasps_per_s=k / g_s, graspnet_cpu_seconds=g_cpu,
                           graspnet_grasps_per_cpu_s=k / g_cpu,
                           speed_ratio=(num_grasps / ours_s) / (k / g_s),
                           speed_ratio_cpu=(num_grasps / ours_cpu) / (k / g_cpu),
                           agreement_collision_or_empty=float((ours_any == g_collision).mean()),
                           agreement_empty=float((empty[:k] == g_empty).mean()),
                           disagreements=int((ours_any != g_collision).sum()
                                             + (empty[:k] != g_empty).sum()))
        rows.append(row)
        tqdm.write(json.dumps({key: (round(v, 4) if isinstance(v, float) else v)
                               for key, v in row.items() if key != 'refine_rejections'}))

    result = dict(
        benchmark='refinement_throughput',
        machine=dict(platform=platform.platform(), processor=platform.processor(),
                     cpu_count=os.cpu_count(), load_average=os.getloadavg(),
                     torch=torch.__version__, torch_threads=args.threads),
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        command=' '.join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        notes=('The machine is shared (see load_average): wall-clock figures are noisy, the '
               '*_cpu_* figures (process CPU time, one thread on each side) are the stable '
               'comparison. ours: check_collisions with graspnetAPI eval geometry '
               '(grasp.gripper.graspnet_api_gripper), one call per depth bin, best of '
               f'{args.repeats} after one warm-up run, each run sorting the cloud into its '
               f'grid once, torch {args.threads} thread(s); graspnetAPI '
               'utils.eval_utils.collision_detection 1.2.11 in its own venv, one BLAS thread, '
               f'timed on the first {args.graspnet_max_grasps} grasps of each case; agreement '
               'compares decisions grasp by grasp (its collision mask includes empty grasps). '
               'refine_*: full refine_grasps with the robotiq_2f85 preset and defaults.'),
        log=log, cases=rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / 'refinement_throughput.json'
    out.write_text(json.dumps(result, indent=2) + '\n')
    plot(rows, RESULTS / 'refinement_throughput.png')
    print(f'wrote {out}')
    return 0


def plot(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    labels = [f"{r['grasps'] // 1000}k grasps\n{r['points'] // 1000}k points" for r in rows]
    x = np.arange(len(rows))
    series = [('ours (check_collisions)', 'ours_grasps_per_cpu_s'),
              ('graspnetAPI collision_detection', 'graspnet_grasps_per_cpu_s'),
              ('ours, full refine_grasps (2F-85)', 'refine_grasps_per_cpu_s')]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / len(series)
    for i, (name, key) in enumerate(series):
        values = [r.get(key, 0.0) for r in rows]
        bars = ax.bar(x + (i - 1) * width, values, width, label=name)
        for bar, r in zip(bars, rows):
            if key == 'graspnet_grasps_per_cpu_s' and 'agreement_collision_or_empty' in r:
                ax.annotate(f"{100 * r['agreement_collision_or_empty']:.2f}% agree",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha='center', va='bottom', fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_yscale('log')
    ax.set_ylabel('grasps per CPU second (1 thread, log scale)')
    ax.set_title('Model-free grasp collision check throughput')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    sys.exit(main())
