"""rosbag2 directories without ROS: the bag recorder's storage core, and `bag-check`'s scan, report and repair.

Layout (what `ros2 bag record` writes when it splits): one bag directory holding numbered storage files
`<dir name>_<i>.mcap` (or `.db3`) and one `metadata.yaml`, version 8 (the newest that ROS 2 Humble's
`ros2 bag` reads; Jazzy reads it too). The storage files are written with the `rosbags` library, one
`rosbags.rosbag2.Writer` per file: it writes one file per bag directory, so `SegmentWriter` points each
writer's file into the shared directory and this module merges the per-file summaries into the directory's
metadata.yaml (rewritten atomically whenever a file is closed, and at the end).

Durability: MCAP files are written in zstd-compressed chunks of at most 1 MiB (rosbags' chunk size);
`BagWriter.flush` closes the open chunk and hands it to the kernel, and a sqlite3 file commits its open
transaction. What a SIGKILL can cost is what was written since the last flush. A killed MCAP file has no
summary or footer and the bag no up-to-date metadata.yaml: `check_bag` scans the files record by record,
cuts a torn tail (the chunk that was being written), appends a summary and footer so every reader opens the
file again, and writes metadata.yaml from what it found. A killed sqlite3 file has a hot journal: opening it
read-write rolls the unfinished transaction back, the committed rows stay.

Episode markers are std_msgs/String messages "start N" / "stop N" on the recorder's `~/episode` topic,
and are listed in metadata.yaml under `custom_data` (`lewm_ros.episodes`: JSON list of
`{"episode": N, "start_ns": t, "stop_ns": t or null}`, `lewm_ros.episode_topic`: the topic).

Everything here is ROS-free (rosbags, PyYAML and the standard library) and runs where ROS is not installed.
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import re
import shutil
import sqlite3
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.rosbag2.metadata import dump_qos_v8
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

# The stdlib's compression.zstd from Python 3.14, its backport (pinned) before.
zstd = importlib.import_module("compression.zstd" if sys.version_info >= (3, 14) else "backports.zstd")

METADATA_VERSION = 8
STORAGES = {"mcap": (StoragePlugin.MCAP, ".mcap"), "sqlite3": (StoragePlugin.SQLITE3, ".db3")}
COMPRESSIONS = ("zstd", "none")
EPISODES_KEY = "lewm_ros.episodes"
EPISODE_TOPIC_KEY = "lewm_ros.episode_topic"
EPISODE_TYPE = "std_msgs/msg/String"
_EPISODE_TEXT = re.compile(r"^(start|stop) (\d+)$")
_BAG_FILE = re.compile(r".*\.(mcap|db3)$")
# Files a bag directory may hold: what --overwrite is allowed to delete (never anything else).
_BAG_LEFTOVERS = re.compile(
    r"^(metadata\.yaml(\.tmp)?|.*\.(mcap|db3)(-journal|-wal|-shm)?|\..*\.segment\.yaml(\.tmp)?)$"
)


class BagError(ValueError):
    """A bag that cannot be written or read as asked; the message says what and where, in one line."""


# ---- message types ----------------------------------------------------------------------------------------------


def normalize_type(name: str) -> str:
    """`pkg/Type` or `pkg/msg/Type` -> `pkg/msg/Type`; anything else is refused (BagError)."""
    parts = name.strip().split("/")
    if len(parts) == 2:
        parts = [parts[0], "msg", parts[1]]
    if len(parts) != 3 or parts[1] != "msg" or not all(re.fullmatch(r"[A-Za-z_]\w*", p) for p in parts):
        raise BagError(f"not a message type name: {name!r} (expected pkg/msg/Type)")
    return "/".join(parts)


def _share_dirs() -> list[Path]:
    prefixes = [*filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)), sys.prefix]
    return [Path(prefix) / "share" for prefix in prefixes]


_BUILTIN_FIELD_TYPES = {
    "bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
    "int64", "uint64", "string", "wstring", "time", "duration",
}  # fmt: skip


class MessageTypes:
    """Message definitions (ROS 2 .msg text with dependencies) and RIHS01 hashes of the types a bag holds.

    Known types come from rosbags' type store of the running distro (ROS_DISTRO humble or jazzy); others
    are read from `share/<pkg>/msg/<Type>.msg` of the installed packages (AMENT_PREFIX_PATH, then this
    Python's prefix, where the PyPI ROS wheels put them). Not thread-safe: one owner.
    """

    def __init__(self, search: Iterable[Path] | None = None) -> None:
        distro = os.environ.get("ROS_DISTRO", "jazzy").lower()
        self.store = get_typestore(Stores.ROS2_HUMBLE if distro == "humble" else Stores.ROS2_JAZZY)
        self._search = list(search) if search is not None else _share_dirs()

    def definition(self, msgtype: str) -> tuple[str, str]:
        """(message definition, RIHS01 hash) of `msgtype`; BagError when neither store nor share knows it."""
        msgtype = normalize_type(msgtype)
        self._load(msgtype, set())
        msgdef, _ = self.store.generate_msgdef(msgtype, ros_version=2)
        return msgdef, self.store.hash_rihs01(msgtype)

    def _load(self, msgtype: str, seen: set[str]) -> None:
        if msgtype in self.store.fielddefs or msgtype in seen:
            return
        seen.add(msgtype)
        package, _, name = msgtype.split("/")
        for share in self._search:
            path = share / package / "msg" / f"{name}.msg"
            if path.is_file():
                text = path.read_text()
                break
        else:
            raise BagError(
                f"unknown message type {msgtype}: not in rosbags' type store and no {package}/msg/{name}.msg "
                f"under {', '.join(str(s) for s in self._search) or 'any share directory'}"
            )
        for dependency in self._dependencies(text, package):
            self._load(dependency, seen)
        self.store.register(get_types_from_msg(text, msgtype))

    @staticmethod
    def _dependencies(text: str, package: str) -> list[str]:
        """Message types the fields of a .msg text refer to (constants and builtin types left out)."""
        found = []
        for line in text.splitlines():
            tokens = line.split("#", 1)[0].split(None, 2)
            if len(tokens) < 2 or "=" in tokens[1] or (len(tokens) > 2 and tokens[2].lstrip().startswith("=")):
                continue  # blank, comment or constant
            base = re.sub(r"\[.*\]$", "", tokens[0]).split("<=")[0]
            if base in _BUILTIN_FIELD_TYPES:
                continue
            found.append(normalize_type(base if "/" in base else f"{package}/{base}"))
        return found


def rihs01_from_definition(msgtype: str, msgdef: str) -> str:
    """The RIHS01 hash of a type from its stored definition text ('' when it cannot be parsed)."""
    try:
        store = get_typestore(Stores.EMPTY)
        store.register(get_types_from_msg(msgdef, msgtype))
        return store.hash_rihs01(msgtype)
    except Exception:  # a definition from a foreign bag: the hash is optional metadata
        return ""


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


def _nanoseconds_range(files: Iterable[FileSummary]) -> tuple[int, int]:
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
    start, duration = _nanoseconds_range(files)
    entries = []
    for summary in files:
        file_start, file_duration = _nanoseconds_range([summary])
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
        raise BagError(f"{path}: unreadable: {' '.join(str(err).split())}") from None
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


# ---- writing ----------------------------------------------------------------------------------------------------


class _FileStem:
    """Stands in for the directory path rosbags' storage writers receive: they name their file
    `path / f"{path.name}.<ext>"`, which with this object is `<bag dir>/<stem>.<ext>` (rosbags 0.11.9)."""

    def __init__(self, directory: Path, stem: str) -> None:
        self.directory, self.name = directory, stem

    def __truediv__(self, other: str) -> Path:
        return self.directory / other


class SegmentWriter(Writer):
    """A rosbags Writer whose storage file is `<directory>/<stem>.<ext>` inside an existing bag directory.

    Its own metadata (the per-file summary rosbags writes on close) goes to a hidden file that BagWriter
    deletes after merging: the directory's metadata.yaml is BagWriter's.
    """

    def __init__(self, directory: Path, stem: str, storage: str) -> None:
        super().__init__(directory / stem, version=METADATA_VERSION, storage_plugin=STORAGES[storage][0])
        self.directory, self.stem = directory, stem
        self.metapath = directory / f".{stem}.segment.yaml"

    def open(self) -> None:
        """Create the storage file inside the (existing) bag directory; refuse to overwrite one."""
        target = self.directory / f"{self.stem}{STORAGES[self.storage_plugin.name.lower()][1]}"
        if target.exists():
            raise BagError(f"{target} exists already, not overwriting")
        self.storage = self.STORAGE_PLUGINS[self.storage_plugin](_FileStem(self.directory, self.stem),
                                                                 self.compression_mode)  # fmt: skip


class BagWriter:
    """A rosbag2 directory of one or more storage files, split by size or duration, flushed on demand.

    Not thread-safe, and sqlite3 connections belong to the thread that opened them: create, write, flush
    and close from one thread (ThreadedBagWriter's writer thread).
    """

    def __init__(self, path: Path, *, storage: str = "mcap", compression: str = "zstd", max_bytes: int = 0,
                 max_duration_ns: int = 0, episode_topic: str | None = None,
                 types: MessageTypes | None = None) -> None:  # fmt: skip
        if storage not in STORAGES:
            raise BagError(f"unknown storage {storage!r}: expected one of {', '.join(STORAGES)}")
        if compression not in COMPRESSIONS:
            raise BagError(f"unknown compression {compression!r}: expected one of {', '.join(COMPRESSIONS)}")
        if not path.is_dir():
            raise BagError(f"{path}: the bag directory must exist (prepare_output creates it)")
        self.path, self.storage, self.compression = path, storage, compression
        self.max_bytes, self.max_duration_ns = max(0, int(max_bytes)), max(0, int(max_duration_ns))
        self.topics: list[TopicSpec] = []
        self.files: list[FileSummary] = []
        self.markers: list[tuple[int, str]] = []
        self.custom_data: dict[str, str] = {}
        self.bytes_written = 0
        self._types = types
        self._segment: SegmentWriter | None = None
        self._connections: list[Any] = []
        self._current = FileSummary("")
        self._segment_payload = 0
        self._episode_key: int | None = None
        self._episode_codec = None
        self._open_segment()
        if episode_topic:
            types = self._types or MessageTypes()
            msgdef, rihs01 = types.definition(EPISODE_TYPE)
            qos = make_qos(reliable=True, transient_local=False, depth=10)
            self._episode_key = self.add_topic(TopicSpec(episode_topic, EPISODE_TYPE, msgdef, rihs01, (qos,)))
            self._episode_codec = types.store
            self.custom_data[EPISODE_TOPIC_KEY] = episode_topic

    # -- segments --

    def _open_segment(self) -> None:
        stem = f"{self.path.name}_{len(self.files)}"
        segment = SegmentWriter(self.path, stem, self.storage)
        if self.storage == "mcap" and self.compression == "zstd":
            segment.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        try:
            segment.open()
        except OSError as err:
            raise BagError(f"cannot create {self.path / stem}: {err.strerror or err}") from None
        self._segment = segment
        self._current = FileSummary(Path(segment.storage.path).name)
        self._segment_payload = 0
        self._connections = [self._add_connection(spec) for spec in self.topics]

    def _add_connection(self, spec: TopicSpec) -> Any:
        assert self._segment is not None
        self._current.topic_counts.setdefault(spec.name, 0)
        return self._segment.add_connection(
            spec.name, spec.msgtype, msgdef=spec.msgdef, rihs01=spec.rihs01,
            serialization_format=spec.serialization_format, offered_qos_profiles=list(spec.offered_qos),
        )  # fmt: skip

    def _close_segment(self) -> None:
        segment, self._segment = self._segment, None
        if segment is None:
            return
        for key, value in self._episode_custom_data().items():
            segment.set_custom_data(key, value)
        try:
            segment.close()
        finally:
            segment.metapath.unlink(missing_ok=True)
        self.files.append(self._current)
        write_metadata(self.path, self.metadata())

    def _episode_custom_data(self) -> dict[str, str]:
        data = dict(self.custom_data)
        if self._episode_key is not None:
            data[EPISODES_KEY] = json.dumps(episodes_from_markers(self.markers), separators=(",", ":"))
        return data

    def segment_bytes(self) -> int:
        """Bytes of the open storage file so far (MCAP: written + the open chunk; sqlite3: payload + rows)."""
        storage = self._segment.storage if self._segment else None
        if isinstance(storage, McapWriter):
            return storage.bio.tell() + storage.chunk.bio.tell()
        return self._segment_payload + 64 * self._current.message_count

    def _should_split(self, timestamp: int) -> bool:
        if not self._current.message_count:
            return False
        if self.max_bytes and self.segment_bytes() >= self.max_bytes:
            return True
        return bool(self.max_duration_ns and timestamp - self._current.start_ns >= self.max_duration_ns)

    # -- writing --

    def add_topic(self, spec: TopicSpec) -> int:
        """Register a topic in every storage file from now on; returns its key for `write`."""
        if any(t.name == spec.name for t in self.topics):
            raise BagError(f"topic {spec.name} is recorded already")
        self.topics.append(spec)
        self._connections.append(self._add_connection(spec))
        return len(self.topics) - 1

    def write(self, key: int, timestamp: int, data: bytes | memoryview) -> None:
        """Write one serialized message as received; starts a new storage file first when a limit is reached."""
        if self._should_split(timestamp):
            self._close_segment()
            self._open_segment()
        assert self._segment is not None
        self._segment.write(self._connections[key], timestamp, data)
        name = self.topics[key].name
        current = self._current
        current.topic_counts[name] = current.topic_counts.get(name, 0) + 1
        current.start_ns = min(current.start_ns, timestamp)
        current.end_ns = max(current.end_ns, timestamp)
        self._segment_payload += len(data)
        self.bytes_written += len(data)

    def mark_episode(self, timestamp: int, text: str) -> None:
        """Write an episode marker ("start N" / "stop N") on the episode topic and remember it for metadata."""
        if self._episode_key is None or self._episode_codec is None:
            raise BagError("this bag has no episode topic")
        store = self._episode_codec
        data = store.serialize_cdr(store.types[EPISODE_TYPE](data=text), EPISODE_TYPE)
        self.write(self._episode_key, timestamp, bytes(data))
        self.markers.append((timestamp, text))

    def flush(self) -> None:
        """Make everything written so far survive a SIGKILL: close the MCAP chunk / commit the sqlite3 rows."""
        storage = self._segment.storage if self._segment else None
        if isinstance(storage, McapWriter):
            if storage.chunk.msgs:
                storage.close_chunk()
            storage.bio.flush()
        elif isinstance(storage, Sqlite3Writer):
            storage.conn.commit()

    def metadata(self) -> dict[str, Any]:
        """metadata.yaml of the files closed so far."""
        return bag_metadata(self.storage, [topic_metadata(t) for t in self.topics], self.files,
                            self._episode_custom_data())  # fmt: skip

    def close(self) -> dict[str, Any]:
        """Close the open file (index, footer) and write the final metadata.yaml; returns it."""
        self._close_segment()
        return self.metadata()

    @property
    def episodes(self) -> list[dict[str, Any]]:
        return episodes_from_markers(self.markers)


def prepare_output(path: Path, *, overwrite: bool = False) -> Path:
    """Create an empty bag directory. An existing one is refused unless `overwrite`, and even then only
    a directory holding nothing but bag files (metadata.yaml, *.mcap, *.db3) is deleted: a mistyped path
    must never cost other data."""
    path = Path(path).expanduser()
    if path.exists() or path.is_symlink():
        if not overwrite:
            raise BagError(f"output {path} exists already: choose another or pass --overwrite")
        if not path.is_dir() or path.is_symlink():
            raise BagError(f"output {path} exists and is not a directory: not overwriting it")
        others = sorted(p.name for p in path.iterdir() if not _BAG_LEFTOVERS.match(p.name) or p.is_dir())
        if others:
            raise BagError(f"output {path} holds files that are not part of a bag ({', '.join(others[:3])}"
                           f"{', ...' if len(others) > 3 else ''}): not deleting it even with --overwrite")  # fmt: skip
        shutil.rmtree(path)
    try:
        path.mkdir(parents=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise BagError(f"cannot create output directory {path}: {err.strerror or err}") from None
    return path


# ---- the writer thread ------------------------------------------------------------------------------------------


@dataclass
class TopicStats:
    """Counts of one recorded topic: received on the wire, written to the bag, dropped (queue full)."""

    name: str
    msgtype: str
    received: int = 0
    written: int = 0
    dropped: int = 0
    bytes: int = 0


@dataclass
class RecordingSummary:
    """What a recording ended with (logged by the recorder, returned to in-process callers)."""

    path: str
    storage: str
    files: list[str]
    seconds: float
    messages: int
    bytes: int
    dropped: int
    dropped_no_clock: int
    topics: list[TopicStats]
    episodes: list[dict[str, Any]]
    error: str | None = None

    def lines(self) -> list[str]:
        """Human-readable summary, one topic a line."""
        rate = self.bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0
        out = [f"recorded {self.messages} messages ({self.bytes / 1e6:.1f} MB, {rate:.2f} MB/s) in "
               f"{self.seconds:.1f} s into {self.path} ({self.storage}, {len(self.files)} file(s)); "
               f"dropped {self.dropped} (queue full)"
               + (f", {self.dropped_no_clock} before the first /clock" if self.dropped_no_clock else "")
               + (f"; {len(self.episodes)} episode(s)" if self.episodes else "")]  # fmt: skip
        out += [f"  {t.name} [{t.msgtype}]: received {t.received}, written {t.written}, dropped {t.dropped}"
                for t in self.topics]  # fmt: skip
        if self.error:
            out.append(f"  error: {self.error}")
        return out


class ThreadedBagWriter:
    """A BagWriter owned by a background thread and fed through a bounded queue.

    The hot path (`put`) takes the receive timestamp and appends to the queue under one lock, so messages
    land in the bag in the order they were stamped; when the queued bytes would pass `queue_bytes` the
    message is dropped and counted instead of blocking the caller (a ROS executor thread). Topic
    registrations and episode markers are never dropped. The writer thread flushes every
    `flush_interval_s` (see BagWriter.flush): a SIGKILL loses at most that much, or one 1 MiB chunk.
    """

    def __init__(self, path: Path, *, clock: Callable[[], int | None] = time.time_ns,
                 queue_bytes: int = 128 * 2**20, flush_interval_s: float = 1.0,
                 log: Callable[[str], None] | None = None, **writer_options: Any) -> None:  # fmt: skip
        self.path = path
        self.clock = clock
        self.queue_bytes = max(1, int(queue_bytes))
        self.flush_interval_s = float(flush_interval_s)
        self.stats: list[TopicStats] = []
        self.dropped_no_clock = 0
        self.error: str | None = None
        self._log = log or (lambda _text: None)
        self._writer_options = writer_options
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._opened = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: BagWriter | None = None
        self._keys: dict[int, int] = {}  # front-end key -> BagWriter key (writer thread only)
        self._episode_open: int | None = None
        self._next_episode = 0
        self._started = 0.0
        self._summary: RecordingSummary | None = None

    # -- lifecycle --

    def start(self) -> None:
        """Open the bag in the writer thread; raises BagError here when it cannot be opened."""
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="bag-writer", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._writer is None:
            self._thread.join()
            raise BagError(self.error or "the bag writer failed to start")

    def stop(self) -> RecordingSummary:
        """Write what is queued, close the bag (final metadata.yaml) and return the summary. Idempotent."""
        if self._summary is not None:
            return self._summary
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        writer = self._writer
        self._summary = RecordingSummary(
            path=str(self.path), storage=writer.storage if writer else "?",
            files=[f.path for f in writer.files] if writer else [],
            seconds=time.monotonic() - self._started, messages=sum(t.written for t in self.stats),
            bytes=sum(t.bytes for t in self.stats), dropped=sum(t.dropped for t in self.stats),
            dropped_no_clock=self.dropped_no_clock, topics=list(self.stats),
            episodes=writer.episodes if writer else [], error=self.error,
        )  # fmt: skip
        return self._summary

    # -- front end (any thread) --

    def add_topic(self, spec: TopicSpec) -> int:
        """Register a topic; returns the key `put` takes. Never dropped."""
        with self._cond:
            key = len(self.stats)
            self.stats.append(TopicStats(spec.name, spec.msgtype))
            self._queue.append(("topic", key, spec))
            self._cond.notify()
        return key

    def put(self, key: int, data: bytes) -> bool:
        """Queue one received message, stamped now; False when it was dropped (queue full, no clock, failed)."""
        size = len(data)
        with self._cond:
            if self._stopping:
                return False  # arrived after the recording ended: neither received nor dropped
            stats = self.stats[key]
            stats.received += 1
            if self.error is not None or self._queued + size > self.queue_bytes:
                stats.dropped += 1
                return False
            timestamp = self.clock()
            if not timestamp:
                self.dropped_no_clock += 1
                return False
            self._queued += size
            self._queue.append(("msg", key, timestamp, data))
            if len(self._queue) == 1:
                self._cond.notify()
        return True

    def mark_episode(self, start: bool) -> tuple[bool, str]:
        """Start (closing an open one first) or stop an episode; (done, "start N" / "stop N" or why not)."""
        with self._cond:
            if self.error is not None or self._stopping:
                return False, f"not recording: {self.error or 'stopping'}"
            timestamp = self.clock()
            if not timestamp:
                return False, "no clock yet (use_sim_time and no /clock received)"
            texts = []
            if self._episode_open is not None:
                texts.append(f"stop {self._episode_open}")
                self._episode_open = None
            elif not start:
                return False, "no episode is open"
            if start:
                self._episode_open = self._next_episode
                self._next_episode += 1
                texts.append(f"start {self._episode_open}")
            for text in texts:
                self._queue.append(("marker", timestamp, text))
            self._cond.notify()
        return True, "; ".join(texts)

    @property
    def queued_bytes(self) -> int:
        """Bytes of messages waiting for the writer thread."""
        return self._queued

    @property
    def episode_open(self) -> int | None:
        """Index of the episode started and not yet stopped, if any."""
        return self._episode_open

    # -- writer thread --

    def _run(self) -> None:
        try:
            self._writer = BagWriter(self.path, **self._writer_options)
        except (BagError, OSError) as err:
            self.error = " ".join(str(err).split())
            self._opened.set()
            return
        self._opened.set()
        writer = self._writer
        next_flush = time.monotonic() + self.flush_interval_s
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    remaining = next_flush - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), 256))]
                done = self._stopping and not self._queue and not batch
            if self.error is None:
                self._write_batch(writer, batch)
            if batch:
                with self._cond:
                    self._queued -= sum(len(item[3]) for item in batch if item[0] == "msg")
            if time.monotonic() >= next_flush and self.error is None:
                self._guard(writer.flush)
                next_flush = time.monotonic() + self.flush_interval_s
            if done:
                break
        self._guard(writer.close)

    def _write_batch(self, writer: BagWriter, batch: list[tuple[Any, ...]]) -> None:
        for item in batch:
            kind = item[0]
            if kind == "msg":
                _, key, timestamp, data = item
                if self._guard(writer.write, self._keys[key], timestamp, data):
                    stats = self.stats[key]
                    stats.written += 1
                    stats.bytes += len(data)
            elif kind == "topic":
                _, key, spec = item
                writer_key = self._guard(writer.add_topic, spec)
                self._keys[key] = -1 if writer_key is None else writer_key
            elif kind == "marker":
                self._guard(writer.mark_episode, item[1], item[2])
            if self.error is not None:
                return

    def _guard(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run a storage call; the first failure (disk full, ...) stops the recording and is reported."""
        try:
            result = function(*args)
        except (OSError, BagError, sqlite3.Error, ValueError) as err:
            if self.error is None:
                self.error = f"writing {self.path} failed: {' '.join(str(err).split())}"
                self._log(self.error)
            return None
        return True if result is None else result


# ---- reading: the scan bag-check does ---------------------------------------------------------------------------

_MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OP_MESSAGE_INDEX, OP_CHUNK_INDEX, OP_STATISTICS, OP_SUMMARY_OFFSET, OP_DATA_END = 0x07, 0x08, 0x0B, 0x0E, 0x0F


class _Cursor:
    """Little-endian MCAP field reader over one record's bytes."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0

    def take(self, fmt: str) -> Any:
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def raw(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise BagError("record field runs past the record")
        out = bytes(self.data[self.pos : self.pos + size])
        self.pos += size
        return out

    def string(self) -> str:
        return self.raw(self.take("<I")).decode("utf-8")

    def string_map(self) -> dict[str, str]:
        end = self.take("<I") + self.pos
        out = {}
        while self.pos < end:
            out[self.string()] = self.string()
        return out


@dataclass
class _Chunk:
    offset: int  # of the chunk record's opcode
    length: int  # of the whole chunk record
    start_ns: int
    end_ns: int
    compression: str
    compressed_size: int
    uncompressed_size: int
    valid: bool
    counts: dict[int, int] = field(default_factory=dict)
    index_offsets: dict[int, int] = field(default_factory=dict)
    index_length: int = 0
    entries: dict[int, list[tuple[int, int]]] | None = None  # kept for the last chunk only (index rebuild)


@dataclass
class FileReport:
    """What bag-check found in one storage file."""

    path: str
    storage: str
    status: str  # complete | torn | rolled-back | unreadable
    messages: int = 0
    start_ns: int = 0
    end_ns: int = 0
    size: int = 0
    lost_bytes: int = 0
    repaired: bool = False
    problems: list[str] = field(default_factory=list)


@dataclass
class _FileScan:
    report: FileReport
    summary: FileSummary
    topics: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> topic_metadata (v8)
    markers: list[tuple[int, str]] = field(default_factory=list)
    # MCAP only
    schemas: dict[int, tuple[str, str, bytes]] = field(default_factory=dict)
    channels: dict[int, tuple[int, str, str, dict[str, str]]] = field(default_factory=dict)
    chunks: list[_Chunk] = field(default_factory=list)
    data_end: int = 0  # end of the last whole record of the data section
    complete: bool = False


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        return zstd.decompress(data)
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.decompress(data)
    raise BagError(f"unsupported chunk compression {compression!r}")


def _is_episode_topic(name: str, msgtype: str) -> bool:
    return msgtype == EPISODE_TYPE and name.rsplit("/", 1)[-1] == "episode"


def _string_payload(data: bytes) -> str:
    """The text of a CDR-serialized std_msgs/String (4-byte encapsulation, u32 length with NUL, bytes)."""
    if len(data) < 8:
        return ""
    little = data[1] in (1, 3)
    (length,) = struct.unpack_from("<I" if little else ">I", data, 4)
    return data[8 : 8 + max(0, length - 1)].decode("utf-8", "replace")


def _scan_mcap(path: Path) -> _FileScan:
    size = path.stat().st_size
    scan = _FileScan(FileReport(path.name, "mcap", "complete", size=size), FileSummary(path.name))
    report = scan.report
    counts: dict[int, int] = collections.Counter()

    def on_message(channel: int, log_time: int, data: bytes) -> None:
        counts[channel] += 1
        scan.summary.start_ns = min(scan.summary.start_ns, log_time)
        scan.summary.end_ns = max(scan.summary.end_ns, log_time)
        if channel in scan.channels:
            schema = scan.schemas.get(scan.channels[channel][0])
            if schema and _is_episode_topic(scan.channels[channel][1], schema[0]):
                scan.markers.append((log_time, _string_payload(data)))

    def on_record(op: int, body: bytes) -> None:
        cursor = _Cursor(body)
        if op == OP_SCHEMA:
            key, name, encoding = cursor.take("<H"), cursor.string(), cursor.string()
            scan.schemas[key] = (name, encoding, cursor.raw(cursor.take("<I")))
        elif op == OP_CHANNEL:
            key, schema, topic, encoding = cursor.take("<H"), cursor.take("<H"), cursor.string(), cursor.string()
            scan.channels[key] = (schema, topic, encoding, cursor.string_map())

    with path.open("rb") as stream:
        if stream.read(8) != _MAGIC:
            report.status = "unreadable"
            report.problems.append("not an MCAP file (bad magic)" if size >= 8 else "empty or shorter than a header")
            return scan
        position = scan.data_end = 8
        while True:
            head = stream.read(9)
            if len(head) < 9:
                break
            op, length = struct.unpack("<BQ", head)
            if position + 9 + length > size:
                break
            if op in (OP_DATA_END, OP_FOOTER):
                stream.seek(-len(_MAGIC), os.SEEK_END)
                tail = stream.read(len(_MAGIC))
                scan.complete = op == OP_DATA_END and tail == _MAGIC and size - position >= 9 + 4 + 37
                break
            if op == OP_CHUNK:
                body = stream.read(length)
                chunk = _read_chunk(body, position, 9 + length, scan, on_record, on_message)
                if not chunk.valid:
                    report.problems.append(f"chunk at byte {position} is corrupt (CRC or decompression failed)")
                scan.chunks.append(chunk)
            elif op == OP_MESSAGE_INDEX and scan.chunks:
                channel = struct.unpack("<H", stream.read(2))[0]
                stream.seek(length - 2, os.SEEK_CUR)
                scan.chunks[-1].index_offsets[channel] = position
                scan.chunks[-1].index_length += 9 + length
            elif op == OP_MESSAGE:
                body = stream.read(length)
                channel, _, log_time, _ = struct.unpack_from("<HIQQ", body)
                on_message(channel, log_time, body[22:])
            elif op in (OP_SCHEMA, OP_CHANNEL, OP_HEADER):
                on_record(op, stream.read(length))
            else:
                stream.seek(length, os.SEEK_CUR)
            position += 9 + length
            scan.data_end = position
    if not scan.complete:
        report.status = "torn"
        report.lost_bytes = size - scan.data_end
        torn = f": {report.lost_bytes} bytes after the last whole record are unreadable" if report.lost_bytes else ""
        report.problems.append(f"no summary/footer (the writer did not close it){torn}")
    _fill_topics(scan, counts)
    return scan


def _read_chunk(body: bytes, offset: int, length: int, scan: _FileScan, on_record: Callable[[int, bytes], None],
                on_message: Callable[[int, int, bytes], None]) -> _Chunk:  # fmt: skip
    cursor = _Cursor(body)
    start_ns, end_ns, uncompressed_size, crc = cursor.take("<QQQI")
    compression = cursor.string()
    compressed_size = cursor.take("<Q")
    chunk = _Chunk(offset, length, start_ns, end_ns, compression, compressed_size, uncompressed_size, True)
    try:
        records = _decompress(cursor.raw(compressed_size), compression, uncompressed_size)
        if len(records) != uncompressed_size or (crc and zlib.crc32(records) != crc):
            raise BagError("size or CRC mismatch")
    except Exception:  # any decompression failure means the same: this chunk is lost
        chunk.valid = False
        return chunk
    entries: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    position = 0
    while position + 9 <= len(records):
        op, size = struct.unpack_from("<BQ", records, position)
        body_start = position + 9
        if op == OP_MESSAGE:
            channel, _, log_time, _ = struct.unpack_from("<HIQQ", records, body_start)
            entries[channel].append((log_time, position))
            on_message(channel, log_time, records[body_start + 22 : body_start + size])
        elif op in (OP_SCHEMA, OP_CHANNEL):
            on_record(op, records[body_start : body_start + size])
        position = body_start + size
    chunk.counts = {channel: len(items) for channel, items in entries.items()}
    if scan.chunks:
        scan.chunks[-1].entries = None  # only the last chunk's entries may be needed to rebuild its index
    chunk.entries = dict(entries)
    return chunk


def _fill_topics(scan: _FileScan, counts: dict[int, int]) -> None:
    for channel, (schema_id, topic, encoding, metadata) in sorted(scan.channels.items()):
        schema = scan.schemas.get(schema_id, ("", "", b""))
        entry = scan.topics.setdefault(topic, {
            "name": topic, "type": schema[0], "serialization_format": encoding,
            "offered_qos_profiles": metadata.get("offered_qos_profiles", ""),
            "type_description_hash": rihs01_from_definition(schema[0], schema[2].decode("utf-8", "replace")),
        })  # fmt: skip
        scan.summary.topic_counts[entry["name"]] = scan.summary.topic_counts.get(entry["name"], 0) + counts.get(
            channel, 0
        )
    for channel, count in counts.items():
        if channel not in scan.channels and count:
            scan.report.problems.append(f"{count} messages on channel {channel}, which has no channel record")
    scan.report.messages = scan.summary.message_count
    scan.report.start_ns, scan.report.end_ns = _nanoseconds_range([scan.summary])
    scan.report.end_ns += scan.report.start_ns


def _record(op: int, body: bytes) -> bytes:
    return struct.pack("<BQ", op, len(body)) + body


def _str(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("<I", len(data)) + data


def _finish_mcap(path: Path, scan: _FileScan) -> None:
    """Make a killed MCAP file whole: cut the torn tail, rebuild the last chunk's message index if it was
    cut, and append data end, summary (schemas, channels, chunk indexes, statistics, offsets) and footer."""
    chunks = [c for c in scan.chunks if c.valid]
    cut = scan.data_end
    last = scan.chunks[-1] if scan.chunks else None
    rebuild = last is not None and last.valid and set(last.index_offsets) != set(last.counts)
    if rebuild and last is not None:
        cut = last.offset + last.length
    with path.open("r+b") as stream:
        stream.truncate(cut)
        stream.seek(cut)
        if rebuild and last is not None and last.entries is not None:
            last.index_offsets, last.index_length = {}, 0
            for channel, entries in sorted(last.entries.items()):
                pairs = b"".join(struct.pack("<QQ", t, o) for t, o in entries)
                record = _record(OP_MESSAGE_INDEX, struct.pack("<HI", channel, len(pairs)) + pairs)
                last.index_offsets[channel] = stream.tell()
                last.index_length += len(record)
                stream.write(record)
        stream.write(_record(OP_DATA_END, struct.pack("<I", 0)))
        summary_start = stream.tell()
        groups: list[tuple[int, int, int]] = []

        def group(op: int, records: list[bytes]) -> None:
            if records:
                start = stream.tell()
                for record in records:
                    stream.write(record)
                groups.append((op, start, stream.tell() - start))

        group(OP_SCHEMA, [_record(OP_SCHEMA, struct.pack("<H", k) + _str(n) + _str(e) + struct.pack("<I", len(d)) + d)
                          for k, (n, e, d) in sorted(scan.schemas.items())])  # fmt: skip
        channel_records = []
        for key, (schema, topic, encoding, metadata) in sorted(scan.channels.items()):
            pairs = b"".join(_str(k) + _str(v) for k, v in metadata.items())
            body = struct.pack("<HH", key, schema) + _str(topic) + _str(encoding) + struct.pack("<I", len(pairs))
            channel_records.append(_record(OP_CHANNEL, body + pairs))
        group(OP_CHANNEL, channel_records)
        index_records = []
        for chunk in chunks:
            offsets = b"".join(struct.pack("<HQ", c, o) for c, o in sorted(chunk.index_offsets.items()))
            body = struct.pack("<QQQQI", chunk.start_ns, chunk.end_ns, chunk.offset, chunk.length, len(offsets))
            body += offsets + struct.pack("<Q", chunk.index_length) + _str(chunk.compression)
            index_records.append(_record(OP_CHUNK_INDEX, body + struct.pack("<QQ", chunk.compressed_size,
                                                                            chunk.uncompressed_size)))  # fmt: skip
        group(OP_CHUNK_INDEX, index_records)
        per_channel: dict[int, int] = collections.Counter()
        for chunk in chunks:
            per_channel.update(chunk.counts)
        channel_counts = b"".join(struct.pack("<HQ", c, n) for c, n in sorted(per_channel.items()))
        used = [c for c in chunks if c.counts]
        stats = struct.pack(
            "<QHIIIIQQI", sum(per_channel.values()), len(scan.schemas), len(scan.channels), 0, 0, len(chunks),
            min((c.start_ns for c in used), default=0), max((c.end_ns for c in used), default=0), len(channel_counts),
        )  # fmt: skip
        group(OP_STATISTICS, [_record(OP_STATISTICS, stats + channel_counts)])
        offsets_start = stream.tell()
        for op, start, length in groups:
            stream.write(_record(OP_SUMMARY_OFFSET, struct.pack("<BQQ", op, start, length)))
        stream.write(_record(OP_FOOTER, struct.pack("<QQI", summary_start, offsets_start, 0)))
        stream.write(_MAGIC)
        stream.flush()
        os.fsync(stream.fileno())


def _scan_db3(path: Path, *, repair: bool) -> _FileScan:
    size = path.stat().st_size
    scan = _FileScan(FileReport(path.name, "sqlite3", "complete", size=size), FileSummary(path.name))
    report = scan.report
    journal = path.with_name(path.name + "-journal")
    try:  # a journal can vanish between two looks (its writer finishing a commit): judge one stat
        hot = journal.stat().st_size > 0
    except FileNotFoundError:
        hot = False
    target, tmp = path, None
    if hot and not repair:  # look at a copy: rolling the journal back changes the file
        tmp = Path(tempfile.mkdtemp(prefix="bag-check-"))
        target = tmp / path.name
        shutil.copy2(path, target)
        try:
            shutil.copy2(journal, tmp / journal.name)
        except FileNotFoundError:  # rolled back or committed meanwhile: the database file alone is consistent
            hot = False
    try:
        connection = sqlite3.connect(f"file:{target}?mode=rw", uri=True)
        try:
            check = connection.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                report.problems.append(f"sqlite quick_check: {check}")
            columns = [row[1] for row in connection.execute("PRAGMA table_info(topics)")]
            rows = connection.execute(f"SELECT {', '.join(columns)} FROM topics").fetchall()
            topics = {row[columns.index("id")]: dict(zip(columns, row, strict=True)) for row in rows}
            for topic_id, count, first, last in connection.execute(
                "SELECT topic_id, COUNT(*), MIN(timestamp), MAX(timestamp) FROM messages GROUP BY topic_id"
            ):
                name = topics.get(topic_id, {}).get("name", f"<topic id {topic_id}>")
                scan.summary.topic_counts[name] = count
                scan.summary.start_ns = min(scan.summary.start_ns, first)
                scan.summary.end_ns = max(scan.summary.end_ns, last)
            for topic_id, topic in topics.items():
                scan.topics[topic["name"]] = {
                    "name": topic["name"], "type": topic["type"], "serialization_format": topic["serialization_format"],
                    "offered_qos_profiles": topic.get("offered_qos_profiles", ""),
                    "type_description_hash": topic.get("type_description_hash", ""),
                }  # fmt: skip
                scan.summary.topic_counts.setdefault(topic["name"], 0)
                if _is_episode_topic(topic["name"], topic["type"]):
                    query = "SELECT timestamp, data FROM messages WHERE topic_id = ? ORDER BY timestamp"
                    rows = connection.execute(query, (topic_id,))
                    scan.markers += [(stamp, _string_payload(bytes(data))) for stamp, data in rows]
        finally:
            connection.close()
        if hot and repair and journal.exists():
            # Reading rolls a hot journal back and deletes it; one still there had no valid header (killed while
            # the journal itself was being started, before the database file changed): sqlite ignores it.
            journal.unlink(missing_ok=True)
    except sqlite3.Error as err:
        report.status = "unreadable"
        report.problems.append(f"sqlite: {' '.join(str(err).split())}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    if hot:
        report.status = "rolled-back"
        report.problems.append(
            "an unfinished transaction (the writer was killed) " + ("was" if repair else "will be")
            + " rolled back: rows written after the last commit are lost"
        )  # fmt: skip
        report.repaired = repair
    report.messages = scan.summary.message_count
    report.start_ns, duration = _nanoseconds_range([scan.summary])
    report.end_ns = report.start_ns + duration
    return scan


@dataclass
class BagReport:
    """bag-check's findings: per file, per topic, episodes, metadata state, and what was lost."""

    path: str
    storage: str
    files: list[FileReport]
    topics: dict[str, dict[str, Any]]  # name -> {"type", "count"}
    messages: int
    start_ns: int
    end_ns: int
    episodes: list[dict[str, Any]]
    metadata: str  # ok | missing | unreadable: ... | stale: ...
    metadata_written: bool
    lost: list[str]

    @property
    def intact(self) -> bool:
        """Nothing was lost (a missing or stale metadata.yaml alone loses nothing)."""
        return not self.lost

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def lines(self) -> list[str]:
        """Human-readable report."""
        seconds = (self.end_ns - self.start_ns) / 1e9 if self.messages else 0.0
        out = [f"bag:       {self.path} ({self.storage}, {len(self.files)} file(s), "
               f"{sum(f.size for f in self.files) / 1e6:.1f} MB)"]  # fmt: skip
        for report in self.files:
            note = f" ({'; '.join(report.problems)})" if report.problems else ""
            fixed = ", repaired" if report.repaired else ""
            out.append(f"  {report.path}: {report.status}{fixed}, {report.messages} messages{note}")
        if self.messages:
            out.append(f"time:      {_when(self.start_ns)} .. {_when(self.end_ns)} ({seconds:.3f} s)")
        out.append(f"messages:  {self.messages} readable")
        width = max((len(name) for name in self.topics), default=5)
        for name, topic in sorted(self.topics.items()):
            out.append(f"  {name:<{width}}  {topic['count']:>8}  {topic['type']}")
        if self.episodes:
            spans = ", ".join(
                f"{e['episode']}: {(e['stop_ns'] - e['start_ns']) / 1e9:.2f} s" if e["stop_ns"] is not None
                else f"{e['episode']}: open" for e in self.episodes
            )  # fmt: skip
            out.append(f"episodes:  {len(self.episodes)} ({spans})")
        written = " -> metadata.yaml written (version 8)" if self.metadata_written else ""
        out.append(f"metadata:  {self.metadata}{written}")
        out += [f"lost:      {text}" for text in self.lost] or ["lost:      nothing"]
        return out


def _when(nanoseconds: int) -> str:
    """A bag timestamp: UTC date and time for wall-clock stamps, seconds for simulated time."""
    if nanoseconds > 10**17:  # after 1973: a wall-clock stamp
        moment = time.gmtime(nanoseconds // 10**9)
        return time.strftime("%Y-%m-%d %H:%M:%S", moment) + f".{nanoseconds % 10**9 // 10**6:03d} UTC"
    return f"{nanoseconds / 1e9:.3f} s"


def _storage_files(directory: Path, listed: list[str]) -> list[Path]:
    found = {p.name: p for p in directory.iterdir() if p.is_file() and _BAG_FILE.match(p.name)
             and not p.name.startswith(".")}  # fmt: skip

    def order(name: str) -> tuple[int, int, str]:
        if name in listed:
            return (0, listed.index(name), name)
        match = re.search(r"_(\d+)\.\w+$", name)
        return (1, int(match.group(1)) if match else 0, name)

    return [found[name] for name in sorted(found, key=order)]


def _metadata_state(info: dict[str, Any] | None, error: str | None, scans: list[_FileScan]) -> str:
    if info is None:
        return error or "missing"
    listed = [Path(p).name for p in info.get("relative_file_paths") or []]
    names = [s.report.path for s in scans]
    if sorted(listed) != sorted(names):
        return f"stale: lists {len(listed)} file(s), the directory holds {len(names)}"
    counts: dict[str, int] = collections.Counter()
    for scan in scans:
        counts.update(scan.summary.topic_counts)
    try:
        stated = {t["topic_metadata"]["name"]: int(t["message_count"]) for t in info["topics_with_message_count"]}
        total = int(info["message_count"])
    except (KeyError, TypeError, ValueError):
        return "unreadable: missing or malformed keys"
    if stated != {k: counts.get(k, 0) for k in stated} or total != sum(counts.values()):
        return f"stale: says {total} messages, the files hold {sum(counts.values())}"
    if set(counts) - set(stated):
        return "stale: topics missing from the topic list"
    return "ok"


def check_bag(path: Path, *, repair: bool = True) -> BagReport:
    """Scan every storage file of a bag directory, report what is readable and what was lost, and (with
    `repair`) finish killed MCAP files, roll back unfinished sqlite3 transactions and rewrite a missing,
    partial or stale metadata.yaml (version 8). BagError when the directory is not a bag at all."""
    directory = Path(path)
    if not directory.is_dir():
        raise BagError(f"{directory}: not a directory (give the bag directory, which holds metadata.yaml)")
    info: dict[str, Any] | None = None
    error: str | None = None
    try:
        info = read_metadata(directory)
    except BagError as err:
        if (directory / "metadata.yaml").exists():
            error = "unreadable: " + str(err).split(": ", 1)[-1]
    listed = [Path(p).name for p in (info or {}).get("relative_file_paths") or []]
    files = _storage_files(directory, listed)
    if not files:
        raise BagError(f"{directory}: no .mcap or .db3 file: not a rosbag2 directory")
    kinds = {p.suffix for p in files}
    if len(kinds) > 1:
        raise BagError(f"{directory}: holds both .mcap and .db3 files; a bag has one storage format")
    storage = "mcap" if ".mcap" in kinds else "sqlite3"
    scans = [_scan_mcap(p) if storage == "mcap" else _scan_db3(p, repair=repair) for p in files]
    lost: list[str] = []
    for listed_name in listed:
        if listed_name not in {p.name for p in files}:
            lost.append(f"{listed_name}: listed in metadata.yaml but missing from the directory")
    for scan in scans:
        report = scan.report
        if report.status == "torn":
            lost.append(
                f"{report.path}: {report.lost_bytes} bytes of a partly written chunk cannot be read, and what the "
                "writer held in memory since its last flush never reached the file" if report.lost_bytes else
                f"{report.path}: not closed by its writer: what it held in memory since its last flush never reached "
                "the file (every flushed chunk is intact)"
            )  # fmt: skip
            if repair and report.problems:
                _finish_mcap(directory / report.path, scan)
                report.repaired = True
                report.size = (directory / report.path).stat().st_size
        elif report.status == "rolled-back":
            lost.append(f"{report.path}: rows of the unfinished transaction (the last unflushed data)")
        elif report.status == "unreadable":
            lost.append(f"{report.path}: unreadable ({'; '.join(report.problems)})")
        lost += [f"{report.path}: {p}" for p in report.problems if p.startswith("chunk at")]
    readable = [s for s in scans if s.report.status != "unreadable"]
    state = _metadata_state(info, error, readable)
    topics: dict[str, dict[str, Any]] = {}
    for scan in readable:
        for name, meta in scan.topics.items():
            topics.setdefault(name, meta)
    markers = sorted(m for s in readable for m in s.markers)
    episodes = episodes_from_markers(markers)
    custom = dict((info or {}).get("custom_data") or {})
    episode_topics = [n for n, t in topics.items() if _is_episode_topic(n, t["type"])]
    if episode_topics:
        custom[EPISODE_TOPIC_KEY] = episode_topics[0]
        custom[EPISODES_KEY] = json.dumps(episodes, separators=(",", ":"))
    written = False
    if repair and (state != "ok" or any(s.report.repaired for s in scans)):
        hashes = {t["topic_metadata"]["name"]: t["topic_metadata"].get("type_description_hash", "")
                  for t in (info or {}).get("topics_with_message_count") or [] if isinstance(t, dict)}  # fmt: skip
        for name, meta in topics.items():
            meta["type_description_hash"] = meta.get("type_description_hash") or hashes.get(name, "")
        write_metadata(directory, bag_metadata(storage, topics.values(), [s.summary for s in readable], custom))
        written = True
    counts: dict[str, int] = collections.Counter()
    for scan in readable:
        counts.update(scan.summary.topic_counts)
    start, duration = _nanoseconds_range([s.summary for s in readable])
    return BagReport(
        path=str(directory), storage=storage, files=[s.report for s in scans],
        topics={n: {"type": t["type"], "count": counts.get(n, 0)} for n, t in topics.items()},
        messages=sum(counts.values()), start_ns=start, end_ns=start + duration, episodes=episodes,
        metadata=state, metadata_written=written, lost=lost,
    )  # fmt: skip
