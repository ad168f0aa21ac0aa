"""The real cell's description and configuration, checked with the real `xacro`.

urdf/zerograsp_cell.urdf.xacro and .srdf.xacro are expanded by xacro (PyPI) against
the stand-ins in test/fixtures/upstream/ (TEST FIXTURES that keep the upstream file
paths, macro, argument, link and joint names), then every name the presets, the SRDF,
the touch links and the controller configs use is looked up in the result.
"""
import dataclasses
from pathlib import Path
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from scipy.spatial.transform import Rotation
import yaml

from zerograsp_ros.errors import InputError
from zerograsp_ros.execution.cell import (
    GRIPPER_CONTROLLER_TYPES,
    cell_config,
    check_cell_controllers,
    check_robot_ip,
    load_controller_config,
)
from zerograsp_ros.execution.robot import load_robot_preset

xacro = pytest.importorskip('xacro', reason='xacro (PyPI, requirements/dev.txt) is not '
                                            'installed: pip install xacro')

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / 'test' / 'fixtures' / 'upstream'
PRESETS = ('fr3', 'panda')


@pytest.fixture(scope='module')
def ament_prefix(tmp_path_factory):
    """An ament prefix whose upstream packages are the stand-ins, zerograsp_ros this tree."""
    import os

    prefix = tmp_path_factory.mktemp('ament_prefix')
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True)
    packages = {p.name: p for p in FIXTURES.iterdir() if p.is_dir()}
    packages['zerograsp_ros'] = REPO
    for name, path in packages.items():
        (prefix / 'share' / name).symlink_to(path)
        (index / name).touch()
    old = os.environ.get('AMENT_PREFIX_PATH')
    os.environ['AMENT_PREFIX_PATH'] = os.pathsep.join([str(prefix)] + ([old] if old else []))
    yield prefix
    if old is None:
        os.environ.pop('AMENT_PREFIX_PATH')
    else:
        os.environ['AMENT_PREFIX_PATH'] = old


def expand(path: Path, mappings: dict) -> ET.Element:
    doc = xacro.process_file(str(path), mappings={k: str(v) for k, v in mappings.items()})
    return ET.fromstring(doc.toxml())


def urdf_for(preset_name: str, fake=False, robot_ip='172.16.0.2') -> tuple:
    preset = load_robot_preset(preset_name)
    cfg = cell_config(preset)
    desc = cfg.files['description']
    assert desc.package == 'zerograsp_ros'
    root = expand(REPO / desc.file, cfg.description_mappings(robot_ip, fake))
    return preset, cfg, root


def links_and_joints(root):
    links = {e.get('name') for e in root.findall('link')}
    joints = {e.get('name'): e for e in root.findall('joint')}
    return links, joints


def chain_to(joints, link):
    """Joints from the root down to `link` (child -> joint map walk)."""
    by_child = {j.find('child').get('link'): j for j in joints.values()}
    chain = []
    while link in by_child:
        joint = by_child[link]
        chain.append(joint)
        link = joint.find('parent').get('link')
    return list(reversed(chain)), link


def origin_matrix(joint) -> np.ndarray:
    T = np.eye(4)
    origin = joint.find('origin')
    if origin is not None:
        T[:3, :3] = Rotation.from_euler('xyz', [float(v) for v in
                                               origin.get('rpy', '0 0 0').split()]).as_matrix()
        T[:3, 3] = [float(v) for v in origin.get('xyz', '0 0 0').split()]
    return T


