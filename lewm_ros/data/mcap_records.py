"""The MCAP record format, byte by byte: what bag-check's repair and the salvage reader both parse and write.

Layout (mcap.dev spec): magic, then records `opcode u8, length u64, content`; strings and byte arrays carry
u32 length prefixes; chunks hold schema, channel and message records, compressed with zstd or lz4 (or not),
with a CRC-32 of the uncompressed records. Kept here once so both readers agree on every field.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lewm_ros.data.bag_errors import BagError

if sys.version_info >= (3, 14):  # the stdlib's compression.zstd from Python 3.14, its backport (pinned) before
    from compression import zstd
else:
    from backports import zstd

MAGIC = b"\x89MCAP0\r\n"
OP_HEADER, OP_FOOTER, OP_SCHEMA, OP_CHANNEL, OP_MESSAGE, OP_CHUNK = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06
OP_MESSAGE_INDEX, OP_CHUNK_INDEX, OP_STATISTICS, OP_SUMMARY_OFFSET, OP_DATA_END = 0x07, 0x08, 0x0B, 0x0E, 0x0F
MAX_RECORD = 1 << 34  # 16 GiB: a larger record length is corruption, not data
MESSAGE_HEADER = 22  # channel u16, sequence u32, log time u64, publish time u64
# What a corrupt chunk raises while it is decoded (lz4's errors are RuntimeErrors).
CHUNK_ERRORS = (struct.error, ValueError, UnicodeDecodeError, zstd.ZstdError, RuntimeError)


class Cursor:
    """Little-endian reader of one record's fields; a field that runs past the record is a BagError."""

    def __init__(self, data: bytes | memoryview) -> None:
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


@dataclass(frozen=True)
class ChunkHeader:
    """The fields of a chunk record before its compressed records (which start at `data_offset`)."""

    start_ns: int
    end_ns: int
    uncompressed_size: int
    crc: int
    compression: str
    compressed_size: int
    data_offset: int


def chunk_header(body: bytes | memoryview) -> ChunkHeader:
    """The header of a chunk record's content; struct.error or BagError when the record is cut short."""
    cursor = Cursor(body)
    start_ns, end_ns, size, crc = cursor.take("<QQQI")
    compression = cursor.string()
    compressed_size = cursor.take("<Q")
    return ChunkHeader(start_ns, end_ns, size, crc, compression, compressed_size, cursor.pos)


def chunk_records(body: bytes | memoryview, header: ChunkHeader) -> bytes:
    """The chunk's uncompressed records, checked against the declared size and CRC; one of CHUNK_ERRORS
    (with a message saying what) when they are cut, corrupt or compressed in a way we cannot read."""
    data = bytes(memoryview(body)[header.data_offset : header.data_offset + header.compressed_size])
    if len(data) != header.compressed_size or header.uncompressed_size > MAX_RECORD:
        raise ValueError("chunk record shorter than its declared data")
    if header.compression == "zstd":
        records = zstd.decompress(data)
    elif header.compression == "lz4":
        from lz4.frame import decompress as lz4_decompress

        records = lz4_decompress(data)
    elif header.compression == "":
        records = data
    else:
        raise ValueError(f"unsupported chunk compression {header.compression!r}")
    if len(records) != header.uncompressed_size:
        raise ValueError(f"chunk decompresses to {len(records)} bytes, declares {header.uncompressed_size}")
    if header.crc and zlib.crc32(records) != header.crc:
        raise ValueError("chunk checksum mismatch")
    return records


def records(data: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """(opcode, offset, content) of each whole record in a run of records (a chunk's contents, in order);
    stops at a record cut short, which a chunk's checksum would have caught were it real damage."""
    view = memoryview(data)
    pos, end = 0, len(data)
    while pos + 9 <= end:
        opcode, length = struct.unpack_from("<BQ", data, pos)
        start, pos = pos, pos + 9 + length
        if pos > end:
            return
        yield opcode, start, view[start + 9 : pos]


def parse_schema(body: bytes | memoryview) -> tuple[int, str, str, bytes]:
    """(schema id, type name, encoding, definition bytes) of a Schema record."""
    cursor = Cursor(body)
    return cursor.take("<H"), cursor.string(), cursor.string(), cursor.raw(cursor.take("<I"))


def parse_channel(body: bytes | memoryview) -> tuple[int, int, str, str, dict[str, str]]:
    """(channel id, schema id, topic, message encoding, metadata) of a Channel record."""
    cursor = Cursor(body)
    key, schema = cursor.take("<H"), cursor.take("<H")
    return key, schema, cursor.string(), cursor.string(), cursor.string_map()


def parse_message(body: bytes | memoryview) -> tuple[int, int, memoryview]:
    """(channel id, log time ns, serialized data) of a Message record; the data is a view, copied by whoever
    keeps it (a counting pass over a bag of images should not copy every frame)."""
    channel, _sequence, log_time, _publish = struct.unpack_from("<HIQQ", body)
    return channel, log_time, memoryview(body)[MESSAGE_HEADER:]


def encode_record(op: int, body: bytes) -> bytes:
    """A record as written to a file: opcode, length, content."""
    return struct.pack("<BQ", op, len(body)) + body


def encode_string(text: str) -> bytes:
    """An MCAP string field: u32 byte length, then UTF-8."""
    data = text.encode("utf-8")
    return struct.pack("<I", len(data)) + data
