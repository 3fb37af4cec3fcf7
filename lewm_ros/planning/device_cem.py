"""CEM that stays on the device for a whole plan: no host synchronisation between iterations.

Why: on a GPU the planner's model is tiny (the paper's CEM 300 x 30 is ~0.1 ms of arithmetic per iteration on an
H200), so a plan's time is kernel launches and host round trips. The generic loop in `core.py` reads a number
back to the host several times per iteration (`int()` of the finite count, `float()` of the best cost, the std
check, the per-iteration clock), and each read waits for the GPU to drain. Here one iteration is a pure function
of tensors,

    (mean, std, best_cost, best_seq, discarded, noise, context, past, goal)
        -> (mean, std, best_cost, best_seq, discarded, best_cost_after)

with static shapes and no Python-visible data-dependent branch: the elites are a fixed top-k whose non-finite
members get weight zero, "nothing finite, keep the distribution" is a `torch.where`, and the best-so-far is
swapped in by `torch.where`. So it can be traced whole (`torch.compile(fullgraph=True)`, tested on the CPU) and
captured as a CUDA graph: on CUDA a chunk of `graph_chunk` iterations is recorded once per (settings, context
length, chunk length) with `torch.cuda.CUDAGraph` (capture takes milliseconds: no compiler involved) and replayed
with one launch. The host looks at the device only between chunks, and only when it must: a deadline (the clock
is read after the chunk has finished) or `stop_std`. Without either, a plan synchronises once, at its end.

Semantics are those of the CEM strategy in strategies.py and the loop in core.py: candidate 0 is the mean,
candidates are clamped to the action limits, a non-finite cost is +inf and never an elite unless none is finite
(then the distribution is kept), the std is floored at `min_std`, the best candidate seen over all iterations is
the plan, the warm start is the final mean. Noise is drawn from the planner's own generator, one draw per
iteration of the same shape as the CEM strategy's, so on the CPU the candidates are the ones `planner="cem"`
scores and the plans agree to rounding (the std is computed as a masked mean here, not with `Tensor.std`).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from lewm_ros.model.precision import autocast
from lewm_ros.planning.config import PlanResult

if TYPE_CHECKING:  # the core imports this module; the planner type is only named in annotations
    from lewm_ros.planning.core import LatentPlanner

DEFAULT_CHUNK = 5  # iterations per graph replay: the deadline is checked this often (see PlannerConfig.graph_chunk)

State = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]  # mean, std, best_cost, best_seq, discarded


class DeviceCEM:
    """The iteration, a chunk of iterations, and a whole plan for a LatentPlanner configured with `graph=True`."""

    def __init__(self, planner: LatentPlanner) -> None:
        cfg = planner.config
        self.planner = planner
        self.model = planner.model
        self.device = planner.device
        self.precision = cfg.precision
        self.samples, self.elites, self.min_std = cfg.samples, cfg.elites, float(cfg.min_std)
        self.low, self.high, self.weights = planner._low, planner._high, planner._cost_weights
        self.chunk = max(1, int(cfg.graph_chunk))
        self.use_graphs = self.device.type == "cuda"
        self.graphs: dict[tuple[int, int], _CapturedChunk] = {}
        self.capture_s = 0.0  # seconds spent capturing graphs so far (reported by the benchmark)
        self.chunk_ms: float | None = None  # running estimate of one chunk of `chunk` iterations, for deadlines

    # ---- the pure part -----------------------------------------------------------------------------

    def costs(self, candidates: Tensor, context: Tensor, past: Tensor, goal: Tensor) -> Tensor:
        """(S, H, A) -> (S,): weighted squared distances of the predicted latents to the goal latent."""
        with autocast(self.device, self.precision):
            latents = self.model.rollout(context.unsqueeze(0), past.unsqueeze(0), candidates.unsqueeze(0))[0]
        distance = (latents.float() - goal).square().sum(-1)
        return distance @ self.weights

    def iteration(
        self, mean: Tensor, std: Tensor, best_cost: Tensor, best_seq: Tensor, discarded: Tensor, noise: Tensor,
        context: Tensor, past: Tensor, goal: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
        """One CEM iteration as a pure tensor function (no host reads): sample, clamp, score, refit, keep best."""
        candidates = torch.cat([mean.unsqueeze(0), (mean + std * noise[1:])]).clamp(self.low, self.high)
        costs = self.costs(candidates, context, past, goal)
        finite = torch.isfinite(costs)
        safe = torch.where(finite, costs, torch.full_like(costs, math.inf))
        discarded = discarded + (~finite).sum()
        top_cost, top_index = torch.topk(safe, self.elites, largest=False)
        elites = candidates[top_index]
        valid = torch.isfinite(top_cost)
        count = valid.sum()
        weight = valid.to(elites.dtype)[:, None, None]
        denominator = count.clamp_min(1).to(elites.dtype)
        new_mean = (elites * weight).sum(0) / denominator
        new_std = (((elites - new_mean).square() * weight).sum(0) / denominator).sqrt().clamp_min(self.min_std)
        learned = count > 0  # no finite cost at all: keep the distribution (the CEM strategy returns early)
        mean = torch.where(learned, new_mean, mean)
        std = torch.where(learned, new_std, std)
        better = top_cost[0] < best_cost  # inf < inf is False: a non-finite iteration never replaces the best
        best_cost = torch.where(better, top_cost[0], best_cost)
        best_seq = torch.where(better, elites[0], best_seq)
        return mean, std, best_cost, best_seq, discarded

    def run_chunk(
        self, mean: Tensor, std: Tensor, best_cost: Tensor, best_seq: Tensor, discarded: Tensor, noise: Tensor,
        context: Tensor, past: Tensor, goal: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
        """noise (k, S, H, A): k iterations; returns the state and the best cost after each iteration (k,)."""
        trace = []
        for i in range(noise.shape[0]):
            mean, std, best_cost, best_seq, discarded = self.iteration(
                mean, std, best_cost, best_seq, discarded, noise[i], context, past, goal
            )
            trace.append(best_cost)
        return mean, std, best_cost, best_seq, discarded, torch.stack(trace)

    # ---- a plan ------------------------------------------------------------------------------------

    def draw(self, noise: Tensor, generator: torch.Generator) -> Tensor:
        """Fill noise (k, S, H, A) one iteration at a time, as the CEM strategy draws it (same random stream)."""
        for i in range(noise.shape[0]):
            noise[i].normal_(generator=generator)
        return noise

    def initial_state(self, mean: Tensor, init_std: float) -> State:
        return (
            mean, torch.full_like(mean, init_std), torch.full((), math.inf, device=mean.device), mean.clone(),
            torch.zeros((), dtype=torch.int64, device=mean.device),
        )  # fmt: skip

    def plan(
        self, context: Tensor, past: Tensor, goal: Tensor, mean: Tensor, iterations: int, warm: bool, started: float
    ) -> PlanResult:
        """The whole search; called by LatentPlanner.plan with its checked, normalised, on-device inputs."""
        planner, cfg = self.planner, self.planner.config
        deadline = cfg.deadline_ms / 1000.0 if cfg.deadline_ms is not None else None
        state = self.initial_state(mean, cfg.init_std)
        traces: list[Tensor] = []
        done, partial, converged = 0, False, False
        with torch.no_grad():
            while done < iterations:
                k = min(self.chunk, iterations - done)
                if deadline is not None and (done > 0 or warm):
                    # a cold plan always runs its first chunk (no plan to fall back on), as in core.py
                    estimate = (self.chunk_ms or 0.0) * k / self.chunk / 1000.0
                    elapsed = time.perf_counter() - started
                    if elapsed + estimate > deadline or (done > 0 and elapsed >= deadline):
                        partial = True
                        break
                chunk_started = time.perf_counter()
                *state_list, trace = self._run(k, state, context, past, goal)
                state = tuple(state_list)  # type: ignore[assignment]
                traces.append(trace.clone())
                done += k
                if deadline is not None or cfg.stop_std is not None:
                    std_max = float(state[1].max())  # the one host sync per chunk: it also waits for the chunk
                    chunk_ms = 1000 * (time.perf_counter() - chunk_started) * self.chunk / k
                    self.chunk_ms = chunk_ms if self.chunk_ms is None else 0.8 * self.chunk_ms + 0.2 * chunk_ms
                    planner.budget.record(chunk_ms / self.chunk, self.samples)
                    if cfg.stop_std is not None and std_max < cfg.stop_std:
                        converged = True
                        break
            mean_t, _, best_cost_t, best_seq_t, discarded_t = state
            best_cost = float(best_cost_t)  # the end of the plan: the one sync it always needs
            chosen = (best_seq_t if math.isfinite(best_cost) else mean_t).clamp(self.low, self.high)
            planner._warm_mean = mean_t.clamp(self.low, self.high) if math.isfinite(best_cost) else chosen.clone()
        planner.iteration_ms = (self.chunk_ms / self.chunk) if self.chunk_ms else planner.iteration_ms
        normalized = chosen.float().cpu().numpy()
        raw = normalized.reshape(cfg.horizon, planner.frameskip, planner.action_dim) * planner.action_std
        raw = (raw + planner.action_mean).clip(planner.action_low, planner.action_high).astype("float32")
        trace_values = torch.cat(traces).tolist() if traces else []
        return PlanResult(
            plan=raw, normalized=normalized, cost=best_cost, iterations=done,
            time_ms=1000 * (time.perf_counter() - started), partial=partial or done == 0,
            discarded=int(discarded_t), converged=converged, costs=trace_values, samples=self.samples,
        )  # fmt: skip

    def _run(self, k: int, state: State, context: Tensor, past: Tensor, goal: Tensor) -> tuple[Tensor, ...]:
        """k iterations: replayed from a CUDA graph on CUDA, eager elsewhere (or after a failed capture)."""
        shape = (k, self.samples, *state[0].shape)
        if self.use_graphs:
            key = (context.shape[0], k)
            graph = self.graphs.get(key)
            if graph is None:
                try:
                    captured_at = time.perf_counter()
                    graph = _CapturedChunk(self.run_chunk, state, (context, past, goal), shape, self.device)
                    self.capture_s += time.perf_counter() - captured_at
                    self.graphs[key] = graph
                except Exception as err:  # capture can fail on old drivers or with unsupported ops
                    first_line = (str(err).splitlines() or [""])[0][:200]
                    self.planner._fall_back(
                        f"CUDA graph capture failed ({type(err).__name__}: {first_line}): device CEM runs eagerly"
                    )
                    self.use_graphs = False
            if graph is not None:
                return graph.replay(state, (context, past, goal), self.planner.generator, self.draw)
        noise = self.draw(torch.empty(shape, device=self.device), self.planner.generator)
        return self.run_chunk(*state, noise, context, past, goal)


class _CapturedChunk:
    """One CUDA graph of `run_chunk` over static buffers: state in and out through the same buffers, so
    consecutive replays chain without copies; inputs are copied in only when they are other tensors."""

    def __init__(self, fn: Any, state: State, problem: tuple[Tensor, Tensor, Tensor], noise_shape: tuple[int, ...],
                 device: torch.device) -> None:  # fmt: skip
        self.fn = fn
        self.state = [t.clone() for t in state]
        self.problem = [t.clone() for t in problem]
        self.noise = torch.zeros(noise_shape, device=device)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        saved = [t.clone() for t in self.state]
        with torch.cuda.stream(stream):  # warm-up off the capture (cuBLAS handles, autocast caches, allocator)
            for _ in range(2):
                self._body()
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.trace = self._body()
        for buffer, value in zip(self.state, saved, strict=True):
            buffer.copy_(value)

    def _body(self) -> Tensor:
        *new_state, trace = self.fn(*self.state, self.noise, *self.problem)
        for buffer, value in zip(self.state, new_state, strict=True):
            buffer.copy_(value)
        return trace

    def replay(self, state: State, problem: tuple[Tensor, Tensor, Tensor], generator: torch.Generator,
               draw: Any) -> tuple[Tensor, ...]:  # fmt: skip
        for buffer, value in zip([*self.state, *self.problem], [*state, *problem], strict=True):
            if buffer is not value:
                buffer.copy_(value)
        draw(self.noise, generator)
        self.graph.replay()
        return (*self.state, self.trace)