@pytest.mark.parametrize('name', PRESETS)
def test_combined_description_is_one_tree_with_every_link_the_preset_names(ament_prefix, name):
    preset, cfg, root = urdf_for(name)
    links, joints = links_and_joints(root)
    for joint in joints.values():
        assert joint.find('parent').get('link') in links, joint.get('name')
        assert joint.find('child').get('link') in links, joint.get('name')
    children = [j.find('child').get('link') for j in joints.values()]
    assert len(children) == len(set(children)), 'a link with two parents'
    roots = links - set(children)
    assert roots == {'base'}, f'expected the single root "base", got {roots}'
    t = cfg.robot_type
    assert not {f'{t}_hand', f'{t}_hand_tcp'} & links, 'the Franka hand must not be loaded'
    for link in (preset.base_frame, preset.flange_link, preset.tcp_link, *preset.touch_links):
        assert link in links, f'{name}: preset link {link!r} is not in the description'
    assert not [li for li in links if li.startswith('robotiq_') and
                not li.startswith('robotiq_85_')], 'upstream names every gripper link robotiq_85_*'
    assert preset.gripper.joint_name in joints
    # TCP: base -> ... -> flange -> adapter -> robotiq_85_base_link -> TCP.
    chain, top = chain_to(joints, preset.tcp_link)
    names = [j.find('child').get('link') for j in chain]
    assert top == 'base'
    i = names.index(preset.flange_link)
    assert names[i + 1:] == [f'{t}_robotiq_adapter', 'robotiq_85_base_link', preset.tcp_link]
    T = np.eye(4)
    for joint in chain[i + 1:]:
        T = T @ origin_matrix(joint)
    np.testing.assert_allclose(T[:3, 3], preset.tcp_offset_xyz, atol=1e-9)
    np.testing.assert_allclose(T[:3, 0], [0, 0, 1], atol=1e-9)          # approach = flange z
    # Closing (TCP y) = the gripper base's x axis, along which its knuckles sit.
    knuckle = joints[preset.gripper.joint_name].find('origin').get('xyz').split()
    assert abs(float(knuckle[0])) > 0.02 and float(knuckle[1]) == 0.0
    T_flange_base = origin_matrix(chain[i + 1]) @ origin_matrix(chain[i + 2])
    np.testing.assert_allclose(T[:3, 1], T_flange_base[:3, 0], atol=1e-9)
    assert preset.grasp_to_tcp_rpy == (0.0, 0.0, 0.0)


@pytest.mark.parametrize('fake', [False, True])
def test_one_ros2_control_system_per_device_with_the_right_plugins(ament_prefix, fake):
    preset, cfg, root = urdf_for('fr3', fake=fake, robot_ip='172.16.0.2')
    systems = {s.get('name'): s for s in root.findall('ros2_control')}
    assert set(systems) == {'FrankaHardwareInterface', 'RobotiqGripperHardwareInterface'}
    arm, grip = systems['FrankaHardwareInterface'], systems['RobotiqGripperHardwareInterface']
    plugins = (arm.find('hardware/plugin').text, grip.find('hardware/plugin').text)
    if fake:
        assert plugins == ('mock_components/GenericSystem',) * 2
    else:
        assert plugins == ('franka_hardware/FrankaHardwareInterface',
                           'robotiq_driver/RobotiqGripperHardwareInterface')
        params = {p.get('name'): p.text for p in arm.findall('hardware/param')}
        assert params['robot_ip'] == '172.16.0.2'
    assert [j.get('name') for j in grip.findall('joint')] == [preset.gripper.joint_name]
    assert [j.get('name') for j in arm.findall('joint')] == [f'fr3_joint{i}' for i in range(1, 8)]


@pytest.mark.parametrize('name', PRESETS)
def test_srdf_names_only_links_and_joints_of_the_description(ament_prefix, name):
    preset, cfg, urdf = urdf_for(name)
    links, joints = links_and_joints(urdf)
    srdf = expand(REPO / cfg.files['semantic'].file, cfg.semantic_mappings())
    groups = {g.get('name'): g for g in srdf.findall('group')}
    assert preset.planning_group in groups
    chain = groups[preset.planning_group].find('chain')
    assert (chain.get('base_link'), chain.get('tip_link')) == (preset.base_frame,
                                                              preset.flange_link)
    pairs = {(d.get('link1'), d.get('link2')) for d in srdf.findall('disable_collisions')}
    for a, b in pairs:
        assert a in links and b in links, f'disable_collisions names {a}/{b}'
    touch = list(preset.touch_links)
    for i, a in enumerate(touch):                 # every gripper link pair may touch
        for b in touch[i + 1:]:
            assert (a, b) in pairs or (b, a) in pairs, (a, b)
    adapter = f'{cfg.robot_type}_robotiq_adapter'
    assert (adapter, preset.flange_link) in pairs and (adapter, 'robotiq_85_base_link') in pairs
    for group in groups.values():
        for joint in group.findall('joint'):
            assert joint.get('name') in joints
        for link in group.findall('link'):
            assert link.get('name') in links
    for state in srdf.findall('group_state'):
        assert state.get('group') in groups
        assert all(j.get('name') in joints for j in state.findall('joint'))
    (eef,) = srdf.findall('end_effector')
    assert eef.get('parent_link') in links and eef.get('group') in groups
    assert eef.get('parent_group') == preset.planning_group
    (virtual,) = srdf.findall('virtual_joint')
    assert virtual.get('child_link') == 'base'
    assert not [p for p in pairs if 'hand' in p[0] + p[1]], 'no Franka hand in this cell'


