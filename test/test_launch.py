"""Launch files and the shared node graph.

Everywhere: the launch files import as plain Python, say clearly when `launch` is
missing, and every node they start is an installed executable whose module has
the class `bringup` instantiates. Where `launch`/`launch_ros` exist (a robot PC, or a
venv with them built from source) both launch files are launched for real in a
subprocess (support/launch_file_runner.py) and the nodes' parameters are read over
DDS; launch_pytest is not used (its plugin does not load under pytest >= 8.4).
"""
import importlib
import importlib.util
import os
from pathlib import Path
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]
LAUNCH_DIR = REPO / 'launch'
INSTALLED_BIN = REPO / '.ws' / 'install' / 'zerograsp_ros' / 'lib' / 'zerograsp_ros'
LAUNCH_FILES = ('pick_scene.launch.py', 'perception.launch.py')


def load_launch_file(name: str):
    spec = importlib.util.spec_from_file_location(name.replace('.', '_'), LAUNCH_DIR / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _launch_installed() -> bool:
    return importlib.util.find_spec('launch') is not None and \
        importlib.util.find_spec('launch_ros') is not None


@pytest.mark.parametrize('name', LAUNCH_FILES)
def test_launch_file_imports_as_plain_python(name):
    module = load_launch_file(name)
    assert callable(module.generate_launch_description)
    if _launch_installed():
        from launch import LaunchDescription

        assert isinstance(module.generate_launch_description(), LaunchDescription)
    else:
        with pytest.raises(ImportError, match='needs the ROS 2 `launch`') as info:
            module.generate_launch_description()
        assert 'bringup' in str(info.value)  # and it names the launch-free alternative


def _all_pick_scene_variants():
    module = load_launch_file('pick_scene.launch.py')
    for use_sim in ('true', 'false'):
        for robot in ('panda', 'fr3'):
            yield module, {'use_sim': use_sim, 'robot': robot}


@pytest.mark.ros
def test_every_launched_node_is_an_installed_executable_with_its_class():
    specs = [s for module, args in _all_pick_scene_variants() for s in module.node_specs(args)]
    specs += load_launch_file('perception.launch.py').node_specs({})
    for spec in {s.executable: s for s in specs}.values():
        exe = INSTALLED_BIN / spec.executable
        assert exe.is_file() and os.access(exe, os.X_OK), \
            f'{spec.executable} is not installed in {INSTALLED_BIN} (run scripts/setup.sh)'
        assert f'zerograsp_ros.nodes.{spec.executable} import main' in exe.read_text()
        source = REPO / 'zerograsp_ros' / 'nodes' / f'{spec.executable}.py'
        if not source.is_file():
            pytest.fail(f'{spec.executable}: module {source} missing')
        assert f'class {spec.class_name}(' in source.read_text(), \
            f'{source} has no class {spec.class_name} for bringup'
        for path in spec.param_files:
            assert Path(path).is_file()


def test_pick_scene_node_graph_per_argument():
    module = load_launch_file('pick_scene.launch.py')
    sim = {s.name: s for s in module.node_specs({})}  # defaults: use_sim true, panda
    assert {'camera_node', 'segmentation_node', 'grasp_node', 'refinement_node',
            'visualization_node', 'execution_node', 'sim_cell_node'} == set(sim)
    assert sim['camera_node'].parameters['source'] == 'sim'
    assert sim['execution_node'].parameters == {'robot': 'panda', 'backend': 'sim'}
    assert module.includes({}) == []
    real = {s.name: s for s in module.node_specs({'use_sim': 'false', 'robot': 'fr3',
                                                 'checkpoint': '/x.pt', 'device': 'cuda'})}
    assert 'sim_cell_node' not in real
    assert real['camera_node'].parameters['source'] == 'realsense'
    assert real['execution_node'].parameters == {'robot': 'fr3', 'backend': 'moveit'}
    assert real['grasp_node'].parameters == {'checkpoint': '/x.pt', 'device': 'cuda'}
    includes = module.includes({'use_sim': 'false', 'robot': 'fr3', 'robot_ip': '10.0.0.2',
                                'camera_serial': '123456789012'})
    camera = includes[0]
    assert camera['package'] == 'realsense2_camera' and camera['launch'] == 'rs_launch.py'
    assert camera['arguments']['align_depth.enable'] == 'true'
    assert camera['arguments']['serial_no'] == '_123456789012'
    # Arm and gripper are not vendor launch includes (each would start its own
    # robot_state_publisher / controller_manager): test_real_cell.py covers the cell.
    assert len(includes) == 1
    with pytest.raises(ValueError, match='expected true or false'):
        module.node_specs({'use_sim': 'maybe'})
    from zerograsp_ros.errors import InputError

    with pytest.raises(InputError, match="robot 'ur5'"):
        module.node_specs({'robot': 'ur5'})


def test_web_view_argument_adds_the_browser_view_with_its_host_and_port():
    for name in LAUNCH_FILES:
        module = load_launch_file(name)
        assert 'web_view' not in {s.name for s in module.node_specs({})}   # off by default
        specs = {s.name: s for s in module.node_specs({'web_view': 'true',
                                                       'web_port': '9123'})}
        assert specs['web_view'].parameters == {'host': '127.0.0.1', 'port': 9123}
        assert specs['web_view'].executable == 'web_view'
        assert module.ARGUMENTS['web_host'][0] == '127.0.0.1'   # localhost only by default
    from zerograsp_ros.errors import InputError

    with pytest.raises(InputError, match="port 'http' is not an integer"):
        load_launch_file('perception.launch.py').node_specs({'web_view': 'true',
                                                             'web_port': 'http'})
    out = subprocess.run([sys.executable, '-m', 'zerograsp_ros.nodes.bringup', '--list',
                          '--device', 'cpu', '--web-view', '--web-port', '9123'],
                         capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    web = [line for line in out.stdout.splitlines() if line.startswith('web_view ')]
    assert len(web) == 1 and "'port': 9123" in web[0] and "'host': '127.0.0.1'" in web[0]


def test_bringup_runs_the_same_graph_as_the_launch_file():
    """`bringup --list` (launch-free) prints exactly the launch file's nodes and parameters."""
    out = subprocess.run([sys.executable, '-m', 'zerograsp_ros.nodes.bringup', '--list',
                          '--robot', 'fr3', '--device', 'cpu'], capture_output=True, text=True,
                         timeout=120, cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    listed = [line.split()[:2] for line in out.stdout.strip().splitlines()]
    specs = load_launch_file('pick_scene.launch.py').node_specs({'robot': 'fr3',
                                                                 'device': 'cpu'})
    assert listed == [[s.executable, s.name] for s in specs]
    bad = subprocess.run([sys.executable, '-m', 'zerograsp_ros.nodes.bringup', '--list',
                          '--perception-only', '--camera-source', 'replay'],
                         capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert bad.returncode == 1 and 'needs a replay directory' in bad.stderr


def _predict_until(node, client, timeout, done=lambda response: response.success):
    """Call /predict_grasps (refine=False) once a second until done(answer) or timeout.

    The graph answers before its first frame arrived ('no recent frame'); the last
    answer comes back either way.
    """
    import time

    import rclpy

    from zerograsp_ros.srv import PredictGrasps

    deadline = time.monotonic() + timeout
    while True:
        future = client.call_async(PredictGrasps.Request(refine=False))
        rclpy.spin_until_future_complete(node, future, timeout_sec=180.0)
        response = future.result()
        assert response is not None, '/predict_grasps did not answer within 180 s'
        if done(response) or time.monotonic() > deadline:
            return response
        time.sleep(1.0)


@pytest.mark.ros
@pytest.mark.slow
def test_launch_free_pick_scene_runs_on_the_simulated_cell(ros_domain, tmp_path):
    """`bringup` (use_sim default): sim cell frames reach /predict_grasps; /pick is served."""
    import signal
    import time

    import torch

    from zerograsp_ros.model.checkpoint import save_checkpoint
    from zerograsp_ros.model.config import preset
    from zerograsp_ros.model.network import ZeroGraspNet

    torch.manual_seed(0)
    checkpoint = tmp_path / 'random_init.pt'  # the outcome here does not depend on weights
    save_checkpoint(checkpoint, ZeroGraspNet(preset('cpu')), preset('cpu'))
    params = tmp_path / 'params.yaml'
    params.write_text('grasp_node:\n  ros__parameters:\n    torch_threads: 1\n')
    log_path = tmp_path / 'bringup.log'
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'zerograsp_ros.nodes.bringup', '--checkpoint',
             str(checkpoint), '--device', 'cpu', '--no-visualization', '--params-file',
             str(params)], stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO),
            env=dict(os.environ, PYTHONUNBUFFERED='1'))
    import rclpy

    from zerograsp_ros.srv import PickObject, PredictGrasps, SimResetScene

    rclpy.init()
    try:
        deadline = time.monotonic() + 240
        while '[bringup] running' not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        assert 'sim_cell_node' in log_path.read_text() and 'execution_node' in \
            log_path.read_text()
        node = rclpy.create_node('pick_scene_probe')
        for srv, name in ((PickObject, '/pick'), (SimResetScene, '/sim_cell/reset_scene')):
            assert node.create_client(srv, name).wait_for_service(timeout_sec=60.0), name
        client = node.create_client(PredictGrasps, '/predict_grasps')
        assert client.wait_for_service(timeout_sec=60.0)
        # the first sim frame may still be on its way
        response = _predict_until(node, client, max(0.0, deadline - time.monotonic()),
                                  lambda r: r.success or 'no recent frame' not in r.message)
        # A simulated frame went camera_node -> segmentation -> the model (random weights
        # may propose nothing: that is a clear answer too, not a missing frame or a crash).
        assert 'no recent frame' not in response.message
        assert 'internal error' not in response.message
        assert {'segmentation', 'decoder'} <= set(response.stage_names), response.message
        if response.success:
            assert response.grasps.header.frame_id == 'camera_color_optical_frame'
        else:
            assert 'the model proposed no grasp' in response.message
        node.destroy_node()
    finally:
        rclpy.shutdown()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.ros
def test_installed_node_executable_stops_on_sigterm(ros_domain):
    """`launch` and process managers stop nodes with SIGTERM: a node must exit, not linger."""
    import signal
    import time

    exe = INSTALLED_BIN / 'refinement_node'
    if not exe.is_file():
        pytest.skip(f'{exe} is not installed; run scripts/setup.sh')
    env = {k: v for k, v in os.environ.items() if k != 'OMP_NUM_THREADS'}  # as users run it
    proc = subprocess.Popen([str(exe)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 60.0
        while time.monotonic() < deadline:  # wait until it serves (torch imported by then)
            line = proc.stdout.readline()
            if not line or 'refinement on' in line:
                break
        assert proc.poll() is None, 'refinement_node died at start-up'
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            pytest.fail('refinement_node ignored SIGTERM for 20 s')


@pytest.mark.ros
def test_bringup_respawns_the_graph_after_it_is_killed(ros_domain, tmp_path):
    """A killed graph is respawned and /predict_grasps answers again by itself.

    Issue 16: the OOM killer took grasp_node for good.
    """
    import signal
    import time

    import rclpy

    from zerograsp_ros.srv import PredictGrasps

    log_path = tmp_path / 'bringup.log'
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(
            [sys.executable, '-m', 'zerograsp_ros.nodes.bringup', '--perception-only',
             '--camera-source', 'replay', '--replay-dir', str(REPO / 'samples' / 'tabletop'),
             '--device', 'cpu', '--no-visualization'], stdout=log, stderr=subprocess.STDOUT,
            cwd=str(REPO), env=dict(os.environ, PYTHONUNBUFFERED='1'))

    def running_pids(timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = [int(line.rsplit('(pid ', 1)[1].rstrip(')'))
                    for line in log_path.read_text().splitlines() if '[bringup] running' in line]
            if pids:
                yield pids
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.5)
        pytest.fail(f'timeout:\n{log_path.read_text()[-3000:]}')

    rclpy.init()
    try:
        first = next(running_pids(240))[-1]
        os.kill(first, signal.SIGKILL)                      # what the OOM killer does
        second = next(p for p in running_pids(240) if len(p) == 2)[-1]
        assert second != first and 'the node graph died (signal SIGKILL)' in \
            log_path.read_text()
        node = rclpy.create_node('respawn_probe')
        client = node.create_client(PredictGrasps, '/predict_grasps')
        assert client.wait_for_service(timeout_sec=120.0)
        response = _predict_until(node, client, 180)
        assert response.success, response.message
        node.destroy_node()
    finally:
        rclpy.shutdown()
        proc.send_signal(signal.SIGINT)
        try:
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    for pid in (first, second):                             # nothing left behind
        assert not Path(f'/proc/{pid}').exists() or \
            'zombie' in Path(f'/proc/{pid}/status').read_text()


@pytest.mark.ros
def test_bringup_with_a_missing_checkpoint_stops_with_its_path(ros_domain, tmp_path):
    """checkpoint:=/nonexistent.pt used to load the default checkpoint (issue 16).

    `bringup` is what runs without `launch`: it must stop, name the path and not respawn.
    """
    missing = tmp_path / 'nonexistent.pt'
    done = subprocess.run(
        [sys.executable, '-m', 'zerograsp_ros.nodes.bringup', '--perception-only',
         '--camera-source', 'replay', '--replay-dir', str(REPO / 'samples' / 'tabletop'),
         '--checkpoint', str(missing), '--device', 'cpu', '--no-visualization'],
        capture_output=True, text=True, timeout=240, cwd=str(REPO),
        env=dict(os.environ, PYTHONUNBUFFERED='1'))
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-3000:]
    assert f'cannot start grasp_node: checkpoint {missing} does not exist' in out, out[-3000:]
    assert 'not respawning' in out and out.count('[bringup] running') <= 1, out[-3000:]


# --------------------------------------------------------------------------- launch arguments
# Real launches (robot PC, or a venv with `launch`/`launch_ros` built from source): every
# argument must reach the node that owns the parameter (issue 16: config/perception.yaml's
# node sections used to win over checkpoint:=, device:=, camera_source:=, replay_dir:=).

def _require_launch():
    if not _launch_installed():
        pytest.skip('the ROS 2 `launch`/`launch_ros` packages are not installed here (robot PC '
                    'only); the argument plumbing is checked without them by '
                    'test_request_limits.py::'
                    'test_launch_values_are_written_under_the_node_name_not_the_wildcard')


class _Launch:
    """launch/<file> with arguments in a subprocess; parameters read over DDS."""

    def __init__(self, name, args, log_path):
        self.log_path = log_path
        self.log = open(log_path, 'w')
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / 'test' / 'support' / 'launch_file_runner.py'), name,
             *[f'{k}:={v}' for k, v in args.items()]], stdout=self.log,
            stderr=subprocess.STDOUT, cwd=str(REPO), env=dict(os.environ, PYTHONUNBUFFERED='1'))

    def output(self):
        return self.log_path.read_text(errors='replace')

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            if self.wait(60) is None:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _parameters(node, node_name, names, timeout=180.0):
    """The values of a running node's parameters (GetParameters over DDS)."""
    import time

    from rcl_interfaces.srv import GetParameters
    import rclpy
    from rclpy.parameter import parameter_value_to_python

    client = node.create_client(GetParameters, f'/{node_name}/get_parameters')
    assert client.wait_for_service(timeout_sec=timeout), f'{node_name} never came up'
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        future = client.call_async(GetParameters.Request(names=list(names)))
        rclpy.spin_until_future_complete(node, future, timeout_sec=30.0)
        if future.result() is not None:
            values = [parameter_value_to_python(v) for v in future.result().values]
            return dict(zip(names, values))
    pytest.fail(f'{node_name} did not answer get_parameters')


