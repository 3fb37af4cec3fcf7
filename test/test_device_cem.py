"""The sync-free device CEM (PlannerConfig.graph, lewm_ros/planning/device_cem.py), on the CPU.

- Its iteration traces whole with `torch.compile(fullgraph=True)`: any host read (`.item()`, `int()`, `bool()`,
  indexing by a 0-dim tensor) would be a graph break, and fullgraph turns a break into an error. The backend is
  "aot_eager" (dynamo + AOT functionalisation, ~8 s here): inductor's C++ compile of the same graph took 70 s on
  this 2-core machine, and what is under test is the trace, not the code generator.
- It runs with its model and every input on the meta device: a host read or a tensor made on the CPU raises there.
- It returns the CEM strategy's plans (same random stream) to rounding, and keeps its rules: candidate 0 = the
  mean, clamping, the std floor, non-finite costs discarded, the distribution kept when nothing is finite, the warm
  start, and the deadline checked between chunks only.
The CUDA-graph replay against the eager path is in test_cuda_paths.py (needs a GPU).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from lewm_ros.model.config import preset
from lewm_ros.model.lewm import LeWM
from lewm_ros.planning.core import LatentPlanner, PlannerConfig, PlanningError

BLOCK = 4  # frameskip 2 x action_dim 2


class Integrator(torch.nn.Module):
    """A stand-in world model whose latent is the running sum of the action blocks (D = A): a known optimum.

    Records the candidates it scores; returns NaN for candidates whose first action is above `nan_above`."""

    def __init__(self, nan_above: float = math.inf) -> None:
        super().__init__()
        self.nan_above = nan_above
        self.seen: list[torch.Tensor] = []

    def rollout(self, context: torch.Tensor, past: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        self.seen.append(candidates[0].clone())
        latents = context[:, -1, None, None, :] + candidates.cumsum(dim=2)
        bad = (candidates[..., 0, 0] > self.nan_above)[..., None, None]
        return torch.where(bad, torch.full_like(latents, math.nan), latents)


def integrator_planner(model: Integrator, **changes) -> LatentPlanner:
    settings = {"samples": 40, "elites": 5, "iterations": 6, "horizon": 3, "seed": 4, **changes}
    return LatentPlanner(model, np.zeros(2), np.ones(2), 2, 3, BLOCK, PlannerConfig(**settings),
                         action_low=-1.5, action_high=1.5)  # fmt: skip


def integrator_problem():
    context = torch.zeros(1, BLOCK)
    goal = torch.tensor([1.0, -2.0, 0.5, 4.0])  # the last entry is out of reach: clamping matters
    return context, None, goal


@pytest.fixture(scope="module")
def tiny_model():
    """The tiny preset with perturbed predictor weights: fresh AdaLN-zero blocks ignore the actions (all costs tie)."""
    torch.manual_seed(0)
    model = LeWM(preset("tiny")).eval()
    with torch.no_grad():
        for param in model.dynamics.parameters():
            param.add_(0.2 * torch.randn_like(param))
    model.requires_grad_(False)
    return model


def tiny_planner(model, **changes) -> LatentPlanner:
    cfg = model.cfg
    settings = {"samples": 32, "elites": 4, "iterations": 7, "horizon": 3, "seed": 1, **changes}
    return LatentPlanner(model, np.zeros(2), np.ones(2), cfg.action.frameskip, cfg.predictor.history, cfg.latent_dim,
                         PlannerConfig(**settings))  # fmt: skip


def tiny_problem(model, frames: int = 3, seed: int = 0):
    cfg = model.cfg
    generator = torch.Generator().manual_seed(seed)
    context = torch.randn(frames, cfg.latent_dim, generator=generator)
    past = 0.3 * torch.randn(frames - 1, cfg.action.frameskip, cfg.action.action_dim, generator=generator)
    return context, past, torch.randn(cfg.latent_dim, generator=generator)


def iteration_inputs(planner: LatentPlanner, model, seed: int = 0):
    device_cem = planner.device_cem
    generator = torch.Generator().manual_seed(seed)
    mean = 0.2 * torch.randn(planner.config.horizon, planner.block_dim, generator=generator)
    state = device_cem.initial_state(mean, 1.0)
    noise = torch.randn(planner.config.samples, *mean.shape, generator=generator)
    context, past, goal = tiny_problem(model, seed=seed)
    past = past.reshape(past.shape[0], -1)
    return device_cem, (*state, noise, context, past, goal)


# ---- traceable, host-free -----------------------------------------------------------------------------------


def test_the_iteration_compiles_with_fullgraph_and_matches_eager(tiny_model):
    device_cem, inputs = iteration_inputs(tiny_planner(tiny_model, graph=True), tiny_model)
    torch._dynamo.reset()
    compiled = torch.compile(device_cem.iteration, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        expected = device_cem.iteration(*inputs)
        got = compiled(*inputs)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert math.isfinite(float(got[2]))


def test_fullgraph_refuses_a_host_read(tiny_model):
    """The check above can fail: the same compile on an iteration that reads a number back raises."""
    device_cem, inputs = iteration_inputs(tiny_planner(tiny_model, graph=True), tiny_model)

    def with_a_host_read(*args):
        out = device_cem.iteration(*args)
        if float(out[2]) < 0:  # what core.py's loop does every iteration
            return out
        return out

    torch._dynamo.reset()
    with pytest.raises(Exception, match=r"(?i)graph break|data-dependent|unsupported"):
        torch.compile(with_a_host_read, fullgraph=True, backend="aot_eager")(*inputs)


def test_the_iteration_and_a_chunk_run_on_the_meta_device(tiny_model):
    """Model and inputs on meta: a host read (.item(), float(), bool()) or a CPU-made tensor would raise."""
    planner = tiny_planner(copy.deepcopy(tiny_model).to("meta"), graph=True)
    device_cem, inputs = iteration_inputs(planner, tiny_model)
    device_cem.low, device_cem.high, device_cem.weights = (t.to("meta") for t in (planner._low, planner._high,
                                                                                   planner._cost_weights))  # fmt: skip
    on_meta = [t.to("meta") for t in inputs]
    noise = torch.stack([on_meta[5]] * 3)
    with torch.no_grad():
        out = device_cem.run_chunk(*on_meta[:5], noise, *on_meta[6:])
    assert all(t.device.type == "meta" for t in out) and out[-1].shape == (3,)


# ---- same plans as the CEM strategy, same rules ---------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 3])
def test_plans_equal_the_cem_strategy_for_a_seed(tiny_model, frames):
    """Same random stream, same candidates: plans agree to float rounding, cold and warm (advance(1))."""
    results = {}
    for graph in (False, True):
        planner = tiny_planner(tiny_model, graph=graph, graph_chunk=3)
        first = planner.plan(*tiny_problem(tiny_model, frames, seed=frames))
        planner.advance(1)
        second = planner.plan(*tiny_problem(tiny_model, frames, seed=frames + 10))
        results[graph] = (first, second)
    for plain, device in zip(results[False], results[True], strict=True):
        np.testing.assert_allclose(device.plan, plain.plan, atol=1e-5)
        assert device.cost == pytest.approx(plain.cost, rel=1e-5)
        np.testing.assert_allclose(device.costs, plain.costs, rtol=1e-5)
        assert device.iterations == plain.iterations == 7 and not device.partial


def test_the_plan_equals_eager_iterations_run_by_hand(tiny_model):
    """planner.plan(graph=True) is the iteration applied `iterations` times with the planner's noise stream."""
    planner = tiny_planner(tiny_model, graph=True, graph_chunk=3)
    context, past, goal = tiny_problem(tiny_model)
    result = planner.plan(context, past, goal)
    device_cem = planner.device_cem
    generator = torch.Generator().manual_seed(planner.config.seed)
    state = device_cem.initial_state(torch.zeros(3, planner.block_dim), planner.config.init_std)
    past_n = past.reshape(2, -1)  # action statistics are 0/1: normalised = raw
    with torch.no_grad():
        for _ in range(planner.config.iterations):
            noise = torch.randn(planner.config.samples, 3, planner.block_dim, generator=generator)
            state = device_cem.iteration(*state, noise, context, past_n, goal)
    assert result.cost == float(state[2])
    np.testing.assert_array_equal(result.normalized, state[3].numpy())
    np.testing.assert_array_equal(planner._warm_mean.numpy(), state[0].numpy())


