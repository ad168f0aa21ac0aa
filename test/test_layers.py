"""The package's layers point down, and no module grows past one concept's size.

Every module of zerograsp_ros/ is parsed with `ast` (imports inside functions
count too): a layer may import only its own or lower layers, only nodes/ imports
rclpy, the ROS message packages or zerograsp_ros.msg/.srv, and the declared edge
adapter imports its robot-PC packages.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'zerograsp_ros'

# Bottom to top. A module's layer is its subpackage (or, at the top level, its name).
LAYERS = (
    ('__init__', 'errors', 'runtime', 'resources'),
    ('geometry',),
    ('grasp',),
    ('model',),
    ('perception',),
    ('sim', 'data'),        # data generates from sim scenes; sim's baselines use data's judge
    ('training', 'execution'),
    ('nodes', 'msg', 'srv'),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
# ROS (and robot-PC) packages: nodes/ only, or the declared adapter that wraps them.
ROS_PACKAGES = {'rclpy', 'rcl_interfaces', 'builtin_interfaces', 'std_msgs', 'geometry_msgs',
                'sensor_msgs', 'shape_msgs', 'visualization_msgs', 'action_msgs', 'launch',
                'launch_ros', 'moveit', 'moveit_msgs', 'control_msgs', 'tf2_ros', 'cv_bridge',
                'realsense2_camera'}
ADAPTERS = {'execution/moveit_backend.py'}   # imports them inside load_moveit_api() etc.
MAX_LINES = 600
# Modules known to be over MAX_LINES while being split by concept (none now).
OVERSIZED: set[str] = set()


def modules():
    return sorted(PACKAGE.rglob('*.py'))


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else parts[0][:-3]


def imports(path: Path):
    """(line, module) of every import in the file, relative imports resolved."""
    package = ['zerograsp_ros', *path.relative_to(PACKAGE).parts[:-1]]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            module = '.'.join(base + ([node.module] if node.module else []))
            yield node.lineno, module
            if module in ('zerograsp_ros', '.'.join(package)) or not node.module:
                for alias in node.names:   # `from zerograsp_ros import msg` imports a module
                    yield node.lineno, f'{module}.{alias.name}'


def test_layer_table_covers_every_subpackage():
    missing = sorted({layer_of(p) for p in modules()} - set(RANK))
    assert not missing, f'add {missing} to LAYERS in {Path(__file__).name}'


def upward_imports(path: Path) -> list[str]:
    rel = path.relative_to(PACKAGE).as_posix()
    layer = layer_of(path)
    found = []
    for line, module in imports(path):
        top = module.split('.')[0]
        if top == 'zerograsp_ros' and '.' in module:
            target = module.split('.')[1]
            if target in RANK and RANK[target] > RANK[layer]:
                found.append(f'{rel}:{line} imports {module} (layer {target!r} is above '
                             f'{layer!r})')
        elif top in ROS_PACKAGES and layer != 'nodes' and rel not in ADAPTERS:
            found.append(f'{rel}:{line} imports {module} (ROS belongs in nodes/)')
    return found


def test_imports_point_down():
    found = [hit for path in modules() for hit in upward_imports(path)]
    assert not found, 'upward imports:\n' + '\n'.join(found)


@pytest.mark.parametrize('source, expected', [
    ('import rclpy\n', 'ROS belongs in nodes/'),
    ('def f():\n    from zerograsp_ros.nodes.conversions import make_header\n', "'nodes'"),
    ('from ..perception import pipeline\n', "'perception' is above 'model'"),
    ('from zerograsp_ros.srv import SimGripper\n', "'srv'"),
    ('from zerograsp_ros import nodes\n', "'nodes'"),
])
def test_the_check_finds_upward_imports(tmp_path, monkeypatch, source, expected):
    fake_package = tmp_path / 'zerograsp_ros'
    (fake_package / 'model').mkdir(parents=True)
    module = fake_package / 'model' / 'bad.py'
    module.write_text(source)
    monkeypatch.setitem(globals(), 'PACKAGE', fake_package)
    found = upward_imports(module)
    assert found and expected in found[0], found


def test_no_module_over_600_lines():
    sizes = {p.relative_to(PACKAGE).as_posix(): len(p.read_text().splitlines())
             for p in modules()}
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES and name not in OVERSIZED}
    assert not too_long, f'modules over {MAX_LINES} lines (split them by concept): {too_long}'
    done = {name for name in OVERSIZED if sizes.get(name, 0) <= MAX_LINES}
    assert not done, f'{done} fit now: remove them from OVERSIZED'
