"""Repeated warnings rate-limited by their reason, with a count of what was held back.

A controller on an overloaded machine can hit the same stop condition every tick; a log line each time buries
everything else (the demo's results among them). rclpy's `throttle_duration_sec` limits by call site and drops
the repeats silently; this keys on the reason ("plan overrun", not the text with its milliseconds) and says how
many were held back, so the log stays readable and still tells how often it happened.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def reason_key(reason: str) -> str:
    """The stable part of a stop reason: 'plan overrun (130 ms > 100 ms)' -> 'plan overrun'."""
    return reason.split(" (")[0].split(":")[0].strip()


class ReasonThrottle:
    """Admits the first report of each reason, then at most one per `period_s` per reason."""

    def __init__(self, period_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s, self.clock = float(period_s), clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def admit(self, reason: str) -> int | None:
        """None: hold this report back. Otherwise report it, with this many of its reason held back since the
        last one that went out."""
        key, now = reason_key(reason), self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period_s:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)

    def held(self) -> dict[str, int]:
        """Reports held back and not yet summarised, by reason."""
        return dict(self._held)
