"""What every perception node shares: topic names, QoS profiles, parameter declaration."""
from __future__ import annotations

from dataclasses import fields, is_dataclass
import math

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


def declare(node: Node, name: str, default, description: str, check=None,
            requirement: str = ''):
    """Declare a parameter with its description, read it and validate it.

    check(value) -> bool; a failing check raises InputError naming the parameter, the
    value and the requirement, so a bad YAML stops the node at start-up.
    """
    value = node.declare_parameter(
        name, default, ParameterDescriptor(description=description)).value
    if check is not None and not check(value):
        raise InputError(f"parameter '{name}' of node '{node.get_name()}' = {value!r} is "
                         f'invalid: {requirement or description}')
    return value


def positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def non_negative(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v >= 0


def declare_dataclass(node: Node, prefix: str, instance, what: str) -> dict:
    """Declare one parameter '<prefix>.<field>' per field of a config dataclass.

    Defaults come from the instance; a None or tuple field becomes a float array
    parameter (unset = None). Returns the values as keyword arguments of the dataclass.
    """
    assert is_dataclass(instance)
    values = {}
    for f in fields(instance):
        default = getattr(instance, f.name)
        name = f'{prefix}.{f.name}'
        descriptor = ParameterDescriptor(description=f'{what}: {f.name}')
        if default is None or isinstance(default, (tuple, list)):
            value = node.declare_parameter(
                name, [float(x) for x in default] if default else Parameter.Type.DOUBLE_ARRAY,
                descriptor).value
            values[f.name] = None if value is None or len(value) == 0 else \
                tuple(float(x) for x in value)
        else:
            values[f.name] = node.declare_parameter(name, default, descriptor).value
    return values
