"""ROS-free pieces of the agent: settings table vs YAML, command shaping, the surprise monitor, the MPC state
machine, frame fitting."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lewm_ros.control.command import CommandShaper, UnsafeCommandError
from lewm_ros.control.mpc import LatentMPC
from lewm_ros.control.settings import (
    PARAMETER_NAMES,
    PARAMETERS,
    SettingsError,
    build_settings,
    check_value,
    yaml_text,
)
from lewm_ros.control.surprise import SurpriseMonitor, threshold_from_bundle
from lewm_ros.data.frames import FrameSizeError, fit_frame
from lewm_ros.model.bundle import PixelEncoder
from lewm_ros.model.config import preset
from lewm_ros.model.lewm import LeWM
from lewm_ros.planning.core import LatentPlanner, PlannerConfig

ROOT = Path(__file__).resolve().parents[1]


def test_agent_yaml_documents_exactly_the_declared_parameters_with_valid_values():
    text = (ROOT / "config" / "lewm_agent.yaml").read_text()
    assert text == yaml_text(), "config/lewm_agent.yaml is stale: python -m lewm_ros.control.settings > it"
    params = yaml.safe_load(text)["lewm_agent"]["ros__parameters"]
    assert set(params) == set(PARAMETER_NAMES)
    by_name = {p.name: p for p in PARAMETERS}
    for name, value in params.items():
        check_value(by_name[name], value)
    build_settings(params)


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"joint_names": None}, "joint_names is required"),
        ({"joint_names": ["a", "a"]}, "distinct"),
        ({"samples": True}, "samples must be an integer"),
        ({"samples": 0}, "samples must be in"),
        ({"control_rate_hz": math.nan}, "finite"),
        ({"action_scale": [1.0, -2.0]}, "action_scale"),
        ({"receding_horizon": 9, "horizon": 5}, "receding_horizon (9) must not exceed horizon"),
        ({"command_interface": "position", "safe_action": "zeros"}, "safe_action must be hold"),
        ({"safe_action": "hold"}, "safe_action must be zeros"),
        ({"deadline_ms": 300.0, "plan_overrun_ms": 250.0}, "plan_overrun_ms"),
        ({"planner": "magic"}, "planner must be one of"),
    ],
)
def test_settings_refuse_unsafe_or_malformed_values(change, needle):
    values = {"joint_names": ["a", "b"], **change}
    with pytest.raises(SettingsError, match=None) as err:
        build_settings(values)
    assert needle in str(err.value)


def test_command_shaper_scales_clamps_and_refuses_nan():
    shaper = CommandShaper(2, [2.0, 1.0], 1.5)
    np.testing.assert_allclose(shaper.velocity([0.5, 0.5]), [1.0, 0.5])
    np.testing.assert_allclose(shaper.velocity([1.0, -3.0]), [1.5, -1.5])
    assert shaper.clamped == 1
    np.testing.assert_allclose(shaper.executed_action([1.5, -1.5]), [0.75, -1.5])
    for bad in ([math.nan, 0.0], [0.0, math.inf], [1.0]):
        with pytest.raises(UnsafeCommandError):
            shaper.velocity(bad)
    with pytest.raises(UnsafeCommandError, match="measured joint position"):
        shaper.hold_position(None)
    with pytest.raises(UnsafeCommandError):
        shaper.hold_position(np.array([0.1, math.nan]))
    np.testing.assert_array_equal(shaper.hold_position(np.array([0.1, -0.2])), [0.1, -0.2])
    with pytest.raises(ValueError):
        CommandShaper(2, [1.0, 2.0, 3.0], 1.0)


def test_surprise_monitor_needs_patience_latches_and_treats_nan_as_surprising():
    monitor = SurpriseMonitor(10.0, patience=2)
    assert not monitor.update(50.0) and not monitor.alarm  # one outlier is not an event
    assert not monitor.update(1.0)
    assert not monitor.update(11.0) and monitor.update(12.0) and monitor.alarm
    assert not monitor.update(1.0) and monitor.alarm  # latched until cleared
    monitor.clear()
    assert not monitor.alarm
    assert not monitor.update(math.nan) and monitor.update(math.nan)
    assert not SurpriseMonitor(None).update(1e9)
    meta = {"surprise": {"percentiles": {"p99.9": 4.0}}}
    assert threshold_from_bundle(meta, 3.0) == 12.0
    assert threshold_from_bundle(meta, 3.0, override=7.0) == 7.0
    assert threshold_from_bundle({}, 3.0) is None
    assert threshold_from_bundle({"surprise": {"percentiles": {"p99.9": math.nan}}}, 3.0) is None


def tiny_mpc(receding: int = 2) -> tuple[LatentMPC, LeWM]:
    torch.manual_seed(0)
    cfg = preset("tiny")
    model = LeWM(cfg).eval()
    action_dim, frameskip = cfg.action.action_dim, cfg.action.frameskip
    planner = LatentPlanner(
        model, np.zeros(action_dim, np.float32), np.ones(action_dim, np.float32), frameskip, cfg.predictor.history,
        cfg.latent_dim, PlannerConfig(samples=8, iterations=2, elites=2, horizon=3),
    )  # fmt: skip
    return LatentMPC(PixelEncoder(model).eval(), model, planner, receding), model


def test_mpc_cycle_keeps_history_of_what_was_executed_and_measures_surprise():
    mpc, model = tiny_mpc()
    size, fs = model.cfg.encoder.image_size, mpc.frameskip
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(6)]
    with pytest.raises(RuntimeError):
        mpc.plan()  # no goal
    mpc.set_goal(frames[-1])
    first = mpc.observe(frames[0])
    assert first.surprise is None and mpc.needs_plan
    mpc.plan()
    executed = []
    for block in range(3):
        for _ in range(fs):
            action = mpc.next_action()
            sent = np.clip(action, -0.1, 0.1)  # what a clamp would let through
            executed.append(sent)
            mpc.record_executed(sent)
        assert mpc.at_block_start
        expected = mpc.predict_next(np.stack(executed[-fs:]).astype(np.float32))
        observed = mpc.observe(frames[block + 1])
        manual = float((expected - mpc.encode(frames[block + 1])).square().sum())
        assert observed.surprise == pytest.approx(manual, rel=1e-5)
        np.testing.assert_allclose(mpc.blocks[-1], np.stack(executed[-fs:]), rtol=0, atol=1e-7)
        if mpc.needs_plan:
            mpc.plan()
    assert len(mpc.latents) == mpc.history and len(mpc.blocks) == mpc.history - 1
    assert mpc.plans == 2  # replanned after receding_horizon=2 blocks
    mpc.set_goal(frames[2])  # a new goal forgets everything
    assert mpc.latents == [] and mpc.plan_result is None and mpc.needs_plan


def test_fit_frame_policies():
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:, 8:56] = 255  # the centre square is white
    assert fit_frame(frame, 32, "crop").min() == 255
    stretched = fit_frame(frame, 32, "resize")
    assert stretched.shape == (32, 32, 3) and stretched.min() == 0
    with pytest.raises(FrameSizeError):
        fit_frame(frame, 32, "exact")
    same = np.ones((32, 32, 3), np.uint8)
    assert fit_frame(same, 32, "exact").shape == (32, 32, 3)
    with pytest.raises(FrameSizeError):
        fit_frame(np.zeros((32, 32), np.uint8), 32)


def test_a_stop_for_time_keeps_the_warm_start_any_other_stop_forgets_it():
    """After an overrun the agent resets with keep_warm_start: the next plan starts warm (fewer iterations, from
    where the search got to) instead of cold, which on an overloaded machine overran again, for ever."""
    mpc, model = tiny_mpc()
    size = model.cfg.encoder.image_size
    frame = np.random.default_rng(1).integers(0, 255, (size, size, 3), dtype=np.uint8)
    mpc.set_goal(frame[::-1].copy())
    mpc.observe(frame)
    mpc.plan()
    warm = mpc.planner._warm_mean.clone()
    mpc.reset(keep_warm_start=True)
    assert mpc.latents == [] and mpc.plan_result is None and mpc.planner.warm
    torch.testing.assert_close(mpc.planner._warm_mean, warm)
    mpc.observe(frame)
    assert mpc.plan().iterations == mpc.planner.config.iterations  # warm_iterations unset: same count, warm start
    mpc.reset()
    assert not mpc.planner.warm


def test_reason_throttle_admits_each_reason_then_one_per_period_with_the_count_held_back():
    from lewm_ros.control.log_limit import ReasonThrottle, reason_key

    now = [0.0]
    throttle = ReasonThrottle(period_s=5.0, clock=lambda: now[0])
    assert reason_key("plan overrun (130 ms > 100 ms)") == "plan overrun"
    assert reason_key("error: RuntimeError: boom") == "error"
    assert throttle.admit("plan overrun (130 ms > 100 ms)") == 0
    assert throttle.admit("camera timeout") == 0  # another reason is not held back by the first
    for ms in range(120, 130):
        now[0] += 0.1
        assert throttle.admit(f"plan overrun ({ms} ms > 100 ms)") is None  # same reason, other text: held
    assert throttle.held() == {"plan overrun": 10}
    now[0] = 5.5
    assert throttle.admit("plan overrun (200 ms > 100 ms)") == 10  # reported with the count held back
    assert throttle.held() == {}


def test_stop_rules_in_order_without_ros():
    from lewm_ros.control.rules import Conditions, Limits, stop_reason

    fine = Conditions(enabled=True, surprise_alarm=False, has_goal=True, frame_age_ms=10.0, invalid_in_row=0,
                      has_measured_position=True)  # fmt: skip
    limits = Limits(frame_timeout_ms=300.0, invalid_frame_burst=5)
    assert stop_reason(fine, limits) is None

    def reason(**change) -> str | None:
        return stop_reason(Conditions(**{**fine.__dict__, **change}), limits)

    assert reason(enabled=False, has_goal=False) == "disabled"  # the first rule wins
    assert reason(surprise_alarm=True) is None  # warn only ...
    assert stop_reason(Conditions(**{**fine.__dict__, "surprise_alarm": True}), Limits(surprise_hold=True)) == (
        "surprise alarm (hold until re-enabled)")  # ... unless surprise_action is hold
    assert reason(has_goal=False) == "no goal image"
    assert reason(frame_age_ms=None) == "no camera frame yet"
    assert reason(frame_age_ms=300.0) is None and reason(frame_age_ms=300.1) == "camera timeout"
    assert reason(invalid_in_row=4) is None and reason(invalid_in_row=5) == "burst of invalid frames"
    assert reason(has_measured_position=False) is None  # zeros need no measured position ...
    held = Conditions(**{**fine.__dict__, "has_measured_position": False})
    assert stop_reason(held, Limits(needs_measured_position=True)).startswith("no joint_states")  # ... hold does


def test_plan_acceptance_without_ros():
    from types import SimpleNamespace

    from lewm_ros.control.rules import Limits, plan_rejection

    limits = Limits(plan_overrun_ms=100.0)
    good = SimpleNamespace(time_ms=40.0, plan=np.zeros((3, 5, 2)), cost=1.5, iterations=2)
    assert plan_rejection(good, limits, warm=False) is None
    assert plan_rejection(SimpleNamespace(**{**good.__dict__, "time_ms": 130.0}), limits, False).startswith(
        "plan overrun (130 ms > 100 ms)")
    nan_plan = np.zeros((3, 5, 2))
    nan_plan[1, 2, 0] = np.nan
    assert plan_rejection(SimpleNamespace(**{**good.__dict__, "plan": nan_plan}), limits, False) == "non-finite plan"
    unrefined = SimpleNamespace(**{**good.__dict__, "cost": math.inf, "iterations": 0})
    assert plan_rejection(unrefined, limits, warm=True) is None  # the shifted previous plan is a plan
    assert plan_rejection(unrefined, limits, warm=False) == "no plan within the deadline"
    all_nan = SimpleNamespace(**{**good.__dict__, "cost": math.inf, "iterations": 3})
    assert plan_rejection(all_nan, limits, warm=True) == "non-finite plan cost"


def test_control_loop_ticks_plans_commands_and_stops_without_ros():
    """The loop the agent ticks and eval steps: a plan at each block start, a clamped command every tick, what
    was sent recorded, surprise scored only for on-time blocks, a rejected plan a stop reason."""
    from lewm_ros.control.loop import ControlLoop
    from lewm_ros.control.rules import Limits

    mpc, model = tiny_mpc(receding=1)
    size, fs = model.cfg.encoder.image_size, mpc.frameskip
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(4)]
    surprise = SurpriseMonitor(threshold=1e9)
    loop = ControlLoop(mpc, CommandShaper(2, 1.0, 0.05), Limits(plan_overrun_ms=1e6), surprise)
    loop.set_goal(frames[-1])
    with pytest.raises(ValueError, match="frame is needed"):
        loop.step(None)
    ticks = []
    for block in range(3):
        for step in range(fs):
            ticks.append(loop.step(frames[block] if step == 0 else None, timed=block != 1))
    assert all(t.stop is None and np.all(np.abs(t.velocity) <= 0.05) for t in ticks)  # clamped to max_command
    assert sum(t.plan is not None for t in ticks) == 3  # receding horizon 1: a plan per block
    np.testing.assert_allclose(mpc.blocks[-1], np.stack([t.velocity for t in ticks[fs : 2 * fs]]), atol=1e-7)
    scored = [t.surprise_scored for t in ticks if t.surprise is not None]
    assert scored == [False, True]  # at block 1's start the block that ended was late: measured, not scored
    assert surprise.alarms == 0

    loop.limits = Limits(plan_overrun_ms=0.0)  # every plan is now too slow
    tick = loop.step(frames[3])
    assert tick.plan is not None and tick.velocity is None and tick.stop.startswith("plan overrun")
    loop.stop(tick.stop)
    assert mpc.planner.warm and mpc.latents == []  # history gone, warm start kept for the next plan
    loop.stop("camera timeout")
    assert not mpc.planner.warm


def test_control_loop_holds_on_a_surprise_alarm_when_told_to():
    from lewm_ros.control.loop import ControlLoop
    from lewm_ros.control.rules import Limits

    mpc, model = tiny_mpc(receding=1)
    size, fs = model.cfg.encoder.image_size, mpc.frameskip
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(3)]
    loop = ControlLoop(mpc, CommandShaper(2, 1.0, 1.0), Limits(surprise_hold=True, plan_overrun_ms=1e9),
                       SurpriseMonitor(threshold=0.0, patience=1))  # fmt: skip
    loop.set_goal(frames[-1])
    for step in range(fs):
        assert loop.step(frames[0] if step == 0 else None).stop is None
    tick = loop.step(frames[1])  # any surprise exceeds a zero threshold
    assert tick.alarm_raised and tick.stop == "surprise alarm (hold until re-enabled)" and tick.velocity is None
