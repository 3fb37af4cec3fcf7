"""The controller's counters and recent timings: what diagnostics report and the demo summarises.

Written by the control tick and the sensor callbacks, read by the diagnostics timer: plain ints and bounded
deques, whose single updates are atomic under the GIL, so no lock is held for bookkeeping.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable, Sized
from dataclasses import dataclass

import numpy as np

NOT_CAMERA_DROPS = ("goal", "joint_state")  # drops counted in `dropped` that are not camera frames


@dataclass
class ControlStats:
    frames: int = 0
    invalid_in_row: int = 0
    commands: int = 0
    safe_commands: int = 0
    plans: int = 0
    partial_plans: int = 0
    overruns: int = 0
    errors: int = 0
    goals: int = 0
    unsynchronised: int = 0  # block frames older than the tick (frame_sync_ms ran out)
    stalls: int = 0  # watchdog safe commands because no control tick ran (node clock stopped)
    late_ticks: int = 0  # ticks that began late or published their command after the next tick was due
    surprise_skipped: int = 0  # block surprises not scored: the block's timing broke (late tick, unsynced frame)
    last_cost: float = math.nan
    last_command: float = math.nan  # monotonic time of the last command
    plan_samples: int = 0  # candidates per iteration of the last plan (adaptive_samples: fewer under load)

    def __post_init__(self) -> None:
        self.dropped: Counter[str] = Counter()
        self.stops: Counter[str] = Counter()
        self.plan_ms: deque[float] = deque(maxlen=200)
        self.latency_ms: deque[float] = deque(maxlen=200)
        self.tick_times: deque[float] = deque(maxlen=100)

    def record_plan(self, time_ms: float, cost: float, partial: bool, samples: int) -> None:
        self.plans += 1
        self.partial_plans += int(partial)
        self.plan_ms.append(time_ms)
        self.last_cost = cost
        self.plan_samples = samples

    def control_rate_hz(self) -> float:
        """Ticks per second over the recent tick times (0 with fewer than two)."""
        ticks = list(self.tick_times)
        return (len(ticks) - 1) / (ticks[-1] - ticks[0]) if len(ticks) > 1 and ticks[-1] > ticks[0] else 0.0


    def report(self) -> dict[str, str]:
        """The counters and timings as diagnostics key/values (strings, as DiagnosticStatus carries them)."""
        return {
            "control_rate_hz": f"{self.control_rate_hz():.2f}",
            "plan_ms_p50": f"{percentile(self.plan_ms, 50):.1f}",
            "plan_ms_p95": f"{percentile(self.plan_ms, 95):.1f}",
            "plan_samples": str(self.plan_samples),
            "camera_to_command_ms_p50": f"{percentile(self.latency_ms, 50):.1f}",
            "camera_to_command_ms_p95": f"{percentile(self.latency_ms, 95):.1f}",
            "frames": str(self.frames),
            "dropped_frames": str(sum(v for k, v in self.dropped.items() if k not in NOT_CAMERA_DROPS)),
            "dropped_by_reason": ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())),
            "commands": str(self.commands),
            "safe_commands": str(self.safe_commands),
            "plans": str(self.plans),
            "partial_plans": str(self.partial_plans),
            "plan_overruns": str(self.overruns),
            "unsynchronised_frames": str(self.unsynchronised),
            "late_ticks": str(self.late_ticks),
            "surprise_skipped": str(self.surprise_skipped),
            "tick_stalls": str(self.stalls),
            "errors": str(self.errors),
            "plan_cost": f"{self.last_cost:.4g}",
            "stops": ", ".join(f"{k}={v}" for k, v in sorted(self.stops.items())),
        }


def percentile(values: Iterable[float] | Sized, q: float) -> float:
    """The q-th percentile, NaN for no values (a report line, not an error)."""
    array = np.fromiter(values, float)
    return float(np.percentile(array, q)) if array.size else math.nan
