"""Reading rosbag2 recordings without ROS: the `rosbags` library, plus recovery of damaged MCAP files.

A bag is a rosbag2 directory (metadata.yaml and its .mcap or .db3 files) or one storage file. Bags written
by `ros2 bag record` (Humble: sqlite3 or MCAP; Jazzy: MCAP by default) and by our recorder read alike:
messages are deserialised with the definitions stored in the bag, and where a bag stores none (Humble's
sqlite3 files) with those of a `rosbags` typestore for the ROS distribution given (jazzy or humble; the
messages we convert have the same definitions in both).

Damaged recordings are read as far as they can be, and every loss is written into `notes` (and `damaged`
set), so a caller can refuse or report it; nothing is dropped silently:
- no metadata.yaml (a recorder killed before closing the bag): the storage files are read directly;
- an MCAP file without its footer and summary (the recorder was killed mid-file): the file is scanned record
  by record from the start, every complete chunk is kept, the incomplete tail is counted as lost; a chunk whose
  checksum or size does not match is skipped and counted;
- a read error part-way through an MCAP file the library could open (a corrupt chunk): the file is switched to
  the record-by-record scan, which skips the bad chunk, and `StorageSwitchedError` tells the caller to read again;
- a read error part-way through a sqlite3 file: what came before is kept and the error noted.
"""

from __future__ import annotations

import heapq
import struct
import sys
from binascii import crc32
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.rosbag2 import ReaderError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

TYPESTORES = {"jazzy": Stores.ROS2_JAZZY, "humble": Stores.ROS2_HUMBLE}
STORAGE_SUFFIXES = (".mcap", ".db3")
_MCAP_MAGIC = b"\x89MCAP0\r\n"
_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END, _OP_FOOTER = 0x03, 0x04, 0x05, 0x06, 0x0F, 0x02
_MAX_RECORD = 1 << 34  # 16 GiB: a larger record length is corruption, not data
# What the library raises for unreadable bags: its own errors, plus what its parsers and sqlite let through.
_READ_ERRORS = (
    AnyReaderError, ReaderError, OSError, ValueError, KeyError, IndexError, struct.error, EOFError, RuntimeError,
    zstd.ZstdError,
)  # fmt: skip


class BagError(ValueError):
    """A bag that cannot be read at all, or not as asked; the message says which and why."""


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
        self._salvaged: dict[Path, _Salvage] = {}
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
            raise BagError(f"{path}: {_one_line(error)}") from None
        storage = _Storage(path, reader=reader)
        for connection in reader.connections:
            storage.connections.setdefault(connection.topic, []).append(connection)
            storage.topics.append((connection.topic, connection.msgtype, connection.msgcount))
        # a bag may store definitions for some types only: the distro's fill the gaps
        missing = {k: v for k, v in self._default.fielddefs.items() if k not in reader.typestore.fielddefs}
        reader.typestore.register(missing)
        return storage

    def _open_salvage(self, path: Path, why: str) -> _Storage:
        salvage = _Salvage(path)
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
        why = f"read error part-way through ({_one_line(error)})"
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
                raise StorageSwitchedError(f"{storage.path}: {_one_line(error)}") from None
            note = (f"{storage.path.name}: read error after {read} messages on the requested topics "
                    f"({_one_line(error)}); the rest of the file is lost")  # fmt: skip
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


def _one_line(error: object) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# ---------------------------------------------------------------------- MCAP recovery


@dataclass(frozen=True)
class _Channel:
    id: int
    topic: str
    msgtype: str
    schema_encoding: str
    schema: str


