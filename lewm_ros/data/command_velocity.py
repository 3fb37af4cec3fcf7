"""Recorded commands as joint velocities: Float64MultiArray data, or a JointTrajectory's first point.

Float64MultiArray data are joint velocities in joint order. A JointTrajectory's first point is read by the
same rules as the simulator reads a live one (data/trajectory.py): velocities acting for its time_from_start,
or positions differenced against the current position over max(time_from_start, one control period).
Commands that cannot be read so are counted by reason and skipped: the previous command holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lewm_ros.data.conversion_scan import Key
from lewm_ros.data.conversion_spec import ARRAY_COMMAND
from lewm_ros.data.trajectory import TrajectoryError, joint_order, point_velocity


@dataclass
class Command:
    """A command as the arm received it: when, the joint velocities it asks for, and when it stops acting."""

    key: Key
    velocity: np.ndarray  # joint order, rad/s
    expires: int | None  # ns (alignment clock) after which it is zero


def command_velocities(
    messages: list[tuple[Key, str, Any]],
    names: tuple[str, ...],
    *,
    min_duration: float,
    position_at: Callable[[int], np.ndarray | None] | None,
    refused: Counter,
) -> list[Command]:
    """Checked commands as joint velocities in arrival order; refused ones counted by reason in `refused`.

    `position_at(time_ns)` gives the joints' position to difference position trajectories against; without it
    the previous target stands in. `min_duration` (s) is the shortest time a position step is spread over.
    """
    n = len(names)
    commands: list[Command] = []
    previous_target: np.ndarray | None = None
    for key, msgtype, msg in sorted(messages, key=lambda c: c[0]):
        expires = None
        if msgtype == ARRAY_COMMAND:
            velocity = np.asarray(msg.data, dtype=np.float64)
            if velocity.shape != (n,):
                refused[f"Float64MultiArray with {velocity.size} values for {n} joints"] += 1
                continue
        else:
            msg_names = [str(x) for x in msg.joint_names]
            try:
                order = joint_order(msg_names, names)
            except TrajectoryError:
                refused[f"JointTrajectory joints {msg_names[:8]} differ from {list(names)}"] += 1
                continue
            if not len(msg.points):
                refused["JointTrajectory without points"] += 1
                continue
            point = msg.points[0]
            seconds = int(point.time_from_start.sec) + int(point.time_from_start.nanosec) * 1e-9
            velocities = point.velocities if len(point.velocities) == n else []
            reference = np.zeros(n)  # a velocity point needs no position
            if not len(velocities) and len(point.positions) == n:
                target = np.empty(n)
                target[order] = np.asarray(point.positions, dtype=np.float64)
                reference = previous_target if position_at is None else position_at(key[0])
                previous_target = target
                if reference is None:
                    refused["position trajectory without a current position to difference"] += 1
                    continue
            try:
                velocity, acts_s = point_velocity(order, positions=point.positions, velocities=velocities,
                                                  time_from_start_s=seconds, current=reference,
                                                  min_duration_s=min_duration)  # fmt: skip
            except TrajectoryError:
                refused["JointTrajectory point without a velocity or position per joint"] += 1
                continue
            expires = None if acts_s is None else key[0] + round(acts_s * 1e9)
        if not np.all(np.isfinite(velocity)):
            refused["NaN or inf in the command"] += 1
            continue
        commands.append(Command(key, velocity, expires))
    return commands
