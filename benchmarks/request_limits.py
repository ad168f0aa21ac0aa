"""How fast /predict_grasps refuses oversized requests, and how long the largest allowed one runs.

    python benchmarks/request_limits.py            # about 5 minutes on 2 shared cores

Starts `bringup --perception-only` (shipped checkpoint, cpu, one torch thread, the
replayed sample slowed to 0.1 Hz) and times over DDS, client side:
- a 4K frame (3840x2160, 41 MB) refused by limits.max_image_pixels, on an idle model
  and while the model is busy with the largest allowed request (the size checks run
  before the request queues for the model);
- the issue-16 label image (random ids 0..10000 per pixel, object_ids empty), refused
  by limits.max_objects;
- the largest request the limits let through: the sample frame with 32 ids
  (limits.max_objects) tiling every pixel, refined; its network time is the measured
  worst case of the one block limits.deadline cannot interrupt (the deadline is checked
  before the network and before refinement; refinement gets only the time left).
Writes benchmarks/results/request_limits.json.
"""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import datetime
import json
import os
from pathlib import Path
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_requests import frame_4k  # noqa: E402  (benchmarks/ is on the path from here)

SAMPLE = ROOT / 'samples' / 'tabletop'
# Stages outside the network run (GraspPipeline.predict), which the deadline cannot stop;
# refinement gets only the time left (a /refine_grasps call with that timeout).
NOT_NETWORK = {'message_decoding', 'validation', 'segmentation', 'refinement', 'total'}


def sample_with_labels(labels: np.ndarray):
    """The sample frame with a 16UC1 label image (object_ids left empty: read from it)."""
    from zerograsp_ros.geometry.rgbd import load_frame_dir
    from zerograsp_ros.msg import InstanceMasks
    from zerograsp_ros.nodes.conversions import frame_to_rgbd_msg, numpy_to_image

    frame = frame_to_rgbd_msg(load_frame_dir(SAMPLE), stamp=time.time())
    masks = InstanceMasks(header=frame.header)
    masks.labels = numpy_to_image(labels.astype(np.uint16), '16UC1', frame.header)
    return frame, masks


