"""Latent MPC: one core that samples candidate action sequences, rolls them out with the world model and
scores them against a goal latent; update rules (CEM, iCEM, MPPI, gradient) are strategies on top.

Shapes: S candidates, H horizon in action blocks, A = frameskip * action_dim (one block, normalised units),
D latent dim. The core works in normalised action space (the model's); plans come out in raw units
(denormalised with the bundle's statistics, clamped to the action limits).

Cost of a candidate: sum_h w_h * ||z_hat_h - z_goal||^2 with w = (0, ..., 0, 1) by default (the paper's
final-latent cost); `cost_weights` sets another weighting over the horizon. With a roadmap
(`set_roadmap`, lewm_ros.planning.roadmap) the squared distance is measured along a graph of recorded latents
instead, which keeps pointing the way when the goal is beyond the reach of the plain latent distance.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from lewm_ros.model.precision import (
    PRECISIONS,
    autocast,
    choose_precision,
    compile_fallback,
    precision_fallback,
    warn_fallback,
)
from lewm_ros.planning.budget import SampleBudget
from lewm_ros.planning.config import (
    MIN_ADAPTIVE_SAMPLES,
    PLANNERS,
    ROLLOUTS,
    TAILS,
    PlannerConfig,
    PlanningError,
    PlanResult,
    SearchState,
)
from lewm_ros.planning.device_cem import DeviceCEM
from lewm_ros.planning.strategies import make_strategy

__all__ = [  # the settings and result types live in config.py; callers import them from here too
    "MIN_ADAPTIVE_SAMPLES", "PLANNERS", "ROLLOUTS", "TAILS", "Dynamics", "LatentPlanner", "PlanResult",
    "PlannerConfig", "PlanningError", "SearchState",
]  # fmt: skip


class Dynamics(Protocol):
    """What the planner needs of a model: LeWM or a TorchScript LatentDynamics."""

    def rollout(self, context: Tensor, past_actions: Tensor, candidates: Tensor) -> Tensor: ...


class LatentPlanner:
    """Plans action-block sequences that drive the predicted latent to a goal latent.

    Call `plan(context, past_blocks, goal)` with the latents of the last 1..history frames (oldest first),
    the raw executed blocks between them, and the goal latent. After executing k blocks of the plan, call
    `advance(k)` so the next plan starts from the previous mean shifted by k blocks (warm start).
    """

    def __init__(
        self, model: Any, action_mean: np.ndarray, action_std: np.ndarray, frameskip: int, history: int,
        latent_dim: int, config: PlannerConfig | None = None, action_low: np.ndarray | float = -1.0,
        action_high: np.ndarray | float = 1.0, device: str | torch.device = "cpu",
    ) -> None:  # fmt: skip
        self.config = config or PlannerConfig()
        self.config.check()
        self.model = model
        self.device = torch.device(device)
        self.notes: list[str] = []  # fallbacks taken on this device (precision, compile), for logs and diagnostics
        if self.config.precision in PRECISIONS:
            precision, why = precision_fallback(self.device, self.config.precision)
            if why:
                self._fall_back(why)
                self.config = replace(self.config, precision=precision)
        self.frameskip, self.history, self.latent_dim = frameskip, history, latent_dim
        mean = np.asarray(action_mean, np.float32).reshape(-1)
        std = np.asarray(action_std, np.float32).reshape(-1)
        if mean.shape != std.shape or not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise PlanningError("action statistics must be finite, of equal length, with positive std")
        self.action_dim = len(mean)
        self.block_dim = frameskip * self.action_dim
        low = np.broadcast_to(np.asarray(action_low, np.float32), mean.shape)
        high = np.broadcast_to(np.asarray(action_high, np.float32), mean.shape)
        if not np.all(low < high):
            raise PlanningError(f"action limits need low < high, got {low.tolist()} and {high.tolist()}")
        self.action_mean, self.action_std, self.action_low, self.action_high = mean, std, low.copy(), high.copy()
        # limits in normalised units, tiled over the frameskip steps of a block
        self._low = torch.from_numpy(np.tile((low - mean) / std, frameskip)).to(self.device)
        self._high = torch.from_numpy(np.tile((high - mean) / std, frameskip)).to(self.device)
        self._mean_t = torch.from_numpy(mean).to(self.device)
        self._std_t = torch.from_numpy(std).to(self.device)
        weights = self.config.cost_weights or (0.0,) * (self.config.horizon - 1) + (1.0,)
        self._cost_weights = torch.tensor(weights, dtype=torch.float32, device=self.device)
        self.strategy = make_strategy(self.config)
        self.generator = torch.Generator(device=self.device)
        self.reset(self.config.seed)
        self._rollout = self._make_rollout()
        self.iteration_ms: float | None = None  # running estimate, for deadlines
        # Measured time per candidate; with adaptive_samples and a deadline it also sizes each plan's samples.
        self.budget = self._make_budget()
        self.roadmap: Any = None  # lewm_ros.planning.roadmap.Roadmap, or None for the plain latent distance
        self.device_cem = DeviceCEM(self) if self.config.graph else None

    @classmethod
    def from_bundle(
        cls, bundle: Any, config: PlannerConfig | None = None, device: str | torch.device = "cpu",
        action_low: np.ndarray | float = -1.0, action_high: np.ndarray | float = 1.0,
    ) -> LatentPlanner:  # fmt: skip
        """A planner over a loaded bundle's eager model (lewm_ros.model.bundle.load_bundle)."""
        cfg = bundle.config
        model = bundle.model.to(device).eval()
        for param in model.parameters():
            param.requires_grad_(False)
        return cls(
            model, bundle.action_mean, bundle.action_std, cfg.action.frameskip, cfg.predictor.history,
            cfg.latent_dim, config, action_low, action_high, device,
        )  # fmt: skip

    # ---- lifecycle ---------------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> None:
        """Forget the warm start (a new episode or goal); reseed when `seed` is given."""
        self._warm_mean: Tensor | None = None
        if seed is not None:
            self.generator.manual_seed(int(seed))

    def advance(self, executed_blocks: int) -> None:
        """Shift the warm-start mean by the blocks executed since the last plan; the new tail is the data's
        mean action ("zeros") or a copy of the last block ("last")."""
        if self._warm_mean is None or executed_blocks <= 0:
            return
        horizon = self.config.horizon
        k = min(executed_blocks, horizon)
        kept = self._warm_mean[k:]
        if self.config.tail == "last" and len(kept):
            tail = kept[-1:].expand(k, -1)
        elif self.config.tail == "last":
            tail = self._warm_mean[-1:].expand(k, -1)
        else:
            tail = torch.zeros(k, self.block_dim, device=self.device)
        self._warm_mean = torch.cat([kept, tail]).clamp(self._low, self._high)

    def set_roadmap(self, roadmap: Any) -> None:
        """Measure goal distance along a Roadmap of recorded latents (None: the plain latent distance)."""
        if roadmap is not None and roadmap.latent_dim != self.latent_dim:
            raise PlanningError(f"roadmap latents have dimension {roadmap.latent_dim}, the model's {self.latent_dim}")
        self.roadmap = roadmap

    @property
    def warm(self) -> bool:
        return self._warm_mean is not None

    def with_config(self, **changes: Any) -> LatentPlanner:
        """A planner on the same model and roadmap with some settings changed (no warm start carried over)."""
        planner = LatentPlanner(
            self.model, self.action_mean, self.action_std, self.frameskip, self.history, self.latent_dim,
            replace(self.config, **changes), self.action_low, self.action_high, self.device,
        )  # fmt: skip
        planner.set_roadmap(self.roadmap)
        return planner

    # ---- planning ----------------------------------------------------------------------------------

    def plan(
        self, context: Tensor | np.ndarray, past_blocks: Tensor | np.ndarray | None, goal: Tensor | np.ndarray
    ) -> PlanResult:
        started = time.perf_counter()
        cfg = self.config
        context_t, past_t, goal_t = self._check_inputs(context, past_blocks, goal)
        warm = cfg.warm_start and self._warm_mean is not None
        mean = self._warm_mean.clone() if warm else torch.zeros(cfg.horizon, self.block_dim, device=self.device)
        iterations = cfg.warm_iterations if (warm and cfg.warm_iterations) else cfg.iterations
        if self.device_cem is not None and self.roadmap is None:
            return self.device_cem.plan(context_t, past_t, goal_t, mean, iterations, warm, started)
        samples = self.budget.samples if cfg.deadline_ms and cfg.adaptive_samples else cfg.samples
        state = SearchState(mean=mean, std=torch.full_like(mean, cfg.init_std), samples=samples)
        scorer = _Scorer(self, context_t, past_t, goal_t)
        best_cost, best_seq = math.inf, mean.clone()
        done, discarded, converged, partial = 0, 0, False, False
        trace: list[float] = []
        deadline = cfg.deadline_ms / 1000.0 if cfg.deadline_ms is not None else None
        for it in range(iterations):
            elapsed = time.perf_counter() - started
            # A cold plan always runs one iteration: without a warm start there is no plan to fall back on, and
            # skipping it on a slow machine would leave the controller with no plan, ever. With adaptive_samples
            # every plan does (the budget keeps that iteration short): skipping on the estimate left a slow
            # machine executing the unrefined shifted plan forever. Otherwise a warm plan may run none.
            if deadline is not None and (it > 0 or (warm and not cfg.adaptive_samples)):
                estimate = self._iteration_estimate_ms(samples) / 1000.0
                if elapsed + estimate > deadline or (it > 0 and elapsed >= deadline):
                    if it == 0 and not cfg.adaptive_samples and self.iteration_ms is not None:
                        # Skipped on the estimate alone: let it decay, so one slow iteration (a cold start,
                        # a page fault) cannot block every later plan without ever being re-measured.
                        self.iteration_ms *= 0.5
                    partial = True
                    break
            iter_started = time.perf_counter()
            state.iteration = it
            candidates, costs = self.strategy.step(state, scorer, self.generator)
            finite = torch.isfinite(costs)
            discarded += int((~finite).sum())
            if bool(finite.any()):
                costs = torch.where(finite, costs, torch.full_like(costs, math.inf))
                index = int(torch.argmin(costs))
                if float(costs[index]) < best_cost:
                    best_cost, best_seq = float(costs[index]), candidates[index].detach().clone()
            done += 1
            trace.append(best_cost)
            iter_ms = 1000 * (time.perf_counter() - iter_started)
            self.iteration_ms = iter_ms if self.iteration_ms is None else 0.8 * self.iteration_ms + 0.2 * iter_ms
            self.budget.record(iter_ms, candidates.shape[0])
            if cfg.stop_std is not None and float(state.std.max()) < cfg.stop_std:
                converged = True
                break
        chosen = best_seq if math.isfinite(best_cost) else state.mean
        chosen = chosen.clamp(self._low, self._high)
        self._warm_mean = state.mean.detach().clamp(self._low, self._high) if math.isfinite(best_cost) else chosen
        normalized = chosen.detach().float().cpu().numpy()
        raw = normalized.reshape(cfg.horizon, self.frameskip, self.action_dim) * self.action_std + self.action_mean
        raw = np.clip(raw, self.action_low, self.action_high).astype(np.float32)
        return PlanResult(
            plan=raw, normalized=normalized, cost=best_cost, iterations=done,
            time_ms=1000 * (time.perf_counter() - started), partial=partial or done == 0, discarded=discarded,
            converged=converged, costs=trace, samples=samples,
        )  # fmt: skip

    def choose_precision(self, context: Any, past_blocks: Any, goal: Any) -> tuple[str, dict[str, float]]:
        """precision 'auto': time one iteration's scoring under fp32 and bf16 on this device and keep the faster
        (CUDA: bf16/fp16 without measuring). Returns the choice and the ms measured; the planner is rebuilt
        with it by the caller via `with_config(precision=...)`."""
        ctx, past, g = self._check_inputs(context, past_blocks, goal)
        candidates = torch.randn(self.config.samples, self.config.horizon, self.block_dim, device=self.device)
        scorer = _Scorer(self, ctx, past, g)
        original = self.config

        def workload(precision: str) -> None:
            self.config = replace(original, precision=precision)
            scorer.costs(candidates)

        try:
            return choose_precision(self.device, "auto", workload, repeats=2)
        finally:
            self.config = original

    def warmup(self, context: Tensor | np.ndarray, past_blocks: Any, goal: Tensor | np.ndarray) -> None:
        """Untimed plans (compilation, allocator), then the iteration-time estimate from a steady second plan;
        the warm start is cleared and the random stream left as it was. A compiled rollout is specialised to
        its shapes (one graph per context length), so every context length 1..history is planned twice first:
        compiling or recording CUDA graphs mid-control would overrun the control period."""
        saved = self.generator.get_state()
        original = self.config
        self.config = replace(original, deadline_ms=None)
        try:
            if self.compile_mode or self.device_cem is not None:
                goal_t = _as_tensor(goal)
                for frames in range(1, self.history + 1):
                    zeros = torch.zeros(frames, self.latent_dim)
                    blocks = torch.zeros(frames - 1, self.frameskip, self.action_dim) + self._mean_t.cpu()
                    for _ in range(2):
                        self.plan(zeros, blocks, goal_t)
                        self._warm_mean = None
            self.plan(context, past_blocks, goal)
            self.iteration_ms = None  # the first iterations pay one-off costs: measure again
            self.budget.ms_per_sample = None
            self.plan(context, past_blocks, goal)
        finally:
            self.config = original
        self.generator.set_state(saved)
        self._warm_mean = None

    # ---- internals ---------------------------------------------------------------------------------

    def _make_budget(self) -> SampleBudget:
        """Records time per candidate always; resizes plans only with adaptive_samples (else min = max)."""
        cfg = self.config
        target_iterations = cfg.warm_iterations if cfg.warm_start and cfg.warm_iterations else cfg.iterations
        floor = min(cfg.samples, max(2 * cfg.elites, MIN_ADAPTIVE_SAMPLES)) if cfg.adaptive_samples else cfg.samples
        return SampleBudget(cfg.samples, floor, cfg.deadline_ms or 1.0, target_iterations)

    def _iteration_estimate_ms(self, samples: int) -> float:
        """Expected length of the next iteration: per candidate when sizing samples, else the running mean."""
        if self.config.adaptive_samples:
            estimate = self.budget.estimate_ms(samples)
        else:
            estimate = self.iteration_ms
        return estimate or 0.0

    def _check_inputs(self, context: Any, past_blocks: Any, goal: Any) -> tuple[Tensor, Tensor, Tensor]:
        ctx = _as_tensor(context)
        if ctx.dim() == 1:
            ctx = ctx.unsqueeze(0)
        if ctx.dim() != 2 or ctx.shape[-1] != self.latent_dim:
            raise PlanningError(f"context must be (frames, {self.latent_dim}) latents, got {tuple(ctx.shape)}")
        if ctx.shape[0] < 1:
            raise PlanningError("context is empty: at least the newest frame's latent is needed")
        if ctx.shape[0] > self.history:
            ctx = ctx[-self.history :]
        n_past = ctx.shape[0] - 1
        if past_blocks is None:
            past = torch.zeros(0, self.frameskip, self.action_dim, device=ctx.device)
        else:
            past = _as_tensor(past_blocks).reshape(-1, self.frameskip, self.action_dim)
        if past.shape[0] < n_past:
            raise PlanningError(
                f"{ctx.shape[0]} context frames need {n_past} executed blocks between them, got {past.shape[0]}"
            )
        past = past[past.shape[0] - n_past :] if n_past else past[:0]
        g = _as_tensor(goal).reshape(-1)
        if g.shape[0] != self.latent_dim:
            raise PlanningError(f"goal latent has dimension {g.shape[0]}, the model's latents have {self.latent_dim}")
        for name, value in (("context latents", ctx), ("executed actions", past), ("goal latent", g)):
            if not bool(torch.isfinite(value).all()):
                raise PlanningError(f"{name} contain NaN or inf")
        past_norm = ((past.to(self.device) - self._mean_t) / self._std_t).reshape(n_past, self.block_dim)
        return ctx.to(self.device), past_norm, g.to(self.device)

    def _make_rollout(self):
        cfg = self.config
        model = self.model

        def fast(context: Tensor, past: Tensor, candidates: Tensor) -> Tensor:
            return model.rollout(context.unsqueeze(0), past.unsqueeze(0), candidates.unsqueeze(0))[0]

        def plain(context: Tensor, past: Tensor, candidates: Tensor) -> Tensor:
            outs = [
                model.rollout_recompute(context.unsqueeze(0), past.unsqueeze(0), candidates[i : i + 1].unsqueeze(0))[0]
                for i in range(candidates.shape[0])
            ]
            return torch.cat(outs)

        eager = fast if cfg.rollout == "fast" else plain
        mode, why = compile_fallback(cfg.compile, self.device)
        if why:
            self._fall_back(why)
        self.compile_mode = mode  # what really runs: None (eager) or a torch.compile mode
        if mode is None:
            return eager
        compiled = torch.compile(eager, mode=mode, dynamic=False)

        def guarded(context: Tensor, past: Tensor, candidates: Tensor) -> Tensor:
            # Compilation happens at the first call of each shape and can fail on a machine without a C++
            # compiler or with a broken Triton: plan eagerly from then on instead of failing the plan.
            if self.compile_mode is None:
                return eager(context, past, candidates)
            try:
                return compiled(context, past, candidates)
            except Exception as err:  # torch.compile raises many types (BackendCompilerFailed, InductorError, ...)
                first_line = (str(err).splitlines() or [""])[0][:200]
                self._fall_back(f"compile {mode} failed ({type(err).__name__}: {first_line}): eager from now on")
                self.compile_mode = None
                return eager(context, past, candidates)

        return guarded

    def _fall_back(self, why: str) -> None:
        self.notes.append(why)
        warn_fallback(why)


