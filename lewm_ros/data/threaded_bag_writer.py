"""The recorder's writer thread: a BagWriter fed through a bounded queue, so a ROS callback never waits on disk.

Messages are stamped and queued by the caller's thread and written, in stamp order, by one writer thread
that also flushes the bag every `flush_interval_s`. A full queue drops (and counts) a message rather than
block; a failed write (disk full) ends the recording with one reported error.
"""

from __future__ import annotations

import collections
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lewm_ros.arguments import one_line
from lewm_ros.data.bag_errors import BagError
from lewm_ros.data.bag_metadata import TopicSpec
from lewm_ros.data.bag_writer import BagWriter


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
            self.error = one_line(err)
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
                self.error = f"writing {self.path} failed: {one_line(err)}"
                self._log(self.error)
            return None
        return True if result is None else result
