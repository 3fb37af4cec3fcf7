"""The lewm_agent lifecycle node over real DDS with the shipped trained bundle: lifecycle, rate, safety stops,
bad images, surprise alarm on a teleport, services, diagnostics.

Every safety test asserts on the commands a controller would have received, so it fails if the node ever
sends a non-safe command where it must not."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time

import numpy as np
import pytest
from agent_rig import JOINTS, AgentRig
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool, Trigger

from lewm_ros.envs.reach_env import ReachConfig, ReachEnv
from lewm_ros.model.shipped import find_bundle
from lewm_ros.planning.roadmap import Roadmap
from lewm_ros.ros import image_codec
from lewm_ros.ros.agent_node import LewmAgent

SUCCESS = "TransitionCallbackReturnType.SUCCESS"
FAILURE = "TransitionCallbackReturnType.FAILURE"
PERIOD = 0.05


def lifecycle_state(agent: LewmAgent) -> str:
    return agent._state_machine.current_state[1]


@pytest.fixture(scope="module")
def scene():
    """Start frame, goal frame and start configuration of one reach2d episode (64 px, the bundle's size)."""
    with ReachEnv("reach2d", ReachConfig(image_size=64)) as env:
        result = env.reset(7)
        return {"start": result.observation.pixels.copy(), "goal": env.goal_image(), "qpos": env.qpos.copy()}


def running(rig: AgentRig, scene, seconds: float = 0.6) -> None:
    """Configure, activate, set the goal and stream frames until commands flow."""
    assert str(rig.agent.trigger_configure()) == SUCCESS
    rig.wait_for_subscribers()
    rig.goal.publish(image_codec.rgb_to_image(scene["goal"]))
    rig.publish_joint_state(scene["qpos"])
    assert str(rig.agent.trigger_activate()) == SUCCESS
    rig.stream(scene["start"], seconds)


def is_zero(values) -> bool:
    return all(v == 0.0 for v in values)


# ---- lifecycle ------------------------------------------------------------------------------------------


def test_commands_at_the_control_rate_bounded_and_none_after_deactivate(ros_context, scene):
    with AgentRig(ros_context, max_command=[1.5]) as rig:
        assert lifecycle_state(rig.agent) == "unconfigured"
        assert str(rig.agent.trigger_configure()) == SUCCESS
        rig.wait_for_subscribers()
        rig.goal.publish(image_codec.rgb_to_image(scene["goal"]))
        rig.stream(scene["start"], 0.5)
        assert rig.received.commands == [], "commands while inactive"
        assert str(rig.agent.trigger_activate()) == SUCCESS
        t0 = time.monotonic()
        rig.stream(scene["start"], 3.0)
        commands = rig.commands_since(t0)
        # Never more than the rate allows, and the rate kept (rclpy's stock MultiThreadedExecutor fell to 4-20 Hz
        # here: bench/executor_starvation.py; ResponsiveExecutor keeps 20 Hz even with both cores loaded).
        assert 45 <= len(commands) <= 65, f"{len(commands)} commands in 3 s at 20 Hz"
        ticks = np.array(rig.agent.stats.tick_times)
        assert np.diff(ticks[ticks > t0]).max() < 0.25, "a control tick came more than 5 periods late"
        values = np.array(commands)
        assert values.shape[1] == 2 and np.all(np.isfinite(values)) and np.all(np.abs(values) <= 1.5)
        assert np.any(values != 0), "the planner never moved the arm"
        t_off = time.monotonic()  # before the transition: its safe command may arrive before it returns
        assert str(rig.agent.trigger_deactivate()) == SUCCESS
        rig.stream(scene["start"], 0.5)
        after = rig.commands_since(t_off)
        # A tick racing the transition may still land one moving command; after the safe one nothing moves.
        first_safe = next((i for i, v in enumerate(after) if is_zero(v)), None)
        assert first_safe is not None, f"no safe command on deactivate: {after}"
        assert first_safe <= 1 and all(is_zero(v) for v in after[first_safe:]), f"moved after deactivate: {after}"
        assert is_zero(rig.received.commands[-1][1])
        assert str(rig.agent.trigger_cleanup()) == SUCCESS
        assert lifecycle_state(rig.agent) == "unconfigured"
        assert str(rig.agent.trigger_configure()) == SUCCESS  # configurable again after cleanup
        assert str(rig.agent.trigger_shutdown()) == SUCCESS


def corrupt_bundle(tmp_path):
    bad = tmp_path / "corrupt"
    shutil.copytree(find_bundle("reach2d"), bad)
    (bad / "model.json").write_text("{ not json")
    return str(bad)


def foreign_roadmap(tmp_path):
    """The shipped roadmap, labelled as built for other weights."""
    roadmap = Roadmap.load(find_bundle("reach2d") / "roadmap.npz")
    roadmap.meta["weights_sha256"] = "0" * 64
    return str(roadmap.save(tmp_path / "foreign.npz"))


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"bundle": "/nonexistent/bundle"}, "bundle not found"),
        ({"bundle": "CORRUPT"}, "corrupt JSON"),
        ({"joint_names": ["shoulder"]}, "joint_names has 1 joints"),
        ({"command_type": "twist"}, "command_type must be one of"),
        ({"planner": "astar"}, "planner must be one of"),
        ({"samples": "many"}, "parameter samples"),
        ({"control_rate_hz": 20}, "parameter control_rate_hz"),  # an int where a double belongs
        ({"elites": 50, "samples": 10}, "elites (50) must not exceed samples (10)"),
        ({"command_type": "joint_trajectory"}, "safe_action must be hold"),
        ({"goal_image_path": "/nonexistent.png"}, "goal_image_path"),
        ({"roadmap": "/nonexistent/roadmap.npz"}, "parameter roadmap: /nonexistent/roadmap.npz: no such roadmap"),
        ({"roadmap": "FOREIGN"}, "built with other weights"),
        ({"cost_weighting": "sum"}, "cost_weighting must be one of"),
    ],
)
def test_failed_configure_leaves_the_node_alive_and_unconfigured(ros_context, tmp_path, params, needle, caplog):
    if params.get("bundle") == "CORRUPT":
        params = {**params, "bundle": corrupt_bundle(tmp_path)}
    if params.get("roadmap") == "FOREIGN":
        params = {**params, "roadmap": foreign_roadmap(tmp_path)}
    with AgentRig(ros_context, **params) as rig:
        errors = []
        original = rig.agent.get_logger().error
        rig.agent.get_logger().error = lambda text, **kw: errors.append(text) or original(text, **kw)
        assert str(rig.agent.trigger_configure()) == FAILURE
        assert lifecycle_state(rig.agent) == "unconfigured"
        assert any(needle in e for e in errors), errors
        assert rig.agent.settings is None and rig.agent.command_pub is None
        assert str(rig.agent.trigger_configure()) == FAILURE  # still alive, still refusing


