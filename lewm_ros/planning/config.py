"""The planner's settings, result and search state, and its error type.

Why a module of its own: the core (core.py), the update rules (strategies.py) and the on-device CEM
(device_cem.py) all need these types; keeping them here lets each of those import this module and the core
import the other two, so no planning module imports the core back. core.py re-exports every name for callers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from lewm_ros.model.precision import COMPILE_MODES

PLANNERS = ("cem", "icem", "mppi", "grad")
ROLLOUTS = ("fast", "plain")
TAILS = ("zeros", "last")
MIN_ADAPTIVE_SAMPLES = 8  # adaptive_samples never goes below max(2 x elites, this), nor above `samples`


class PlanningError(ValueError):
    """Bad planner settings or inputs; the message names the problem."""


@dataclass(frozen=True)
class PlannerConfig:
    planner: str = "cem"
    samples: int = 300
    iterations: int = 30
    elites: int = 30
    horizon: int = 5
    init_std: float = 1.0
    min_std: float = 0.05  # std floor in normalised units, so the search never freezes completely
    warm_start: bool = True
    warm_iterations: int | None = None  # iterations once a warm-start mean exists (None: `iterations`)
    tail: str = "zeros"  # new last block after a shift: "zeros" (the data's mean action) or "last" (repeat)
    deadline_ms: float | None = None
    stop_std: float | None = None  # converged: every std below this ends the search early (not partial)
    # With a deadline: size each plan's samples to the measured time per candidate, so the warm plan's iterations
    # fit the deadline on this machine, under this load (between the floor below and `samples`). See PlanBudget.
    adaptive_samples: bool = False
    cost_weights: tuple[float, ...] | None = None  # per horizon block; None = final latent only
    precision: str = "fp32"
    rollout: str = "fast"  # "plain": a Python loop over candidates with the straightforward rollout (reference)
    compile: str | None = None  # torch.compile mode for the rollout: "default", "reduce-overhead" (CUDA graphs);
    # None or "" runs eagerly; a mode this device cannot run falls back to eager with a warning (`notes`)
    # Sync-free CEM (lewm_ros.planning.device_cem): the whole search stays on the device, one CUDA graph per
    # `graph_chunk` iterations on CUDA (eager elsewhere); the host looks only between chunks (deadline, stop_std).
    # Fixed sample count (adaptive_samples does not resize it); a roadmap plan takes the generic loop.
    graph: bool = False
    graph_chunk: int = 5
    seed: int = 0
    # iCEM (Pinneri et al. 2020)
    noise_beta: float = 2.0  # coloured noise exponent over env steps: 0 white, 2 smooth
    keep_elites: float = 0.3  # share of last iteration's elites carried into the next one
    sample_decay: float = 1.25  # samples shrink by this factor per iteration ...
    min_samples: int | None = None  # ... down to this (default 2 x elites)
    # MPPI (TD-MPC2's update)
    temperature: float = 0.5  # in units of the elites' cost spread (scale-free)
    # gradient planner
    grad_samples: int = 8  # sequences optimised in parallel (the first is the warm-start/mean)
    grad_lr: float = 0.1

    def check(self) -> None:
        if self.planner not in PLANNERS:
            raise PlanningError(f"unknown planner {self.planner!r}; choose from {', '.join(PLANNERS)}")
        if self.horizon < 1:
            raise PlanningError(f"horizon must be >= 1, got {self.horizon}")
        if self.samples < 1 or self.iterations < 1:
            raise PlanningError(f"samples and iterations must be >= 1, got {self.samples} and {self.iterations}")
        if self.planner != "grad" and not 1 <= self.elites <= self.samples:
            raise PlanningError(f"elites (top-k) must be in 1..samples={self.samples}, got {self.elites}")
        if self.warm_iterations is not None and self.warm_iterations < 1:
            raise PlanningError(f"warm_iterations must be >= 1, got {self.warm_iterations}")
        if self.tail not in TAILS:
            raise PlanningError(f"tail must be one of {TAILS}, got {self.tail!r}")
        if self.rollout not in ROLLOUTS:
            raise PlanningError(f"rollout must be one of {ROLLOUTS}, got {self.rollout!r}")
        if self.graph and (self.planner != "cem" or self.graph_chunk < 1):
            raise PlanningError(f"graph runs planner cem with graph_chunk >= 1, got {self.planner}, {self.graph_chunk}")
        if self.compile and self.compile not in COMPILE_MODES:
            raise PlanningError(f"compile must be empty or one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if not (self.init_std > 0 and self.min_std >= 0):
            raise PlanningError("init_std must be > 0 and min_std >= 0")
        if self.cost_weights is not None:
            if len(self.cost_weights) != self.horizon:
                raise PlanningError(
                    f"cost_weights needs {self.horizon} values (one per block), got {len(self.cost_weights)}"
                )
            if not all(math.isfinite(w) and w >= 0 for w in self.cost_weights) or sum(self.cost_weights) <= 0:
                raise PlanningError("cost_weights must be finite, >= 0 and not all zero")
        if self.deadline_ms is not None and not self.deadline_ms >= 0:
            raise PlanningError(f"deadline_ms must be >= 0, got {self.deadline_ms}")
        if self.adaptive_samples and self.planner == "grad":
            raise PlanningError("adaptive_samples sizes sampling planners; grad optimises grad_samples sequences")
        if self.planner == "mppi" and not self.temperature > 0:
            raise PlanningError("mppi temperature must be > 0")
        if self.planner == "grad" and (self.grad_samples < 1 or not self.grad_lr > 0):
            raise PlanningError("grad_samples must be >= 1 and grad_lr > 0")


@dataclass
class PlanResult:
    plan: np.ndarray  # (H, frameskip, action_dim) raw units, clamped to the limits
    normalized: np.ndarray  # (H, A) the same plan in normalised units (what the model saw)
    cost: float  # cost of the returned plan (inf when no candidate was evaluated)
    iterations: int
    time_ms: float
    partial: bool  # stopped by the deadline before all iterations ran
    discarded: int = 0  # candidates dropped for a non-finite cost
    converged: bool = False  # stopped early by stop_std
    samples: int = 0  # candidates per iteration this plan was given (adaptive_samples: fewer on a slow machine)
    costs: list[float] = field(default_factory=list)  # best cost after each iteration


@dataclass
class SearchState:
    """The sampling distribution a strategy updates, in normalised units."""

    mean: Tensor  # (H, A)
    std: Tensor  # (H, A)
    samples: int  # candidates per iteration (the config's, or fewer when sized to a deadline)
    iteration: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
