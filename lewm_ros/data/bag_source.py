"""Reading rosbag2 recordings without ROS: the `rosbags` library, falling back to mcap_salvage for damaged MCAP.

A bag is a rosbag2 directory (metadata.yaml and its .mcap or .db3 files) or one storage file. Bags written
by `ros2 bag record` (Humble: sqlite3 or MCAP; Jazzy: MCAP by default) and by our recorder read alike:
messages are deserialised with the definitions stored in the bag, and where a bag stores none (Humble's
sqlite3 files) with those of a `rosbags` typestore for the ROS distribution given (jazzy or humble; the
messages we convert have the same definitions in both).

Damaged recordings are read as far as they can be, and every loss is written into `notes` (and `damaged`
set), so a caller can refuse or report it; nothing is dropped silently:
- no metadata.yaml (a recorder killed before closing the bag): the storage files are read directly;
- an MCAP file without its footer and summary (the recorder was killed mid-file): the file is scanned record
  by record from the start (lewm_ros.data.mcap_salvage), every complete chunk is kept, the incomplete tail is
  counted as lost; a chunk whose checksum or size does not match is skipped and counted;
- a read error part-way through an MCAP file the library could open (a corrupt chunk): the file is switched to
  the record-by-record scan, which skips the bad chunk, and `StorageSwitchedError` tells the caller to read again;
- a read error part-way through a sqlite3 file: what came before is kept and the error noted.
"""

from __future__ import annotations

import heapq
import struct
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import ReaderError
from rosbags.typesys import Stores, get_typestore
from rosbags.typesys.store import Typestore

from lewm_ros.data.bag_errors import BagError, error_line
from lewm_ros.data.mcap_records import zstd
from lewm_ros.data.mcap_salvage import McapSalvage
from lewm_ros.data.message_types import TYPESTORES

STORAGE_SUFFIXES = (".mcap", ".db3")
# What the library raises for unreadable bags: its own errors, plus what its parsers and sqlite let through.
_READ_ERRORS = (
    AnyReaderError, ReaderError, OSError, ValueError, KeyError, IndexError, struct.error, EOFError, RuntimeError,
    zstd.ZstdError,
)  # fmt: skip


class StorageSwitchedError(RuntimeError):
    """An MCAP file failed part-way through and is now read record by record: start reading again."""


@dataclass(frozen=True)
class Topic:
    """A topic of a bag: its message type and how many messages the bag's index claims."""

    name: str
    msgtype: str
    count: int


@dataclass
class _Storage:
    """One storage file (or the whole directory, through metadata.yaml) and how it is read."""

    path: Path
    salvage: bool = False  # scan MCAP records ourselves: the library cannot open (or read) the file
    reader: Any = None
    connections: dict[str, list[Any]] = field(default_factory=dict)  # topic -> library connections
    topics: list[tuple[str, str, int]] = field(default_factory=list)  # (topic, type, message count)


def _read_errors() -> tuple[type[BaseException], ...]:
    """Library errors plus sqlite's (apsw is a dependency of rosbags; imported lazily, it may be absent)."""
    try:
        import apsw

        return (*_READ_ERRORS, apsw.Error)
    except ImportError:  # pragma: no cover - rosbags' sqlite3 storage needs it
        return _READ_ERRORS


