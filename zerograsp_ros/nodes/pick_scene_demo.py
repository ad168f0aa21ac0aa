"""The main job, as a client of the running graph: clear the table with /pick.

Run it against a running `bringup` (or `ros2 launch zerograsp_ros
pick_scene.launch.py`): it optionally resets the simulated scene, asks
/predict_grasps once with the reconstruction and draws it, then calls /pick
until the table is clear, two picks in a row fail, or --max-picks is reached.
A JSON summary and the figure go to --out.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import time

import numpy as np


def _call(node, client, request, timeout: float):
    import rclpy

    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if not future.done():
        raise TimeoutError(f'{client.srv_name} gave no answer within {timeout:.0f} s')
    return future.result()


def _wait(node, client, timeout: float) -> None:
    import rclpy

    deadline = time.monotonic() + timeout
    while not client.service_is_ready() and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.2)
    if not client.service_is_ready():
        raise TimeoutError(f'service {client.srv_name} did not appear within {timeout:.0f} s '
                           '(is bringup / the launch file running?)')


def parse_args(argv):
    p = argparse.ArgumentParser(prog='pick_scene_demo', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--max-picks', type=int, default=8)
    p.add_argument('--seed', type=int, default=-1,
                   help='reset the simulated scene with this seed first (-1 = keep it)')
    p.add_argument('--objects', type=int, default=0, help='objects on reset (0 = default)')
    p.add_argument('--dry-run', action='store_true', help='plan the picks without moving')
    p.add_argument('--out', default='demo_output', help='where the summary and figure go')
    p.add_argument('--timeout', type=float, default=240.0, help='per call [s]')
    return p.parse_args(argv)


def main(args=None):
    import rclpy
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile
    from rclpy.utilities import remove_ros_args

    from zerograsp_ros.msg import RGBDFrame as RGBDFrameMsg
    from zerograsp_ros.nodes.common import RGBD_FRAME_TOPIC
    from zerograsp_ros.nodes.conversions import msg_to_grasps, msg_to_scene, rgbd_msg_to_frame
    from zerograsp_ros.srv import PickObject, PredictGrasps, SimResetScene

    argv = list(sys.argv if args is None else args)
    opts = parse_args(remove_ros_args(argv)[1:])
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    rclpy.init(args=argv)
    node = rclpy.create_node('pick_scene_demo')
    log = node.get_logger()
    frames = []
    node.create_subscription(RGBDFrameMsg, RGBD_FRAME_TOPIC, lambda m: frames.append(m),
                             QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                                        durability=DurabilityPolicy.VOLATILE))
    predict = node.create_client(PredictGrasps, 'predict_grasps')
    pick = node.create_client(PickObject, 'pick')
    summary = {'picks': [], 'started': time.strftime('%Y-%m-%dT%H:%M:%S%z')}
    code = 0
    try:
        _wait(node, predict, opts.timeout)
        _wait(node, pick, opts.timeout)
        if opts.seed >= 0:
            reset = node.create_client(SimResetScene, 'sim_cell/reset_scene')
            _wait(node, reset, 30.0)
            res = _call(node, reset, SimResetScene.Request(seed=opts.seed,
                                                           num_objects=opts.objects), 120.0)
            log.info(f'scene reset: {res.message} objects {list(res.object_ids)}')
        # Draw (and predict on) a frame taken after the reset: one rendered while
        # the scene was being rebuilt may show an empty table.
        not_before = time.time() + 0.5
        frames.clear()
        deadline = time.monotonic() + 60.0
        frame_msg = None
        while frame_msg is None and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.2)
            fresh = [m for m in frames
                     if m.header.stamp.sec + 1e-9 * m.header.stamp.nanosec > not_before]
            frame_msg = fresh[-1] if fresh else None
        if frame_msg is None:
            log.warning('no camera frame arrived within 60 s; predicting on the latest one')
        t0 = time.perf_counter()
        req = PredictGrasps.Request(refine=True, return_reconstruction=True, max_grasps=20)
        if frame_msg is not None:
            req.frame = frame_msg  # predict on exactly the frame we draw
        pred = _call(node, predict, req, opts.timeout)
        summary['predict'] = {'success': pred.success, 'message': pred.message,
                              'grasps': len(pred.grasps.grasps),
                              'seconds': time.perf_counter() - t0,
                              'stages': dict(zip(pred.stage_names,
                                                 map(float, pred.stage_seconds)))}
        log.info(f'/predict_grasps: {pred.message}')
        if pred.success and frame_msg is not None:
            from zerograsp_ros.perception.figures import render_prediction_figure

            frame = rgbd_msg_to_frame(frame_msg)
            objects = msg_to_scene(pred.reconstruction)
            path = render_prediction_figure(frame, objects, msg_to_grasps(pred.grasps),
                                            out / 'prediction.png',
                                            title='zerograsp_ros on the simulated cell')
            log.info(f'figure written to {path}')
        failures_in_row = 0
        for attempt in range(opts.max_picks):
            t0 = time.perf_counter()
            res = _call(node, pick, PickObject.Request(object_id=-1, dry_run=opts.dry_run),
                        opts.timeout)
            g = res.executed_grasp
            entry = {'attempt': attempt + 1, 'success': res.success, 'message': res.message,
                     'failed_stage': res.failed_stage, 'object_id': g.object_id,
                     'width': g.width, 'score': g.score,
                     'candidates_tried': res.candidates_tried,
                     'seconds': time.perf_counter() - t0}
            summary['picks'].append(entry)
            log.info(f"pick {attempt + 1}: {'OK' if res.success else 'FAILED'} "
                     f"object {g.object_id}, predicted success {g.score:.2f} ({res.message})")
            if opts.dry_run:
                break
            no_grasp = not res.success and res.failed_stage in ('perception', 'request')
            failures_in_row = 0 if res.success else failures_in_row + 1
            if no_grasp or failures_in_row >= 2:
                break
        ok = sum(p['success'] for p in summary['picks'])
        summary['objects_picked'] = ok
        summary['attempts'] = len(summary['picks'])
        log.info(f'done: {ok} of {len(summary["picks"])} picks succeeded')
    except (TimeoutError, RuntimeError) as exc:
        log.error(str(exc))
        summary['error'] = str(exc)
        code = 1
    finally:
        (out / 'summary.json').write_text(json.dumps(summary, indent=2, default=float))
        node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == '__main__':
    np.set_printoptions(precision=3)
    sys.exit(main())
