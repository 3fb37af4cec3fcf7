"""Reading a damaged MCAP file without changing it: every message of every intact chunk, and what was lost.

bag2dataset's BagSource falls back to this when the `rosbags` library cannot open (or read on through) an MCAP
file: a recorder killed mid-file (no summary or footer, a torn last record) or a corrupt chunk. Unlike
bag-check's repair (mcap_repair) it writes nothing; it counts the losses so the caller can refuse or report them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from lewm_ros.data import mcap_records as mcap
from lewm_ros.data.bag_errors import BagError, error_line


@dataclass(frozen=True)
class Channel:
    """A ROS 2 message channel of the file and the schema its messages deserialise with."""

    id: int
    topic: str
    msgtype: str
    schema_encoding: str
    schema: str


class McapSalvage:
    """A record-by-record reader of an MCAP file that may end anywhere (the writer was killed) or hold
    corrupt chunks: it keeps every message of every intact chunk and counts what it could not read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        self.channels: dict[int, Channel] = {}
        self.schemas: dict[int, tuple[str, str, str]] = {}  # id -> (name, encoding, text)
        self.counts: dict[int, int] = {}  # channel id -> messages
        self.chunks = 0
        self.bad_chunks: list[str] = []
        self.lost_bytes = 0
        self.end = "the end of the file"
        self.complete = False  # a DataEnd or Footer record was reached: the writer closed the file
        self._typestore: Typestore | None = None

    def describe(self) -> str:
        """What was recovered and what was lost, in one sentence."""
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
            if bio.read(8) != mcap.MAGIC:
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
                if length > min(mcap.MAX_RECORD, self.size - start - 9):
                    self._lost(start, f"a record of {length} bytes at byte {start} runs past the end")
                    return
                if opcode in (mcap.OP_DATA_END, mcap.OP_FOOTER):
                    self.complete = True
                    return
                content = bio.read(length)
                if opcode == mcap.OP_CHUNK:
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
            records = mcap.chunk_records(content, mcap.chunk_header(content))
        except mcap.CHUNK_ERRORS as error:
            if count:
                self.bad_chunks.append(f"chunk at byte {start}: {error_line(error)}")
            return None
        self.chunks += count
        return records

    def _parse(self, records: bytes, *, count_only: bool) -> Iterator[tuple[int, int, bytes]]:
        """Schema, channel and message records of a byte run (a chunk's contents or one top-level record)."""
        for opcode, _offset, body in mcap.records(records):
            try:
                if opcode == mcap.OP_SCHEMA:
                    sid, name, encoding, text = mcap.parse_schema(body)
                    self.schemas[sid] = (name, encoding, text.decode("utf-8", errors="replace"))
                elif opcode == mcap.OP_CHANNEL:
                    self._channel(body)
                elif opcode == mcap.OP_MESSAGE:
                    cid, log_time, data = mcap.parse_message(body)
                    if cid not in self.channels:
                        continue
                    if count_only:
                        self.counts[cid] = self.counts.get(cid, 0) + 1
                    else:
                        yield cid, log_time, bytes(data)
            except (struct.error, UnicodeDecodeError, BagError):
                continue

    def _channel(self, body: memoryview) -> None:
        cid, sid, topic, message_encoding, _metadata = mcap.parse_channel(body)
        name, encoding, text = self.schemas.get(sid, ("", "", ""))
        if message_encoding != "cdr" or not name:
            return  # not a ROS 2 message channel: nothing we could deserialise
        self.channels[cid] = Channel(cid, topic, name, encoding, text)
