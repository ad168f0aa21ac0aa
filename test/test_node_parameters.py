"""The config files and the nodes' parameter tables (nodes/common.Param) agree.

A key in a config file that no node declares is silently ignored by ROS, and a
declared parameter missing from the file is a default nobody can see: both fail here,
as does a value whose type the declared default would refuse at start-up.
"""
from importlib import import_module
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.ros

CONFIG = Path(__file__).resolve().parents[1] / 'config'
PERCEPTION_NODES = ('camera_node', 'segmentation_node', 'grasp_node', 'refinement_node',
                    'visualization_node', 'web_view')


def table(node: str) -> dict:
    return {p.name: p for p in import_module(f'zerograsp_ros.nodes.{node}').PARAMETERS}


def flatten(section: dict, prefix: str = '') -> dict:
    out = {}
    for key, value in section.items():
        if isinstance(value, dict):
            out.update(flatten(value, f'{prefix}{key}.'))
        else:
            out[f'{prefix}{key}'] = value
    return out


def type_problem(name: str, default, value) -> str | None:
    """Why ROS would refuse `value` for a parameter declared with `default`, else None."""
    from rclpy.parameter import Parameter

    from zerograsp_ros.nodes.common import FROM_CONFIG

    if default is FROM_CONFIG:
        return None
    if default is Parameter.Type.DOUBLE_ARRAY:
        default = [0.0]
    if isinstance(default, list):
        if not isinstance(value, list) or not value or \
                {type(v) for v in value} != {type(default[0])}:
            return f'{name}: {value!r} is not a list of {type(default[0]).__name__}'
        return None
    if type(value) is not type(default):
        return f'{name}: {value!r} is a {type(value).__name__}, declared {type(default).__name__}'
    return None


def perception_sections() -> dict:
    data = yaml.safe_load((CONFIG / 'perception.yaml').read_text())
    return {node: flatten(section.get('ros__parameters') or {}) for node, section in data.items()}


def test_every_key_of_perception_yaml_is_declared_by_its_node():
    sections = perception_sections()
    shared = sections.pop('/**')
    assert set(sections) <= set(PERCEPTION_NODES), set(sections) - set(PERCEPTION_NODES)
    problems = []
    for node in PERCEPTION_NODES:
        params = table(node)
        for key, value in sections.get(node, {}).items():
            if key not in params:
                problems.append(f'{node}: {key} is not a parameter of the node')
            else:
                problems.append(type_problem(f'{node}.{key}', params[key].default, value))
    for key, value in shared.items():
        declaring = [node for node in PERCEPTION_NODES if key in table(node)]
        if not declaring:
            problems.append(f'/**: {key} is declared by no node')
        problems += [type_problem(f'/**.{key}', table(node)[key].default, value)
                     for node in declaring]
    problems = [p for p in problems if p]
    assert not problems, '\n'.join(problems)


def test_every_declared_parameter_has_its_value_in_perception_yaml():
    sections = perception_sections()
    shared = set(sections.pop('/**'))
    missing = [f'{node}: {name}' for node in PERCEPTION_NODES for name in table(node)
               if name not in shared and name not in sections.get(node, {})]
    assert not missing, 'add to config/perception.yaml:\n' + '\n'.join(missing)


@pytest.mark.parametrize('node, path', [('execution_node', 'execution.yaml'),
                                        ('sim_cell_node', 'sim_cell.yaml')])
def test_nodes_with_defaults_in_their_file_declare_exactly_its_keys(node, path):
    data = yaml.safe_load((CONFIG / path).read_text())[node]['ros__parameters']
    assert set(table(node)) == set(data), (set(table(node)) ^ set(data))


def test_the_type_check_finds_mismatches():
    assert type_problem('a', 0.02, 0) and type_problem('b', True, 'yes')
    assert type_problem('c', [0.0], [1, 2]) and not type_problem('d', [0.0], [1.0, 2.0])
    assert not type_problem('e', 3, 4)
