"""Plans sized to the machine (adaptive_samples): on a simulated clock whose cost per scored candidate we set, the
planner shrinks its samples so the warm iterations fit the deadline, and grows them back when the machine frees
up. Lock-step on a fake clock: no real timing, so the test holds on a loaded machine."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lewm_ros.planning import core
from lewm_ros.planning.budget import SampleBudget
from lewm_ros.planning.core import LatentPlanner, PlannerConfig, PlanningError

FRAMESKIP, ACTION_DIM, DIM = 5, 2, 8


class SlowWorld:
    """Linear latent dynamics whose rollout advances a fake clock by `ms_per_candidate` per scored candidate."""

    def __init__(self, clock: SimpleNamespace) -> None:
        self.map = torch.randn(FRAMESKIP * ACTION_DIM, DIM, generator=torch.Generator().manual_seed(0)) * 0.3
        self.clock = clock
        self.ms_per_candidate = 1.0
        self.scored: list[int] = []

    def rollout(self, context, past_actions, candidates):
        count = candidates.shape[1]
        self.scored.append(count)
        self.clock.now += count * self.ms_per_candidate / 1000.0
        return context[:, -1][:, None, None, :] + torch.cumsum(candidates @ self.map, dim=2)


@pytest.fixture
def clock(monkeypatch):
    fake = SimpleNamespace(now=0.0)
    fake.perf_counter = lambda: fake.now
    monkeypatch.setattr(core, "time", fake)
    return fake


def planner_on(world, **changes) -> LatentPlanner:
    settings = {"planner": "cem", "samples": 64, "iterations": 6, "warm_iterations": 2, "elites": 8,
                "deadline_ms": 20.0, "adaptive_samples": True, **changes}  # fmt: skip
    return LatentPlanner(world, np.zeros(ACTION_DIM), np.ones(ACTION_DIM), FRAMESKIP, 3, DIM, PlannerConfig(**settings))


def plan_once(planner):
    result = planner.plan(torch.zeros(1, DIM), None, torch.ones(DIM))
    planner.advance(1)
    return result


@pytest.mark.parametrize("name", ["cem", "icem", "mppi"])
def test_a_slow_machine_gets_fewer_samples_and_plans_within_the_deadline(clock, name):
    world = SlowWorld(clock)
    planner = planner_on(world, planner=name)
    planner.warmup(torch.zeros(1, DIM), None, torch.ones(DIM))  # measures 1 ms per candidate at 64 samples
    results = [plan_once(planner) for _ in range(6)]
    floor = 2 * 8
    assert all(r.samples == floor for r in results)  # 20 ms / 2 iterations / 1 ms = 10 candidates, floored at 16
    assert max(world.scored[-6:]) <= floor + round(0.3 * 8)  # iCEM may carry a few elites into the pool
    # Every plan found a finite plan (no lock-up in the safe state) and stayed within about one iteration of
    # the deadline: the cold plan's forced first iteration and the warm plans' budgeted ones.
    assert all(np.isfinite(r.cost) and r.iterations >= 1 for r in results)  # warm plans refine too: never 0
    assert all(r.time_ms <= 20.0 + floor * 1.0 + 1e-6 for r in results)


def test_samples_recover_when_the_machine_frees_up_and_never_exceed_the_setting(clock):
    world = SlowWorld(clock)
    planner = planner_on(world)
    planner.warmup(torch.zeros(1, DIM), None, torch.ones(DIM))
    for _ in range(3):
        plan_once(planner)
    assert planner.budget.samples == 16
    world.ms_per_candidate = 0.05  # load gone: 64 candidates take 3.2 ms, two iterations fit 20 ms easily
    history = [plan_once(planner).samples for _ in range(30)]
    assert history[0] < 64 and history[-1] == 64  # recovers gradually, ends at the configured samples
    assert max(history) == 64 and history == sorted(history)


def test_without_adaptive_samples_the_setting_is_kept_and_a_slow_machine_overruns(clock):
    world = SlowWorld(clock)
    planner = planner_on(world, adaptive_samples=False)
    planner.warmup(torch.zeros(1, DIM), None, torch.ones(DIM))
    results = [plan_once(planner) for _ in range(4)]
    assert all(r.samples == 64 for r in results)
    assert results[0].time_ms >= 64.0  # the cold plan's one forced iteration: 64 candidates at 1 ms


def test_adaptive_samples_refuses_the_gradient_planner():
    with pytest.raises(PlanningError, match="adaptive_samples"):
        PlannerConfig(planner="grad", adaptive_samples=True).check()


def test_sample_budget_follows_slowdowns_fast_and_speedups_slowly():
    budget = SampleBudget(max_samples=100, min_samples=10, deadline_ms=30.0, iterations=3)
    assert budget.samples == 100 and budget.estimate_ms(50) is None
    budget.record(10.0, 100)  # 0.1 ms per candidate: 10 ms per iteration fits 100
    assert budget.samples == 100
    budget.record(40.0, 100)  # a slowdown: half way to 0.4 ms in one step
    assert budget.ms_per_sample == pytest.approx(0.25) and budget.samples == 40
    budget.record(10.0, 100)  # a speedup: a fifth of the way back
    assert budget.ms_per_sample == pytest.approx(0.22)
    for bad in (float("nan"), -1.0, float("inf")):
        budget.record(bad, 10)
    budget.record(5.0, 0)
    assert budget.ms_per_sample == pytest.approx(0.22)  # bad measurements are ignored, never poison the size
    with pytest.raises(ValueError):
        SampleBudget(10, 20, 30.0, 1)
