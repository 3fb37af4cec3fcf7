"""One episode of `lewm-ros eval`: the robot's controller driving the MuJoCo reach scene, one tick per env step."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lewm_ros.evaluation.tasks import Task


@dataclass
class EpisodeOutcome:
    success: bool
    steps_to_success: int | None
    final_error: float  # max joint error at the end of the budget
    min_error: float
    plan_ms: list[float]
    plan_costs: list[float]
    errors: list[float]  # max joint error after every env step (index 0 = start)
    partial_plans: int = 0
    stops: int = 0  # ticks the controller refused to command (the agent's safe command): rejected plans


class ClosedLoop:
    """Episodes of the robot's controller (control/loop.py, built by control/assemble.py) in MuJoCo: one
    control tick per env step in simulated time, the command shaped and clamped as the agent shapes it, the
    safe command (zero velocity) on any stop. The environment's velocity servos take actions in units of
    their maximum speed, so the agent's `action_scale` here is that speed."""

    def __init__(self, controller: Any, env: Any, budget: int) -> None:
        from lewm_ros.control.command import CommandShaper
        from lewm_ros.control.loop import ControlLoop
        from lewm_ros.control.rules import Limits
        from lewm_ros.control.surprise import SurpriseMonitor

        self.controller, self.env, self.budget = controller, env, budget
        self.speed = np.asarray(env.max_joint_speed, np.float64)
        shaper = CommandShaper(env.action_dim, self.speed, self.speed)
        # Not real time: no plan is too slow here (a --deadline-ms still bounds each plan's search).
        limits = Limits(plan_overrun_ms=math.inf)
        self.loop = ControlLoop(controller.mpc, shaper, limits, SurpriseMonitor(None),
                                controller.planner.config.warm_start)  # fmt: skip

    def run(self, task: Task, seed: int, record: list | None = None) -> EpisodeOutcome:
        env, loop = self.env, self.loop
        result = env.reset(start_qpos=task.start_qpos, goal_qpos=task.goal_qpos)
        if task.start_qvel is not None:
            result = env.set_state(task.start_qpos, task.start_qvel)
        goal_pixels = task.goal_pixels if task.goal_pixels is not None else env.goal_image()
        loop.set_goal(goal_pixels)  # encoded by the deployed encoder; forgets the previous episode
        self.controller.planner.reset(seed)
        errors = [result.max_joint_error]
        success_step = 0 if result.success else None
        plan_ms: list[float] = []
        costs: list[float] = []
        partial, stops, cost = 0, 0, math.nan
        for step in range(1, self.budget + 1):
            tick = loop.step(result.observation.pixels if loop.at_block_start else None)
            if tick.plan is not None:
                plan_ms.append(tick.plan.time_ms)
                costs.append(tick.plan.cost)
                partial += int(tick.plan.partial)
                cost = tick.plan.cost
            if tick.stop is not None:  # the agent would send the safe command: zero velocity
                stops += 1
                loop.stop(tick.stop)
                velocity = np.zeros(env.action_dim)
            else:
                velocity = tick.velocity
            result = env.step(velocity / self.speed)
            errors.append(result.max_joint_error)
            if result.success and success_step is None:
                success_step = step
            if record is not None:
                record.append((result.observation.pixels, goal_pixels, cost, step))
        return EpisodeOutcome(
            success=success_step is not None, steps_to_success=success_step, final_error=errors[-1],
            min_error=float(min(errors)), plan_ms=plan_ms, plan_costs=costs, errors=errors, partial_plans=partial,
            stops=stops,
        )  # fmt: skip