# ---- safety stops ------------------------------------------------------------------------------------------


def test_camera_stop_sends_the_safe_command_within_two_periods_of_the_timeout(ros_context, scene):
    timeout_ms = 150.0
    with AgentRig(ros_context, frame_timeout_ms=timeout_ms) as rig:
        running(rig, scene, 1.0)
        assert any(not is_zero(v) for v in rig.commands_since(0.0))
        last_frame = time.monotonic()
        time.sleep(1.0)  # camera silent
        after = [(t, v) for t, v in rig.received.commands if t > last_frame]
        moving = [t - last_frame for t, v in after if not is_zero(v)]
        first_safe = next(t - last_frame for t, v in after if is_zero(v))
        assert first_safe <= timeout_ms / 1000 + 2 * PERIOD + 0.05, f"safe command after {first_safe:.3f} s"
        assert all(dt <= timeout_ms / 1000 + 0.02 for dt in moving), f"moving commands after the timeout: {moving}"
        assert all(is_zero(v) for t, v in after if t - last_frame > timeout_ms / 1000 + 2 * PERIOD + 0.05)
        assert rig.agent.diagnostics().message.startswith("holding: camera timeout") or "camera timeout" in (
            rig.agent.diagnostics().message
        )


def bad_frames(scene):
    start = scene["start"]
    good = image_codec.rgb_to_image(start)
    wrong_encoding = image_codec.rgb_to_image(start)
    wrong_encoding.encoding = "yuv422_weird"
    truncated = image_codec.rgb_to_image(start)
    truncated.data = truncated.data[: len(truncated.data) // 2]
    bad_step = image_codec.rgb_to_image(start)
    bad_step.step = 10
    zero = image_codec.rgb_to_image(start)
    zero.width = 0
    huge = image_codec.rgb_to_image(start)
    huge.height, huge.width, huge.step = 2**30, 2**30, 3 * 2**30
    assert good.encoding == "rgb8"
    return {
        "wrong encoding": wrong_encoding, "truncated": truncated, "bad step": bad_step, "zero width": zero,
        "absurd size": huge,
    }  # fmt: skip


def test_bad_images_are_dropped_counted_and_never_drive_the_arm(ros_context, scene):
    with AgentRig(ros_context, invalid_frame_burst=3) as rig:
        running(rig, scene, 0.8)
        corpus = bad_frames(scene)
        t0 = time.monotonic()
        for _ in range(3):
            for msg in corpus.values():
                rig.camera.publish(msg)
                time.sleep(0.03)
        time.sleep(0.4)
        dropped = rig.agent.stats.dropped
        # Best-effort QoS (keep last) may lose some while the executor is busy; most must arrive and be counted.
        assert dropped["undecodable"] >= len(corpus), dict(dropped)
        assert lifecycle_state(rig.agent) == "active"
        after = rig.commands_since(t0 + 0.3)
        assert after and all(is_zero(v) for v in after), "commands derived while only invalid frames arrived"
        status = rig.agent.diagnostics()
        assert "invalid frame" in status.message or "camera timeout" in status.message
        values = {kv.key: kv.value for kv in status.values}
        assert int(values["dropped_frames"]) == dropped["undecodable"] + dropped["wrong_size"] + dropped["stale"]
        # the node recovers on valid frames
        t1 = time.monotonic()
        rig.stream(scene["start"], 0.8)
        assert any(not is_zero(v) for v in rig.commands_since(t1))


def test_garbage_compressed_frames_are_dropped(ros_context, scene):
    with AgentRig(ros_context, compressed=True) as rig:
        assert str(rig.agent.trigger_configure()) == SUCCESS
        deadline = time.monotonic() + 10
        while rig.compressed.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        rig.goal.publish(image_codec.rgb_to_image(scene["goal"]))
        assert str(rig.agent.trigger_activate()) == SUCCESS
        garbage = image_codec.rgb_to_compressed(scene["start"], "png")
        garbage.data = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
        for _ in range(5):
            rig.compressed.publish(garbage)
            time.sleep(0.05)
        time.sleep(0.2)
        assert rig.agent.stats.dropped["undecodable"] >= 4
        assert all(is_zero(v) for v in rig.commands_since(0.0))
        good = image_codec.rgb_to_compressed(scene["start"], "png")
        t1 = time.monotonic()
        end = t1 + 0.8
        while time.monotonic() < end:
            rig.compressed.publish(good)
            time.sleep(0.03)
        assert any(not is_zero(v) for v in rig.commands_since(t1)), "valid compressed frames never drove the arm"


def test_stale_stamps_and_wrong_sizes_are_dropped(ros_context, scene):
    with AgentRig(ros_context, max_frame_age_ms=200.0, image_policy="exact") as rig:
        running(rig, scene, 0.0)
        t0 = time.monotonic()
        old = rig.agent.get_clock().now().to_msg()
        old.sec -= 10
        for _ in range(5):
            rig.publish_frame(scene["start"], stamp=old)
            rig.publish_frame(np.zeros((48, 64, 3), np.uint8), stamp=rig.agent.get_clock().now().to_msg())
            time.sleep(0.05)
        time.sleep(0.2)
        assert rig.agent.stats.dropped["stale"] >= 4 and rig.agent.stats.dropped["wrong_size"] >= 4
        assert all(is_zero(v) for v in rig.commands_since(t0))


def test_plan_overrun_sends_the_safe_command(ros_context, scene):
    with AgentRig(ros_context, plan_overrun_ms=1.0) as rig:
        running(rig, scene, 1.0)
        assert rig.agent.stats.overruns >= 2
        assert rig.received.commands and all(is_zero(v) for _, v in rig.received.commands)


def test_joint_trajectory_output_holds_the_measured_position_never_zero(ros_context, scene):
    with AgentRig(ros_context, command_type="joint_trajectory", safe_action="hold",
                  trajectory_duration_ms=100.0) as rig:  # fmt: skip
        assert str(rig.agent.trigger_configure()) == SUCCESS
        rig.wait_for_subscribers()
        rig.goal.publish(image_codec.rgb_to_image(scene["goal"]))
        assert str(rig.agent.trigger_activate()) == SUCCESS
        rig.stream(scene["start"], 0.4)  # no joint_states yet: nothing safe to hold, so nothing is sent
        assert rig.received.commands == []
        qpos = np.array([0.3, -0.7])
        t0 = time.monotonic()
        end = t0 + 1.0
        while time.monotonic() < end:
            rig.publish_joint_state(qpos)
            rig.publish_frame(scene["start"])
            time.sleep(0.025)
        msgs = [m for m in rig.commands_since(t0)]
        assert msgs, "no trajectory commands"
        for msg in msgs:
            assert msg.joint_names == JOINTS and len(msg.points) == 1
            point = msg.points[0]
            assert point.time_from_start.nanosec == 100_000_000
            velocity = np.array(point.velocities)
            np.testing.assert_allclose(point.positions, qpos + velocity * 0.1, atol=1e-9)
        assert str(rig.agent.trigger_deactivate()) == SUCCESS
        time.sleep(0.2)
        last = rig.received.commands[-1][1].points[0]
        np.testing.assert_allclose(last.positions, qpos)
        assert list(last.velocities) == [0.0, 0.0]


# ---- surprise --------------------------------------------------------------------------------------------------


def test_a_late_tick_is_counted_and_its_blocks_surprise_is_not_scored(ros_context, scene):
    """A stalled tick means the arm ran an old command longer than the model was told: that block's surprise
    measures our timing, not the world, so it is counted as skipped and never reaches the alarm."""
    with AgentRig(ros_context) as rig:
        running(rig, scene, 1.0)
        scored = []
        update = rig.agent.surprise.update
        rig.agent.surprise.update = lambda value: scored.append(time.monotonic()) or update(value)
        late, skipped = rig.agent.stats.late_ticks, rig.agent.stats.surprise_skipped

        def hold_the_lock() -> None:  # the tick waits 4 periods for it, as behind a slow plan (the stall
            # watchdog, at 300 ms without a command, must not step in first)
            with rig.agent._lock:
                time.sleep(0.2)

        stall = threading.Thread(target=hold_the_lock)
        stall.start()
        stall.join()
        released = time.monotonic()
        ticks_before = len(rig.agent.stats.tick_times)
        # The late block ends within one block (5 ticks) of the release; a block after it must be scored. On a
        # loaded machine more ticks run late by themselves, so stream until one is (the bound is time, not a
        # tick count), and skip with the measured figures if the machine never gave a block five on-time ticks.
        deadline = released + 15.0
        while not any(t > released + 0.3 for t in scored) and time.monotonic() < deadline:
            rig.stream(scene["start"], 0.25)
        assert rig.agent.stats.late_ticks > late
        assert rig.agent.stats.surprise_skipped > skipped
        if not any(t > released + 0.3 for t in scored):
            blocks_late = rig.agent.stats.surprise_skipped - skipped
            if blocks_late >= 3:
                pytest.skip(f"this machine ran late ticks in {blocks_late} blocks within 15 s after the stall "
                            f"({rig.agent.stats.late_ticks - late} late ticks): too slow to see an on-time block")
            pytest.fail("no surprise scored after the stall: skip only the late block")
        assert len(rig.agent.stats.tick_times) > ticks_before
        values = rig.agent.diagnostics().values
        keys = {v.key: v.value for v in values}
        assert int(keys["late_ticks"]) == rig.agent.stats.late_ticks and "surprise_skipped" in keys


# ---- services, diagnostics, parameters ---------------------------------------------------------------------------


def call(rig: AgentRig, srv_type, name: str, request):
    client = rig.node.create_client(srv_type, name)
    assert client.wait_for_service(timeout_sec=10.0), f"{name} not available"
    future = client.call_async(request)
    deadline = time.monotonic() + 10
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    rig.node.destroy_client(client)
    return future.result()


def test_services_enable_and_set_goal_from_current(ros_context, scene):
    with AgentRig(ros_context) as rig:
        assert str(rig.agent.trigger_configure()) == SUCCESS
        rig.wait_for_subscribers()
        assert call(rig, Trigger, "/lewm_agent/set_goal_from_current", Trigger.Request()).success is False
        assert str(rig.agent.trigger_activate()) == SUCCESS
        rig.stream(scene["goal"], 0.3)
        response = call(rig, Trigger, "/lewm_agent/set_goal_from_current", Trigger.Request())
        assert response.success and "goal set" in response.message
        rig.stream(scene["start"], 0.6)
        assert rig.agent.stats.goals == 1 and any(not is_zero(v) for v in rig.commands_since(0.0))
        assert call(rig, SetBool, "/lewm_agent/enable", SetBool.Request(data=False)).success
        t0 = time.monotonic()
        rig.stream(scene["start"], 0.6)
        assert all(is_zero(v) for v in rig.commands_since(t0))
        assert call(rig, SetBool, "/lewm_agent/enable", SetBool.Request(data=True)).success
        t1 = time.monotonic()
        rig.stream(scene["start"], 0.8)
        assert any(not is_zero(v) for v in rig.commands_since(t1))


def test_diagnostics_report_state_latency_and_counters(ros_context, scene):
    with AgentRig(ros_context, diagnostics_rate_hz=5.0) as rig:
        running(rig, scene, 1.2)
        assert rig.received.diagnostics, "nothing on /diagnostics"
        status = rig.received.diagnostics[-1].status[0]
        values = {kv.key: kv.value for kv in status.values}
        for key in ("state", "plan_ms_p50", "plan_ms_p95", "camera_to_command_ms_p95", "frame_age_ms",
                    "dropped_frames", "surprise", "surprise_alarm", "device", "precision", "bundle"):  # fmt: skip
            assert key in values, key
        assert values["state"] == "active" and values["device"] == "cpu" and values["bundle"].endswith("reach2d")
        assert float(values["plan_ms_p50"]) > 0 and math.isfinite(float(values["camera_to_command_ms_p95"]))
        assert float(values["control_rate_hz"]) > 2  # 4-20 Hz in this shared process; 17-20 Hz alone


def test_the_shipped_roadmap_and_uniform_weighting_plan_and_report(ros_context, scene):
    with AgentRig(ros_context, roadmap="bundle", cost_weighting="uniform", diagnostics_rate_hz=5.0) as rig:
        running(rig, scene, 1.0)
        planner = rig.agent.mpc.planner
        assert planner.roadmap is not None and planner.config.cost_weights == (1.0,) * planner.config.horizon
        assert rig.agent.stats.plans > 0 and any(not is_zero(v) for v in rig.commands_since(0.0))
        status = rig.received.diagnostics[-1].status[0]
        assert {kv.key: kv.value for kv in status.values}["roadmap_off_map_goals"] == "0"


def test_live_parameters_are_validated_and_unsafe_ones_read_only(ros_context, scene):
    with AgentRig(ros_context) as rig:
        assert str(rig.agent.trigger_configure()) == SUCCESS
        ok = rig.agent.set_parameters([Parameter("surprise_factor", value=5.0)])[0]
        assert ok.successful and rig.agent.settings.surprise_factor == 5.0
        threshold = json.loads((rig.agent.bundle_path / "model.json").read_text())["surprise"]["percentiles"]["p99.9"]
        assert rig.agent.surprise.threshold == pytest.approx(5.0 * threshold)
        assert not rig.agent.set_parameters([Parameter("surprise_action", value="explode")])[0].successful
        assert not rig.agent.set_parameters([Parameter("command_topic", value="/elsewhere")])[0].successful
        assert not rig.agent.set_parameters([Parameter("max_command", value=[100.0])])[0].successful


def test_a_stopped_sim_clock_ends_in_the_safe_command(ros_context, scene):
    """Under use_sim_time ticks follow /clock; when it stops the steady-clock watchdog must send the safe
    command (a forward controller would otherwise keep the last velocity forever)."""
    from rosgraph_msgs.msg import Clock

    with AgentRig(ros_context, use_sim_time=True, frame_timeout_ms=200.0) as rig:
        clock = rig.node.create_publisher(Clock, "/clock", 10)
        sim_ns = 0

        def advance(seconds: float) -> None:
            nonlocal sim_ns
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                sim_ns += 50_000_000
                clock.publish(Clock(clock=rclpy_time(sim_ns)))
                rig.publish_frame(scene["start"])
                time.sleep(0.05)

        assert str(rig.agent.trigger_configure()) == SUCCESS
        rig.wait_for_subscribers()
        rig.goal.publish(image_codec.rgb_to_image(scene["goal"]))
        assert str(rig.agent.trigger_activate()) == SUCCESS
        advance(1.5)
        assert any(not is_zero(v) for v in rig.commands_since(0.0)), "no control while the clock ran"
        stopped = time.monotonic()
        rig.stream(scene["start"], 1.0)  # frames keep coming, the clock does not
        after = [(t - stopped, v) for t, v in rig.received.commands if t > stopped]
        first_safe = next((dt for dt, v in after if is_zero(v)), None)
        assert first_safe is not None and first_safe < 0.2 + 2 * PERIOD + 0.1, after[:5]
        assert all(is_zero(v) for dt, v in after if dt > first_safe)
        assert rig.agent.stats.stalls >= 1


def rclpy_time(nanoseconds: int):
    from builtin_interfaces.msg import Time

    return Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)