class _Salvage:
    """A record-by-record reader of an MCAP file that may end anywhere (the writer was killed) or hold
    corrupt chunks: it keeps every message of every intact chunk and counts what it could not read.

    MCAP layout (mcap.dev spec): magic, then records `opcode u8, length u64, content`; strings and byte
    arrays carry u32 length prefixes; chunks hold schema, channel and message records, compressed with
    zstd or lz4 (or not), with a CRC-32 of the uncompressed records.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.channels: dict[int, _Channel] = {}
        self.schemas: dict[int, tuple[str, str, str]] = {}  # id -> (name, encoding, text)
        self.counts: dict[int, int] = {}  # channel id -> messages
        self.chunks = 0
        self.bad_chunks: list[str] = []
        self.lost_bytes = 0
        self.end = "the end of the file"
        self.complete = False  # a DataEnd or Footer record was reached: the writer closed the file
        self._typestore: Typestore | None = None

    def describe(self) -> str:
        messages = sum(self.counts.values())
        text = f"{messages} messages recovered from {self.chunks} intact chunk(s)"
        if self.bad_chunks:
            text += f"; {len(self.bad_chunks)} corrupt chunk(s) skipped ({self.bad_chunks[0]})"
        if self.lost_bytes:
            text += f"; the last {self.lost_bytes} bytes are an incomplete record ({self.end}) and are lost"
        if not self.complete:
            text += "; the file has no end record, so the recording was cut short here"
        return text

    @property
    def damaged(self) -> bool:
        """Whether anything was (or may have been) lost."""
        return bool(self.bad_chunks or self.lost_bytes or not self.complete)

    def scan_index(self) -> None:
        """First pass: channels, schemas and message counts (chunks are decompressed to count)."""
        for _ in self._records(count_only=True):
            pass

    def messages(self, wanted: set[str]) -> Iterator[tuple[str, int, bytes]]:
        """Messages of the wanted topics in file order (a recorder writes them as they arrive, so nearly in
        time order; callers sort what they collect)."""
        ids = {cid for cid, channel in self.channels.items() if channel.topic in wanted}
        for cid, log_time, data in self._records(count_only=False):
            if cid in ids:
                yield self.channels[cid].topic, log_time, data

    def typestore(self, default: Typestore) -> Typestore:
        """Types from the file's ros2msg schemas, the distro's for anything else."""
        if self._typestore is None:
            store = get_typestore(Stores.EMPTY)
            types: dict[str, Any] = {}
            for name, encoding, text in self.schemas.values():
                if encoding == "ros2msg" and text:
                    try:
                        types.update(get_types_from_msg(text, name))
                    except Exception:  # an unparsable schema: the distro's definition stands in
                        continue
            store.register(types)
            store.register({k: v for k, v in default.fielddefs.items() if k not in store.fielddefs})
            self._typestore = store
        return self._typestore

    def _records(self, *, count_only: bool) -> Iterator[tuple[int, int, bytes]]:
        """(channel id, log time, data) of every message in file order; fills the index on the way."""
        with self.path.open("rb") as bio:
            if bio.read(8) != _MCAP_MAGIC:
                raise BagError(f"{self.path}: not an MCAP file (bad magic bytes)")
            while True:
                start = bio.tell()
                head = bio.read(9)
                if not head:
                    return
                if len(head) < 9:
                    self._lost(start, "a record header cut short")
                    return
                opcode, length = struct.unpack("<BQ", head)
                if length > min(_MAX_RECORD, self.size - start - 9):
                    self._lost(start, f"a record of {length} bytes at byte {start} runs past the end")
                    return
                if opcode in (_OP_DATA_END, _OP_FOOTER):
                    self.complete = True
                    return
                content = bio.read(length)
                if opcode == _OP_CHUNK:
                    records = self._chunk(content, start, count=count_only)
                    if records is None:
                        continue
                    yield from self._parse(records, count_only=count_only)
                else:
                    yield from self._parse(head + content, count_only=count_only)

    def _lost(self, start: int, why: str) -> None:
        self.lost_bytes = self.size - start
        self.end = why

    def _chunk(self, content: bytes, start: int, *, count: bool) -> bytes | None:
        """The chunk's uncompressed records, or None (counted) when it is corrupt."""
        try:
            _t0, _t1, size, crc = struct.unpack_from("<QQQI", content, 0)
            pos = 28
            (name_len,) = struct.unpack_from("<I", content, pos)
            compression = content[pos + 4 : pos + 4 + name_len].decode()
            pos += 4 + name_len
            (data_len,) = struct.unpack_from("<Q", content, pos)
            data = content[pos + 8 : pos + 8 + data_len]
            if len(data) != data_len or size > _MAX_RECORD:
                raise ValueError("chunk record shorter than its declared data")
            if compression == "zstd":
                records = zstd.decompress(data)
            elif compression == "lz4":
                from lz4.frame import decompress as lz4_decompress

                records = lz4_decompress(data)
            elif compression == "":
                records = bytes(data)
            else:
                raise ValueError(f"unsupported chunk compression {compression!r}")
            if len(records) != size:
                raise ValueError(f"chunk decompresses to {len(records)} bytes, declares {size}")
            if crc and crc32(records) != crc:
                raise ValueError("chunk checksum mismatch")
        except (struct.error, ValueError, UnicodeDecodeError, zstd.ZstdError, RuntimeError) as error:
            if count:
                self.bad_chunks.append(f"chunk at byte {start}: {_one_line(error)}")
            return None
        self.chunks += count
        return records

    def _parse(self, records: bytes, *, count_only: bool) -> Iterator[tuple[int, int, bytes]]:
        """Schema, channel and message records of a byte run (a chunk's contents or one top-level record)."""
        pos, end = 0, len(records)
        while pos + 9 <= end:
            opcode, length = struct.unpack_from("<BQ", records, pos)
            body_start, pos = pos + 9, pos + 9 + length
            if pos > end:
                return  # a record cut short inside a chunk: the chunk's checksum would have caught real damage
            body = records[body_start:pos]
            try:
                if opcode == _OP_SCHEMA:
                    self._schema(body)
                elif opcode == _OP_CHANNEL:
                    self._channel(body)
                elif opcode == _OP_MESSAGE:
                    cid, _seq, log_time, _pub = struct.unpack_from("<HIQQ", body, 0)
                    if cid not in self.channels:
                        continue
                    if count_only:
                        self.counts[cid] = self.counts.get(cid, 0) + 1
                    else:
                        yield cid, log_time, body[22:]
            except (struct.error, UnicodeDecodeError):
                continue

    def _schema(self, body: bytes) -> None:
        (sid,) = struct.unpack_from("<H", body, 0)
        name, pos = _string(body, 2)
        encoding, pos = _string(body, pos)
        (length,) = struct.unpack_from("<I", body, pos)
        text = body[pos + 4 : pos + 4 + length].decode("utf-8", errors="replace")
        self.schemas[sid] = (name, encoding, text)

    def _channel(self, body: bytes) -> None:
        cid, sid = struct.unpack_from("<HH", body, 0)
        topic, pos = _string(body, 4)
        message_encoding, _pos = _string(body, pos)
        name, encoding, text = self.schemas.get(sid, ("", "", ""))
        if message_encoding != "cdr" or not name:
            return  # not a ROS 2 message channel: nothing we could deserialise
        self.channels[cid] = _Channel(cid, topic, name, encoding, text)


def _string(body: bytes, pos: int) -> tuple[str, int]:
    (length,) = struct.unpack_from("<I", body, pos)
    end = pos + 4 + length
    if end > len(body):
        raise struct.error("string runs past its record")
    return body[pos + 4 : end].decode("utf-8"), end

