"""bag2dataset's first pass: every message of the requested topics but the pixels, and the clock frames sit on.

It checks the topics and their types, reads frame times (receive time, arrival order, header stamp), commands,
joint states and episode markers, and picks the clock that places frames on the control grid (--frame-time).
The second pass (lewm_ros.data.bag_conversion) decodes only the frames this plan keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lewm_ros.arguments import one_line
from lewm_ros.data.bag_source import BagSource, StorageSwitchedError
from lewm_ros.data.conversion_report import BagConversionReport
from lewm_ros.data.conversion_spec import (
    COMMAND_TYPES,
    IMAGE_TYPES,
    JOINT_STATE,
    MARKER_TYPE,
    NO_STAMP,
    ConversionError,
    ConversionSpec,
)

Key = tuple[int, int]  # (receive time ns, arrival order): what "arrived before" compares


@dataclass
class Frame:
    """A camera message's place in time; its pixels are read in the second pass."""

    time: int  # ns on the clock that places frames on the control grid (receive time or header stamp); -1: none
    key: Key  # (receive time, arrival order): what "arrived before" compares, for commands and markers
    ordinal: int  # position among image messages in read order (pass 2 finds it by this)
    stamp: int | None = None  # header stamp, ns


@dataclass
class MessageScan:
    """Everything but pixels, read in pass 1."""

    frames: list[Frame] = field(default_factory=list)
    commands: list[tuple[Key, str, Any]] = field(default_factory=list)  # (key, type, message)
    joints: list[tuple[int | None, int | None, Any]] = field(default_factory=list)  # (time, stamp, JointState)
    markers: list[tuple[Key, str]] = field(default_factory=list)  # (key, text)


def check_topics(spec: ConversionSpec, source: BagSource, report: BagConversionReport) -> tuple[str, str | None]:
    """(command type, episode marker topic or None); a missing topic or an unsupported type is a ConversionError."""
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


def read_topics(spec: ConversionSpec, marker: str | None) -> list[str]:
    """The topics both passes read, in one list so they see the same arrival order."""
    return [t for t in (spec.image_topic, spec.action_topic, spec.joint_topic, marker) if t]


def scan_messages(spec: ConversionSpec, source: BagSource, report: BagConversionReport,
                  marker: str | None) -> MessageScan:  # fmt: skip
    """Pass 1, read again when a damaged MCAP file switched to the record-by-record scan half-way."""
    for _attempt in range(8):
        try:
            return _scan(spec, source, report, marker)
        except StorageSwitchedError:
            report.messages.clear()
            report.dropped.clear()
            report.undecodable.clear()
            report.first_errors.clear()
    raise ConversionError(f"bag {source.path}: its files keep failing part-way through: {'; '.join(source.notes)}")


def _scan(spec: ConversionSpec, source: BagSource, report: BagConversionReport, marker: str | None) -> MessageScan:
    scan = MessageScan()
    for order, (topic, log_time, raw) in enumerate(source.messages(read_topics(spec, marker))):
        report.messages[topic] += 1
        key = (log_time, order)
        msg = _deserialize(source, raw, topic, report)
        if topic == spec.image_topic:  # an undeserialisable frame still takes its place; pass 2 drops it
            scan.frames.append(Frame(log_time, key, len(scan.frames), None if msg is None else stamp_ns(msg)))
        elif msg is None:
            continue
        elif topic == spec.action_topic:
            scan.commands.append((key, msg.__msgtype__, msg))
        elif topic == spec.joint_topic:
            scan.joints.append((log_time, stamp_ns(msg), msg))
        elif topic == marker:
            scan.markers.append((key, str(msg.data)))
    report.frames = len(scan.frames)
    return scan


def _deserialize(source: BagSource, raw: bytes, topic: str, report: BagConversionReport) -> Any:
    try:
        return source.deserialize(raw, topic)
    except Exception as error:  # the library's deserialisers raise many kinds on malformed bytes
        report.undecodable[topic] += 1
        report.first_errors.setdefault(f"message on {topic} that could not be deserialised", one_line(error))
        return None


def stamp_ns(msg: Any) -> int | None:
    """A message's header stamp in ns; None when it has none (or a zero one)."""
    try:
        stamp = msg.header.stamp
        value = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
    except (AttributeError, TypeError, ValueError):
        return None
    return value if value > 0 else None


def choose_clock(spec: ConversionSpec, scan: MessageScan, report: BagConversionReport) -> None:
    """Place frames (and joint states) on header stamps or receive times, per --frame-time (auto: header stamps
    when every frame and joint state has one, the robot's clock for capture times)."""
    mode = spec.frame_time
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
