"""One control tick of closed-loop latent MPC, without ROS: what the agent runs every tick and the evaluation
runs every simulated step, so the success figures eval publishes are figures of the robot's controller.

A tick at the start of a block encodes the block's frame and scores its surprise (unless the block's timing
broke: then the comparison measures our timing, not the world, and is counted as skipped); it plans when the
receding horizon says so and accepts or rejects the plan (control/rules.py). Every tick then shapes the plan's
action into a clamped, finite command and records what was really sent. Any problem is a stop reason: the
caller sends the safe command and calls `stop`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lewm_ros.control.command import CommandShaper
from lewm_ros.control.log_limit import reason_key
from lewm_ros.control.mpc import LatentMPC
from lewm_ros.control.rules import Limits, plan_rejection
from lewm_ros.control.surprise import SurpriseMonitor
from lewm_ros.planning.core import PlanResult

TIMING_STOPS = ("plan overrun", "no plan within the deadline")  # stops for time: the warm start survives them


@dataclass
class Tick:
    """What one tick did."""

    velocity: np.ndarray | None = None  # the command to send; None with a stop reason
    stop: str | None = None  # why the safe command must go out instead
    plan: PlanResult | None = None  # a plan made this tick (accepted or not)
    surprise: float | None = None  # a block surprise measured this tick (scored or skipped)
    surprise_scored: bool = False
    alarm_raised: bool = False  # the surprise alarm went off this tick


class ControlLoop:
    """The MPC loop with its surprise monitor, command shaping and plan acceptance."""

    def __init__(self, mpc: LatentMPC, shaper: CommandShaper, limits: Limits, surprise: SurpriseMonitor,
                 warm_start: bool = True) -> None:  # fmt: skip
        self.mpc, self.shaper, self.limits, self.surprise = mpc, shaper, limits, surprise
        self.warm_start = warm_start

    @property
    def at_block_start(self) -> bool:
        return self.mpc.at_block_start

    def set_goal(self, pixels: np.ndarray) -> None:
        self.mpc.set_goal(pixels)

    def step(self, pixels: np.ndarray | None, timed: bool = True) -> Tick:
        """One tick. `pixels` (the block's frame) is needed at a block start; `timed` says the block that ends
        here ran on time, so its surprise measures the world."""
        mpc, tick = self.mpc, Tick()
        if mpc.at_block_start:
            if pixels is None:
                raise ValueError("a block starts at this tick: its camera frame is needed")
            observation = mpc.observe(pixels)
            tick.surprise = observation.surprise
            if observation.surprise is not None and timed:
                tick.surprise_scored = True
                tick.alarm_raised = self.surprise.update(observation.surprise)
            if self.surprise.alarm and self.limits.surprise_hold:
                tick.stop = "surprise alarm (hold until re-enabled)"
                return tick
            if mpc.needs_plan:
                # Zero iterations within the deadline still leave a usable plan when warm: the previous plan,
                # shifted by the blocks executed since (the planner's warm-start mean).
                warm = mpc.planner.warm and self.warm_start
                tick.plan = mpc.plan()
                tick.stop = plan_rejection(tick.plan, self.limits, warm)
                if tick.stop is not None:
                    return tick
        tick.velocity = self.shaper.velocity(mpc.next_action())
        mpc.record_executed(self.shaper.executed_action(tick.velocity))
        return tick

    def stop(self, reason: str) -> None:
        """After a stop the history is a lie (the safe command ran, not the plan): forget it. A stop for time
        keeps the planner's warm start: starting cold on a machine that just ran late would overrun again."""
        self.mpc.reset(keep_warm_start=reason_key(reason) in TIMING_STOPS)
