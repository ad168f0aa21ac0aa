"""Soak: many sequential /predict_grasps calls; resident memory and latency must stay flat.

    python benchmarks/soak_predict.py                    # default: 300 calls or 8 minutes
    python benchmarks/soak_predict.py --calls 1000 --max-minutes 0     # the full run

The perception graph runs as `bringup --perception-only` in its own process (camera
replaying samples/tabletop, segmentation, grasp, refinement and visualisation nodes),
in a private ROS domain. Each call is a default request (refined) carrying the sample
frame itself, so the frame travels over DDS every time and the outcome does not depend
on the replay keeping pace on a crowded machine (`--latest-frame` asks for the camera's
latest frame instead). After every call the graph process's resident set size (VmRSS)
is read from /proc. Warm-up calls (allocator and torch caches filling) are left out of
the drift figures.

Checkpoint: checkpoints/zerograsp_cpu.pt when present, else a random-init model of
the cpu preset (same network size; random weights decode little, so the calls are
cheaper than with trained weights: the memory/latency trend is what is measured).
Writes benchmarks/results/soak_predict.json + .png and a "soak" summary into
benchmarks/results/robustness.json.
"""
from __future__ import annotations

import argparse
from collections import Counter
import datetime
import json
import os
from pathlib import Path
import platform
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLE = ROOT / 'samples' / 'tabletop'
TRAINED = ROOT / 'checkpoints' / 'zerograsp_cpu.pt'
RESULTS = ROOT / 'benchmarks' / 'results'
NAMESPACE = '/soak'


def rss_mb(pid: int) -> float:
    """Resident set size of a process [MiB] (Linux /proc)."""
    for line in Path(f'/proc/{pid}/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f'no VmRSS for process {pid}')


def random_init_checkpoint(path: Path, depth: int = 0) -> str:
    """Random-init model of the cpu preset; depth > 0 = that finest octree depth (cheaper)."""
    import torch

    from zerograsp_ros.model.checkpoint import save_checkpoint
    from zerograsp_ros.model.config import preset
    from zerograsp_ros.model.network import ZeroGraspNet

    cfg = preset('cpu')
    if depth:
        cfg = cfg.replace(depth=depth, channels=cfg.channels[:depth + 1])
    torch.manual_seed(0)
    save_checkpoint(path, ZeroGraspNet(cfg), cfg)
    return str(path)


def start_graph(checkpoint: str, log_path: Path) -> subprocess.Popen:
    log = open(log_path, 'w')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'zerograsp_ros.nodes.bringup', '--perception-only',
         '--camera-source', 'replay', '--replay-dir', str(SAMPLE), '--checkpoint', checkpoint,
         '--device', 'cpu', '--ros-args', '-r', f'__ns:={NAMESPACE}', '--log-level', 'warn'],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
        env=dict(os.environ, PYTHONUNBUFFERED='1',
                 PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])))
    deadline = time.monotonic() + 300
    while '[bringup] running' not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f'the perception graph did not start:\n{log_path.read_text()}')
        time.sleep(0.5)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def slope_per_100(y: np.ndarray) -> float:
    """Least-squares slope of y over the call index, per 100 calls."""
    if len(y) < 2:
        return 0.0
    return float(np.polyfit(np.arange(len(y)), y, 1)[0] * 100.0)


