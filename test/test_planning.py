"""Latent planners: exactness of the batched path, strategies that really optimise, warm start, deadlines,
determinism, and bad input."""

import math

import numpy as np
import pytest
import torch

from lewm_ros.model.config import preset
from lewm_ros.model.lewm import LeWM
from lewm_ros.planning.core import LatentPlanner, PlannerConfig, PlanningError

FRAMESKIP, ACTION_DIM, HISTORY = 5, 2, 3
BLOCK = FRAMESKIP * ACTION_DIM


class LinearDynamics:
    """A toy world whose latent moves by a fixed linear map of each action block: the best plan is known,
    so a planner that does not optimise cannot pass."""

    def __init__(self, dim: int = 8, seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.map = torch.randn(BLOCK, dim, generator=gen) * 0.3
        self.dim = dim

    def rollout(self, context, past_actions, candidates):
        steps = torch.cumsum(candidates @ self.map, dim=2)  # (B, S, H, D)
        return context[:, -1][:, None, None, :] + steps

    rollout_recompute = rollout


def random_lewm() -> LeWM:
    torch.manual_seed(0)
    model = LeWM(preset("tiny")).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.requires_grad_(False)
            if "modulation" in name:  # AdaLN-zero starts as identity: make actions matter
                param.normal_(0, 0.3)
    return model


def make_planner(model, dim, **changes) -> LatentPlanner:
    config = PlannerConfig(**{"samples": 64, "iterations": 6, "elites": 8, **changes})
    return LatentPlanner(model, np.zeros(ACTION_DIM), np.ones(ACTION_DIM), FRAMESKIP, HISTORY, dim, config)


def toy_problem(seed: int = 1):
    world = LinearDynamics()
    gen = torch.Generator().manual_seed(seed)
    target_blocks = torch.rand(5, BLOCK, generator=gen) * 1.2 - 0.6
    start = torch.randn(world.dim, generator=gen)
    goal = start + (target_blocks @ world.map).sum(0)
    return world, start[None], goal


@pytest.mark.parametrize("planner", ["cem", "icem", "mppi", "grad"])
def test_every_strategy_reduces_the_cost_on_a_problem_with_a_known_optimum(planner):
    world, context, goal = toy_problem()
    extra = {"iterations": 40, "grad_lr": 0.1} if planner == "grad" else {"iterations": 15}
    plan = make_planner(world, world.dim, planner=planner, **extra).plan(context, None, goal)
    zero_cost = float((context[0] - goal).square().sum())
    assert plan.iterations > 0 and not plan.partial
    assert plan.cost < 0.2 * zero_cost, (planner, plan.cost, zero_cost)
    assert plan.plan.shape == (5, FRAMESKIP, ACTION_DIM)
    assert np.all(np.isfinite(plan.plan)) and np.all(np.abs(plan.plan) <= 1.0)


def test_batched_plan_equals_a_plain_loop_over_candidates_given_the_same_samples():
    model = random_lewm()
    context, goal = torch.randn(3, 32), torch.randn(32)
    past = np.random.default_rng(0).uniform(-1, 1, (2, FRAMESKIP, ACTION_DIM)).astype(np.float32)
    fast = make_planner(model, 32, rollout="fast", seed=5).plan(context, past, goal)
    plain = make_planner(model, 32, rollout="plain", seed=5).plan(context, past, goal)
    np.testing.assert_array_equal(fast.plan, plain.plan)
    assert fast.cost == pytest.approx(plain.cost, rel=1e-5)
    assert fast.costs == pytest.approx(plain.costs, rel=1e-5)


def test_same_seed_same_plan_other_seed_other_plan():
    world, context, goal = toy_problem()
    a = make_planner(world, world.dim, seed=3).plan(context, None, goal)
    b = make_planner(world, world.dim, seed=3).plan(context, None, goal)
    c = make_planner(world, world.dim, seed=4).plan(context, None, goal)
    np.testing.assert_array_equal(a.plan, b.plan)
    assert not np.array_equal(a.plan, c.plan)


def test_plans_are_denormalised_and_clamped_to_the_limits():
    world, context, goal = toy_problem()
    goal = goal * 50  # unreachable: the optimiser pushes against the limits
    mean, std = np.array([0.1, -0.2]), np.array([0.5, 2.0])
    config = PlannerConfig(samples=32, iterations=3, elites=4)
    planner = LatentPlanner(world, mean, std, FRAMESKIP, HISTORY, world.dim, config, action_low=-0.3, action_high=0.4)
    plan = planner.plan(context, None, goal)
    assert plan.plan.min() >= -0.3 - 1e-6 and plan.plan.max() <= 0.4 + 1e-6
    raw_from_normalized = plan.normalized.reshape(5, FRAMESKIP, ACTION_DIM) * std + mean
    np.testing.assert_allclose(plan.plan, np.clip(raw_from_normalized, -0.3, 0.4), atol=1e-6)


@pytest.mark.parametrize("tail", ["zeros", "last"])
def test_warm_start_shifts_the_previous_mean_by_the_executed_blocks(tail):
    world, context, goal = toy_problem()
    planner = make_planner(world, world.dim, tail=tail, warm_iterations=2)
    first = planner.plan(context, None, goal)
    mean = planner._warm_mean.clone()
    planner.advance(2)
    shifted = planner._warm_mean
    torch.testing.assert_close(shifted[:3], mean[2:])
    expected_tail = torch.zeros(2, BLOCK) if tail == "zeros" else mean[-1:].expand(2, -1)
    torch.testing.assert_close(shifted[3:], expected_tail)
    second = planner.plan(context, None, goal)
    assert second.iterations == 2 and first.iterations == 6
    planner.reset()
    assert not planner.warm


def test_deadline_shorter_than_an_iteration_runs_one_cold_iteration_and_no_warm_one():
    """A cold plan has nothing to fall back on, so it always runs one iteration (skipping it on a slow machine
    locked the agent in its safe state); a warm plan past its deadline returns the shifted previous plan."""
    world, context, goal = toy_problem()
    planner = make_planner(world, world.dim, iterations=50)
    planner.warmup(context, None, goal)  # measures an iteration
    planner = planner.with_config(deadline_ms=0.0)
    planner.iteration_ms = 5.0
    cold = planner.plan(context, None, goal)
    assert cold.partial and cold.iterations == 1 and math.isfinite(cold.cost)
    warm_mean = planner._warm_mean.clone()
    warm = planner.plan(context, None, goal)
    assert warm.partial and warm.iterations == 0 and math.isinf(warm.cost)
    np.testing.assert_allclose(warm.normalized, warm_mean.numpy(), atol=1e-6)


def test_deadline_stops_early_with_the_best_plan_so_far():
    model = random_lewm()
    planner = make_planner(model, 32, samples=128, iterations=10_000, deadline_ms=150.0)
    result = planner.plan(torch.randn(1, 32), None, torch.randn(32))
    assert result.partial and 0 < result.iterations < 10_000
    assert math.isfinite(result.cost) and result.cost == min(result.costs)
    assert result.time_ms < 150.0 + 3 * planner.iteration_ms + 100  # bounded overrun: at most about one iteration


def test_convergence_stops_early_without_partial_flag():
    world, context, goal = toy_problem()
    result = make_planner(world, world.dim, iterations=200, stop_std=0.2, min_std=0.01).plan(context, None, goal)
    assert result.converged and not result.partial and result.iterations < 200


class NanForSomeCandidates(LinearDynamics):
    def rollout(self, context, past_actions, candidates):
        out = super().rollout(context, past_actions, candidates)
        bad = candidates[..., 0, 0] > 0.5  # (B, S): every candidate whose first action is large
        out[bad] = float("nan")
        return out


def test_nan_costs_are_discarded_and_counted_never_chosen():
    world = NanForSomeCandidates()
    _, context, goal = toy_problem()
    result = make_planner(world, world.dim).plan(context, None, goal)
    assert result.discarded > 0
    assert math.isfinite(result.cost)
    assert result.normalized[0, 0] <= 0.5


def test_all_candidates_nan_keeps_the_distribution_and_returns_a_safe_plan():
    class AllNan(LinearDynamics):
        def rollout(self, context, past_actions, candidates):
            return super().rollout(context, past_actions, candidates) * float("nan")

    world = AllNan()
    _, context, goal = toy_problem()
    result = make_planner(world, world.dim).plan(context, None, goal)
    assert math.isinf(result.cost) and np.all(np.isfinite(result.plan))
    assert result.discarded == 64 * 6


@pytest.mark.parametrize(
    "changes, inputs, message",
    [
        ({}, {"goal": torch.randn(7)}, "goal latent has dimension 7"),
        ({}, {"context": torch.full((1, 8), float("nan"))}, "context latents contain NaN"),
        ({}, {"goal": torch.full((8,), float("inf"))}, "goal latent contain"),
        ({}, {"context": torch.zeros(0, 8)}, "context is empty"),
        ({}, {"context": torch.zeros(2, 8), "past": None}, "need 1 executed blocks"),
        ({}, {"context": torch.zeros(2, 8), "past": np.full((1, 5, 2), np.nan)}, "executed actions contain NaN"),
        ({"horizon": 0}, {}, "horizon must be >= 1"),
        ({"elites": 65}, {}, "elites"),
        ({"planner": "rrt"}, {}, "unknown planner 'rrt'"),
        ({"cost_weights": (1.0,)}, {}, "cost_weights needs 5"),
    ],
)
def test_bad_input_raises_a_clear_error(changes, inputs, message):
    world = LinearDynamics()
    context = inputs.get("context", torch.zeros(1, 8))
    goal = inputs.get("goal", torch.zeros(8))
    with pytest.raises(PlanningError, match=message):
        planner = make_planner(world, world.dim, **changes)
        planner.plan(context, inputs.get("past"), goal)


def test_weighted_horizon_cost_counts_intermediate_latents():
    world, context, goal = toy_problem()
    final_only = make_planner(world, world.dim, iterations=1, seed=1).plan(context, None, goal)
    weighted = make_planner(world, world.dim, iterations=1, seed=1, cost_weights=(1.0, 1.0, 1.0, 1.0, 1.0))
    result = weighted.plan(context, None, goal)
    assert result.cost > final_only.cost  # same samples; extra non-negative terms
