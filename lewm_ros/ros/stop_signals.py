"""SIGINT and SIGTERM for our ROS processes: notice them in any state, then stop the way the process must.

Why not rclpy's own handlers: they shut the context down the moment the signal arrives, so nothing can be
published afterwards, and the agent's safe command (or the simulator's last state) is lost. Why spin in slices:
Python runs signal handlers only in the main thread, between bytecodes, while `executor.spin()` can block in the
middleware's wait indefinitely when a node has no timer (an unconfigured or shut-down lifecycle node), so a
Ctrl-C went unnoticed until something else woke the executor.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

SLICE_S = 0.1  # the main thread is back in Python this often while spinning
EXIT_INSISTED = 3  # a second signal while stopping: exit at once with this status


class StopRequested(BaseException):
    """Raised in the main thread when a signal arrives during start-up (before spinning), where nothing has been
    commanded yet: abandon the start-up. A BaseException, so `except Exception` in start-up code does not
    swallow it."""


class StopSignals:
    """Context manager: while inside, SIGINT/SIGTERM set `signal_number` (start-up is interrupted with
    StopRequested); a second one exits the process immediately. The previous handlers come back on exit."""

    def __init__(self, interrupt_start_up: bool = True) -> None:
        self.signal_number = 0
        self.starting = interrupt_start_up
        self._previous: dict[int, Any] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signal_number).name if self.signal_number else ""

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signal_number:
            os._exit(EXIT_INSISTED)
        self.signal_number = signum
        if self.starting:
            self.starting = False
            raise StopRequested()

    def spin(self, executor: Any, context_ok: Callable[[], bool], until: Callable[[], bool] = lambda: False) -> None:
        """Spin `executor` until a signal, the context's shutdown, or `until()`; start-up is over from here."""
        self.starting = False
        while not self.signal_number and context_ok() and not until():
            executor.spin_once(timeout_sec=SLICE_S)
