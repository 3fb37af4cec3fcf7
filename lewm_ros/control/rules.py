"""When the controller must not command the arm: the stop rules and the plan acceptance, without ROS.

The agent node gathers what it knows (enabled, goal, the newest frame's age, invalid frames, a measured joint
position) into `Conditions` and asks `stop_reason`; after a plan it asks `plan_rejection`. Any reason means the
safe command this tick. Kept here, not in the node, so every rule is testable without DDS and the evaluation
loop can apply the same ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Limits:
    """The thresholds the rules compare against (the agent's parameters of the same names)."""

    frame_timeout_ms: float = 300.0
    invalid_frame_burst: int = 5
    plan_overrun_ms: float = 100.0
    surprise_hold: bool = False  # surprise_action == "hold"
    needs_measured_position: bool = False  # safe_action == "hold": the safe command is the measured position


@dataclass(frozen=True)
class Conditions:
    """What the controller knows at the start of a tick."""

    enabled: bool
    surprise_alarm: bool
    has_goal: bool
    frame_age_ms: float | None  # None: no frame yet
    invalid_in_row: int
    has_measured_position: bool


def stop_reason(conditions: Conditions, limits: Limits) -> str | None:
    """The first reason not to command the arm this tick, or None; checked in order of how much it says."""
    c = conditions
    if not c.enabled:
        return "disabled"
    if c.surprise_alarm and limits.surprise_hold:
        return "surprise alarm (hold until re-enabled)"
    if not c.has_goal:
        return "no goal image"
    if c.frame_age_ms is None:
        return "no camera frame yet"
    if c.frame_age_ms > limits.frame_timeout_ms:
        return "camera timeout"
    if c.invalid_in_row >= limits.invalid_frame_burst:
        return "burst of invalid frames"
    if limits.needs_measured_position and not c.has_measured_position:
        return "no joint_states (needed for position/trajectory commands)"
    return None


def plan_rejection(result: Any, limits: Limits, warm: bool) -> str | None:
    """Why a fresh plan (a PlanResult) must not be executed, or None.

    A plan over `plan_overrun_ms` is stale by the time it would run. A warm plan with zero iterations is the
    previous plan shifted, still a plan; a cold one with no finite cost is none."""
    if result.time_ms > limits.plan_overrun_ms:
        return f"plan overrun ({result.time_ms:.0f} ms > {limits.plan_overrun_ms:g} ms)"
    if not np.all(np.isfinite(result.plan)):
        return "non-finite plan"
    if not math.isfinite(result.cost) and not (result.iterations == 0 and warm):
        return "no plan within the deadline" if result.iterations == 0 else "non-finite plan cost"
    return None
