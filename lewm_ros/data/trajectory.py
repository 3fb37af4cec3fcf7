"""A JointTrajectory's first point as one per-joint command: the conversion's math, free of ROS message types.

Callers pass the message's fields as plain values: joint names, the point's positions, velocities and efforts
as sequences, its time_from_start in seconds. The sim node (ros/mujoco_sim.py) converts the commands it
receives with it; converting recorded commands of a bag is the same job.

The rules follow joint_trajectory_controller, which stops at a point's positions when no newer trajectory
follows: a point with a time_from_start acts for that long and no longer; a velocity-only point without one
lasts until replaced. Positions without velocities are reached at constant speed over
max(time_from_start, min_duration), min_duration being one control period.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class TrajectoryError(ValueError):
    """A trajectory that cannot be turned into a command; the message says why."""


def joint_order(names: Sequence[str], joints: Sequence[str]) -> np.ndarray:
    """Index into `joints` of each of the trajectory's joint `names`, which must name every joint exactly once."""
    index = {name: i for i, name in enumerate(joints)}
    names = list(names)
    unknown = [name for name in names if name not in index]
    if unknown:
        raise TrajectoryError(f"JointTrajectory names unknown joints {unknown}; joints: {list(joints)}")
    if len(set(names)) != len(names) or len(names) != len(index):
        raise TrajectoryError(f"JointTrajectory joint_names {names} must name each of {list(joints)} exactly once")
    return np.array([index[name] for name in names], dtype=np.intp)


def _acts_for(time_from_start_s: float) -> float | None:
    """How long a point's command holds: its time_from_start, or until replaced (None) when it has none."""
    return time_from_start_s if time_from_start_s > 0 else None


def _placed(order: np.ndarray, values: Sequence[float]) -> np.ndarray:
    """A point's values (in the trajectory's joint order) put into the joints' order."""
    placed = np.empty(len(order))
    placed[order] = np.asarray(values, dtype=np.float64)
    return placed


def point_velocity(
    order: np.ndarray,
    *,
    positions: Sequence[float],
    velocities: Sequence[float],
    time_from_start_s: float,
    current: np.ndarray,
    min_duration_s: float,
) -> tuple[np.ndarray, float | None]:
    """Joint velocities (in the joints' order, see joint_order) of a point and how many seconds they act (None:
    until replaced). The point's velocities win; without them, its positions are differenced from `current`."""
    count = len(order)
    if len(velocities) > 0:
        if len(velocities) != count:
            raise TrajectoryError(f"first point has {len(velocities)} velocities for {count} joints")
        return _placed(order, velocities), _acts_for(time_from_start_s)
    if len(positions) != count:
        raise TrajectoryError(f"first point has {len(positions)} positions and no velocities for {count} joints")
    duration = max(time_from_start_s, min_duration_s)
    return (_placed(order, positions) - current) / duration, duration


def point_effort(
    order: np.ndarray,
    *,
    efforts: Sequence[float],
    velocities: Sequence[float],
    time_from_start_s: float,
    effort_joints: np.ndarray,
    joints: Sequence[str],
) -> tuple[np.ndarray, float | None]:
    """Commands (in the joints' order) for an arm with torque joints (`effort_joints`, a mask over `joints`):
    the point's efforts (N m, N) there, its velocities on the servo joints, and how many seconds they act."""
    count = len(order)
    if len(efforts) != count:
        torque_joints = [name for name, effort in zip(joints, effort_joints, strict=True) if effort]
        raise TrajectoryError(
            f"first point has {len(efforts)} efforts for {count} joints; "
            f"scene joints {torque_joints} take torques (N m)"
        )
    command = _placed(order, efforts)
    if not effort_joints.all():
        if len(velocities) != count:
            raise TrajectoryError(f"first point needs {count} velocities for the scene's servo joints")
        command = np.where(effort_joints, command, _placed(order, velocities))
    return command, _acts_for(time_from_start_s)
