"""What `lewm-ros doctor` needs to know about the ROS side, kept here so only lewm_ros/ros/ touches rclpy."""

from __future__ import annotations

import importlib

# What the agent imports: if any of these fails, the node cannot start.
ROS_MODULES = ("rclpy", "rclpy.lifecycle", "sensor_msgs.msg", "std_msgs.msg", "trajectory_msgs.msg",
               "diagnostic_msgs.msg", "std_srvs.srv", "lifecycle_msgs.msg", "rcl_interfaces.msg")  # fmt: skip


def missing_ros_modules() -> list[tuple[str, BaseException]]:
    """(module, error) for every module of ROS_MODULES that does not import."""
    missing = []
    for module in ROS_MODULES:
        try:
            importlib.import_module(module)
        except Exception as err:  # ImportError, or an OSError from a missing shared library
            missing.append((module, err))
    return missing


def rmw_identifier() -> str:
    """The RMW implementation rclpy loads (raises when rclpy or the named RMW is missing)."""
    from rclpy.utilities import get_rmw_implementation_identifier

    return get_rmw_implementation_identifier()
