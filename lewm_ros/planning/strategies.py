"""Update rules on the planning core: each `step` samples (or refines) candidates from the search state,
scores them with the shared scorer, updates the state in place, and returns (candidates, costs).

- cem: the paper's. S Gaussian samples around the mean (candidate 0 = the mean), top-k elites, mean/std
  refit on the elites, std floored at min_std.
- icem: Pinneri et al. 2020. Coloured (1/f^beta) noise over env steps, samples shrinking per iteration,
  a share of the previous elites kept in the pool.
- mppi: TD-MPC2's update: top-k elites weighted by softmax(-cost / temperature) with the temperature in
  units of the elites' cost spread, weighted mean/std.
- grad: gradient descent (Adam) on a few sequences through the differentiable rollout, starting at the
  warm-start/CEM mean and at small perturbations of it; one iteration = one gradient step.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from lewm_ros.planning.config import PlannerConfig, SearchState


def _elite_mask(costs: Tensor) -> Tensor:
    return torch.where(torch.isfinite(costs), costs, torch.full_like(costs, math.inf))


class CEM:
    def __init__(self, config: PlannerConfig) -> None:
        self.config = config

    def sample(self, state: SearchState, count: int, generator: torch.Generator) -> Tensor:
        noise = torch.randn((count, *state.mean.shape), generator=generator, device=state.mean.device)
        candidates = state.mean + state.std * noise
        candidates[0] = state.mean
        return candidates

    def step(self, state: SearchState, scorer: Any, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        candidates = scorer.clamp(self.sample(state, state.samples, generator))
        costs = scorer.costs(candidates)
        self.refit(state, candidates, costs)
        return candidates, costs

    def refit(self, state: SearchState, candidates: Tensor, costs: Tensor) -> None:
        safe = _elite_mask(costs)
        finite = int(torch.isfinite(safe).sum())
        if finite == 0:
            return  # nothing to learn from: keep the distribution
        k = min(self.config.elites, finite)
        elites = candidates[torch.topk(safe, k, largest=False).indices]
        state.mean = elites.mean(0)
        spread = elites.std(0, unbiased=False) if k > 1 else torch.zeros_like(state.std)
        state.std = spread.clamp_min(self.config.min_std)


def coloured_noise(
    count: int, steps: int, dim: int, beta: float, generator: torch.Generator, device: torch.device
) -> Tensor:
    """(count, steps, dim) Gaussian noise with power spectrum ~ 1/f^beta along `steps`, unit variance per step."""
    if beta == 0 or steps < 2:
        return torch.randn((count, steps, dim), generator=generator, device=device)
    freqs = torch.fft.rfftfreq(steps, device=device)
    freqs[0] = freqs[1]  # no infinite power at f=0
    scale = freqs ** (-beta / 2.0)
    real = torch.randn((count, dim, len(freqs)), generator=generator, device=device)
    imag = torch.randn((count, dim, len(freqs)), generator=generator, device=device)
    signal = torch.fft.irfft(torch.complex(real * scale, imag * scale), n=steps)
    signal = signal / signal.std(dim=-1, keepdim=True).clamp_min(1e-6)
    return signal.transpose(1, 2)


class ICEM(CEM):
    def step(self, state: SearchState, scorer: Any, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        cfg = self.config
        horizon, block = state.mean.shape
        action_dim = scorer.planner.action_dim
        floor = cfg.min_samples if cfg.min_samples is not None else 2 * cfg.elites
        count = min(state.samples, max(floor, int(state.samples * cfg.sample_decay ** (-state.iteration)), cfg.elites))
        steps = block // action_dim * horizon
        noise = coloured_noise(count, steps, action_dim, cfg.noise_beta, generator, state.mean.device)
        candidates = state.mean + state.std * noise.reshape(count, horizon, block)
        candidates[0] = state.mean
        kept = state.extra.get("elites")
        if kept is not None and len(kept):
            candidates = torch.cat([candidates, kept])
        candidates = scorer.clamp(candidates)
        costs = scorer.costs(candidates)
        safe = _elite_mask(costs)
        finite = int(torch.isfinite(safe).sum())
        if finite:
            k = min(cfg.elites, finite)
            order = torch.topk(safe, k, largest=False).indices
            n_keep = round(cfg.keep_elites * k)
            state.extra["elites"] = candidates[order[:n_keep]].detach().clone() if n_keep else None
        self.refit(state, candidates, costs)
        return candidates, costs


class MPPI(CEM):
    def refit(self, state: SearchState, candidates: Tensor, costs: Tensor) -> None:
        safe = _elite_mask(costs)
        finite = int(torch.isfinite(safe).sum())
        if finite == 0:
            return
        k = min(self.config.elites, finite)
        top = torch.topk(safe, k, largest=False)
        elites, elite_costs = candidates[top.indices], top.values
        spread = (elite_costs.max() - elite_costs.min()).clamp_min(1e-9)
        weights = torch.softmax(-(elite_costs - elite_costs.min()) / (self.config.temperature * spread), dim=0)
        mean = (weights[:, None, None] * elites).sum(0)
        var = (weights[:, None, None] * (elites - mean).square()).sum(0)
        state.mean = mean
        state.std = var.sqrt().clamp_min(self.config.min_std)


GRAD_START_SPREAD = 0.3  # sequences 1.. start at mean + 0.3 * init_std * noise: a few nearby basins


class GradientPlanner(CEM):
    """Adam on `grad_samples` sequences; state.mean tracks the best sequence so warm starts chain."""

    def step(self, state: SearchState, scorer: Any, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        cfg = self.config
        if state.iteration == 0:
            noise = torch.randn((cfg.grad_samples, *state.mean.shape), generator=generator, device=state.mean.device)
            noise[0] = 0.0  # sequence 0 starts at the mean itself
            start = scorer.clamp(state.mean + GRAD_START_SPREAD * cfg.init_std * noise)
            params = start.detach().clone().requires_grad_(True)
            state.extra["params"] = params
            state.extra["optimizer"] = torch.optim.Adam([params], lr=cfg.grad_lr)
        params: Tensor = state.extra["params"]
        optimizer: torch.optim.Optimizer = state.extra["optimizer"]
        costs = scorer.costs(params, grad=True)
        evaluated = params.detach().clone()
        finite = torch.isfinite(costs)
        if bool(finite.any()):
            total = torch.where(finite, costs, torch.zeros_like(costs)).sum()
            (grad,) = torch.autograd.grad(total, params)
            optimizer.zero_grad(set_to_none=True)
            params.grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
            optimizer.step()
            with torch.no_grad():
                params.copy_(scorer.clamp(params))
            safe = _elite_mask(costs.detach())
            state.mean = evaluated[int(torch.argmin(safe))]
        return evaluated, costs.detach()


def make_strategy(config: PlannerConfig) -> CEM:
    return {"cem": CEM, "icem": ICEM, "mppi": MPPI, "grad": GradientPlanner}[config.planner](config)
