"""Joints of a recorded arm for bag2dataset: which joints (and their order), and their state at any frame time.

The order is --joint-names, else the robot's (the first joint state), else the commands'. Joint states are
kept as a time-sorted table and interpolated linearly to a frame's time (qpos/qvel of the row, and the current
position a position trajectory is differenced against).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lewm_ros.data.conversion_report import BagConversionReport
from lewm_ros.data.conversion_scan import MessageScan
from lewm_ros.data.conversion_spec import ARRAY_COMMAND, TRAJECTORY_COMMAND, ConversionError, ConversionSpec
from lewm_ros.data.episode_format import MAX_DIM

JointTable = tuple[np.ndarray, np.ndarray, np.ndarray]  # times (ns), positions, velocities; joint order


def settle_joints(spec: ConversionSpec, scan: MessageScan, path: Path) -> tuple[str, ...]:
    """This bag's joints: --joint-names, else the first joint state's order (the robot's), else the first
    trajectory's, else joint0..N-1 for bare Float64MultiArray commands."""
    if spec.joint_names is not None:
        return spec.joint_names
    for _t, _stamp, msg in scan.joints:
        if len(msg.name):
            return _checked_names(tuple(str(n) for n in msg.name), path)
    for _key, msgtype, msg in scan.commands:
        if msgtype == TRAJECTORY_COMMAND and len(msg.joint_names):
            return _checked_names(tuple(str(n) for n in msg.joint_names), path)
    for _key, msgtype, msg in scan.commands:
        if msgtype == ARRAY_COMMAND and len(msg.data):
            return _checked_names(tuple(f"joint{i}" for i in range(len(msg.data))), path)
    raise ConversionError(f"bag {path}: no usable command or joint state to learn the joints from; "
                          "pass --joint-names")  # fmt: skip


def _checked_names(names: tuple[str, ...], path: Path) -> tuple[str, ...]:
    if not 1 <= len(names) <= MAX_DIM or len(set(names)) != len(names) or not all(names):
        raise ConversionError(f"bag {path}: joint names {list(names)[:10]} are not distinct non-empty names")
    return names


def joint_table(spec: ConversionSpec, names: tuple[str, ...], scan: MessageScan,
                report: BagConversionReport) -> JointTable | None:  # fmt: skip
    """(times ns, positions, velocities) of the joint states that name every joint, time-sorted; None without
    --joint-topic."""
    if not spec.joint_topic:
        return None
    times, positions, velocities = [], [], []
    missing = unstamped = 0
    for when, _stamp, msg in scan.joints:
        if when is None:
            unstamped += 1
            continue
        index = {str(n): i for i, n in enumerate(msg.name)}
        if any(n not in index for n in names):
            missing += 1
            continue
        order = [index[n] for n in names]
        pos = np.asarray(msg.position, dtype=np.float64)
        vel = np.asarray(msg.velocity, dtype=np.float64)
        if pos.size != len(index) or not np.all(np.isfinite(pos[order])):
            missing += 1
            continue
        times.append(when)
        positions.append(pos[order])
        velocities.append(vel[order] if vel.size == len(index) else np.full(len(names), np.nan))
    if missing:
        report.notes.append(f"{missing} joint states without finite positions for all of {list(names)} ignored")
    if unstamped:
        report.notes.append(f"{unstamped} joint states without a header stamp ignored (--frame-time header)")
    if not times:
        raise ConversionError(f"bag {report.path}: no message on {spec.joint_topic} names all joints "
                              f"{list(names)} with finite positions"
                              + (" and a header stamp (--frame-time header)" if unstamped else ""))  # fmt: skip
    order_ = np.argsort(np.asarray(times), kind="stable")
    t = np.asarray(times, dtype=np.int64)[order_]
    p = np.asarray(positions)[order_]
    v = np.asarray(velocities)[order_]
    gaps = ~np.isfinite(v)
    if gaps.any() and len(t) > 1:  # velocity not published: differences of positions stand in
        increasing = np.all(np.diff(t) > 0)
        derived = np.gradient(p, t.astype(np.float64) * 1e-9, axis=0) if increasing else np.zeros_like(p)
        v = np.where(gaps, derived, v)
    return t, p, np.nan_to_num(v, nan=0.0)


def joint_at(spec: ConversionSpec, table: JointTable, when: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Joint state interpolated to `when` between messages at most --max-gap apart, or the nearest message
    within the sync tolerance; None when neither exists."""
    t, p, v = table
    j = int(np.searchsorted(t, when, side="right"))
    gap = round(spec.max_gap * 1e9)
    if 0 < j < len(t) and t[j] - t[j - 1] <= gap:
        span = t[j] - t[j - 1]
        w = 0.0 if span == 0 else (when - t[j - 1]) / span
        return p[j - 1] + w * (p[j] - p[j - 1]), v[j - 1] + w * (v[j] - v[j - 1])
    tol = round(spec.tolerance * 1e9)
    near = [i for i in (j - 1, j) if 0 <= i < len(t) and abs(int(t[i]) - when) <= tol]
    if not near:
        return None
    i = min(near, key=lambda k: abs(int(t[k]) - when))
    return p[i].copy(), v[i].copy()