def summarise(latency: np.ndarray, rss: np.ndarray, warmup: int) -> dict:
    lat, mem = latency[warmup:], rss[warmup:]
    tenth = max(len(lat) // 10, 1)
    first, last = float(np.median(lat[:tenth])), float(np.median(lat[-tenth:]))
    return {
        'latency_s': {'median': float(np.median(lat)), 'p95': float(np.percentile(lat, 95)),
                      'max': float(lat.max()), 'first_10pct_median': first,
                      'last_10pct_median': last, 'last_over_first': last / first,
                      'slope_per_100_calls': slope_per_100(lat)},
        'rss_mb': {'after_warmup': float(mem[0]), 'end': float(mem[-1]),
                   'max': float(mem.max()), 'growth': float(mem[-1] - mem[0]),
                   'slope_per_100_calls': slope_per_100(mem)},
    }


def plot(path: Path, latency: np.ndarray, rss: np.ndarray, warmup: int, title: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    calls = np.arange(1, len(latency) + 1)
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    a.plot(calls, latency, '.', ms=3)
    a.axvspan(0.5, warmup + 0.5, color='0.9', label='warm-up')
    a.set_ylabel('latency [s]')
    a.legend(loc='upper right')
    b.plot(calls, rss)
    b.axvspan(0.5, warmup + 0.5, color='0.9')
    b.set_ylabel('graph process RSS [MiB]')
    b.set_xlabel('call')
    a.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--calls', type=int, default=300, help='sequential calls (1000 = full run)')
    p.add_argument('--max-minutes', type=float, default=8.0,
                   help='stop earlier after this long (0 = no limit); the calls done are recorded')
    p.add_argument('--warmup', type=int, default=10, help='calls left out of the drift figures')
    p.add_argument('--checkpoint', default='', help='default: the trained one, else random init')
    p.add_argument('--timeout', type=float, default=120.0, help='per-call limit [s]')
    p.add_argument('--small-model', action='store_true',
                   help='random-init cpu preset at octree depth 6 (as the robustness suite): '
                        'more calls per minute on a crowded machine')
    p.add_argument('--latest-frame', action='store_true',
                   help="ask for the replayed camera's latest frame instead of sending it")
    opts = p.parse_args(argv)

    from tqdm import tqdm

    os.environ['ROS_DOMAIN_ID'] = str(150 + os.getpid() % 80)   # private: no cross-talk
    tmp = Path(tempfile.mkdtemp(prefix='soak_predict_'))
    if opts.checkpoint:
        checkpoint, kind = opts.checkpoint, 'given'
    elif opts.small_model:
        checkpoint = random_init_checkpoint(tmp / 'random_init_depth6.pt', depth=6)
        kind = "random init, preset 'cpu' at octree depth 6 (--small-model)"
    elif TRAINED.is_file():
        checkpoint, kind = str(TRAINED), 'trained (checkpoints/zerograsp_cpu.pt)'
    else:
        checkpoint = random_init_checkpoint(tmp / 'random_init.pt')
        kind = "random init, preset 'cpu' (no trained checkpoint shipped yet)"

    import rclpy

    from zerograsp_ros.geometry.rgbd import load_frame_dir
    from zerograsp_ros.nodes.conversions import frame_to_rgbd_msg
    from zerograsp_ros.srv import PredictGrasps

    sample = load_frame_dir(SAMPLE)

    def request():
        if opts.latest_frame:
            return PredictGrasps.Request()
        return PredictGrasps.Request(frame=frame_to_rgbd_msg(sample, stamp=time.time()))

    graph = start_graph(checkpoint, tmp / 'graph.log')
    rclpy.init()
    node = rclpy.create_node('soak_predict_client')
    client = node.create_client(PredictGrasps, f'{NAMESPACE}/predict_grasps')
    latency, rss, outcomes, unanswered = [], [], Counter(), 0
    started = time.monotonic()
    limited = False
    try:
        if not client.wait_for_service(timeout_sec=60.0):
            raise SystemExit('/predict_grasps never appeared')
        # With --latest-frame: wait until the first replayed frame reached the grasp node.
        deadline = time.monotonic() + 60.0
        while opts.latest_frame and time.monotonic() < deadline:
            future = client.call_async(request())
            rclpy.spin_until_future_complete(node, future, timeout_sec=opts.timeout)
            if future.done() and 'no recent frame' not in future.result().message:
                break
            time.sleep(0.5)
        for _ in tqdm(range(opts.calls), desc='predict_grasps', unit='call'):
            if opts.max_minutes and time.monotonic() - started > 60.0 * opts.max_minutes:
                limited = True
                break
            req = request()
            t0 = time.perf_counter()
            future = client.call_async(req)
            rclpy.spin_until_future_complete(node, future, timeout_sec=opts.timeout)
            latency.append(time.perf_counter() - t0)
            if graph.poll() is not None:
                raise SystemExit(f'the graph died:\n{(tmp / "graph.log").read_text()[-3000:]}')
            rss.append(rss_mb(graph.pid))
            if not future.done():
                client.remove_pending_request(future)
                unanswered += 1
                outcomes['unanswered'] += 1
                continue
            res = future.result()
            for g in res.grasps.grasps:
                values = (g.pose.position.x, g.pose.position.y, g.pose.position.z,
                          g.pose.orientation.w, g.width, g.depth)
                if not np.isfinite(values).all():
                    outcomes['NON-FINITE GRASP'] += 1
            outcomes['success' if res.success else
                     ''.join('#' if c.isdigit() else c for c in res.message[:60])] += 1
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        stop(graph)

    latency_a, rss_a = np.array(latency), np.array(rss)
    warmup = min(opts.warmup, max(len(latency) - 2, 0))
    if len(latency) - warmup < 2:
        raise SystemExit(f'only {len(latency)} calls done: nothing to summarise')
    figures = summarise(latency_a, rss_a, warmup)
    flat = figures['rss_mb']['growth'] < 50.0 and \
        figures['latency_s']['last_over_first'] < 1.5
    result = {
        'machine': {'platform': platform.platform(), 'cpu_count': os.cpu_count(),
                    'python': platform.python_version()},
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': 'python ' + ' '.join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        'checkpoint': kind,
        'request': "the camera's latest frame" if opts.latest_frame else
                   'the sample frame in every request (refine=true)',
        'calls_requested': opts.calls, 'calls_done': len(latency),
        'stopped_by_time_limit': limited, 'warmup_calls': warmup,
        'wall_seconds': round(time.monotonic() - started, 1),
        'outcomes': dict(outcomes.most_common()), 'unanswered': unanswered,
        **figures,
        'flat': flat,
        'flat_criterion': 'RSS growth after warm-up < 50 MiB and median latency of the last '
                          '10% of calls < 1.5 x that of the first 10%',
        'per_call': {'latency_s': [round(v, 4) for v in latency],
                     'rss_mb': [round(v, 1) for v in rss]},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / 'soak_predict.json').write_text(json.dumps(result, indent=2) + '\n')
    plot(RESULTS / 'soak_predict.png', latency_a, rss_a, warmup,
         f'{len(latency)} sequential /predict_grasps calls ({kind.split(",")[0]})')
    robustness = RESULTS / 'robustness.json'
    data = json.loads(robustness.read_text()) if robustness.is_file() else {}
    data['soak'] = {k: v for k, v in result.items() if k != 'per_call'}
    robustness.write_text(json.dumps(data, indent=2, default=str) + '\n')
    print(json.dumps({k: v for k, v in result.items() if k not in ('per_call',)}, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
