"""The package foundation: generated interfaces, a DDS round trip, installed executables."""
import os
from pathlib import Path
import re
import subprocess
import sys
import time

import pytest

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / '.ws' / 'install' / 'zerograsp_ros'


def _cmake_list(name: str) -> list[str]:
    text = (REPO / 'CMakeLists.txt').read_text()
    block = re.search(rf'set\({name}\s+(.*?)\)', text, re.S).group(1)
    return block.split()


@pytest.mark.ros
def test_generated_interfaces_import_with_documented_defaults():
    from zerograsp_ros.msg import (
        Grasp,
        GraspArray,
        InstanceMasks,
        ObjectReconstruction,
        RGBDFrame,
        SceneReconstruction,
    )
    from zerograsp_ros.srv import PickObject, PredictGrasps, RefineGrasps

    assert {f for f in Grasp.get_fields_and_field_types()} == {
        'pose', 'width', 'depth', 'score', 'quality', 'graspness', 'object_id'}
    assert GraspArray.get_fields_and_field_types()['grasps'] == 'sequence<zerograsp_ros/Grasp>'
    assert RGBDFrame.get_fields_and_field_types()['depth'] == 'sensor_msgs/Image'
    assert InstanceMasks.get_fields_and_field_types()['object_ids'] == 'sequence<int32>'
    assert ObjectReconstruction.get_fields_and_field_types()['mesh'] == 'shape_msgs/Mesh'
    assert 'objects' in SceneReconstruction.get_fields_and_field_types()
    req = PredictGrasps.Request()
    assert req.refine is True and req.allow_unrefined is False and req.max_grasps == 0
    assert 'stage_seconds' in PredictGrasps.Response.get_fields_and_field_types()
    assert RefineGrasps.Response.get_fields_and_field_types()['rejection_counts'] == \
        'sequence<uint32>'
    assert PickObject.Request().object_id == -1 and PickObject.Request().dry_run is False


@pytest.mark.ros
def test_predict_grasps_round_trip_between_two_processes(ros_domain):
    """Every request field reaches a server in another process; every response field returns."""
    import rclpy
    from rclpy.serialization import deserialize_message
    sys.path.insert(0, str(Path(__file__).parent))
    from support.interface_samples import make_predict_request, make_predict_response

    from zerograsp_ros.srv import PredictGrasps

    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / 'support' / 'predict_echo_server.py')],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    try:
        assert server.stdout.readline().strip() == 'READY'
        rclpy.init()
        node = rclpy.create_node('predict_round_trip_client')
        client = node.create_client(PredictGrasps, 'predict_grasps')
        assert client.wait_for_service(timeout_sec=20.0), 'server process never appeared on DDS'
        for seed in (0, 1):
            request = make_predict_request(seed)
            future = client.call_async(request)
            deadline = time.monotonic() + 20.0
            while not future.done() and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.1)
            assert future.done(), 'no response within 20 s'
            response = future.result()
            expected = make_predict_response(seed)
            text, received_hex = response.message.rsplit(' ', 1)
            received = deserialize_message(bytes.fromhex(received_hex), PredictGrasps.Request)
            # Message equality compares every field (CDR bytes may differ in padding).
            for field in request.get_fields_and_field_types():
                assert getattr(received, field) == getattr(request, field), \
                    f'request field {field} arrived altered'
            assert text == expected.message
            expected.message = response.message
            for field in expected.get_fields_and_field_types():
                assert getattr(response, field) == getattr(expected, field), \
                    f'response field {field} arrived altered'
            assert response.grasps.grasps[3].object_id == expected.grasps.grasps[3].object_id
            assert list(response.reconstruction.objects[1].mesh.triangles[1].vertex_indices) \
                == [1, 2, 3]
        node.destroy_node()
        rclpy.shutdown()
    finally:
        # The round trip is the subject here; a slow rclpy shutdown is not.
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def test_every_node_module_exists_with_a_main():
    """Each executable CMake installs imports a real module with main()."""
    for node in _cmake_list('ZEROGRASP_NODES'):
        path = REPO / 'zerograsp_ros' / 'nodes' / f'{node}.py'
        assert path.is_file(), f'executable {node} has no module {path}'
        assert re.search(r'^def main\(', path.read_text(), re.M), f'{path} lacks main()'


@pytest.mark.ros
def test_executables_installed_where_ros2_run_looks():
    libdir = INSTALL / 'lib' / 'zerograsp_ros'
    if not libdir.is_dir():
        pytest.skip(f'no colcon install space at {INSTALL}; run scripts/setup.sh')
    for node in _cmake_list('ZEROGRASP_NODES'):
        exe = libdir / node
        assert exe.is_file() and os.access(exe, os.X_OK), f'{exe} missing or not executable'
        first = exe.read_text().splitlines()[0]
        assert first.startswith('#!') and Path(first[2:]).exists(), f'bad interpreter in {exe}'
    # ament index entry: `ros2 run` and `ros2 pkg` find the package through it.
    assert (INSTALL / 'share' / 'ament_index' / 'resource_index' / 'packages'
            / 'zerograsp_ros').is_file()
    assert (INSTALL / 'share' / 'zerograsp_ros' / 'package.xml').is_file()


def test_package_xml_is_a_valid_ament_cmake_package():
    import xml.etree.ElementTree as ET
    root = ET.parse(REPO / 'package.xml').getroot()
    assert root.get('format') == '3' and root.findtext('name') == 'zerograsp_ros'
    assert root.find('export/build_type').text == 'ament_cmake'
    deps = {e.text for e in root if e.tag.endswith('depend')}
    assert {'rosidl_default_generators', 'rclpy', 'sensor_msgs', 'shape_msgs'} <= deps
    assert root.findtext('member_of_group') == 'rosidl_interface_packages'
