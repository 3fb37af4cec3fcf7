"""`lewm-ros bag2dataset`: rosbag2 recordings of an arm -> an HDF5 episode file, the format `collect` writes.

ROS-free: bags are read with `rosbags` (lewm_ros.data.bag_source) and camera messages decoded with the same
decoder the agent uses (lewm_ros.data.image_decode) and fitted to the model's input with the agent's policy
(lewm_ros.data.frames.fit_frame), so training sees the pixels the robot will show the model.

How a bag becomes rows (docs/retraining.md has the user's version):
- Time: which command was in force when a frame came is decided by arrival order at the recorder (receive times,
  ties broken by the order messages were written), the one clock every topic shares, Float64MultiArray included.
  Where frames sit in time (the control grid, the timestamp column, joint-state interpolation) comes from header
  stamps when every frame and joint state has one (`--frame-time auto`, the default; `header` insists), else from
  receive times (`bag`): capture stamps are exact where receive times jitter, e.g. a recorder on a simulation's
  coarse /clock stamps a frame one step late now and then.
- Episodes: the recorder's markers (std_msgs/String "start N" / "stop N" on `--episode-topic`, by default
  /bag_recorder/episode) delimit episodes when the bag has them; frames outside a start/stop pair are dropped.
  Without markers, and within each marked episode, a pause longer than `--max-gap` seconds in the camera
  stream or in the command stream ends an episode.
- Resampling: rows are spaced one control period apart. From an episode's first frame, row k takes the unused
  frame nearest to first + k * control_dt, if it is less than `--sync-tolerance` away (default half a period);
  frames in between are dropped (a camera faster than the control rate), and when no frame is near enough the
  episode is split there (a dropped frame or a camera slower than the control rate) -- frames are never
  repeated or invented.
- Actions, zero-order hold: the command signal is the last command received (a held value, as a controller
  holds it). Row k's action is the command in force when frame k+1 arrived: the one that moved the arm from
  frame k to frame k+1. The last row of an episode has no action (NaN), as in every episode file. A
  JointTrajectory point acts for its time_from_start and then stops (zero); `--command-timeout` makes any
  command stop after that long (a controller's watchdog), and a command older than `--max-gap` is no command.
- Commands to actions: Float64MultiArray data are joint velocities in joint order; a JointTrajectory's first
  point gives velocities, or positions, which are differenced: (target - current position) / time_from_start
  (at least one control period), the current position being the joint state at that moment (or, without
  --joint-topic, the previous target). Velocities are divided by `--max-joint-speed` and clipped to [-1, 1]:
  ReachEnv's normalised action.
- Joint states (`--joint-topic`, sensor_msgs/JointState) are interpolated linearly to each frame's time into
  qpos/qvel; without them qpos and qvel are zeros and the file's `joint_states` attribute says "none".

Everything dropped is counted with its reason, damage to a bag is reported (and refused unless
`--allow-partial`), and the output is written to a temporary file that replaces `--out` only when complete.
"""

from __future__ import annotations

import argparse
import bisect
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lewm_ros.cli import UsageError, float_in, int_in, one_line
from lewm_ros.data.bag_source import TYPESTORES, BagError, BagSource, StorageSwitchedError
from lewm_ros.data.episodes import MAX_DIM, DatasetError, Episode, EpisodeWriter
from lewm_ros.data.frames import IMAGE_POLICIES, FrameSizeError, fit_frame
from lewm_ros.data.image_decode import ImageDecodeError, to_rgb

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ARRAY_COMMAND = "std_msgs/msg/Float64MultiArray"
TRAJECTORY_COMMAND = "trajectory_msgs/msg/JointTrajectory"
COMMAND_TYPES = (ARRAY_COMMAND, TRAJECTORY_COMMAND)
JOINT_STATE = "sensor_msgs/msg/JointState"
MARKER_TYPE = "std_msgs/msg/String"
DEFAULT_EPISODE_TOPIC = "/bag_recorder/episode"
DEFAULT_MAX_GAP = 0.5
MAX_IMAGE_SIZE = 4096
MAX_SPEED = 1000.0
MAX_EPISODE_BYTES = 512 << 20  # frames of one episode held in memory before it is written
FRAME_TIMES = ("auto", "header", "bag")
ALIGNMENT = "zero-order hold: row k's action is the command in force when frame k+1 arrived"

# reasons a camera frame is not in the output
OUTSIDE_MARKERS = "outside episode markers"
BETWEEN_STEPS = "between control steps (camera faster than the control period)"
NO_COMMAND = "no command in force (none yet, or the command stream paused longer than --max-gap)"
NO_JOINT_STATE = "no joint state near the frame"
UNDECODABLE = "undecodable image"
WRONG_SIZE = "frame size differs from --image-size (--image-policy exact)"
TOO_SHORT = "episode shorter than --min-frames"
NO_STAMP = "no header stamp (--frame-time header)"


class ConversionError(ValueError):
    """The bags cannot be converted as asked (missing topics, unsupported types, damage, nothing left)."""


