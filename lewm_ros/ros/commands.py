"""Joint command messages: Float64MultiArray for ros2_control forward command controllers, JointTrajectory for
joint_trajectory_controller. Values arrive checked and clamped (lewm_ros.control.command); this module only
shapes messages."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from std_msgs.msg import Float64MultiArray, MultiArrayDimension
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint


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