def test_candidate_zero_is_the_mean_and_every_candidate_is_clamped():
    model = Integrator()
    planner = integrator_planner(model, graph=True, init_std=5.0)
    planner.plan(*integrator_problem())
    assert len(model.seen) == planner.config.iterations
    low, high = planner._low, planner._high
    mean = torch.zeros(3, BLOCK)
    for candidates in model.seen:
        assert torch.all(candidates >= low) and torch.all(candidates <= high)
        torch.testing.assert_close(candidates[0], mean.clamp(low, high))
        assert (candidates == high).any() and (candidates == low).any()  # std 5: the clamp was needed
        elites = candidates[torch.topk(-((candidates.sum(1) - integrator_problem()[2]) ** 2).sum(-1), 5).indices]
        mean = elites.mean(0)
    result_plan = planner._warm_mean
    torch.testing.assert_close(result_plan, mean.clamp(low, high), rtol=1e-5, atol=1e-6)


def test_the_std_is_floored():
    planner = integrator_planner(Integrator(), graph=True, elites=1, min_std=0.07, iterations=2)
    device_cem = planner.device_cem
    state = device_cem.initial_state(torch.zeros(3, BLOCK), 1.0)
    noise = torch.randn(40, 3, BLOCK, generator=torch.Generator().manual_seed(0))
    context, _, goal = integrator_problem()
    _, std, *_ = device_cem.iteration(*state, noise, context, torch.zeros(0, BLOCK), goal)
    assert torch.equal(std, torch.full_like(std, 0.07))  # one elite has no spread: exactly the floor