@dataclass(frozen=True)
class ConversionSpec:
    """What to convert and how; see the module docstring for the rules each field controls."""

    image_topic: str
    action_topic: str
    image_size: int
    control_dt: float
    max_joint_speed: tuple[float, ...]  # one value for all joints, or one per joint
    joint_topic: str | None = None
    joint_names: tuple[str, ...] | None = None
    image_policy: str = "crop"
    episode_topic: str | None = DEFAULT_EPISODE_TOPIC  # None: never split on markers
    max_gap: float = DEFAULT_MAX_GAP
    sync_tolerance: float | None = None  # seconds; None = control_dt / 2
    command_timeout: float | None = None
    min_frames: int = 2
    frame_time: str = "auto"
    distro: str = "jazzy"
    allow_partial: bool = False

    @property
    def tolerance(self) -> float:
        return self.control_dt / 2 if self.sync_tolerance is None else self.sync_tolerance

    def check(self) -> None:
        """Refuse inconsistent settings before any bag is opened."""
        if self.image_policy not in IMAGE_POLICIES:
            raise ValueError(f"image policy must be one of {IMAGE_POLICIES}, got {self.image_policy!r}")
        if self.frame_time not in FRAME_TIMES:
            raise ValueError(f"frame time must be one of {FRAME_TIMES}, got {self.frame_time!r}")
        if self.distro not in TYPESTORES:
            raise ValueError(f"distro must be one of {tuple(TYPESTORES)}, got {self.distro!r}")
        if not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image size must be in [1, {MAX_IMAGE_SIZE}], got {self.image_size}")
        if not (math.isfinite(self.control_dt) and self.control_dt > 0):
            raise ValueError(f"control_dt must be a finite number of seconds > 0, got {self.control_dt}")
        if not (self.max_gap >= self.control_dt):
            raise ValueError(f"--max-gap ({self.max_gap:g} s) must be at least --control-dt ({self.control_dt:g} s)")
        if not 0 < self.tolerance < self.control_dt:
            raise ValueError(
                f"--sync-tolerance must be in (0, control_dt = {self.control_dt:g}) s, got {self.tolerance:g}"
            )
        if not self.max_joint_speed or not all(math.isfinite(v) and v > 0 for v in self.max_joint_speed):
            raise ValueError(f"--max-joint-speed must be positive numbers, got {self.max_joint_speed}")
        if self.joint_names is not None:
            if len(set(self.joint_names)) != len(self.joint_names) or not all(self.joint_names):
                raise ValueError(f"--joint-names must be distinct non-empty names, got {list(self.joint_names)}")
            if len(self.max_joint_speed) not in (1, len(self.joint_names)):
                raise ValueError(f"--max-joint-speed has {len(self.max_joint_speed)} values for "
                                 f"{len(self.joint_names)} joints; give one, or one per joint")  # fmt: skip
        if self.min_frames < 2:
            raise ValueError(f"--min-frames must be at least 2 (one action), got {self.min_frames}")


@dataclass
class BagReport:
    """What happened to one bag: message counts, frames kept and dropped (with reasons), notes."""

    path: Path
    topics: dict[str, str] = field(default_factory=dict)  # requested topic -> type
    messages: Counter = field(default_factory=Counter)  # topic -> messages read
    frames: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # reason -> frames
    episodes: list[int] = field(default_factory=list)  # rows of each episode written
    resized: Counter = field(default_factory=Counter)  # "WxH" -> frames fitted from that size
    clipped: int = 0  # action values clipped to [-1, 1]
    refused_commands: Counter = field(default_factory=Counter)  # reason -> command messages ignored
    undecodable: Counter = field(default_factory=Counter)  # topic -> messages that failed to deserialise
    first_errors: dict[str, str] = field(default_factory=dict)  # reason -> first error text
    split_on: str = "gaps"
    frame_time: str = "bag receive times"
    notes: list[str] = field(default_factory=list)  # conversion notes (markers, joint states)
    source_notes: list[str] = field(default_factory=list)  # what the bag reader recovered from
    damaged: bool = False  # messages were lost (a truncated file, corrupt chunks, a read error)

    def lines(self, spec: ConversionSpec) -> list[str]:
        """Human-readable report lines."""
        counts = ", ".join(f"{self.messages[t]} on {t}" for t in self.topics)
        out = [f"bag {self.path}: {counts}; episodes split on {self.split_on}; frames placed by {self.frame_time}"]
        rows = self.episodes
        shape = f" ({min(rows)}/{sum(rows) / len(rows):.1f}/{max(rows)} rows min/mean/max)" if rows else ""
        out.append(f"  kept {self.kept} of {self.frames} frames in {len(rows)} episodes{shape}")
        dropped = +self.dropped  # without zero counts
        if dropped:
            reasons = "; ".join(f"{n} {reason}" for reason, n in dropped.most_common())
            out.append(f"  dropped {sum(dropped.values())} frames: {reasons}")
        for reason, text in self.first_errors.items():
            out.append(f"  first {reason}: {text}")
        side = spec.image_size
        for size, n in sorted(self.resized.items()):
            out.append(f"  resized {n} frames from {size} to {side}x{side} ({spec.image_policy})")
        if self.clipped:
            out.append(f"  {self.clipped} action values clipped to [-1, 1] (commands faster than --max-joint-speed)")
        for reason, n in self.refused_commands.most_common():
            out.append(f"  ignored {n} command messages: {reason}")
        for topic, n in self.undecodable.items():
            out.append(f"  {n} messages on {topic} could not be deserialised")
        prefix = "DAMAGED (converted with --allow-partial)" if self.damaged else "bag"
        out.extend(f"  {prefix}: {note}" for note in self.source_notes)
        out.extend(f"  note: {note}" for note in self.notes)
        return out


@dataclass
class ConversionReport:
    """The whole conversion: one BagReport per bag and where the episodes went."""

    out: Path
    bags: list[BagReport] = field(default_factory=list)
    joint_names: tuple[str, ...] = ()
    episodes: int = 0
    rows: int = 0

    def lines(self, spec: ConversionSpec) -> list[str]:
        out = [line for bag in self.bags for line in bag.lines(spec)]
        frames = sum(b.frames for b in self.bags)
        dropped = sum(sum(b.dropped.values()) for b in self.bags)
        out.append(f"wrote {self.episodes} episodes, {self.rows} rows ({spec.image_size}x{spec.image_size}, "
                   f"{len(self.joint_names)} joints {list(self.joint_names)}, control_dt {spec.control_dt:g} s) "
                   f"to {self.out}; {dropped} of {frames} frames dropped")  # fmt: skip
        return out


