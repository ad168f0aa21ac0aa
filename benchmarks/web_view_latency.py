"""How fast the browser view shows a new /predict_grasps answer.

    python benchmarks/web_view_latency.py               # 8 predictions, browser included
    python benchmarks/web_view_latency.py --runs 20 --no-browser

The perception graph runs in a child process (`bringup --perception-only` on the
sample frame); the web view node and the client run here, in one process, so
both ends use one clock. For every run the view is first cleared (empty grasps and
reconstruction on its topics), then /predict_grasps is called without
`return_reconstruction` (so grasp_node converts the meshes for the topic itself, the
slower path) and these times are taken, all from the moment the answer arrives:
- `grasps_drawn`, `scene_drawn`: the view node has sent the grasps / the meshes to
  viser (its scene update; includes grasp_node's publishing and DDS);
- `arrived`: the grasps message reaches the view node (grasp_node's publishing + DDS);
- `browser_gui`: a headless Chromium page has applied the update (the status line,
  sent right after the grasps on the same websocket, changes; a MutationObserver
  in the page stamps it with the same wall clock), and `browser_frame`: the next
  animation frame after it has been drawn (SwiftShader WebGL on the CPU).
Also the view node's own work per message (`view_handling`: wall and thread CPU time)
and the mesh sizes.
Writes benchmarks/results/web_view_latency.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
from pathlib import Path
import platform
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'test'))

SAMPLE = ROOT / 'samples' / 'tabletop'


# Stamps every change of the view's status line ('N of M grasps shown ...') and the
# animation frame after it, with the wall clock (Date.now(), the same as time.time()).
STATUS_OBSERVER = '''(() => {
  window.__zgLog = [];
  let last = '';
  new MutationObserver(() => {
    const found = document.body.innerText.match(/(\\d+) of (\\d+) grasps shown/);
    if (!found || found[0] === last) return;
    last = found[0];
    window.__zgLog.push([Date.now(), found[0]]);
    requestAnimationFrame(() => window.__zgLog.push([Date.now(), 'frame:' + found[0]]));
  }).observe(document.body, {subtree: true, childList: true, characterData: true});
  return true;
})()'''


def stats(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if not len(v):
        return {'n': 0}
    return {'p50_s': round(float(np.percentile(v, 50)), 3),
            'p95_s': round(float(np.percentile(v, 95)), 3),
            'max_s': round(float(v.max()), 3), 'min_s': round(float(v.min()), 3),
            'n': int(len(v))}


def start_graph(log_path: Path, params: Path) -> subprocess.Popen:
    log = open(log_path, 'w')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'zerograsp_ros.nodes.bringup', '--no-respawn',
         '--perception-only', '--camera-source', 'replay', '--replay-dir', str(SAMPLE),
         '--device', 'cpu', '--no-visualization', '--params-file', str(params)],
        stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT),
        env=dict(os.environ, PYTHONUNBUFFERED='1'))
    return proc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--runs', type=int, default=8)
    ap.add_argument('--no-browser', action='store_true', help='skip the Chromium timing')
    ap.add_argument('--out', default=str(ROOT / 'benchmarks' / 'results' /
                                         'web_view_latency.json'))
    args = ap.parse_args(argv)
    os.environ.setdefault('ROS_DOMAIN_ID', str(150 + os.getpid() % 50))

    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.parameter import Parameter

    from zerograsp_ros.msg import GraspArray, SceneReconstruction
    from zerograsp_ros.nodes.common import GRASPS_TOPIC, LATCHED_QOS, RECONSTRUCTION_TOPIC
    from zerograsp_ros.nodes.web_view import WebViewNode
    from zerograsp_ros.srv import PredictGrasps

    work = Path(tempfile.mkdtemp(prefix='web_view_latency_'))
    params = work / 'params.yaml'
    # A loaded machine can take long over the first refinements: not what is measured.
    params.write_text('grasp_node:\n  ros__parameters:\n    torch_threads: 1\n'
                      '    refine_timeout: 120.0\n'
                      'refinement_node:\n  ros__parameters:\n    torch_threads: 1\n')
    graph = start_graph(work / 'bringup.log', params)
    rclpy.init()
    view = WebViewNode(parameter_overrides=[Parameter('port', value=0)])
    client_node = rclpy.create_node('web_view_latency_client')
    predict = client_node.create_client(PredictGrasps, 'predict_grasps')
    clear_grasps = client_node.create_publisher(GraspArray, GRASPS_TOPIC, LATCHED_QOS)
    clear_scene = client_node.create_publisher(SceneReconstruction, RECONSTRUCTION_TOPIC,
                                               LATCHED_QOS)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(view)
    executor.add_node(client_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    # Time each handler of the view node (what it adds on top of DDS).
    draw_times = {'grasps': [], 'scene': []}
    draw_cpu = {'grasps': [], 'scene': []}
    mesh_sizes = []

    arrivals = {}

    def timed(fn, key):
        def wrapper(msg):
            arrivals[key] = time.time()
            t0, c0 = time.perf_counter(), time.thread_time()
            fn(msg)
            if (msg.grasps if key == 'grasps' else msg.objects):
                draw_times[key].append(time.perf_counter() - t0)
                draw_cpu[key].append(time.thread_time() - c0)
                if key == 'scene':
                    mesh_sizes[:] = [(len(o.mesh.vertices), len(o.mesh.triangles))
                                     for o in msg.objects]
        return wrapper

    for sub in view.subscriptions:
        if sub.topic_name.endswith(GRASPS_TOPIC):
            sub.callback = timed(view._on_grasps, 'grasps')
        elif sub.topic_name.endswith(RECONSTRUCTION_TOPIC):
            sub.callback = timed(view._on_scene, 'scene')

    browser = None
    runs = []
    try:
        if not predict.wait_for_service(timeout_sec=300):
            log = (work / 'bringup.log').read_text()[-3000:]
            raise RuntimeError(f'/predict_grasps never came up:\n{log}')
        if not args.no_browser:
            from support.headless_browser import HeadlessBrowser

            browser = HeadlessBrowser()
            browser.start()
            browser.open(view.url)
            while not browser.has_button('Predict grasps'):
                time.sleep(0.5)
            browser.evaluate(STATUS_OBSERVER)
        # First answers load the model's lazy parts; not timed.
        for _ in range(3):
            future = predict.call_async(PredictGrasps.Request(refine=True))
            while not future.done():
                time.sleep(0.05)
            if future.result() is not None and future.result().success:
                break
        failures = []
        for run in range(args.runs):
            clear_grasps.publish(GraspArray())
            clear_scene.publish(SceneReconstruction())
            deadline = time.monotonic() + 10
            while (view.objects or (view.grasps is not None and len(view.grasps))) \
                    and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(1.0)
            before = dict(view.last_update)
            future = predict.call_async(PredictGrasps.Request(refine=True))
            while not future.done():
                time.sleep(0.002)
            answered = time.time()
            response = future.result()
            if not response.success:   # nothing new to draw: noted, not timed
                failures.append(response.message)
                print(f'run {run + 1}: /predict_grasps failed: {response.message}', flush=True)
                continue
            gui_s = frame_s = None
            if browser is not None:
                limit = time.monotonic() + 60
                while time.monotonic() < limit and frame_s is None:
                    time.sleep(0.2)
                    for stamp, text in browser.evaluate('window.__zgLog') or []:
                        shown = text.split(':')[-1].split(' of ')[0].strip()
                        if stamp / 1000.0 < answered or shown in ('', '0'):
                            continue
                        if text.startswith('frame:') and gui_s is not None:
                            frame_s = stamp / 1000.0 - answered
                            break
                        if not text.startswith('frame:') and gui_s is None:
                            gui_s = stamp / 1000.0 - answered
            limit = time.monotonic() + 30
            while time.monotonic() < limit and not all(
                    view.last_update.get(k, 0) > before.get(k, 0)
                    for k in ('grasps', 'reconstruction')):
                time.sleep(0.01)
            entry = {
                'grasps_drawn_s': round(view.last_update['grasps'] - answered, 4),
                'scene_drawn_s': round(view.last_update['reconstruction'] - answered, 4),
                'arrived_s': round(arrivals['grasps'] - answered, 4),
                'browser_gui_s': None if gui_s is None else round(gui_s, 3),
                'browser_frame_s': None if frame_s is None else round(frame_s, 3),
                'grasps': len(response.grasps.grasps)}
            runs.append(entry)
            print(f'run {run + 1}: {entry}', flush=True)
        result = {
            'machine': {'platform': platform.platform(), 'processor': platform.processor(),
                        'cpu_count': os.cpu_count(), 'python': platform.python_version(),
                        'load_average_1min': round(os.getloadavg()[0], 2)},
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
            'command': 'python benchmarks/web_view_latency.py ' + ' '.join(
                argv if argv is not None else sys.argv[1:]),
            'frame': str(SAMPLE.relative_to(ROOT)),
            'request': 'PredictGrasps(refine=True, return_reconstruction=False)',
            'objects_drawn': len(view.objects),
            'mesh_vertices_triangles': mesh_sizes,
            'grasps_drawn': stats([r['grasps_drawn_s'] for r in runs]),
            'scene_drawn': stats([r['scene_drawn_s'] for r in runs]),
            'arrived': stats([r['arrived_s'] for r in runs]),
            'browser_gui': stats([r['browser_gui_s'] for r in runs]),
            'browser_frame': stats([r['browser_frame_s'] for r in runs]),
            'view_handling': {'grasps_wall': stats(draw_times['grasps']),
                              'grasps_cpu': stats(draw_cpu['grasps']),
                              'scene_wall': stats(draw_times['scene']),
                              'scene_cpu': stats(draw_cpu['scene'])},
            'runs': runs,
            'failed_predictions': failures,
        }
        Path(args.out).write_text(json.dumps(result, indent=2) + '\n')
        print(json.dumps({k: result[k] for k in ('arrived', 'grasps_drawn', 'scene_drawn',
                                                 'browser_gui', 'browser_frame',
                                                 'view_handling')}, indent=1))
        print(f'wrote {args.out}')
    finally:
        if browser is not None:
            browser.close()
        executor.shutdown()
        view.destroy_node()
        client_node.destroy_node()
        rclpy.try_shutdown()
        graph.send_signal(2)
        try:
            graph.wait(timeout=30)
        except subprocess.TimeoutExpired:
            graph.kill()
    return 0


if __name__ == '__main__':
    sys.exit(main())
