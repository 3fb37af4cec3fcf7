"""Joint command messages: Float64MultiArray for ros2_control forward command controllers, JointTrajectory for
joint_trajectory_controller. Values arrive checked and clamped (lewm_ros.control.command); this module only
shapes messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration, Time
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lewm_ros.control.command import CommandShaper, UnsafeCommandError


def array_command(values: np.ndarray, joint_names: Sequence[str]) -> Float64MultiArray:
    """One value per joint, in joint_names order (the forward controller's `joints` order)."""
    msg = Float64MultiArray()
    msg.layout.dim = [MultiArrayDimension(label="joints", size=len(joint_names), stride=len(joint_names))]
    msg.data = [float(v) for v in values]
    return msg


def trajectory_command(
    joint_names: Sequence[str], stamp: Time, duration_s: float, positions: np.ndarray | None,
    velocities: np.ndarray,
) -> JointTrajectory:  # fmt: skip
    """A one-point trajectory reached `duration_s` after `stamp`: when no newer one follows (the agent died), the
    controller holds its end point, so the arm stops by itself."""
    msg = JointTrajectory()
    msg.header.stamp = stamp
    msg.joint_names = list(joint_names)
    point = JointTrajectoryPoint()
    if positions is not None:
        point.positions = [float(v) for v in positions]
    point.velocities = [float(v) for v in velocities]
    seconds = int(duration_s)
    point.time_from_start = Duration(sec=seconds, nanosec=round((duration_s - seconds) * 1e9))
    msg.points = [point]
    return msg


def command_message(settings: Any, shaper: CommandShaper, velocity: np.ndarray, measured: np.ndarray | None,
                    stamp: Time) -> Float64MultiArray | JointTrajectory:  # fmt: skip
    """The message for one (checked, clamped) joint velocity command, in the interface the settings name:
    velocities as they are, positions one control period ahead of the measured ones, or a one-point trajectory
    whose end the controller holds if nothing follows."""
    if not np.all(np.isfinite(velocity)):
        raise UnsafeCommandError("refusing to publish a non-finite command")
    s = settings
    if s.command_type == "joint_trajectory":
        duration = s.trajectory_duration_ms / 1000.0
        positions = None if measured is None else measured + velocity * duration
        return trajectory_command(s.joint_names, stamp, duration, positions, velocity)
    if s.command_interface == "position":
        return array_command(shaper.hold_position(measured) + velocity * s.control_period, s.joint_names)
    return array_command(velocity, s.joint_names)


def safe_message(settings: Any, shaper: CommandShaper, measured: np.ndarray | None,
                 stamp: Time) -> Float64MultiArray | JointTrajectory:  # fmt: skip
    """The safe command (DESIGN.md): zero velocity, or hold the measured position (never "zero position");
    UnsafeCommandError when hold has no measured position to hold."""
    s = settings
    zeros = shaper.safe_velocity()
    if s.safe_action != "hold":
        return array_command(zeros, s.joint_names)
    hold = shaper.hold_position(measured)
    if s.command_type == "joint_trajectory":
        return trajectory_command(s.joint_names, stamp, s.trajectory_duration_ms / 1000.0, hold, zeros)
    return array_command(hold, s.joint_names)