class BagSource:
    """One recording, opened for reading: its topics, and its messages merged in time order.

    Use as a context manager. `messages(topics)` can be called more than once (each call reads the bag
    again from the start) and yields `(topic, log_time_ns, raw_bytes)`; `deserialize(raw, topic)` turns the
    raw bytes into a message object with the ROS field names.
    """

    def __init__(self, path: str | Path, *, distro: str = "jazzy") -> None:
        if distro not in TYPESTORES:
            raise ValueError(f"distro must be one of {tuple(TYPESTORES)}, got {distro!r}")
        self.path = Path(path)
        self.distro = distro
        self.notes: list[str] = []  # what was damaged and recovered, one sentence each
        self.damaged = False
        self._errors = _read_errors()
        self._default = get_typestore(TYPESTORES[distro])
        self._typestore: Typestore = get_typestore(Stores.EMPTY)
        self._storages: list[_Storage] = []
        self._salvaged: dict[Path, McapSalvage] = {}
        self._open()

    # ------------------------------------------------------------------ opening

    def _open(self) -> None:
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag (a rosbag2 directory or a .mcap/.db3 file)")
        if self.path.is_dir():
            files = sorted(p for p in self.path.iterdir() if p.suffix in STORAGE_SUFFIXES and p.is_file())
            if (self.path / "metadata.yaml").is_file():
                try:
                    self._storages = [self._open_library(self.path)]
                    return
                except BagError as error:
                    if not files:
                        raise
                    self._note(f"metadata.yaml cannot be used ({error}); reading the storage files directly")
            elif not files:
                raise BagError(f"{self.path}: not a rosbag2 directory (no metadata.yaml, no .mcap or .db3 files)")
            else:
                self._note(
                    "no metadata.yaml (was the recorder killed before it closed the bag?): reading "
                    f"{len(files)} storage file(s) directly; `lewm-ros bag-check` can rewrite it"
                )
        elif self.path.suffix in STORAGE_SUFFIXES:
            files = [self.path]
        else:
            raise BagError(f"{self.path}: not a rosbag2 directory or a .mcap/.db3 storage file")
        for file in files:
            try:
                self._storages.append(self._open_library(file))
            except BagError as error:
                if file.suffix != ".mcap":
                    raise
                self._storages.append(self._open_salvage(file, f"the library cannot open it ({error})"))

    def _open_library(self, path: Path) -> _Storage:
        """Open through rosbags' AnyReader; unreadable metadata or files are a BagError."""
        reader = AnyReader([path], default_typestore=self._default)
        try:
            reader.open()
        except self._errors as error:
            raise BagError(f"{path}: {error_line(error)}") from None
        storage = _Storage(path, reader=reader)
        for connection in reader.connections:
            storage.connections.setdefault(connection.topic, []).append(connection)
            storage.topics.append((connection.topic, connection.msgtype, connection.msgcount))
        # a bag may store definitions for some types only: the distro's fill the gaps
        missing = {k: v for k, v in self._default.fielddefs.items() if k not in reader.typestore.fielddefs}
        reader.typestore.register(missing)
        return storage

    def _open_salvage(self, path: Path, why: str) -> _Storage:
        salvage = McapSalvage(path)
        salvage.scan_index()
        self._salvaged[path] = salvage
        storage = _Storage(path, salvage=True)
        for channel in salvage.channels.values():
            storage.topics.append((channel.topic, channel.msgtype, salvage.counts.get(channel.id, 0)))
        if salvage.damaged:
            self.damaged = True
        self._note(f"{path.name}: {why}; scanned it record by record: {salvage.describe()}")
        return storage

    def _switch_to_salvage(self, storage: _Storage, error: BaseException) -> None:
        """Replace a library-read MCAP storage (a file, or a directory's MCAP files) by record-by-record scans."""
        files = [storage.path] if storage.path.is_file() else sorted(storage.path.glob("*.mcap"))
        if storage.reader is not None:
            storage.reader.close()
            storage.reader = None
        why = f"read error part-way through ({error_line(error)})"
        replacement = [self._open_salvage(file, why) for file in files]
        index = self._storages.index(storage)
        self._storages[index : index + 1] = replacement
        self.damaged = True

    def _note(self, text: str) -> None:
        self.notes.append(text)

    # ------------------------------------------------------------------ reading

    @property
    def topics(self) -> dict[str, Topic]:
        """Topic name -> Topic (message counts summed over the storage files), sorted by name."""
        topics: dict[str, Topic] = {}
        for storage in self._storages:
            for name, msgtype, count in storage.topics:
                known = topics.get(name)
                if known is not None and known.msgtype != msgtype:
                    raise BagError(f"{self.path}: topic {name} carries two types, {known.msgtype} and {msgtype}")
                topics[name] = Topic(name, msgtype, count + (known.count if known else 0))
        return dict(sorted(topics.items()))

    def describe_topics(self) -> str:
        """'name (type, N messages), ...' for error messages."""
        topics = self.topics
        if not topics:
            return "no topics at all"
        return ", ".join(f"{t.name} ({t.msgtype}, {t.count} messages)" for t in topics.values())

    def messages(self, topics: Collection[str]) -> Iterator[tuple[str, int, bytes]]:
        """(topic, log time in ns, raw CDR bytes) of the given topics, all storage files merged in time order.

        A read error part-way through an MCAP file switches it to the record-by-record scan and raises
        StorageSwitchedError (read again); part-way through a sqlite3 file it ends that file's messages. Both are
        noted and set `damaged`.
        """
        wanted = set(topics)
        streams = [self._file_messages(storage, wanted) for storage in self._storages]
        yield from heapq.merge(*streams, key=lambda item: item[1])

    def _file_messages(self, storage: _Storage, wanted: set[str]) -> Iterator[tuple[str, int, bytes]]:
        if storage.salvage:
            yield from self._salvaged[storage.path].messages(wanted)
            return
        connections = [c for topic in wanted for c in storage.connections.get(topic, [])]
        if not connections:
            return
        read = 0
        try:
            for connection, timestamp, raw in storage.reader.messages(connections=connections):
                read += 1
                yield connection.topic, timestamp, raw
        except self._errors as error:
            mcap = storage.path.suffix == ".mcap" or any(storage.path.glob("*.mcap"))
            if mcap:
                self._switch_to_salvage(storage, error)
                raise StorageSwitchedError(f"{storage.path}: {error_line(error)}") from None
            note = (f"{storage.path.name}: read error after {read} messages on the requested topics "
                    f"({error_line(error)}); the rest of the file is lost")  # fmt: skip
            if note not in self.notes:  # the same error on every pass: say it once
                self.damaged = True
                self._note(note)

    def deserialize(self, raw: bytes, topic: str) -> Any:
        """The message object (ROS field names; arrays as numpy) of raw CDR bytes from `topic`."""
        for storage in self._storages:
            for name, msgtype, _count in storage.topics:
                if name == topic:
                    typestore = (self._salvaged[storage.path].typestore(self._default) if storage.salvage
                                 else storage.reader.typestore)  # fmt: skip
                    return typestore.deserialize_cdr(raw, msgtype)
        raise KeyError(topic)

    def close(self) -> None:
        for storage in self._storages:
            if storage.reader is not None:
                storage.reader.close()
                storage.reader = None

    def __enter__(self) -> BagSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
