"""What every node shares: topic names, QoS profiles and the one way to declare parameters."""
from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
import math
from typing import Any, Callable, Iterable

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

from zerograsp_ros.errors import InputError

# Relative names: a namespace given at launch prefixes them all.
RGBD_FRAME_TOPIC = 'zerograsp/rgbd_frame'
INSTANCE_MASKS_TOPIC = 'zerograsp/instance_masks'
GRASPS_TOPIC = 'zerograsp/grasps'
RECONSTRUCTION_TOPIC = 'zerograsp/reconstruction'
MARKERS_TOPIC = 'zerograsp/markers'
RECONSTRUCTION_CLOUD_TOPIC = 'zerograsp/reconstruction_cloud'
# The grasp /pick is executing, in the prediction's frame (empty array: none).
EXECUTED_GRASP_TOPIC = 'zerograsp/executed_grasp'
PREDICT_SERVICE = 'predict_grasps'
REFINE_SERVICE = 'refine_grasps'

# Camera images: best effort matches both reliable and best-effort publishers.
SENSOR_QOS = qos_profile_sensor_data
# Frames and masks between our nodes: reliable, only the newest matters.
FRAME_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2,
                       reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
# Results and markers: a late subscriber (RViz) still gets the last message.
LATCHED_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


# --------------------------------------------------------------------------- parameters
# One way to declare a node's parameters: a table of Param rows (module level, so
# tests read it without starting the node), declared up front by declare_params.

FROM_CONFIG = object()   # Param default: the value in the node's own config file


@dataclass(frozen=True)
class Param:
    """One node parameter: its name, default, description and the check it must pass."""

    name: str
    default: Any
    description: str
    check: Callable[[Any], bool] | None = None
    requirement: str = ''              # what the check demands, for the error message
    convert: Callable[[Any], Any] | None = None   # declared value -> what the node uses


def declare_params(node: Node, params: Iterable[Param], defaults: dict | None = None) -> dict:
    """Declare every parameter with its description, read and check it; values by name.

    A FROM_CONFIG default is taken from `defaults` (the node's config file). A failing
    check raises InputError naming the parameter, the value and the requirement, so a
    bad YAML stops the node at start-up.
    """
    values = {}
    for p in params:
        default = p.default
        if default is FROM_CONFIG:
            if defaults is None or p.name not in defaults:
                raise InputError(f"parameter '{p.name}' of node '{node.get_name()}' has no "
                                 'default in its config file')
            default = defaults[p.name]
        value = node.declare_parameter(p.name, default,
                                       ParameterDescriptor(description=p.description)).value
        if p.check is not None and not p.check(value):
            raise InputError(f"parameter '{p.name}' of node '{node.get_name()}' = {value!r} is "
                             f'invalid: {p.requirement or p.description}')
        values[p.name] = p.convert(value) if p.convert is not None else value
    return values


def group(values: dict, prefix: str) -> dict:
    """The values '<prefix>.<field>' as {field: value} (e.g. a config dataclass's kwargs)."""
    return {k[len(prefix) + 1:]: v for k, v in values.items() if k.startswith(prefix + '.')}


def _optional_floats(value):
    return None if value is None or len(value) == 0 else tuple(float(x) for x in value)


def dataclass_params(prefix: str, instance, what: str) -> tuple[Param, ...]:
    """One Param '<prefix>.<field>' per field of a config dataclass, defaults from `instance`.

    A None or tuple field becomes a float array parameter (empty = None).
    """
    assert is_dataclass(instance)
    params = []
    for f in fields(instance):
        default = getattr(instance, f.name)
        if default is None or isinstance(default, (tuple, list)):
            params.append(Param(f'{prefix}.{f.name}',
                                [float(x) for x in default] if default
                                else Parameter.Type.DOUBLE_ARRAY,
                                f'{what}: {f.name}', convert=_optional_floats))
        else:
            params.append(Param(f'{prefix}.{f.name}', default, f'{what}: {f.name}'))
    return tuple(params)


def positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def non_negative(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v >= 0


def at_least_one(v) -> bool:
    return isinstance(v, int) and v >= 1


def is_device(v) -> bool:
    return isinstance(v, str) and (v in ('auto', 'cpu') or v.startswith('cuda'))
