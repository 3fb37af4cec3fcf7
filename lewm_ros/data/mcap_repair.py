"""MCAP repair: scan a storage file record by record and make a killed one whole again (bag-check's MCAP half).

A recorder killed mid-file leaves an MCAP file without summary or footer, and perhaps a torn last chunk.
`scan_mcap` reads every whole record (counting messages, finding schemas, channels, chunk and index offsets,
episode markers); `finish_mcap` cuts the torn tail, rebuilds the last chunk's message index when it was cut
off, and appends data end, summary and footer, so every MCAP reader opens the file again.
"""

from __future__ import annotations

import collections
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lewm_ros.data import mcap_records as mcap
from lewm_ros.data.bag_metadata import FileSummary, is_episode_topic, nanoseconds_range
from lewm_ros.data.mcap_records import encode_record, encode_string
from lewm_ros.data.message_types import rihs01_from_definition
from lewm_ros.data.storage_scan import FileReport, FileScan, string_payload


@dataclass
class Chunk:
    """A chunk record as found in the file, with what the summary must say about it."""

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
class McapScan(FileScan):
    """A scanned MCAP file: the records the summary is rebuilt from, and where the data section ends."""

    schemas: dict[int, tuple[str, str, bytes]] = field(default_factory=dict)
    channels: dict[int, tuple[int, str, str, dict[str, str]]] = field(default_factory=dict)
    chunks: list[Chunk] = field(default_factory=list)
    data_end: int = 0  # end of the last whole record of the data section
    complete: bool = False


def scan_mcap(path: Path) -> McapScan:
    """Scan one MCAP file; a file without summary/footer is reported "torn" with the bytes it loses."""
    size = path.stat().st_size
    scan = McapScan(FileReport(path.name, "mcap", "complete", size=size), FileSummary(path.name))
    report = scan.report
    counts: dict[int, int] = collections.Counter()

    def on_message(channel: int, log_time: int, data: memoryview) -> None:
        counts[channel] += 1
        scan.summary.start_ns = min(scan.summary.start_ns, log_time)
        scan.summary.end_ns = max(scan.summary.end_ns, log_time)
        if channel in scan.channels:
            schema = scan.schemas.get(scan.channels[channel][0])
            if schema and is_episode_topic(scan.channels[channel][1], schema[0]):
                scan.markers.append((log_time, string_payload(bytes(data))))

    def on_record(op: int, body: bytes | memoryview) -> None:
        if op == mcap.OP_SCHEMA:
            key, name, encoding, data = mcap.parse_schema(body)
            scan.schemas[key] = (name, encoding, data)
        elif op == mcap.OP_CHANNEL:
            key, schema, topic, encoding, metadata = mcap.parse_channel(body)
            scan.channels[key] = (schema, topic, encoding, metadata)

    with path.open("rb") as stream:
        if stream.read(8) != mcap.MAGIC:
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
            if op in (mcap.OP_DATA_END, mcap.OP_FOOTER):
                stream.seek(-len(mcap.MAGIC), os.SEEK_END)
                tail = stream.read(len(mcap.MAGIC))
                scan.complete = op == mcap.OP_DATA_END and tail == mcap.MAGIC and size - position >= 9 + 4 + 37
                break
            if op == mcap.OP_CHUNK:
                chunk = _read_chunk(stream.read(length), position, 9 + length, scan, on_record, on_message)
                if not chunk.valid:
                    report.problems.append(f"chunk at byte {position} is corrupt (CRC or decompression failed)")
                scan.chunks.append(chunk)
            elif op == mcap.OP_MESSAGE_INDEX and scan.chunks:
                channel = struct.unpack("<H", stream.read(2))[0]
                stream.seek(length - 2, os.SEEK_CUR)
                scan.chunks[-1].index_offsets[channel] = position
                scan.chunks[-1].index_length += 9 + length
            elif op == mcap.OP_MESSAGE:
                on_message(*mcap.parse_message(stream.read(length)))
            elif op in (mcap.OP_SCHEMA, mcap.OP_CHANNEL, mcap.OP_HEADER):
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