@pytest.mark.parametrize('name', PRESETS)
def test_controller_configs_name_description_joints_and_match_the_gripper_action(ament_prefix,
                                                                                 name):
    preset, cfg, urdf = urdf_for(name)
    links, joints = links_and_joints(urdf)
    controlled = {j.get('name') for s in urdf.findall('ros2_control') for j in s.findall('joint')}
    path = REPO / cfg.files['ros2_controllers'].file
    controllers = load_controller_config(path.read_text(), str(path))
    check_cell_controllers(preset, cfg, controllers)   # raises on a mismatch
    arm = controllers[f'{cfg.robot_type}_arm_controller']
    assert arm['joints'] == [f'{cfg.robot_type}_joint{i}' for i in range(1, 8)]
    assert set(arm['joints']) <= controlled and set(arm['gains']) == set(arm['joints'])
    assert controllers['robotiq_gripper_controller']['joint'] in controlled
    moveit = yaml.safe_load((REPO / cfg.files['moveit_controllers'].file).read_text())
    simple = moveit['moveit_simple_controller_manager']
    assert simple['controller_names'] == [f'{cfg.robot_type}_arm_controller']
    assert simple[f'{cfg.robot_type}_arm_controller']['joints'] == arm['joints']
    for key in ('kinematics', 'joint_limits'):   # upstream files: their stand-ins here
        f = cfg.files[key]
        share = REPO if f.package == 'zerograsp_ros' else FIXTURES / f.package
        data = yaml.safe_load((share / f.file).read_text())
        if key == 'kinematics':
            assert preset.planning_group in data
        else:
            assert set(arm['joints']) <= set(data['joint_limits']), 'Pilz needs every arm joint'
            assert all(v['has_acceleration_limits'] for k, v in data['joint_limits'].items()
                       if k in arm['joints'])


def test_a_gripper_action_that_its_controller_does_not_serve_fails():
    preset = load_robot_preset('fr3')
    cfg = cell_config(preset)
    text = (REPO / cfg.files['ros2_controllers'].file).read_text()
    controllers = load_controller_config(text)
    humble = dataclasses.replace(preset, gripper=dataclasses.replace(
        preset.gripper, action_type='GripperCommand'))
    with pytest.raises(InputError, match='GripperCommand does not match.*'
                                         'parallel_gripper_action_controller.*serves '
                                         'ParallelGripperCommand'):
        check_cell_controllers(humble, cfg, controllers)
    # ... and the Humble controller type makes GripperCommand right again.
    swapped = load_controller_config(text.replace(
        'parallel_gripper_action_controller/GripperActionController',
        'position_controllers/GripperActionController'))
    check_cell_controllers(humble, cfg, swapped)
    with pytest.raises(InputError, match='does not match'):
        check_cell_controllers(preset, cfg, swapped)
    renamed = dataclasses.replace(preset, gripper=dataclasses.replace(
        preset.gripper, action_name='/gripper_controller/gripper_cmd'))
    with pytest.raises(InputError, match="no controller 'gripper_controller'"):
        check_cell_controllers(renamed, cfg, controllers)
    assert set(GRIPPER_CONTROLLER_TYPES) == {'GripperCommand', 'ParallelGripperCommand'}


