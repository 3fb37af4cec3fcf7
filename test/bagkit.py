"""Writing real rosbag2 recordings for tests, without ROS: `rosbags` for MCAP and sqlite3 (metadata version 8 or
9, definitions embedded), and Python's sqlite3 for a Humble-style bag (version 5, schema 3, no definitions), the
layout `ros2 bag record` writes on Humble. Messages are `rosbags` typestore dataclasses, serialised to CDR.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.typesys import Stores, get_typestore

TS = get_typestore(Stores.ROS2_JAZZY)
T = TS.types
NS = 1_000_000_000
Record = tuple[str, object, int]  # topic, message, log time (ns)


def stamp(ns: int) -> object:
    return T["builtin_interfaces/msg/Time"](sec=ns // NS, nanosec=ns % NS)


def header(ns: int, frame_id: str = "camera") -> object:
    return T["std_msgs/msg/Header"](stamp=stamp(ns), frame_id=frame_id)


def raw_image(pixels: np.ndarray, ns: int = 0, encoding: str = "rgb8", *, bigendian: bool = False) -> object:
    """An Image of `pixels` (H, W, C) in `encoding`, rows unpadded; multi-byte channels in the given byte order."""
    height, width = pixels.shape[:2]
    data = pixels.astype(pixels.dtype.newbyteorder(">" if bigendian else "<"), copy=False)
    data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
    return T["sensor_msgs/msg/Image"](header=header(ns), height=height, width=width, encoding=encoding,
                                      is_bigendian=int(bigendian), step=data.size // height, data=data)  # fmt: skip


def compressed_image(rgb: np.ndarray, ns: int = 0, fmt: str = "png", quality: int = 95) -> object:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpeg" else []
    ok, encoded = cv2.imencode(".png" if fmt == "png" else ".jpg", np.ascontiguousarray(rgb[..., ::-1]), params)
    assert ok
    return T["sensor_msgs/msg/CompressedImage"](header=header(ns), format=fmt, data=encoded.reshape(-1))


def array_command(values: Sequence[float]) -> object:
    layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
    return T["std_msgs/msg/Float64MultiArray"](layout=layout, data=np.asarray(values, np.float64))


def trajectory(names: Sequence[str], *, velocities: Sequence[float] = (), positions: Sequence[float] = (),
               horizon_ns: int = 0) -> object:  # fmt: skip
    duration = T["builtin_interfaces/msg/Duration"](sec=horizon_ns // NS, nanosec=horizon_ns % NS)
    empty = np.zeros(0, np.float64)
    point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
        positions=np.asarray(positions, np.float64), velocities=np.asarray(velocities, np.float64),
        accelerations=empty, effort=empty, time_from_start=duration,
    )  # fmt: skip
    return T["trajectory_msgs/msg/JointTrajectory"](header=header(0, ""), joint_names=list(names), points=[point])


def joint_state(names: Sequence[str], positions: Sequence[float], velocities: Sequence[float] = (),
                ns: int = 0) -> object:  # fmt: skip
    empty = np.zeros(0, np.float64)
    return T["sensor_msgs/msg/JointState"](header=header(ns, ""), name=list(names),
                                           position=np.asarray(positions, np.float64),
                                           velocity=np.asarray(velocities, np.float64), effort=empty)  # fmt: skip


def marker(text: str) -> object:
    return T["std_msgs/msg/String"](data=text)


def write_bag(path: Path, records: Iterable[Record], *, storage: str = "mcap", version: int = 8,
              compress: bool = True) -> Path:  # fmt: skip
    """A rosbag2 directory with the records, written by rosbags (messages in the order given)."""
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    writer = Writer(path, version=version, storage_plugin=plugin)
    if compress and storage == "mcap":
        writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    writer.open()
    connections: dict[str, object] = {}
    for topic, msg, ns in records:
        msgtype = type(msg).__msgtype__
        if topic not in connections:
            connections[topic] = writer.add_connection(topic, msgtype, typestore=TS)
        writer.write(connections[topic], ns, TS.serialize_cdr(msg, msgtype))
    writer.close()
    return path


_HUMBLE_SCHEMA = """
CREATE TABLE schema(schema_version INTEGER PRIMARY KEY, ros_distro TEXT NOT NULL);
CREATE TABLE metadata(id INTEGER PRIMARY KEY, metadata_version INTEGER NOT NULL, metadata TEXT NOT NULL);
CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL,
                    serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);
CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, timestamp INTEGER NOT NULL,
                      data BLOB NOT NULL);
CREATE INDEX timestamp_idx ON messages (timestamp ASC);
INSERT INTO schema(schema_version, ros_distro) VALUES (3, 'humble');
"""


def write_humble_sqlite_bag(path: Path, records: Sequence[Record]) -> Path:
    """A bag as Humble's `ros2 bag record` writes it by default: sqlite3, metadata version 5, and no message
    definitions anywhere (readers need the distro's)."""
    path.mkdir()
    db = path / f"{path.name}_0.db3"
    topics: dict[str, tuple[int, str, int]] = {}
    with sqlite3.connect(db) as connection:
        connection.executescript(_HUMBLE_SCHEMA)
        for topic, msg, ns in records:
            msgtype = type(msg).__msgtype__
            if topic not in topics:
                topics[topic] = (len(topics) + 1, msgtype, 0)
                connection.execute("INSERT INTO topics VALUES (?, ?, ?, 'cdr', '')", (topics[topic][0], topic, msgtype))
            tid, kind, count = topics[topic]
            topics[topic] = (tid, kind, count + 1)
            connection.execute("INSERT INTO messages (topic_id, timestamp, data) VALUES (?, ?, ?)",
                               (tid, ns, bytes(TS.serialize_cdr(msg, msgtype))))  # fmt: skip
    connection.close()
    times = [ns for _topic, _msg, ns in records]
    start, duration = min(times), max(times) - min(times)
    entries = "\n".join(
        f"    - topic_metadata:\n        name: {topic}\n        type: {kind}\n        serialization_format: cdr\n"
        f"        offered_qos_profiles: ''\n      message_count: {count}"
        for topic, (_tid, kind, count) in topics.items()
    )
    (path / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n  version: 5\n  storage_identifier: sqlite3\n"
        f"  duration:\n    nanoseconds: {duration}\n  starting_time:\n    nanoseconds_since_epoch: {start}\n"
        f"  message_count: {len(records)}\n  topics_with_message_count:\n{entries}\n"
        "  compression_format: ''\n  compression_mode: ''\n"
        f"  relative_file_paths:\n    - {db.name}\n"
        f"  files:\n    - path: {db.name}\n      starting_time:\n        nanoseconds_since_epoch: {start}\n"
        f"      duration:\n        nanoseconds: {duration}\n      message_count: {len(records)}\n"
    )
    return path