# ---------------------------------------------------------------------- pass 1: timing, commands, joints


@dataclass
class _Frame:
    time: int  # ns on the clock that places frames on the control grid (receive time or header stamp); -1: none
    key: tuple[int, int]  # (receive time, arrival order): what "arrived before" compares, for commands and markers
    ordinal: int  # position among image messages in read order (pass 2 finds it by this)
    stamp: int | None = None  # header stamp, ns


@dataclass
class _Command:
    key: tuple[int, int]
    velocity: np.ndarray  # joint order, rad/s
    expires: int | None  # ns (alignment clock) after which it is zero


@dataclass
class _Scan:
    """Everything but pixels, read in pass 1."""

    frames: list[_Frame] = field(default_factory=list)
    commands: list[tuple[tuple[int, int], str, Any]] = field(default_factory=list)  # (key, type, message)
    joints: list[tuple[int | None, int | None, Any]] = field(default_factory=list)  # (time, stamp, JointState)
    markers: list[tuple[tuple[int, int], str]] = field(default_factory=list)  # (key, text)


_JointTable = tuple[np.ndarray, np.ndarray, np.ndarray]  # times (ns), positions, velocities; joint order
_Key = tuple[int, int]  # (receive time ns, arrival order)


def _stamp_ns(msg: Any) -> int | None:
    try:
        stamp = msg.header.stamp
        value = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError):
        return None
    return value if value > 0 else None


