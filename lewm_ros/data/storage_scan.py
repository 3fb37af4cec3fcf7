"""What bag-check learns from one storage file (MCAP or sqlite3): the per-file report and the scan result.

The MCAP and sqlite3 scanners (mcap_repair, sqlite_scan) fill these; bag_recovery merges them per directory.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from lewm_ros.data.bag_metadata import FileSummary


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
class FileScan:
    """One storage file as scanned: its report, its metadata summary, topics and episode markers."""

    report: FileReport
    summary: FileSummary
    topics: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> topic_metadata (v8)
    markers: list[tuple[int, str]] = field(default_factory=list)


def string_payload(data: bytes) -> str:
    """The text of a CDR-serialized std_msgs/String (4-byte encapsulation, u32 length with NUL, bytes)."""
    if len(data) < 8:
        return ""
    little = data[1] in (1, 3)
    (length,) = struct.unpack_from("<I" if little else ">I", data, 4)
    return data[8 : 8 + max(0, length - 1)].decode("utf-8", "replace")
