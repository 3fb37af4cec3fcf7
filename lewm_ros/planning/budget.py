"""Plans sized to the machine: how many candidates an iteration can score and still meet the deadline.

A fixed sample count is tuned on one machine; on a slower or busier one every iteration overruns the deadline
and the controller ends up sending safe commands instead of plans. The budget measures the time per scored
candidate (each iteration's time over its candidate count) and gives the next plan as many samples as let its
warm iterations fit the deadline, between a floor (enough candidates for the elites) and the configured count.
It degrades within one plan when the machine slows and recovers over a few plans when it frees up.
"""

from __future__ import annotations

import math

SLOW_GAIN = 0.5  # weight of a measurement slower than the estimate: follow a slowdown within a plan or two
FAST_GAIN = 0.2  # weight of a faster one: recover gradually, so one quick iteration does not overshoot


class SampleBudget:
    """Samples per iteration for the next plan, from the measured milliseconds per candidate."""

    def __init__(self, max_samples: int, min_samples: int, deadline_ms: float, iterations: int) -> None:
        if not 1 <= min_samples <= max_samples:
            raise ValueError(f"need 1 <= min_samples <= max_samples, got {min_samples} and {max_samples}")
        if not (deadline_ms > 0 and iterations >= 1):
            raise ValueError(f"need deadline_ms > 0 and iterations >= 1, got {deadline_ms} and {iterations}")
        self.max_samples, self.min_samples = int(max_samples), int(min_samples)
        self.iteration_target_ms = deadline_ms / iterations  # each of the warm plan's iterations gets this long
        self.ms_per_sample: float | None = None

    def record(self, iteration_ms: float, candidates: int) -> None:
        """One iteration's measured time and how many candidates it scored."""
        if candidates < 1 or not math.isfinite(iteration_ms) or iteration_ms < 0:
            return
        measured = iteration_ms / candidates
        if self.ms_per_sample is None:
            self.ms_per_sample = measured
        else:
            gain = SLOW_GAIN if measured > self.ms_per_sample else FAST_GAIN
            self.ms_per_sample += gain * (measured - self.ms_per_sample)

    @property
    def samples(self) -> int:
        """Candidates per iteration for the next plan (the maximum until something was measured)."""
        if not self.ms_per_sample:
            return self.max_samples
        fit = int(self.iteration_target_ms / self.ms_per_sample)
        return max(self.min_samples, min(self.max_samples, fit))

    def estimate_ms(self, samples: int) -> float | None:
        """Expected time of one iteration over `samples` candidates (None before any measurement)."""
        return None if self.ms_per_sample is None else self.ms_per_sample * samples

    def describe(self) -> str:
        if self.ms_per_sample is None:
            return f"{self.max_samples} samples (not measured yet)"
        return (f"{self.samples} of {self.max_samples} samples ({self.ms_per_sample:.3f} ms per candidate, "
                f"{self.iteration_target_ms:.1f} ms per iteration)")
