"""Exploration policies that generate offline data: normalised joint commands in [-1, 1] (velocity or effort).

A world model learns only the dynamics its data show. I.i.d. uniform commands (`random`) average out
and mostly jitter the arm in place; `smooth` commands (an Ornstein-Uhlenbeck process, bounced off the
joint limits) sweep the arm across its workspace; `mixed` interleaves smooth sweeps, random jitter and
standing still, so the model also sees sharp command changes and the zero command.

Policies draw only from the generator given to `reset`, so an episode is reproducible from its seed,
and return float32 actions: exactly what the HDF5 episode store keeps, so replaying stored actions
reproduces the episode bit for bit.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class ExplorationPolicy(Protocol):
    name: str

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode, drawing from `rng` only."""

    def act(self, qpos: np.ndarray) -> np.ndarray:
        """The next command, float32 in [-1, 1], given the current joint positions."""


class RandomPolicy:
    """I.i.d. uniform commands: broad action coverage, little state coverage."""

    name = "random"

    def __init__(self, joint_lower: np.ndarray, joint_upper: np.ndarray) -> None:
        self._dim = len(joint_lower)
        self._rng = np.random.default_rng(0)

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def act(self, qpos: np.ndarray) -> np.ndarray:
        return self._rng.uniform(-1.0, 1.0, self._dim).astype(np.float32)


class SmoothPolicy:
    """Ornstein-Uhlenbeck commands: x <- x - theta*x + sigma*N(0, 1), per control step.

    The correlation time is 1/theta steps (20 steps = 1 s at 20 Hz) and the stationary spread
    sigma/sqrt(2*theta - theta^2) = 0.64, so commands saturate at +-1 only ~12% of the time. Near a
    joint limit a command that still pushes outwards is mirrored, so the arm bounces back into its
    workspace instead of resting against the stop.
    """

    name = "smooth"

    def __init__(
        self,
        joint_lower: np.ndarray,
        joint_upper: np.ndarray,
        theta: float = 0.05,
        sigma: float = 0.2,
        limit_band: float = 0.1,
    ) -> None:
        lower = np.asarray(joint_lower, dtype=np.float64)
        upper = np.asarray(joint_upper, dtype=np.float64)
        bounded = np.isfinite(lower) & np.isfinite(upper)  # continuous joints (-inf, inf) never bounce
        span = np.where(bounded, upper - lower, 0.0)
        self._low_edge = np.where(bounded, lower + limit_band * span, -np.inf)
        self._high_edge = np.where(bounded, upper - limit_band * span, np.inf)
        self.theta = theta
        self.sigma = sigma
        self._state = np.zeros(len(span))
        self._rng = np.random.default_rng(0)

    @property
    def stationary_std(self) -> float:
        return self.sigma / float(np.sqrt(2 * self.theta - self.theta**2))

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._state = rng.normal(0.0, self.stationary_std, len(self._state))

    def act(self, qpos: np.ndarray) -> np.ndarray:
        state = self._state - self.theta * self._state + self.sigma * self._rng.normal(size=len(self._state))
        pushing_out = ((qpos >= self._high_edge) & (state > 0)) | ((qpos <= self._low_edge) & (state < 0))
        state[pushing_out] = -state[pushing_out]
        self._state = state
        return np.clip(state, -1.0, 1.0).astype(np.float32)


class MixedPolicy:
    """Segments of smooth sweeps, random jitter and standing still, with random lengths."""

    name = "mixed"
    SEGMENT_KINDS = ("smooth", "random", "still")
    SEGMENT_WEIGHTS = (0.6, 0.3, 0.1)
    SEGMENT_STEPS = (5, 30)  # inclusive range of a segment's length in control steps

    def __init__(self, joint_lower: np.ndarray, joint_upper: np.ndarray) -> None:
        self._smooth = SmoothPolicy(joint_lower, joint_upper)
        self._random = RandomPolicy(joint_lower, joint_upper)
        self._dim = len(joint_lower)
        self._rng = np.random.default_rng(0)
        self._kind = "smooth"
        self._remaining = 0

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._smooth.reset(rng)
        self._random.reset(rng)
        self._remaining = 0

    def act(self, qpos: np.ndarray) -> np.ndarray:
        if self._remaining == 0:
            self._kind = self.SEGMENT_KINDS[self._rng.choice(len(self.SEGMENT_KINDS), p=self.SEGMENT_WEIGHTS)]
            low, high = self.SEGMENT_STEPS
            self._remaining = int(self._rng.integers(low, high + 1))
        self._remaining -= 1
        smooth = self._smooth.act(qpos)  # keeps the OU process running, so sweeps resume smoothly
        if self._kind == "smooth":
            return smooth
        if self._kind == "random":
            return self._random.act(qpos)
        return np.zeros(self._dim, dtype=np.float32)


POLICIES: dict[str, type] = {"random": RandomPolicy, "smooth": SmoothPolicy, "mixed": MixedPolicy}


def make_policy(name: str, joint_lower: np.ndarray, joint_upper: np.ndarray) -> ExplorationPolicy:
    """An exploration policy by name (random, smooth, mixed) for joints with these limits (-inf/inf: continuous)."""
    try:
        policy_class = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}") from None
    return policy_class(np.asarray(joint_lower, dtype=np.float64), np.asarray(joint_upper, dtype=np.float64))