def test_robot_ip_is_required_for_the_real_arm_and_the_panda_needs_fake_hardware():
    fr3 = load_robot_preset('fr3')
    cfg = cell_config(fr3)
    with pytest.raises(InputError, match='robot_ip is required.*use_fake_hardware:=true'):
        check_robot_ip(fr3, cfg, '', use_fake_hardware=False)
    check_robot_ip(fr3, cfg, '172.16.0.2', use_fake_hardware=False)
    check_robot_ip(fr3, cfg, '', use_fake_hardware=True)
    panda = load_robot_preset('panda')
    with pytest.raises(InputError, match='not supported.*multipanda_ros2.*use_fake_hardware'):
        check_robot_ip(panda, cell_config(panda), '172.16.0.2', use_fake_hardware=False)
    no_cell = dataclasses.replace(fr3, cell={})
    with pytest.raises(InputError, match='no `cell` section'):
        cell_config(no_cell)
    wrong = dataclasses.replace(fr3, planning_group='panda_arm')
    with pytest.raises(InputError, match="not a group of robot_type 'fr3'"):
        cell_config(wrong)


def test_no_shipped_file_uses_the_old_robotiq_link_names():
    """robotiq_description names its links robotiq_85_*; `robotiq_base_link` does not exist."""
    shipped = [*REPO.glob('urdf/*.xacro'), *REPO.glob('config/**/*.yaml'),
               REPO / 'urdf' / 'README.md', *REPO.glob('zerograsp_ros/execution/*.py')]
    for path in shipped:
        text = path.read_text()
        for old in ('robotiq_base_link', '"left_knuckle_link', ' left_finger_tip_link'):
            assert old not in text, f'{path.relative_to(REPO)} uses {old.strip(chr(34))}'


@pytest.mark.parametrize('name', PRESETS)
def test_every_cell_file_resolves_and_the_execution_node_gets_moveit_parameters(ament_prefix,
                                                                                name):
    from zerograsp_ros.nodes.graph import pick_scene_nodes
    from zerograsp_ros.nodes.real_cell import resolve_cell, with_moveit_parameters
    preset, cfg, files = resolve_cell(name)
    assert all(p.is_file() for p in files.values()) and set(files) == set(cfg.files)
    assert files['kinematics'].parts[-3:-1] == (
        ('franka_fr3_moveit_config', 'config') if name == 'fr3' else ('config', 'cell'))
    specs = with_moveit_parameters(pick_scene_nodes(False, name), {'robot_description': '<x/>',
                                                                  'robot': 'ignored'})
    execution = [s for s in specs if s.name == 'execution_node'][0]
    assert execution.parameters['robot_description'] == '<x/>'
    assert execution.parameters['robot'] == name           # its own values win
    assert all('robot_description' not in s.parameters for s in specs if s is not execution)


def test_real_cell_launch_gives_every_node_its_parameters(ament_prefix):
    """With launch_ros and moveit_configs_utils (robot PC, or the scratch check in the README)."""
    for module in ('launch_ros', 'moveit_configs_utils'):
        try:
            __import__(module)
        except ImportError:
            pytest.skip(f'{module} is not installed here (robot PC only): the real-cell launch '
                        'actions are checked there and in the scratch launch env')
    from zerograsp_ros.nodes.graph import pick_scene_nodes
    from zerograsp_ros.nodes.real_cell import real_cell_launch
    with pytest.raises(InputError, match='robot_ip is required'):
        real_cell_launch('fr3', '', False, pick_scene_nodes(False, 'fr3'))
    actions, specs = real_cell_launch('fr3', '', True, pick_scene_nodes(False, 'fr3'))
    execution = [s for s in specs if s.name == 'execution_node'][0]
    params = execution.parameters
    assert 'fr3_robotiq_tcp' in params['robot_description']
    assert '<group name="fr3_arm">' in params['robot_description_semantic']
    assert params['planning_pipelines'] == ['ompl', 'pilz_industrial_motion_planner']
    assert 'cartesian_limits' in params['robot_description_planning']
    assert params['robot_description_kinematics']['fr3_arm']
    assert len(actions) == 3