class _Converter:
    """Converts bags one after the other into one EpisodeWriter (created lazily at the first episode)."""

    def __init__(self, spec: ConversionSpec, partial: Path, *, progress: bool) -> None:
        self.spec = spec
        self.partial = partial
        self.progress = progress
        self.writer: EpisodeWriter | None = None
        self.joint_names: tuple[str, ...] | None = spec.joint_names
        self.speeds: np.ndarray | None = None
        self.attributes: dict[str, Any] = {}

    # ------------------------------------------------------------------ opening and checking

    def _check_topics(self, source: BagSource, report: BagReport) -> tuple[str, str | None]:
        """Types of the requested topics; a missing topic or an unsupported type is a ConversionError."""
        spec = self.spec
        topics = source.topics
        wanted = [
            ("--image-topic", spec.image_topic, IMAGE_TYPES), ("--action-topic", spec.action_topic, COMMAND_TYPES),
        ]  # fmt: skip
        if spec.joint_topic:
            wanted.append(("--joint-topic", spec.joint_topic, (JOINT_STATE,)))
        for flag, topic, types in wanted:
            if topic not in topics:
                raise ConversionError(f"bag {source.path} has no topic {topic!r} ({flag}); it has: "
                                      f"{source.describe_topics()}")  # fmt: skip
            if topics[topic].msgtype not in types:
                raise ConversionError(f"bag {source.path}: {flag} {topic} carries {topics[topic].msgtype}, which "
                                      f"bag2dataset does not convert; supported: {', '.join(types)}")  # fmt: skip
            report.topics[topic] = topics[topic].msgtype
        marker = None
        if spec.episode_topic and spec.episode_topic in topics:
            if topics[spec.episode_topic].msgtype != MARKER_TYPE:
                raise ConversionError(f"bag {source.path}: episode topic {spec.episode_topic} carries "
                                      f"{topics[spec.episode_topic].msgtype}, expected {MARKER_TYPE}")  # fmt: skip
            marker = spec.episode_topic
            report.topics[marker] = MARKER_TYPE
        return topics[spec.action_topic].msgtype, marker

    def _read_topics(self, marker: str | None) -> list[str]:
        spec = self.spec
        return [t for t in (spec.image_topic, spec.action_topic, spec.joint_topic, marker) if t]

    # ------------------------------------------------------------------ pass 1

    def _scan(self, source: BagSource, report: BagReport, marker: str | None) -> _Scan:
        spec = self.spec
        scan = _Scan()
        for order, (topic, log_time, raw) in enumerate(source.messages(self._read_topics(marker))):
            report.messages[topic] += 1
            key = (log_time, order)
            msg = self._deserialize(source, raw, topic, report)
            if topic == spec.image_topic:  # an undeserialisable frame still takes its place; pass 2 drops it
                scan.frames.append(_Frame(log_time, key, len(scan.frames), None if msg is None else _stamp_ns(msg)))
            elif msg is None:
                continue
            elif topic == spec.action_topic:
                scan.commands.append((key, msg.__msgtype__, msg))
            elif topic == spec.joint_topic:
                scan.joints.append((log_time, _stamp_ns(msg), msg))
            elif topic == marker:
                scan.markers.append((key, str(msg.data)))
        report.frames = len(scan.frames)
        return scan

    def _choose_clock(self, scan: _Scan, report: BagReport) -> None:
        """Place frames (and joint states) on header stamps or receive times, per --frame-time (auto: header stamps
        when every frame and joint state has one, the robot's clock for capture times)."""
        mode = self.spec.frame_time
        if mode == "auto":
            stamped = all(f.stamp is not None for f in scan.frames) and all(j[1] is not None for j in scan.joints)
            mode = "header" if stamped else "bag"
        report.frame_time = "header stamps" if mode == "header" else "bag receive times"
        if mode == "bag":
            return
        for frame in scan.frames:
            if frame.stamp is None:
                report.dropped[NO_STAMP] += 1
                frame.time = -1
            else:
                frame.time = frame.stamp
        scan.joints = [(stamp, stamp, msg) for _log, stamp, msg in scan.joints]  # unstamped ones: time None

    def _scan_until_stable(self, source: BagSource, report: BagReport, marker: str | None) -> _Scan:
        """Pass 1, read again when a damaged MCAP file switched to the record-by-record scan half-way."""
        for _attempt in range(8):
            try:
                return self._scan(source, report, marker)
            except StorageSwitchedError:
                report.messages.clear()
                report.dropped.clear()
                report.undecodable.clear()
                report.first_errors.clear()
        raise ConversionError(f"bag {source.path}: its files keep failing part-way through: {'; '.join(source.notes)}")

    def _deserialize(self, source: BagSource, raw: bytes, topic: str, report: BagReport) -> Any:
        try:
            return source.deserialize(raw, topic)
        except Exception as error:  # the library's deserialisers raise many kinds on malformed bytes
            report.undecodable[topic] += 1
            report.first_errors.setdefault(f"message on {topic} that could not be deserialised", one_line(error))
            return None

    # ------------------------------------------------------------------ joints and commands

    def _settle_joints(self, scan: _Scan, path: Path) -> tuple[str, ...]:
        """This bag's joints: --joint-names, else the first joint state's order (the robot's), else the first
        trajectory's, else joint0..N-1 for bare Float64MultiArray commands."""
        if self.spec.joint_names is not None:
            return self.spec.joint_names
        for _t, _stamp, msg in scan.joints:
            if len(msg.name):
                return self._checked_names(tuple(str(n) for n in msg.name), path)
        for _key, msgtype, msg in scan.commands:
            if msgtype == TRAJECTORY_COMMAND and len(msg.joint_names):
                return self._checked_names(tuple(str(n) for n in msg.joint_names), path)
        for _key, msgtype, msg in scan.commands:
            if msgtype == ARRAY_COMMAND and len(msg.data):
                return self._checked_names(tuple(f"joint{i}" for i in range(len(msg.data))), path)
        raise ConversionError(f"bag {path}: no usable command or joint state to learn the joints from; "
                              "pass --joint-names")  # fmt: skip

    @staticmethod
    def _checked_names(names: tuple[str, ...], path: Path) -> tuple[str, ...]:
        if not 1 <= len(names) <= MAX_DIM or len(set(names)) != len(names) or not all(names):
            raise ConversionError(f"bag {path}: joint names {list(names)[:10]} are not distinct non-empty names")
        return names

    def _joint_table(self, scan: _Scan, report: BagReport) -> _JointTable | None:
        """(times ns, positions, velocities) of the joint states that name every joint, time-sorted."""
        if not self.spec.joint_topic:
            return None
        names = self.joint_names
        assert names is not None
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
            raise ConversionError(f"bag {report.path}: no message on {self.spec.joint_topic} names all joints "
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

    def _joint_at(self, table: _JointTable, when: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Joint state interpolated to `when` between messages at most --max-gap apart, or the nearest message
        within the sync tolerance; None when neither exists."""
        t, p, v = table
        j = int(np.searchsorted(t, when, side="right"))
        gap = round(self.spec.max_gap * 1e9)
        if 0 < j < len(t) and t[j] - t[j - 1] <= gap:
            span = t[j] - t[j - 1]
            w = 0.0 if span == 0 else (when - t[j - 1]) / span
            return p[j - 1] + w * (p[j] - p[j - 1]), v[j - 1] + w * (v[j] - v[j - 1])
        tol = round(self.spec.tolerance * 1e9)
        near = [i for i in (j - 1, j) if 0 <= i < len(t) and abs(int(t[i]) - when) <= tol]
        if not near:
            return None
        i = min(near, key=lambda k: abs(int(t[k]) - when))
        return p[i].copy(), v[i].copy()

    def _commands(self, scan: _Scan, report: BagReport, joints: _JointTable | None) -> list[_Command]:
        """Checked commands as joint velocities, in arrival order; refused ones counted (the previous one holds)."""
        names = self.joint_names
        assert names is not None
        n = len(names)
        position = {name: i for i, name in enumerate(names)}
        min_duration = self.spec.control_dt
        commands: list[_Command] = []
        previous_target: np.ndarray | None = None
        for key, msgtype, msg in sorted(scan.commands, key=lambda c: c[0]):
            expires = None
            if msgtype == ARRAY_COMMAND:
                velocity = np.asarray(msg.data, dtype=np.float64)
                if velocity.shape != (n,):
                    report.refused_commands[f"Float64MultiArray with {velocity.size} values for {n} joints"] += 1
                    continue
            else:
                msg_names = [str(x) for x in msg.joint_names]
                if sorted(msg_names) != sorted(names):
                    report.refused_commands[f"JointTrajectory joints {msg_names[:8]} differ from {list(names)}"] += 1
                    continue
                if not len(msg.points):
                    report.refused_commands["JointTrajectory without points"] += 1
                    continue
                point = msg.points[0]
                order = np.array([position[x] for x in msg_names])
                horizon = int(point.time_from_start.sec) * 1_000_000_000 + int(point.time_from_start.nanosec)
                velocity = np.empty(n)
                if len(point.velocities) == n:
                    velocity[order] = np.asarray(point.velocities, dtype=np.float64)
                    expires = key[0] + horizon if horizon > 0 else None
                elif len(point.positions) == n:
                    target = np.empty(n)
                    target[order] = np.asarray(point.positions, dtype=np.float64)
                    reference = previous_target
                    if joints is not None:
                        state = self._joint_at(joints, key[0])
                        reference = None if state is None else state[0]
                    previous_target = target
                    if reference is None:
                        report.refused_commands["position trajectory without a current position to difference"] += 1
                        continue
                    duration = max(horizon * 1e-9, min_duration)
                    velocity = (target - reference) / duration
                    expires = key[0] + round(duration * 1e9)
                else:
                    report.refused_commands["JointTrajectory point without a velocity or position per joint"] += 1
                    continue
            if not np.all(np.isfinite(velocity)):
                report.refused_commands["NaN or inf in the command"] += 1
                continue
            commands.append(_Command(key, velocity, expires))
        return commands

    # ------------------------------------------------------------------ episodes and rows

    def _marker_windows(self, scan: _Scan, report: BagReport) -> list[tuple[_Key, _Key]] | None:
        """(start, stop) of the marked episodes as arrival keys (a frame belongs to an episode when it arrived
        between its markers), or None when the bag has no markers."""
        if not scan.markers:
            return None
        report.split_on = f"episode markers ({self.spec.episode_topic})"
        windows: list[tuple[_Key, _Key]] = []
        open_at: _Key | None = None
        open_id = ""
        unknown = 0
        for when, text in sorted(scan.markers, key=lambda m: m[0]):
            words = text.strip().split()
            verb = words[0].lower() if words else ""
            label = " ".join(words[1:])
            if verb == "start":
                if open_at is not None:
                    report.notes.append(f"episode {open_id or '?'} has no stop marker before the next start: "
                                        "ended there")  # fmt: skip
                    windows.append((open_at, when))
                open_at, open_id = when, label
            elif verb == "stop":
                if open_at is None:
                    report.notes.append(f"stop marker {text!r} without a start: ignored")
                    continue
                if label and open_id and label != open_id:
                    report.notes.append(f"stop marker {text!r} closes episode {open_id!r}")
                windows.append((open_at, when))
                open_at = None
            else:
                unknown += 1
        if open_at is not None:
            report.notes.append(f"episode {open_id or '?'} has no stop marker (the recording ended): kept to the end")
            windows.append((open_at, (2**63 - 1, 0)))
        if unknown:
            report.notes.append(f"{unknown} episode marker messages are neither 'start N' nor 'stop N': ignored")
        return windows

    def _segments(
        self, frames: list[_Frame], windows: list[tuple[_Key, _Key]] | None, report: BagReport
    ) -> list[list[_Frame]]:
        """Frames grouped by marked episode (or all together), split where the camera paused > --max-gap."""
        by_arrival = sorted((f for f in frames if f.time >= 0), key=lambda f: f.key)
        groups: list[list[_Frame]]
        if windows is None:
            groups = [by_arrival]
        else:
            keys = [f.key for f in by_arrival]
            groups = [by_arrival[bisect.bisect_right(keys, start) : bisect.bisect_left(keys, stop)]
                      for start, stop in windows]  # fmt: skip
            report.dropped[OUTSIDE_MARKERS] += len(by_arrival) - sum(len(group) for group in groups)
        groups = [sorted(group, key=lambda f: (f.time, f.key)) for group in groups]
        gap = round(self.spec.max_gap * 1e9)
        segments: list[list[_Frame]] = []
        for group in groups:
            current: list[_Frame] = []
            for frame in group:
                if current and frame.time - current[-1].time > gap:
                    segments.append(current)
                    current = []
                current.append(frame)
            if current:
                segments.append(current)
        return segments

    def _resample(self, segment: list[_Frame], report: BagReport) -> list[list[_Frame]]:
        """Runs of frames one control period apart (nearest frame to each grid time within the tolerance)."""
        dt = round(self.spec.control_dt * 1e9)
        tol = round(self.spec.tolerance * 1e9)
        times = np.array([f.time for f in segment], dtype=np.int64)
        runs: list[list[_Frame]] = []
        i = 0
        while i < len(segment):
            run = [i]
            grid = int(times[i])
            while True:
                grid += dt
                j = int(np.searchsorted(times, grid))
                candidates = [k for k in (j - 1, j) if run[-1] < k < len(times)]
                if not candidates:
                    break
                best = min(candidates, key=lambda k: abs(int(times[k]) - grid))
                if abs(int(times[best]) - grid) >= tol:  # half a period off is no longer this grid time
                    break
                report.dropped[BETWEEN_STEPS] += best - run[-1] - 1
                run.append(best)
            runs.append([segment[k] for k in run])
            i = run[-1] + 1
        return runs

    def _rows(
        self, run: list[_Frame], commands: list[_Command], joints: _JointTable | None, report: BagReport
    ) -> list[dict[str, Any]]:
        """Row records of a run: frame, action (None where unknown, with the reason in `end`), qpos, qvel.

        A frame without a joint state is dropped, and the row before it loses its action: the transition it
        would label leads to a frame that is not in the data.
        """
        spec = self.spec
        keys = [c.key for c in commands]
        gap = round(spec.max_gap * 1e9)
        timeout = None if spec.command_timeout is None else round(spec.command_timeout * 1e9)
        zeros = np.zeros(len(self.joint_names or ()))
        rows: list[dict[str, Any]] = []
        for k, frame in enumerate(run):
            if joints is not None:
                state = self._joint_at(joints, frame.time)
                if state is None:
                    report.dropped[NO_JOINT_STATE] += 1
                    if rows and rows[-1]["action"] is not None:
                        rows[-1].update(action=None, end="next frame dropped")
                    continue
                qpos, qvel = state
            else:
                qpos, qvel = zeros, zeros
            action, end = None, "end of run"
            if k + 1 < len(run):
                nxt = run[k + 1]
                c = bisect.bisect_left(keys, nxt.key) - 1  # the last command that arrived before frame k+1
                end = "no command"
                if c >= 0:
                    command = commands[c]
                    age = nxt.key[0] - command.key[0]
                    if age <= gap:
                        stopped = (command.expires is not None and nxt.key[0] > command.expires) or (
                            timeout is not None and age > timeout
                        )
                        action = zeros if stopped else command.velocity
            rows.append({"frame": frame, "action": action, "end": end, "qpos": qpos, "qvel": qvel})
        return rows

    def _episodes(self, rows: list[dict[str, Any]], report: BagReport) -> list[list[dict[str, Any]]]:
        """Cut rows into episodes: a row without an action ends its episode (it is the last observation); a row
        without an action that ends no transition either (it would be an episode of one row) is dropped."""
        pieces: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        for row in rows:
            if row["action"] is not None:
                current.append(row)
            elif current:
                current.append(row)
                pieces.append(current)
                current = []
            else:
                report.dropped[NO_COMMAND if row["end"] == "no command" else TOO_SHORT] += 1
        if current:  # cannot happen (a run's last row has no action), but rows are never lost silently
            pieces.append(current)
        return pieces

    # ------------------------------------------------------------------ pass 2 and writing

    def convert_bag(self, path: Path) -> BagReport:
        spec = self.spec
        report = BagReport(path)
        with BagSource(path, distro=spec.distro) as source:
            action_type, marker = self._check_topics(source, report)
            scan = self._scan_until_stable(source, report, marker)
            self._choose_clock(scan, report)
            report.source_notes = list(source.notes)
            report.damaged = source.damaged
            if source.damaged and not spec.allow_partial:
                readable = ", ".join(f"{n} on {t}" for t, n in report.messages.items()) or "nothing"
                raise ConversionError(
                    f"bag {path} is damaged: {'; '.join(source.notes)}; readable: {readable}. "
                    "Pass --allow-partial to convert what is readable"
                )
            if not scan.frames:
                raise ConversionError(f"bag {path}: no messages on {spec.image_topic}")
            names = self._settle_joints(scan, path)
            if self.joint_names is None:
                self.joint_names = names
                if spec.joint_names is None and action_type == ARRAY_COMMAND:
                    report.notes.append(f"Float64MultiArray data taken to be in the joint order {list(names)}; "
                                        "pass --joint-names to pin it")  # fmt: skip
            elif sorted(names) != sorted(self.joint_names):
                raise ConversionError(f"bag {path}: joints {list(names)} differ from {list(self.joint_names)} "
                                      "of the bags before")  # fmt: skip
            if self.speeds is None:
                if len(spec.max_joint_speed) not in (1, len(names)):
                    raise ConversionError(f"--max-joint-speed has {len(spec.max_joint_speed)} values for "
                                          f"{len(names)} joints {list(names)}; give one, or one per joint")  # fmt: skip
                self.speeds = np.broadcast_to(np.asarray(spec.max_joint_speed, np.float64), (len(names),)).copy()
            joints = self._joint_table(scan, report)
            commands = self._commands(scan, report, joints)
            if not commands:
                raise ConversionError(f"bag {path}: no usable command on {spec.action_topic} ({action_type}); "
                                      f"{dict(report.refused_commands) or 'the topic is empty'}")  # fmt: skip
            windows = self._marker_windows(scan, report)
            plan: list[list[dict[str, Any]]] = []
            for segment in self._segments(scan.frames, windows, report):
                for run in self._resample(segment, report):
                    plan.extend(self._episodes(self._rows(run, commands, joints, report), report))
            self._decode_and_write(source, self._bounded(plan, report), report, marker)
        return report

    def _bounded(self, plan: list[list[dict[str, Any]]], report: BagReport) -> list[list[dict[str, Any]]]:
        """Episodes whose frames would pass MAX_EPISODE_BYTES are cut into parts that overlap by one row (the part's
        first row repeats the previous part's last frame), so no transition is lost and memory stays bounded."""
        side = self.spec.image_size
        limit = max(2, MAX_EPISODE_BYTES // (side * side * 3))
        bounded: list[list[dict[str, Any]]] = []
        for piece in plan:
            if len(piece) <= limit:
                bounded.append(piece)
                continue
            report.notes.append(f"an episode of {len(piece)} rows was cut into parts of at most {limit} rows "
                                f"({MAX_EPISODE_BYTES >> 20} MiB of frames), each repeating the previous part's "
                                "last frame")  # fmt: skip
            for start in range(0, len(piece) - 1, limit - 1):
                part = piece[start : start + limit]
                if start:
                    part = [{**part[0], "continued": True}, *part[1:]]
                bounded.append(part)
        return bounded

    def _decode_and_write(self, source: BagSource, plan: list[list[dict[str, Any]]], report: BagReport,
                          marker: str | None) -> None:  # fmt: skip
        """Pass 2: decode the planned frames in read order and write each episode once all its frames are in."""
        spec = self.spec
        wanted: dict[int, list[tuple[int, int]]] = {}  # image ordinal -> (episode, row) of each place it goes
        for e, piece in enumerate(plan):
            for r, row in enumerate(piece):
                wanted.setdefault(row["frame"].ordinal, []).append((e, r))
        pixels: list[dict[int, np.ndarray | str]] = [{} for _ in plan]
        written = 0
        bar = _progress(len(wanted), f"{source.path.name}", enabled=self.progress)
        ordinal = -1
        try:
            for topic, _log_time, raw in source.messages(self._read_topics(marker)):
                if topic != spec.image_topic:
                    continue
                ordinal += 1
                places = wanted.get(ordinal)
                if places is None:
                    continue
                image = self._frame(source, raw, report)
                for e, r in places:
                    pixels[e][r] = image
                bar.update(1)
                while written < len(plan) and len(pixels[written]) == len(plan[written]):
                    self._write_pieces(plan[written], pixels[written], report, source.path)
                    pixels[written] = {}
                    written += 1
        finally:
            bar.close()
        for e in range(written, len(plan)):  # frames the second read did not reach (cannot differ from pass 1)
            self._write_pieces(plan[e], pixels[e], report, source.path)

    def _frame(self, source: BagSource, raw: bytes, report: BagReport) -> np.ndarray | str:
        """The fitted frame, or the reason it cannot be used."""
        spec = self.spec
        try:
            msg = source.deserialize(raw, spec.image_topic)
        except Exception:  # counted in pass 1 (report.undecodable), which deserialised every frame for its stamp
            return UNDECODABLE
        try:
            rgb = to_rgb(msg)
        except ImageDecodeError as error:
            report.first_errors.setdefault(UNDECODABLE, one_line(error))
            return UNDECODABLE
        height, width = rgb.shape[:2]
        try:
            fitted = fit_frame(rgb, spec.image_size, spec.image_policy)
        except FrameSizeError as error:
            report.first_errors.setdefault(WRONG_SIZE, one_line(error))
            return WRONG_SIZE
        if (height, width) != (spec.image_size, spec.image_size):
            report.resized[f"{width}x{height}"] += 1
        return fitted

    def _write_pieces(self, piece: list[dict[str, Any]], frames: dict[int, np.ndarray | str], report: BagReport,
                      path: Path) -> None:  # fmt: skip
        """Write an episode, cut where a frame could not be used; pieces shorter than --min-frames are dropped."""
        current: list[tuple[dict[str, Any], np.ndarray]] = []
        for r, row in enumerate(piece):
            image = frames.get(r, "frame not found on the second read")
            if isinstance(image, str):
                if not row.get("continued"):  # a repeated frame is counted where it first appears
                    report.dropped[image] += 1
                self._flush(current, report, path)
                current = []
                continue
            current.append((row, image))
        self._flush(current, report, path)

    def _flush(self, rows: list[tuple[dict[str, Any], np.ndarray]], report: BagReport, path: Path) -> None:
        if not rows:
            return
        if len(rows) < self.spec.min_frames:
            report.dropped[TOO_SHORT] += len(rows)
            return
        speeds = self.speeds
        assert speeds is not None and self.joint_names is not None
        n, dim = len(rows), len(self.joint_names)
        action = np.full((n, dim), np.nan, dtype=np.float32)
        for k, (row, _image) in enumerate(rows[:-1]):
            velocity = row["action"]
            normalised = velocity / speeds
            report.clipped += int(np.count_nonzero(np.abs(normalised) > 1.0))
            action[k] = np.clip(normalised, -1.0, 1.0)
        t0 = rows[0][0]["frame"].time
        episode = Episode(
            pixels=np.stack([image for _row, image in rows]),
            action=action,
            qpos=np.stack([row["qpos"] for row, _ in rows]).astype(np.float64),
            qvel=np.stack([row["qvel"] for row, _ in rows]).astype(np.float64),
            timestamp=np.array([(row["frame"].time - t0) * 1e-9 for row, _ in rows], dtype=np.float64),
            success=np.zeros(n, dtype=bool),
            goal_qpos=np.full(dim, np.nan),
            goal_pixels=np.zeros((self.spec.image_size, self.spec.image_size, 3), np.uint8),
            seed=-1,
            policy=f"rosbag:{path.name}",
        )
        self._writer().write_episode(episode)
        report.episodes.append(n)
        report.kept += n - bool(rows[0][0].get("continued"))  # a repeated frame is counted once

    def _writer(self) -> EpisodeWriter:
        if self.writer is None:
            spec = self.spec
            assert self.joint_names is not None and self.speeds is not None
            dim = len(self.joint_names)
            self.attributes.update(
                joint_names=list(self.joint_names),
                max_joint_speed=self.speeds,
            )
            self.writer = EpisodeWriter.create(
                self.partial, image_shape=(spec.image_size, spec.image_size), action_dim=dim, state_dim=dim,
                attributes=self.attributes,
            )  # fmt: skip
        return self.writer


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, *, enabled: bool) -> Any:
    """A tqdm bar on stderr (tqdm hides itself when stderr is not a terminal), or nothing."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=None, leave=False)


def partial_path(out: Path) -> Path:
    """The temporary file next to `out` that the conversion writes and renames into place."""
    return out.with_name(f".{out.name}.{os.getpid()}.partial")


def convert(
    bags: Sequence[str | Path],
    out: str | Path,
    spec: ConversionSpec,
    *,
    overwrite: bool = False,
    progress: bool = False,
    on_bag: Callable[[BagReport], None] | None = None,
) -> ConversionReport:
    """Convert `bags` (in order) into the episode file `out`, atomically; returns the report.

    Raises ConversionError (or BagError, DatasetError) with nothing written when a bag cannot be converted as
    asked, when a bag is damaged and `spec.allow_partial` is false, or when no episode is left; FileExistsError
    when `out` exists and `overwrite` is false.
    """
    spec.check()
    out = Path(out)
    if not bags:
        raise ConversionError("no bags given")
    if out.is_dir():
        raise ConversionError(f"output {out} is a directory")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: pass --overwrite to replace it")
    paths = [Path(b) for b in bags]
    for path in paths:
        if not path.exists():
            raise ConversionError(f"bag {path} does not exist")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(out)
    converter = _Converter(spec, partial, progress=progress)
    converter.attributes = {
        "source": "rosbag2",
        "scene": ", ".join(str(p) for p in paths),
        "camera": spec.image_topic,
        "control_dt": float(spec.control_dt),
        "seed": -1,
        "policy": "recorded",
        "action_space": "joint velocity / max_joint_speed, clipped to [-1, 1]",
        "action_topic": spec.action_topic,
        "joint_states": spec.joint_topic or "none",
        "image_policy": spec.image_policy,
        "alignment": ALIGNMENT,
        "bags": [str(p) for p in paths],
    }
    report = ConversionReport(out)
    try:
        for path in paths:
            bag_report = converter.convert_bag(path)
            report.bags.append(bag_report)
            if on_bag is not None:
                on_bag(bag_report)
        writer = converter.writer
        if writer is None or writer.num_episodes == 0:
            details = "; ".join(line.strip() for bag in report.bags for line in bag.lines(spec)[1:3])
            raise ConversionError(f"no episode of at least --min-frames {spec.min_frames} rows is left ({details})")
        report.episodes, report.rows = writer.num_episodes, writer.num_frames
        report.joint_names = converter.joint_names or ()
        writer.close()
        os.replace(partial, out)
    except BaseException:
        if converter.writer is not None:
            converter.writer.close()
        partial.unlink(missing_ok=True)
        raise
    return report


# ---------------------------------------------------------------------- command line


def _speeds(text: str) -> tuple[float, ...]:
    """One speed, or a comma-separated list (one per joint), each in (0, MAX_SPEED]."""
    parse = float_in(0.0, MAX_SPEED, low_open=True)
    try:
        values = tuple(parse(part) for part in text.split(","))
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"max joint speed: {error}") from None
    return values


def _names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(","))
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated joint names, got {text!r}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bag2dataset",
        help="convert rosbag2 recordings (MCAP or sqlite3) into an HDF5 episode file for training",
        description="Convert rosbag2 recordings of a camera arm into the HDF5 episode format `collect` writes: "
        "frames decoded and fitted like the agent does, resampled to the control period, commands aligned to "
        "frames by zero-order hold, episodes split on recorder markers or gaps. See docs/retraining.md.",
    )
    parser.add_argument("bags", nargs="+", type=Path, metavar="BAG", help="rosbag2 directory or .mcap/.db3 file")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    parser.add_argument("--action-topic", required=True,
                        help="command topic: std_msgs/Float64MultiArray or trajectory_msgs/JointTrajectory")
    parser.add_argument("--joint-topic", help="sensor_msgs/JointState topic for qpos/qvel (default: none, zeros)")
    parser.add_argument("--image-size", required=True, type=int_in(1, MAX_IMAGE_SIZE),
                        help="side of the square frames the model takes, pixels")
    parser.add_argument("--image-policy", choices=IMAGE_POLICIES, default="crop",
                        help="fit frames like the agent: crop (centre square, resize), resize (stretch) or exact")
    parser.add_argument("--control-dt", required=True, type=float_in(0.0, 10.0, low_open=True),
                        help="seconds between rows: the agent's control period")
    parser.add_argument("--max-joint-speed", required=True, type=_speeds,
                        help="rad/s (m/s) that an action of 1.0 means: one value, or one per joint (a,b,...)")
    parser.add_argument("--joint-names", type=_names,
                        help="joint order of actions and qpos, comma-separated (default: from the commands or "
                        "joint states; Float64MultiArray data must be in this order)")
    parser.add_argument("--episode-topic", default=DEFAULT_EPISODE_TOPIC,
                        help=f"std_msgs/String 'start N'/'stop N' markers (default {DEFAULT_EPISODE_TOPIC}; "
                        "used when the bag has it; '' to ignore markers)")
    parser.add_argument("--max-gap", type=float_in(0.0, 3600.0, low_open=True), default=DEFAULT_MAX_GAP,
                        help=f"seconds without frames or commands that end an episode (default {DEFAULT_MAX_GAP})")
    parser.add_argument("--sync-tolerance", type=float_in(0.0, 10.0, low_open=True),
                        help="seconds a frame may be off its control-period grid time (default control_dt/2)")
    parser.add_argument("--command-timeout", type=float_in(0.0, 3600.0, low_open=True),
                        help="seconds after which a held command counts as stopped (the controller's watchdog); "
                        "default: held until --max-gap")
    parser.add_argument("--min-frames", type=int_in(2, 10**9), default=2,
                        help="drop episodes with fewer rows (default 2; training windows need "
                        "(history + 1) x frameskip)")
    parser.add_argument("--frame-time", choices=FRAME_TIMES, default="auto",
                        help="place frames (and joint states) on the control grid by their header stamps or by the "
                        "bag's receive times; auto (default): header stamps when every one has a stamp")
    parser.add_argument("--distro", choices=tuple(TYPESTORES), default="jazzy",
                        help="message definitions for bags that store none (Humble sqlite3); default jazzy")
    parser.add_argument("--allow-partial", action="store_true",
                        help="convert what is readable of a damaged bag (truncated, corrupt chunks) instead of "
                        "refusing it")
    parser.add_argument("--out", required=True, type=Path, help="HDF5 episode file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_bag2dataset)


def run_bag2dataset(args: argparse.Namespace) -> int:
    """Convert; every refusal is one stderr line and exit code 2, the report goes to stdout."""
    spec = ConversionSpec(
        image_topic=args.image_topic, action_topic=args.action_topic, image_size=args.image_size,
        control_dt=args.control_dt, max_joint_speed=args.max_joint_speed, joint_topic=args.joint_topic,
        joint_names=args.joint_names, image_policy=args.image_policy, episode_topic=args.episode_topic or None,
        max_gap=args.max_gap, sync_tolerance=args.sync_tolerance, command_timeout=args.command_timeout,
        min_frames=args.min_frames, frame_time=args.frame_time, distro=args.distro, allow_partial=args.allow_partial,
    )  # fmt: skip
    try:
        spec.check()
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        report = convert(args.bags, args.out, spec, overwrite=args.overwrite, progress=not args.no_progress)
    except (ConversionError, BagError, DatasetError, FileExistsError) as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"{type(error).__name__}: {error}") from None
    for line in report.lines(spec):
        print(line)
    if any(bag.damaged for bag in report.bags):
        print("lewm-ros bag2dataset: warning: converted damaged bags partially (--allow-partial); see DAMAGED above",
              file=sys.stderr)  # fmt: skip
    return 0

