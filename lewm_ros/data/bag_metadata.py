"""metadata.yaml of a rosbag2 directory (version 8), and what it says about topics, QoS and episodes.

Version 8 is the newest that ROS 2 Humble's `ros2 bag` reads (Jazzy reads it too). Episode markers are
std_msgs/String messages "start N" / "stop N" on the recorder's `~/episode` topic, and are listed under
`custom_data` (`lewm_ros.episodes`: JSON list of `{"episode": N, "start_ns": t, "stop_ns": t or null}`,
`lewm_ros.episode_topic`: the topic). The writers and bag-check both write metadata.yaml through here.
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2.metadata import dump_qos_v8

from lewm_ros.arguments import one_line
from lewm_ros.data.bag_errors import BagError

METADATA_VERSION = 8
EPISODES_KEY = "lewm_ros.episodes"
EPISODE_TOPIC_KEY = "lewm_ros.episode_topic"
EPISODE_TYPE = "std_msgs/msg/String"
_EPISODE_TEXT = re.compile(r"^(start|stop) (\d+)$")


# ---- QoS --------------------------------------------------------------------------------------------------------

_INFINITE = QosTime(2147483647, 4294967295)  # how rosbag2 writes an infinite duration


def qos_time(nanoseconds: int) -> QosTime:
    """A QoS duration for metadata; rmw's "infinite" (>= 2^31 s) becomes rosbag2's infinite marker."""
    seconds, nanos = divmod(max(0, int(nanoseconds)), 1_000_000_000)
    return _INFINITE if seconds >= 2147483647 else QosTime(seconds, nanos)


def make_qos(*, reliable: bool, transient_local: bool, depth: int, history_keep_all: bool = False,
             deadline_ns: int = 0, lifespan_ns: int = 0, lease_ns: int = 0) -> Qos:  # fmt: skip
    """A rosbags Qos record (what metadata.yaml's offered_qos_profiles lists) from plain values."""
    return Qos(
        QosHistory.KEEP_ALL if history_keep_all else QosHistory.KEEP_LAST, int(depth),
        QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
        QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
        qos_time(deadline_ns), qos_time(lifespan_ns), QosLiveliness.AUTOMATIC, qos_time(lease_ns), False,
    )  # fmt: skip


# ---- metadata.yaml ----------------------------------------------------------------------------------------------


class TopicSpec(NamedTuple):
    """A topic of the bag: what metadata.yaml and the storage files say about it."""

    name: str
    msgtype: str
    msgdef: str
    rihs01: str
    offered_qos: tuple[Qos, ...] = ()
    serialization_format: str = "cdr"


@dataclass
class FileSummary:
    """One storage file of a bag: its name in the directory, time range and counts per topic."""

    path: str
    start_ns: int = 2**63 - 1
    end_ns: int = 0
    topic_counts: dict[str, int] = field(default_factory=dict)

    @property
    def message_count(self) -> int:
        return sum(self.topic_counts.values())


def nanoseconds_range(files: Iterable[FileSummary]) -> tuple[int, int]:
    """(first timestamp, duration) over the files that hold messages; (0, 0) when none does."""
    used = [f for f in files if f.message_count]
    if not used:
        return 0, 0
    start = min(f.start_ns for f in used)
    return start, max(f.end_ns for f in used) - start


def bag_metadata(storage: str, topics: Iterable[dict[str, Any]], files: list[FileSummary],
                 custom_data: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """metadata.yaml (version 8) of a bag: `topics` are topic_metadata mappings, counts come from `files`."""
    counts: dict[str, int] = collections.Counter()
    for summary in files:
        counts.update(summary.topic_counts)
    start, duration = nanoseconds_range(files)
    entries = []
    for summary in files:
        file_start, file_duration = nanoseconds_range([summary])
        entries.append({
            "path": summary.path, "starting_time": {"nanoseconds_since_epoch": file_start},
            "duration": {"nanoseconds": file_duration}, "message_count": summary.message_count,
        })  # fmt: skip
    topic_list = list(topics)
    return {
        "rosbag2_bagfile_information": {
            "version": METADATA_VERSION,
            "storage_identifier": storage,
            "relative_file_paths": [f.path for f in files],
            "duration": {"nanoseconds": duration},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": sum(counts.values()),
            "topics_with_message_count": [
                {"topic_metadata": topic, "message_count": counts.get(topic["name"], 0)} for topic in topic_list
            ],
            "compression_format": "",
            "compression_mode": "",
            "files": entries,
            "custom_data": dict(custom_data) if custom_data else None,
            "ros_distro": os.environ.get("ROS_DISTRO", "rosbags"),
        }
    }


def topic_metadata(spec: TopicSpec) -> dict[str, Any]:
    """The `topic_metadata` mapping of one topic, version 8 (QoS profiles as a YAML string)."""
    return {
        "name": spec.name, "type": spec.msgtype, "serialization_format": spec.serialization_format,
        "offered_qos_profiles": dump_qos_v8(list(spec.offered_qos)), "type_description_hash": spec.rihs01,
    }  # fmt: skip


def write_metadata(directory: Path, metadata: dict[str, Any]) -> Path:
    """Write metadata.yaml atomically (temporary file, fsync, rename): a crash leaves the old or the new one."""
    path = directory / "metadata.yaml"
    tmp = directory / "metadata.yaml.tmp"
    with tmp.open("w", encoding="utf-8") as stream:
        yaml.safe_dump(metadata, stream, sort_keys=False, default_flow_style=False, allow_unicode=True)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(tmp, path)
    return path


def read_metadata(directory: Path) -> dict[str, Any]:
    """The `rosbag2_bagfile_information` mapping of metadata.yaml; BagError when absent or malformed."""
    path = directory / "metadata.yaml"
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BagError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise BagError(f"{path}: unreadable: {one_line(err)}") from None
    info = document.get("rosbag2_bagfile_information") if isinstance(document, dict) else None
    if not isinstance(info, dict):
        raise BagError(f"{path}: no rosbag2_bagfile_information mapping")
    return info


def episodes_from_markers(markers: Iterable[tuple[int, str]]) -> list[dict[str, Any]]:
    """Episodes from (timestamp, "start N" | "stop N") markers in time order; an unmatched start stays open."""
    episodes: dict[int, dict[str, Any]] = {}
    for timestamp, text in markers:
        match = _EPISODE_TEXT.match(text.strip())
        if not match:
            continue
        index = int(match.group(2))
        if match.group(1) == "start":
            episodes[index] = {"episode": index, "start_ns": timestamp, "stop_ns": None}
        elif index in episodes and episodes[index]["stop_ns"] is None:
            episodes[index]["stop_ns"] = timestamp
    return sorted(episodes.values(), key=lambda e: e["start_ns"])


def is_episode_topic(name: str, msgtype: str) -> bool:
    """Whether a topic carries the recorder's episode markers (`.../episode`, std_msgs/String)."""
    return msgtype == EPISODE_TYPE and name.rsplit("/", 1)[-1] == "episode"