def tiles(shape, rows=4, cols=8) -> np.ndarray:
    """rows*cols ids tiling the whole image (32 = limits.max_objects)."""
    h, w = shape
    r = np.minimum(np.arange(h) * rows // h, rows - 1)
    c = np.minimum(np.arange(w) * cols // w, cols - 1)
    return (r[:, None] * cols + c[None, :] + 1).astype(np.uint16)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--repeats', type=int, default=5, help='4K and many-ids calls each')
    ap.add_argument('--largest', type=int, default=2, help='calls of the largest allowed request')
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' / 'request_limits.json'))
    args = ap.parse_args(argv)
    os.environ.setdefault('ROS_DOMAIN_ID', str(100 + os.getpid() % 100))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from service_latency import start_graph

    from zerograsp_ros.geometry.rgbd import load_frame_dir
    from zerograsp_ros.srv import PredictGrasps

    scratch = Path(tempfile.mkdtemp(prefix='request_limits_'))
    params = scratch / 'params.yaml'
    params.write_text('grasp_node:\n  ros__parameters:\n    torch_threads: 1\n'
                      'refinement_node:\n  ros__parameters:\n    torch_threads: 1\n'
                      'camera_node:\n  ros__parameters:\n    replay_rate: 0.1\n')
    proc = start_graph(str(ROOT / 'checkpoints' / 'zerograsp_cpu.pt'), 'cpu',
                       scratch / 'bringup.log', params)
    rclpy.init()
    node = rclpy.create_node('request_limits_client')
    executor = MultiThreadedExecutor(4)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    def call(request, timeout=300.0):
        client = node.create_client(PredictGrasps, '/predict_grasps')
        try:
            if not client.wait_for_service(timeout_sec=60.0):
                raise RuntimeError('/predict_grasps never appeared')
            t0 = time.perf_counter()
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            if not done.wait(timeout):
                raise RuntimeError(f'no answer within {timeout} s')
            seconds = time.perf_counter() - t0
            r = future.result()
            stages = {k: round(float(v), 3) for k, v in zip(r.stage_names, r.stage_seconds)}
            return {'seconds': round(seconds, 3), 'success': bool(r.success),
                    'message': r.message[:200], 'stages': stages}
        finally:
            node.destroy_client(client)

    def summary(rows):
        s = [r['seconds'] for r in rows]
        return {'median_s': round(float(np.median(s)), 3), 'max_s': round(max(s), 3),
                'min_s': round(min(s), 3), 'n': len(s),
                'all_refused': not any(r['success'] for r in rows),
                'message': rows[0]['message']}

    shape = load_frame_dir(SAMPLE).depth.shape
    rng = np.random.default_rng(0)
    results = {}
    load_before = os.getloadavg()
    try:
        warm = call(PredictGrasps.Request(frame=sample_with_labels(tiles(shape, 1, 1))[0],
                                          refine=False))
        print('warm-up:', warm['seconds'], 's', warm['message'][:100], flush=True)
        big = [call(PredictGrasps.Request(frame=frame_4k(), refine=False))
               for _ in range(args.repeats)]
        results['image_4k_idle'] = summary(big) | {'calls': big}
        print('4K (idle model):', results['image_4k_idle']['median_s'], 's', flush=True)
        ids = []
        for _ in range(args.repeats):
            frame, masks = sample_with_labels(rng.integers(0, 10001, shape))
            ids.append(call(PredictGrasps.Request(frame=frame, masks=masks, refine=False)))
        results['many_ids_0_10000'] = summary(ids) | {'calls': ids}
        print('many ids:', results['many_ids_0_10000']['median_s'], 's', flush=True)
        largest, busy = [], []
        for i in range(args.largest):
            frame, masks = sample_with_labels(tiles(shape))
            request = PredictGrasps.Request(frame=frame, masks=masks, refine=True)
            if i == 0:   # a 4K request arrives while the model works on this one
                with ThreadPoolExecutor(1) as pool:
                    running = pool.submit(call, request)
                    time.sleep(3.0)
                    busy.append(call(PredictGrasps.Request(frame=frame_4k(), refine=False)))
                    largest.append(running.result())
                busy[-1]['model_still_busy_after'] = busy[-1]['seconds'] + 3.0 < \
                    largest[-1]['seconds']
            else:
                largest.append(call(request))
            print('largest allowed:', largest[-1]['seconds'], 's',
                  largest[-1]['message'][:100], flush=True)
        results['image_4k_while_model_busy'] = summary(busy) | {'calls': busy}
        for r in largest:   # the deadline is checked before and after this block
            r['network_s'] = round(sum(v for k, v in r['stages'].items()
                                       if k not in NOT_NETWORK), 3)
        results['largest_allowed_32_tiles'] = {
            'request': f'samples/tabletop {shape[1]}x{shape[0]}, 32 ids tiling every pixel '
                       '(limits.max_objects), refine=true',
            'max_s': round(max(r['seconds'] for r in largest), 3),
            'network_max_s': max(r['network_s'] for r in largest),
            'refinement_max_s': max(r['stages'].get('refinement', 0.0) for r in largest),
            'calls': largest}
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    data = {
        'machine': {'platform': platform.platform(), 'cpu_count': os.cpu_count(),
                    'note': 'shared 2-core development machine, other jobs running'},
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'command': 'python benchmarks/request_limits.py ' + ' '.join(argv or sys.argv[1:]),
        'graph': 'bringup --perception-only, shipped checkpoint, device cpu, one torch '
                 'thread, default limits (config/perception.yaml)',
        'load_average_before_after': [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        **results,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + '\n')
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
