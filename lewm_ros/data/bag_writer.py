"""Writing a rosbag2 directory: one or more storage files, split by size or duration, flushed on demand.

Layout (what `ros2 bag record` writes when it splits): one bag directory holding numbered storage files
`<dir name>_<i>.mcap` (or `.db3`) and one metadata.yaml. The storage files are written with the `rosbags`
library, one `rosbags.rosbag2.Writer` per file: it writes one file per bag directory, so `SegmentWriter`
points each writer's file into the shared directory and `BagWriter` merges the per-file summaries into the
directory's metadata.yaml (rewritten atomically whenever a file is closed, and at the end).

Durability: MCAP files are written in zstd-compressed chunks of at most 1 MiB (rosbags' chunk size);
`BagWriter.flush` closes the open chunk and hands it to the kernel, and a sqlite3 file commits its open
transaction. What a SIGKILL can cost is what was written since the last flush; `lewm-ros bag-check`
(lewm_ros.data.bag_recovery) makes the rest readable again.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from rosbags.rosbag2 import Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode, StoragePlugin
from rosbags.rosbag2.storage_mcap import McapWriter
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Writer

from lewm_ros.data.bag_errors import BagError
from lewm_ros.data.bag_metadata import (
    EPISODE_TOPIC_KEY,
    EPISODE_TYPE,
    EPISODES_KEY,
    METADATA_VERSION,
    FileSummary,
    TopicSpec,
    bag_metadata,
    episodes_from_markers,
    make_qos,
    topic_metadata,
    write_metadata,
)
from lewm_ros.data.message_types import MessageTypes

STORAGES = {"mcap": (StoragePlugin.MCAP, ".mcap"), "sqlite3": (StoragePlugin.SQLITE3, ".db3")}
COMPRESSIONS = ("zstd", "none")
# Files a bag directory may hold: what --overwrite is allowed to delete (never anything else).
_BAG_LEFTOVERS = re.compile(
    r"^(metadata\.yaml(\.tmp)?|.*\.(mcap|db3)(-journal|-wal|-shm)?|\..*\.segment\.yaml(\.tmp)?)$"
)


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
