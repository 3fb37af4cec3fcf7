"""A MultiThreadedExecutor that does not starve its own workers.

rclpy up to Jazzy 7.1.6 (the newest Jazzy wheel on PyPI) re-yields every task that has not started executing
(ros2/rclpy#1452, fixed upstream after 7.1.6). In a MultiThreadedExecutor a task merely queued in the worker pool
counts as "not started", so `spin()` re-submits it in a tight loop that holds the GIL; the pool's workers, our
control tick among them, then wait hundreds of milliseconds to start. Measured here with the agent test rig: tick
gaps of 230-630 ms and 16-60 ticks in 3 s at 20 Hz before, steady 50 ms after (bench/executor_starvation.py).

The fix: remember which pool submission runs each task; while it is still queued or running, wait up to a
millisecond for it (releasing the GIL) instead of submitting it again. A task that ran and is suspended (an async
callback awaiting a future) has a finished submission and is resubmitted as before.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any

from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import (
    ConditionReachedException,
    ExternalShutdownException,
    MultiThreadedExecutor,
    ShutdownException,
    TimeoutException,
)

_QUEUED_WAIT_S = 0.001


class ResponsiveExecutor(MultiThreadedExecutor):
    """MultiThreadedExecutor that never submits a task to its pool while an earlier submission is pending."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_pool: dict[Any, concurrent.futures.Future] = {}  # task -> its latest pool submission
        self.duplicate_yields = 0  # times rclpy offered a task already waiting in the pool (diagnostic)

    def _spin_once_impl(self, timeout_sec: float | None = None, wait_condition: Callable[[], bool] = lambda: False,
                        ) -> None:  # fmt: skip
        try:
            task, _entity, _node = self.wait_for_ready_callbacks(timeout_sec, None, wait_condition)
        except (ExternalShutdownException, ShutdownException, TimeoutException, ConditionReachedException):
            return
        except RCLError:
            if not self._context.ok():
                return  # the context was shut down between spin()'s check and the wait: a shutdown, not a fault
            raise
        pending = self._in_pool.get(task)
        if pending is not None and not pending.done():
            self.duplicate_yields += 1
            concurrent.futures.wait([pending], timeout=_QUEUED_WAIT_S)
            return
        self._in_pool[task] = self._executor.submit(task)
        self._futures.append(task)
        for future in self._futures[:]:
            if future.done():
                self._futures.remove(future)
                self._in_pool.pop(future, None)
                future.result()  # a callback's exception surfaces here, as in rclpy
