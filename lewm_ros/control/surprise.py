"""The surprise alarm: LeWM's one-step prediction error spikes when the world does something the model finds
physically implausible (a teleported arm, a collision, a person in the scene).

The threshold comes from the bundle: training records percentiles of the same error on held-out windows, so
`threshold = p99.9 x factor` means "far beyond anything seen in normal operation". `patience` consecutive
exceedances are required, because a single outlier frame (motion blur, a dropped frame) is not an event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

CALIBRATION_PERCENTILE = "p99.9"


def threshold_from_bundle(meta: dict[str, Any], factor: float, override: float = 0.0) -> float | None:
    """The alarm threshold: `override` when > 0, else the bundle's p99.9 surprise x `factor`; None when the
    bundle carries no calibration (then the alarm is off, and the caller should say so)."""
    if override > 0:
        return float(override)
    percentiles = (meta.get("surprise") or {}).get("percentiles") or {}
    value = percentiles.get(CALIBRATION_PERCENTILE)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        return None
    return float(value) * factor


@dataclass
class SurpriseMonitor:
    """Counts consecutive surprises above the threshold; the alarm latches until `clear()`."""

    threshold: float | None
    patience: int = 2
    latest: float = math.nan
    above: int = 0  # consecutive exceedances so far
    alarm: bool = False
    alarms: int = 0  # times the alarm went off

    def update(self, surprise: float) -> bool:
        """Feed one surprise value; returns True when this value raised the alarm."""
        self.latest = float(surprise)
        if self.threshold is None:
            return False
        # A non-finite surprise means the model itself produced garbage: treat it as maximally surprising.
        exceeded = not math.isfinite(self.latest) or self.latest > self.threshold
        self.above = self.above + 1 if exceeded else 0
        if self.above >= self.patience and not self.alarm:
            self.alarm = True
            self.alarms += 1
            return True
        return False

    def clear(self) -> None:
        self.above = 0
        self.alarm = False