@pytest.mark.ros
@pytest.mark.parametrize('launch_file, args, expected', [
    ('perception.launch.py',
     {'camera_source': 'replay', 'replay_dir': str(REPO / 'samples' / 'tabletop'),
      'checkpoint': 'COPY', 'device': 'cpu', 'rviz': 'false', 'web_view': 'true',
      'web_port': '0'},
     {'camera_node': {'source': 'replay', 'replay_dir': str(REPO / 'samples' / 'tabletop')},
      'grasp_node': {'checkpoint': 'COPY', 'device': 'cpu'},
      'web_view': {'host': '127.0.0.1', 'port': 0}}),
    ('pick_scene.launch.py',
     {'use_sim': 'true', 'robot': 'fr3', 'checkpoint': 'COPY', 'device': 'cpu',
      'rviz': 'false'},
     {'camera_node': {'source': 'sim'}, 'grasp_node': {'checkpoint': 'COPY', 'device': 'cpu'},
      'execution_node': {'robot': 'fr3', 'backend': 'sim'}}),
])
def test_launch_arguments_reach_the_nodes_parameters(launch_file, args, expected, tmp_path,
                                                     ros_domain):
    _require_launch()
    import shutil

    import rclpy

    from zerograsp_ros.resources import default_checkpoint

    copy = tmp_path / 'my_checkpoint.pt'       # not the default: the argument must win
    shutil.copy(default_checkpoint(), copy)
    args = {k: (str(copy) if v == 'COPY' else v) for k, v in args.items()}
    launched = _Launch(launch_file, args, tmp_path / 'launch.log')
    rclpy.init()
    try:
        node = rclpy.create_node('launch_parameter_probe')
        for node_name, values in expected.items():
            values = {k: (str(copy) if v == 'COPY' else v) for k, v in values.items()}
            got = _parameters(node, node_name, list(values))
            assert got == values, f'{node_name}: {got} != {values}\n{launched.output()[-3000:]}'
        from zerograsp_ros.srv import PickObject, PredictGrasps, RefineGrasps

        services = [(PredictGrasps, '/predict_grasps'), (RefineGrasps, '/refine_grasps')]
        if launch_file == 'pick_scene.launch.py':
            services.append((PickObject, '/pick'))
        for srv, name in services:
            assert node.create_client(srv, name).wait_for_service(timeout_sec=120.0), name
        if launch_file == 'perception.launch.py':   # replay frames reach /predict_grasps
            client = node.create_client(PredictGrasps, '/predict_grasps')
            assert client.wait_for_service(timeout_sec=120.0)
            response = _predict_until(node, client, 120)
            assert response.success, response.message
            _kill_and_wait_for_respawn(node, launched)
        node.destroy_node()
    finally:
        rclpy.shutdown()
        launched.stop()


