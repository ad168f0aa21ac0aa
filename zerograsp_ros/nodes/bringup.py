"""Launch-free bring-up: the node graph of graph.py in ONE process (MultiThreadedExecutor).

For machines without the `launch` package. Same nodes, names, parameter files and
remappings as launch/pick_scene.launch.py and launch/perception.launch.py:

  bringup                                   # pick scene, simulated cell (use_sim)
  bringup --perception-only --camera-source replay --replay-dir samples/tabletop
  bringup --no-sim --robot fr3              # robot PC without `launch`
  bringup --web-view                        # + the browser view, http://127.0.0.1:8080

The graph runs in a child process that this one respawns when it dies (a crash, the
OOM killer), as the launch files respawn their nodes; a node that cannot start
(bad parameter, missing checkpoint) stops bringup instead (`--no-respawn`: no child).
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import threading
import time

from zerograsp_ros.errors import CheckpointError, InputError
from zerograsp_ros.nodes.graph import (
    CAMERA_SOURCES,
    RESPAWN_DELAY_S,
    ROBOTS,
    STARTUP_ERROR_EXIT,
    WEB_VIEW_HOST,
    WEB_VIEW_PORT,
    NodeSpec,
    perception_nodes,
    pick_scene_nodes,
)

# What a node constructor may raise for bad configuration: reported, not a traceback.
STARTUP_ERRORS = (InputError, CheckpointError, ImportError)


def node_class(spec: NodeSpec):
    """Import a node class lazily (sim cell and execution need extra packages)."""
    try:
        module = importlib.import_module(spec.module)
    except ImportError as exc:
        raise ImportError(f'node {spec.name}: cannot import {spec.module}: {exc}') from exc
    try:
        return getattr(module, spec.class_name)
    except AttributeError:
        raise ImportError(f'node {spec.name}: {spec.module} has no class '
                          f'{spec.class_name}') from None


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def spin(nodes, threads: int | None = None) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor


    # Inference waits for /refine_grasps in another group: several threads are needed;
    # a node that lets requests queue says how many it needs (executor_threads).
    wanted = sum(getattr(node, 'executor_threads', 2) for node in nodes)
    executor = MultiThreadedExecutor(num_threads=threads or max(4, wanted))
    for node in nodes:
        executor.add_node(node)
    # rclpy's own SIGTERM handling is lost once torch is loaded (measured: the node kept
    # running after SIGTERM), so SIGTERM is handled here like Ctrl-C; the executor wakes
    # every 0.5 s so the Python handler gets to run.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        while rclpy.ok():
            executor.spin_once(timeout_sec=0.5)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Let running callbacks finish before the nodes and the context go away.
        executor.shutdown(timeout_sec=3.0)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


def init_ros(args=None) -> None:
    """rclpy.init without rclpy's SIGINT handler.

    Ctrl-C then raises KeyboardInterrupt, so spin() stops the executor before the
    context is shut down under running callbacks.
    """
    import signal

    import rclpy
    from rclpy.signals import SignalHandlerOptions

    def interrupt(signum, frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # Explicit: a background job may inherit an ignored SIGINT; SIGTERM stops cleanly too.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)


def run_single_node(cls, args=None) -> int:
    """Entry point of one node executable: start, report bad configuration clearly, spin."""
    import rclpy

    init_ros(args)
    try:
        node = cls()
    except STARTUP_ERRORS as exc:
        print(f'[{cls.__name__}] cannot start: {exc}', file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return STARTUP_ERROR_EXIT  # the launch files stop instead of respawning
    return spin([node])


def build_specs(opts) -> list[NodeSpec]:
    web = {'web_view': opts.web_view, 'web_host': opts.web_host, 'web_port': opts.web_port}
    if opts.perception_only:
        return perception_nodes(opts.camera_source or 'realsense', opts.replay_dir,
                                opts.checkpoint, opts.device, not opts.no_visualization,
                                tuple(opts.params_file), **web)
    specs = pick_scene_nodes(not opts.no_sim, opts.robot, opts.checkpoint, opts.device,
                             not opts.no_visualization, **web)
    if opts.camera_source or opts.params_file:
        override = perception_nodes(opts.camera_source or ('sim' if not opts.no_sim
                                                          else 'realsense'),
                                    opts.replay_dir, opts.checkpoint, opts.device,
                                    not opts.no_visualization, tuple(opts.params_file), **web)
        by_name = {s.name: s for s in override}
        specs = [by_name.get(s.name, s) for s in specs]
    return specs


def parse_args(argv):
    p = argparse.ArgumentParser(prog='bringup', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--perception-only', action='store_true',
                   help='camera, segmentation, grasp, refinement, visualisation only')
    p.add_argument('--no-sim', action='store_true',
                   help='real cell (use_sim:=false): realsense camera, execution on MoveIt')
    p.add_argument('--robot', default='panda', help=f'robot preset {ROBOTS}')
    p.add_argument('--checkpoint', default='', help="model checkpoint ('' = installed default)")
    p.add_argument('--device', default='auto', help='auto | cpu | cuda[:N]')
    p.add_argument('--camera-source', default='', choices=('',) + CAMERA_SOURCES,
                   help='override the camera source')
    p.add_argument('--replay-dir', default='', help='recorded frames for --camera-source replay')
    p.add_argument('--params-file', action='append', default=[],
                   help='extra parameter YAML for the perception nodes (repeatable)')
    p.add_argument('--no-visualization', action='store_true')
    p.add_argument('--web-view', action='store_true',
                   help='also serve the live 3D view in a browser (web_view node, viser)')
    p.add_argument('--web-host', default=WEB_VIEW_HOST,
                   help='address the web view listens on (default: this machine only)')
    p.add_argument('--web-port', type=int, default=WEB_VIEW_PORT,
                   help='port of the web view (0 = any free port)')
    p.add_argument('--threads', type=int, default=0, help='executor threads (0 = automatic)')
    p.add_argument('--list', action='store_true', help='print the node graph and exit')
    p.add_argument('--no-respawn', action='store_true',
                   help='run the graph in this process; do not restart it when it dies')
    return p.parse_args(argv)


def main(args=None):
    import rclpy
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if args is None else args)
    opts = parse_args(remove_ros_args(argv)[1:])
    try:
        specs = build_specs(opts)
        classes = [node_class(s) for s in specs]
    except STARTUP_ERRORS as exc:
        print(f'[bringup] {exc}', file=sys.stderr, flush=True)
        return 1
    if opts.list:
        for s in specs:
            print(s.executable, s.name, ' '.join(s.ros_args()), s.parameters)
        return 0
    if not opts.no_respawn and not os.environ.get(_CHILD_ENV):
        return supervise(argv[1:])
    init_ros(argv)
    nodes = []
    try:
        for spec, cls in zip(specs, classes):
            nodes.append(cls(cli_args=spec.ros_args(),
                             parameter_overrides=spec.parameter_overrides()))
    except STARTUP_ERRORS as exc:
        print(f'[bringup] cannot start {spec.name}: {exc}', file=sys.stderr, flush=True)
        for node in nodes:
            node.destroy_node()
        rclpy.try_shutdown()
        return STARTUP_ERROR_EXIT
    print(f"[bringup] running {', '.join(n.get_name() for n in nodes)} (pid {os.getpid()})",
          flush=True)
    return spin(nodes, opts.threads or None)


_CHILD_ENV = 'ZEROGRASP_BRINGUP_CHILD'


def _child_preexec():
    """In the child: own process group, SIGTERM when the supervisor dies.

    Signals come from the supervisor only, and no graph outlives it.
    """
    os.setpgid(0, 0)
    try:
        import ctypes

        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def supervise(argv: list[str]) -> int:
    """Run the graph in a child process; respawn it when it dies, stop when asked.

    Exit 0 after Ctrl-C/SIGTERM; 1 when a node cannot start (no respawn: the same
    configuration would fail again). A graph that dies again within a minute waits
    longer before the next start (2 s doubling up to 30 s).
    """
    stopping = threading.Event()
    child = None

    def forward(signum, frame):
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    env = dict(os.environ, **{_CHILD_ENV: '1'})
    delay, restarts = RESPAWN_DELAY_S, 0
    while True:
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, '-m', 'zerograsp_ros.nodes.bringup', *argv],
                                 env=env, preexec_fn=_child_preexec)
        while True:
            try:
                code = child.wait()
                break
            except KeyboardInterrupt:  # pragma: no cover - handled by forward()
                continue
        if stopping.is_set() or code == 0:
            return 0
        if code == STARTUP_ERROR_EXIT:
            print('[bringup] a node cannot start (message above); not respawning',
                  file=sys.stderr, flush=True)
            return 1
        how = f'signal {signal.Signals(-code).name}' if code < 0 else f'exit code {code}'
        delay = RESPAWN_DELAY_S if time.monotonic() - started > 60 else min(2 * delay, 30.0)
        restarts += 1
        print(f'[bringup] the node graph died ({how}); respawn {restarts} in {delay:.0f} s',
              file=sys.stderr, flush=True)
        if stopping.wait(delay):
            return 0


if __name__ == '__main__':
    sys.exit(main())