def test_non_finite_costs_are_discarded_like_the_cem_strategy():
    results = {}
    for graph in (False, True):
        planner = integrator_planner(Integrator(nan_above=0.0), graph=graph)
        results[graph] = planner.plan(*integrator_problem())
    plain, device = results[False], results[True]
    assert device.discarded == plain.discarded > 0
    assert np.isfinite(device.cost) and device.normalized[0, 0] <= 0.0  # never a NaN-cost candidate
    np.testing.assert_allclose(device.plan, plain.plan, atol=1e-5)
    assert device.cost == pytest.approx(plain.cost, rel=1e-5)


def test_nothing_finite_keeps_the_distribution():
    model = Integrator(nan_above=-math.inf)  # every candidate NaN
    planner = integrator_planner(model, graph=True, iterations=3)
    result = planner.plan(*integrator_problem())
    assert result.cost == math.inf and result.discarded == 3 * 40 and result.costs == [math.inf] * 3
    np.testing.assert_array_equal(result.normalized, np.zeros((3, BLOCK), np.float32))  # the initial mean
    stds = [c[1:].std().item() for c in model.seen]  # std never refit: candidates keep the initial spread
    assert min(stds) > 0.8


def test_warm_start_shifts_and_seeds_the_next_plan():
    planner = integrator_planner(Integrator(), graph=True)
    planner.plan(*integrator_problem())
    warm = planner._warm_mean.clone()
    planner.advance(1)
    model = planner.model
    model.seen.clear()
    planner.plan(*integrator_problem())
    shifted = torch.cat([warm[1:], torch.zeros(1, BLOCK)]).clamp(planner._low, planner._high)
    torch.testing.assert_close(model.seen[0][0], shifted)  # candidate 0 of the warm plan: the shifted mean


def test_deadline_is_checked_between_chunks_only():
    """deadline 0: a cold plan still runs its first chunk (no plan to fall back on), a warm plan runs none."""
    planner = integrator_planner(Integrator(), graph=True, graph_chunk=4, iterations=10, deadline_ms=0.0)
    cold = planner.plan(*integrator_problem())
    assert cold.iterations == 4 and cold.partial and len(cold.costs) == 4 and np.isfinite(cold.cost)
    warm = planner.plan(*integrator_problem())
    assert warm.iterations == 0 and warm.partial
    without = integrator_planner(Integrator(), graph=True, graph_chunk=4, iterations=10).plan(*integrator_problem())
    assert without.iterations == 10 and not without.partial  # chunks of 4, 4, 2


def test_stop_std_ends_at_a_chunk_boundary():
    planner = integrator_planner(Integrator(), graph=True, graph_chunk=2, iterations=30, stop_std=10.0)
    result = planner.plan(*integrator_problem())
    assert result.converged and result.iterations == 2


def test_graph_needs_the_cem_planner():
    with pytest.raises(PlanningError, match="graph runs planner cem"):
        PlannerConfig(planner="icem", graph=True).check()
    with pytest.raises(PlanningError, match="graph_chunk"):
        PlannerConfig(graph=True, graph_chunk=0).check()


def test_a_roadmap_plan_takes_the_generic_loop(tiny_model):
    """The roadmap's goal distances run a Dijkstra on the host: not graphable, so graph=True leaves it alone."""
    from lewm_ros.planning.roadmap import Roadmap, RoadmapConfig

    dim = tiny_model.cfg.latent_dim
    nodes = np.random.default_rng(0).normal(size=(30, dim)).astype(np.float32)
    edges = np.stack([np.arange(29), np.arange(1, 30)], axis=1)
    roadmap = Roadmap(nodes, edges, link_radius=10.0, goal_radius=0.5, config=RoadmapConfig(), meta={})
    results = []
    for graph in (False, True):
        planner = tiny_planner(tiny_model, graph=graph, iterations=2)
        planner.set_roadmap(roadmap)
        results.append(planner.plan(*tiny_problem(tiny_model)))
    np.testing.assert_array_equal(results[0].plan, results[1].plan)