def _kill_and_wait_for_respawn(node, launched):
    """SIGKILL grasp_node (what the OOM killer does); launch respawns it.

    /predict_grasps answers again without anyone doing anything.
    """
    import re
    import signal
    import time

    import rclpy

    from zerograsp_ros.srv import PredictGrasps

    pids = re.findall(r'\[grasp_node-\d+\]: process started with pid \[(\d+)\]',
                      launched.output())
    os.kill(int(pids[-1]), signal.SIGKILL)
    client = node.create_client(PredictGrasps, '/predict_grasps')
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        started = re.findall(r'\[grasp_node-\d+\]: process started with pid \[(\d+)\]',
                             launched.output())
        if len(started) > len(pids) and client.wait_for_service(timeout_sec=1.0):
            future = client.call_async(PredictGrasps.Request(refine=False))
            rclpy.spin_until_future_complete(node, future, timeout_sec=120.0)
            if future.result() is not None and future.result().success:
                return
        time.sleep(1.0)
    pytest.fail(f'grasp_node was not respawned:\n{launched.output()[-3000:]}')


@pytest.mark.ros
def test_launch_with_a_missing_checkpoint_stops_with_its_path(tmp_path, ros_domain):
    """checkpoint:=/nonexistent.pt used to load the default checkpoint instead."""
    _require_launch()
    replay = str(REPO / 'samples' / 'tabletop')
    launched = _Launch('perception.launch.py',
                       {'camera_source': 'replay', 'replay_dir': replay,
                        'checkpoint': str(tmp_path / 'nonexistent.pt'), 'device': 'cpu'},
                       tmp_path / 'launch.log')
    try:
        code = launched.wait(240)
        out = launched.output()
        assert code is not None, f'still running with a missing checkpoint:\n{out[-3000:]}'
        assert f"cannot start: checkpoint {tmp_path / 'nonexistent.pt'} does not exist" in out, out
        assert 'exit code 78' in out and 'shutting down launched system' in out, out
        assert out.count('[GraspNode] cannot start') == 1, 'respawned a node that cannot start'
    finally:
        launched.stop()


@pytest.mark.ros
def test_launch_without_rviz2_starts_nothing_and_says_why(tmp_path, ros_domain):
    """rviz:=true without rviz2 left the 7 node processes running after launch exited."""
    _require_launch()
    from zerograsp_ros.nodes.graph import missing_packages

    if not missing_packages(['rviz2']):
        pytest.skip('rviz2 is installed here')
    launched = _Launch('pick_scene.launch.py', {'rviz': 'true', 'device': 'cpu'},
                       tmp_path / 'launch.log')
    try:
        assert launched.wait(120) not in (None, 0), launched.output()[-3000:]
        out = launched.output()
        assert "'rviz2'" in out and 'nothing was started' in out and 'rviz:=false' in out, out
        assert 'process started' not in out, out
    finally:
        launched.stop()
