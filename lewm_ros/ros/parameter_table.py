"""A node's ROS parameters declared from a table of `Param` (lewm_ros/control/settings.py): one table gives the
descriptors (description, range, read-only), the YAML documentation and the validation, so they cannot drift."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import ParameterException, ParameterUninitializedException
from rclpy.node import Node
from rclpy.parameter import Parameter

from lewm_ros.control.settings import Param

_TYPES = {bool: Parameter.Type.BOOL, int: Parameter.Type.INTEGER, float: Parameter.Type.DOUBLE,
          str: Parameter.Type.STRING}  # fmt: skip
_LIST_TYPES = {str: Parameter.Type.STRING_ARRAY, float: Parameter.Type.DOUBLE_ARRAY}


def descriptor(param: Param) -> ParameterDescriptor:
    """The ROS descriptor of one table entry: its text, range, choices, and read-only unless live."""
    text = param.description + (f" ({'|'.join(param.choices)})" if param.choices else "")
    result = ParameterDescriptor(description=text, read_only=not param.live)
    if param.kind is float and param.low is not None:
        result.floating_point_range = [FloatingPointRange(from_value=float(param.low), to_value=float(param.high))]
    elif param.kind is int and param.low is not None:
        result.integer_range = [IntegerRange(from_value=int(param.low), to_value=int(param.high), step=1)]
    if param.choices:
        result.additional_constraints = "one of: " + ", ".join(param.choices)
    return result


def declare_all(node: Node, table: Sequence[Param]) -> dict[str, str]:
    """Declare every parameter; returns the overrides refused (name -> why). A bad override (wrong type, out of
    range) must not kill the node: it is declared with its default and the caller fails its configure."""
    refused = {}
    for param in table:
        kind = _LIST_TYPES[param.items] if param.kind is list else _TYPES[param.kind]
        value = kind if param.default is None else param.default
        try:
            node.declare_parameter(param.name, value, descriptor(param))
        except ParameterException as err:
            refused[param.name] = f"parameter {param.name}: {err}"
            node.declare_parameter(param.name, value, descriptor(param), ignore_override=True)
    return refused


def values(node: Node, table: Sequence[Param]) -> dict[str, Any]:
    """Current values by name (None for a required parameter nobody set)."""
    result = {}
    for param in table:
        try:
            result[param.name] = node.get_parameter(param.name).value
        except ParameterUninitializedException:
            result[param.name] = None
    return result