def _as_tensor(value: Any) -> Tensor:
    # device="cpu": as_tensor would put host data on torch's default device, which need not be the planner's
    return (value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value), device="cpu")).detach().float()


class _Scorer:
    """Costs of candidate sequences (S, H, A) for one planning call; candidates are clamped to the limits."""

    def __init__(self, planner: LatentPlanner, context: Tensor, past: Tensor, goal: Tensor) -> None:
        self.planner = planner
        self.context, self.past, self.goal = context, past, goal
        self.low, self.high = planner._low, planner._high

    def clamp(self, candidates: Tensor) -> Tensor:
        return candidates.clamp(self.low, self.high)

    def costs(self, candidates: Tensor, grad: bool = False) -> Tensor:
        p = self.planner
        with torch.set_grad_enabled(grad), autocast(p.device, p.config.precision):
            latents = p._rollout(self.context, self.past, candidates)  # (S, H, D)
        if p.roadmap is None:
            distance = (latents.float() - self.goal).square().sum(-1)  # (S, H)
        else:
            weighted = p._cost_weights > 0  # only the blocks that count pay for the graph lookup
            picked = latents[:, weighted].float()
            shape = picked.shape
            distance = latents.new_zeros(latents.shape[:2], dtype=torch.float32)
            distance[:, weighted] = p.roadmap.cost(picked.reshape(-1, shape[-1]), self.goal).reshape(shape[:2])
        return distance @ p._cost_weights
