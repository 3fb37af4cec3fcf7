"""In-process bringup: the node graph of a launch file, from the same YAML, in one process.

`ros2 launch` (launch, launch_ros) is not installable from PyPI, so on machines without a ROS install
`lewm-ros sim-reach` builds the same nodes with the same parameters here and spins them in one
ResponsiveExecutor (lewm_ros/ros/executor.py). Lifecycle autostart (configure, then activate) is done by
calling the transitions directly, as launch does through the lifecycle services.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from rclpy.parameter import Parameter

SOURCE_CONFIG = Path(__file__).resolve().parents[2] / "config"


def find_config(name: str) -> Path:
    """A config file: a path as given, or one shipped in config/ (source tree) or share/lewm_ros/config."""
    path = Path(name)
    if path.is_file():
        return path
    prefixes = [sys.prefix, *filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep))]
    for folder in [SOURCE_CONFIG, *(Path(p) / "share" / "lewm_ros" / "config" for p in prefixes)]:
        if (folder / path.name).is_file():
            return folder / path.name
    raise FileNotFoundError(f"config file not found: {name!r}")


def node_section(config: Path, node_name: str) -> dict[str, Any]:
    """The `<node_name>: ros__parameters:` mapping of a ROS parameter YAML (the `/**` wildcard applies too)."""
    try:
        document = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{config}: not valid YAML: {err}") from err
    if not isinstance(document, dict):
        raise ValueError(f"{config}: expected a mapping of node names")
    values: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = document.get(key)
        if section is None:
            continue
        params = section.get("ros__parameters") if isinstance(section, dict) else None
        if not isinstance(params, dict):
            raise ValueError(f"{config}: {key} has no ros__parameters mapping")
        values.update(params)
    return values


def parameter_overrides(config: Path, node_name: str, overrides: dict[str, Any] | None = None) -> list[Parameter]:
    """Parameters for `node_name` from `config`, then `overrides` (launch arguments) on top."""
    values = {**node_section(config, node_name), **(overrides or {})}
    return [Parameter(name, value=value) for name, value in values.items()]