def _read_chunk(body: bytes, offset: int, length: int, scan: McapScan,
                on_record: Callable[[int, memoryview], None],
                on_message: Callable[[int, int, memoryview], None]) -> Chunk:  # fmt: skip
    """One chunk record: its summary entry, its messages and records passed on; invalid when it cannot be read."""
    header = mcap.chunk_header(body)
    chunk = Chunk(offset, length, header.start_ns, header.end_ns, header.compression, header.compressed_size,
                  header.uncompressed_size, True)  # fmt: skip
    try:
        records = mcap.chunk_records(body, header)
    except Exception:  # any decompression failure means the same: this chunk is lost
        chunk.valid = False
        return chunk
    entries: dict[int, list[tuple[int, int]]] = collections.defaultdict(list)
    for op, position, record in mcap.records(records):
        if op == mcap.OP_MESSAGE:
            channel, log_time, data = mcap.parse_message(record)
            entries[channel].append((log_time, position))
            on_message(channel, log_time, data)
        elif op in (mcap.OP_SCHEMA, mcap.OP_CHANNEL):
            on_record(op, record)
    chunk.counts = {channel: len(items) for channel, items in entries.items()}
    if scan.chunks:
        scan.chunks[-1].entries = None  # only the last chunk's entries may be needed to rebuild its index
    chunk.entries = dict(entries)
    return chunk


def _fill_topics(scan: McapScan, counts: dict[int, int]) -> None:
    """Topics (v8 topic_metadata) and message counts of the file's channels; orphan messages are a problem."""
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
    scan.report.start_ns, scan.report.end_ns = nanoseconds_range([scan.summary])
    scan.report.end_ns += scan.report.start_ns


def finish_mcap(path: Path, scan: McapScan) -> None:
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
                record = encode_record(mcap.OP_MESSAGE_INDEX, struct.pack("<HI", channel, len(pairs)) + pairs)
                last.index_offsets[channel] = stream.tell()
                last.index_length += len(record)
                stream.write(record)
        stream.write(encode_record(mcap.OP_DATA_END, struct.pack("<I", 0)))
        _write_summary(stream, scan, chunks)
        stream.flush()
        os.fsync(stream.fileno())


def _write_summary(stream: BinaryIO, scan: McapScan, chunks: list[Chunk]) -> None:
    """Append the summary section (schemas, channels, chunk indexes, statistics), its offsets and the footer."""
    summary_start = stream.tell()
    groups: list[tuple[int, int, int]] = []

    def group(op: int, records: list[bytes]) -> None:
        if records:
            start = stream.tell()
            for record in records:
                stream.write(record)
            groups.append((op, start, stream.tell() - start))

    schema_records = []
    for key, (name, encoding, data) in sorted(scan.schemas.items()):
        body = struct.pack("<H", key) + encode_string(name) + encode_string(encoding)
        schema_records.append(encode_record(mcap.OP_SCHEMA, body + struct.pack("<I", len(data)) + data))
    group(mcap.OP_SCHEMA, schema_records)
    channel_records = []
    for key, (schema, topic, encoding, metadata) in sorted(scan.channels.items()):
        pairs = b"".join(encode_string(k) + encode_string(v) for k, v in metadata.items())
        body = struct.pack("<HH", key, schema) + encode_string(topic) + encode_string(encoding)
        channel_records.append(encode_record(mcap.OP_CHANNEL, body + struct.pack("<I", len(pairs)) + pairs))
    group(mcap.OP_CHANNEL, channel_records)
    index_records = []
    for chunk in chunks:
        offsets = b"".join(struct.pack("<HQ", c, o) for c, o in sorted(chunk.index_offsets.items()))
        body = struct.pack("<QQQQI", chunk.start_ns, chunk.end_ns, chunk.offset, chunk.length, len(offsets))
        body += offsets + struct.pack("<Q", chunk.index_length) + encode_string(chunk.compression)
        body += struct.pack("<QQ", chunk.compressed_size, chunk.uncompressed_size)
        index_records.append(encode_record(mcap.OP_CHUNK_INDEX, body))
    group(mcap.OP_CHUNK_INDEX, index_records)
    per_channel: dict[int, int] = collections.Counter()
    for chunk in chunks:
        per_channel.update(chunk.counts)
    channel_counts = b"".join(struct.pack("<HQ", c, n) for c, n in sorted(per_channel.items()))
    used = [c for c in chunks if c.counts]
    stats = struct.pack(
        "<QHIIIIQQI", sum(per_channel.values()), len(scan.schemas), len(scan.channels), 0, 0, len(chunks),
        min((c.start_ns for c in used), default=0), max((c.end_ns for c in used), default=0), len(channel_counts),
    )  # fmt: skip
    group(mcap.OP_STATISTICS, [encode_record(mcap.OP_STATISTICS, stats + channel_counts)])
    offsets_start = stream.tell()
    for op, start, length in groups:
        stream.write(encode_record(mcap.OP_SUMMARY_OFFSET, struct.pack("<BQQ", op, start, length)))
    stream.write(encode_record(mcap.OP_FOOTER, struct.pack("<QQI", summary_start, offsets_start, 0)))
    stream.write(mcap.MAGIC)
