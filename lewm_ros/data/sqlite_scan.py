"""bag-check's sqlite3 half: count what a .db3 storage file holds and roll back a killed writer's transaction.

A recorder killed mid-transaction leaves a hot journal: opening the file read-write rolls the unfinished
transaction back and the committed rows stay. A dry run looks at a copy, so it changes nothing.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path

from lewm_ros.arguments import one_line
from lewm_ros.data.bag_metadata import FileSummary, is_episode_topic, nanoseconds_range
from lewm_ros.data.storage_scan import FileReport, FileScan, string_payload


def scan_db3(path: Path, *, repair: bool) -> FileScan:
    """Scan one .db3 file; with `repair`, roll back (and remove) a hot journal in place."""
    size = path.stat().st_size
    scan = FileScan(FileReport(path.name, "sqlite3", "complete", size=size), FileSummary(path.name))
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
            _read_tables(connection, scan)
        finally:
            connection.close()
        if hot and repair and journal.exists():
            # Reading rolls a hot journal back and deletes it; one still there had no valid header (killed while
            # the journal itself was being started, before the database file changed): sqlite ignores it.
            journal.unlink(missing_ok=True)
    except sqlite3.Error as err:
        report.status = "unreadable"
        report.problems.append(f"sqlite: {one_line(err)}")
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
    report.start_ns, duration = nanoseconds_range([scan.summary])
    report.end_ns = report.start_ns + duration
    return scan


def _read_tables(connection: sqlite3.Connection, scan: FileScan) -> None:
    """Integrity, topics, per-topic counts and time range, and episode markers, from an open database."""
    check = connection.execute("PRAGMA quick_check").fetchone()[0]
    if check != "ok":
        scan.report.problems.append(f"sqlite quick_check: {check}")
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
        if is_episode_topic(topic["name"], topic["type"]):
            query = "SELECT timestamp, data FROM messages WHERE topic_id = ? ORDER BY timestamp"
            rows = connection.execute(query, (topic_id,))
            scan.markers += [(stamp, string_payload(bytes(data))) for stamp, data in rows]
