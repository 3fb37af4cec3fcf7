"""bag-check's core: what a rosbag2 directory holds, what is readable, what was lost, and its recovery.

Every storage file is scanned (MCAP record by record in mcap_repair, sqlite3 by query in sqlite_scan), so this
works where metadata.yaml is missing, partial or stale, as after a recorder killed with SIGKILL. With `repair`
it finishes killed MCAP files, rolls back unfinished sqlite3 transactions and writes metadata.yaml (version 8)
from what it found. The command line is lewm_ros.data.bag_check.
"""

from __future__ import annotations

import collections
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lewm_ros.data.bag_errors import BagError
from lewm_ros.data.bag_metadata import (
    EPISODE_TOPIC_KEY,
    EPISODES_KEY,
    bag_metadata,
    episodes_from_markers,
    is_episode_topic,
    nanoseconds_range,
    read_metadata,
    write_metadata,
)
from lewm_ros.data.mcap_repair import McapScan, finish_mcap, scan_mcap
from lewm_ros.data.sqlite_scan import scan_db3
from lewm_ros.data.storage_scan import FileReport, FileScan

_BAG_FILE = re.compile(r".*\.(mcap|db3)$")


@dataclass
class BagCheckReport:
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


def _metadata_state(info: dict[str, Any] | None, error: str | None, scans: list[FileScan]) -> str:
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


def check_bag(path: Path, *, repair: bool = True) -> BagCheckReport:
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
    scans = [scan_mcap(p) if storage == "mcap" else scan_db3(p, repair=repair) for p in files]
    lost = [f"{name}: listed in metadata.yaml but missing from the directory"
            for name in listed if name not in {p.name for p in files}]  # fmt: skip
    lost += _losses(directory, scans, repair=repair)
    readable = [s for s in scans if s.report.status != "unreadable"]
    state = _metadata_state(info, error, readable)
    topics: dict[str, dict[str, Any]] = {}
    for scan in readable:
        for name, meta in scan.topics.items():
            topics.setdefault(name, meta)
    episodes = episodes_from_markers(sorted(m for s in readable for m in s.markers))
    written = False
    if repair and (state != "ok" or any(s.report.repaired for s in scans)):
        _rewrite_metadata(directory, storage, info, topics, readable, episodes)
        written = True
    counts: dict[str, int] = collections.Counter()
    for scan in readable:
        counts.update(scan.summary.topic_counts)
    start, duration = nanoseconds_range([s.summary for s in readable])
    return BagCheckReport(
        path=str(directory), storage=storage, files=[s.report for s in scans],
        topics={n: {"type": t["type"], "count": counts.get(n, 0)} for n, t in topics.items()},
        messages=sum(counts.values()), start_ns=start, end_ns=start + duration, episodes=episodes,
        metadata=state, metadata_written=written, lost=lost,
    )  # fmt: skip


def _losses(directory: Path, scans: list[FileScan], *, repair: bool) -> list[str]:
    """What each file lost, one line each; with `repair`, torn MCAP files are finished on the way."""
    lost: list[str] = []
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
                assert isinstance(scan, McapScan)  # only MCAP files tear
                finish_mcap(directory / report.path, scan)
                report.repaired = True
                report.size = (directory / report.path).stat().st_size
        elif report.status == "rolled-back":
            lost.append(f"{report.path}: rows of the unfinished transaction (the last unflushed data)")
        elif report.status == "unreadable":
            lost.append(f"{report.path}: unreadable ({'; '.join(report.problems)})")
        lost += [f"{report.path}: {p}" for p in report.problems if p.startswith("chunk at")]
    return lost


def _rewrite_metadata(directory: Path, storage: str, info: dict[str, Any] | None, topics: dict[str, dict[str, Any]],
                      readable: list[FileScan], episodes: list[dict[str, Any]]) -> None:  # fmt: skip
    """metadata.yaml from the scans, keeping the old file's custom data and type hashes where it had them."""
    custom = dict((info or {}).get("custom_data") or {})
    episode_topics = [n for n, t in topics.items() if is_episode_topic(n, t["type"])]
    if episode_topics:
        custom[EPISODE_TOPIC_KEY] = episode_topics[0]
        custom[EPISODES_KEY] = json.dumps(episodes, separators=(",", ":"))
    hashes = {t["topic_metadata"]["name"]: t["topic_metadata"].get("type_description_hash", "")
              for t in (info or {}).get("topics_with_message_count") or [] if isinstance(t, dict)}  # fmt: skip
    for name, meta in topics.items():
        meta["type_description_hash"] = meta.get("type_description_hash") or hashes.get(name, "")
    write_metadata(directory, bag_metadata(storage, topics.values(), [s.summary for s in readable], custom))
