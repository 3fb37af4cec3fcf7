"""`lewm_agent`: the lifecycle node that sees, plans and commands.

configure  load and check the bundle (TorchScript encoder + eager predictor for the planner) on the chosen
           device, create publishers, subscriptions and services; any problem -> FAILURE, node unconfigured
activate   start the control timer (the node clock: simulated time under use_sim_time, so a simulator slower
           than real time is still commanded once per simulated control period; no /clock, no commands)
deactivate / cleanup / shutdown   send the safe command, stop the timer

Threading (ResponsiveExecutor, a fixed MultiThreadedExecutor): the camera, goal and joint-state callbacks only
decode and store the newest message (their own callback group), so frames never queue behind planning; the
control tick (its own group) encodes, plans and publishes; diagnostics and the debug image run in a third group.
`_lock` serialises the tick with lifecycle transitions and services, so no command can follow a deactivation.

Safety (DESIGN.md): every tick while active publishes exactly one command: the plan's action (scaled,
clamped, finite) or the safe command when anything is wrong (see `_stop_reason`). Watchdogs use the steady
clock, because the ROS clock stops under use_sim_time when /clock does.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    SetParametersResult,
)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration as RosDuration
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float32, Float64MultiArray, Header
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from lewm_ros.control.command import CommandShaper, UnsafeCommandError
from lewm_ros.control.debug_view import debug_view
from lewm_ros.control.log_limit import ReasonThrottle, reason_key
from lewm_ros.control.loop import ControlLoop
from lewm_ros.control.rules import Conditions, stop_reason
from lewm_ros.control.settings import PARAMETERS, AgentSettings, SettingsError, build_settings, check_value
from lewm_ros.control.stats import ControlStats
from lewm_ros.control.surprise import SurpriseMonitor, threshold_from_bundle
from lewm_ros.ros import image_codec, parameter_table
from lewm_ros.ros.agent_sensors import Frame, Sensors
from lewm_ros.ros.commands import command_message, safe_message
from lewm_ros.ros.executor import ResponsiveExecutor

NODE_NAME = "lewm_agent"
GOAL_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
STATE_QOS = QoSProfile(depth=10)
LOG_REPEAT_S = 5.0  # a stop reason or resume is logged at most this often, with a count of the ones held back
EXIT_ACK_S = 0.5  # at exit, how long to wait for subscribers to acknowledge the safe command
class LewmAgent(LifecycleNode):
    """Camera frames in, joint commands out, through a LeWM bundle and a latent planner."""

    def __init__(self, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._declare_errors = parameter_table.declare_all(self, PARAMETERS)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._lock = threading.RLock()
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._active = False
        self._enabled = True
        self._entities: list[tuple[str, Any]] = []
        self._control_timer = None
        self._clear_runtime()

    # ---- parameters ------------------------------------------------------------------------------------

    def _on_set_parameters(self, changes: list[Parameter]) -> SetParametersResult:
        """Live parameters are validated here; the rest are read-only (their descriptors say so)."""
        by_name = {p.name: p for p in PARAMETERS}
        updates = {}
        for change in changes:
            param = by_name.get(change.name)
            if param is None:
                continue
            try:
                updates[change.name] = check_value(param, change.value)
            except SettingsError as err:
                return SetParametersResult(successful=False, reason=str(err))
        with self._lock:
            if self.settings is not None and updates:
                self.settings = replace(self.settings, **updates)
                self._limits = self.settings.limits()
                if self.loop is not None:
                    self.loop.limits, self.loop.warm_start = self._limits, self.settings.warm_start
                self._update_surprise_threshold()
        return SetParametersResult(successful=True)

    # ---- lifecycle -------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        started = time.perf_counter()
        try:
            self._configure()
        except Exception as err:  # any failure must leave the node alive and unconfigured
            self.get_logger().error(f"configure failed: {err}")
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        s = self.settings
        self.get_logger().info(
            f"configured in {time.perf_counter() - started:.1f} s: bundle {self.bundle_path} on {self.device} "
            f"({s.planner} {s.samples}x{s.iterations}, horizon {s.horizon}, replan every {s.receding_horizon} "
            f"block(s), {s.control_rate_hz:g} Hz, commands {s.command_type} on {s.command_topic})"
        )
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        with self._lock:
            self.mpc.reset()
            self.surprise.clear()
            self._active = True
            self._activated_at = time.monotonic()
            self._stopped = None
            self._tick_clock = None
            self._control_timer = self.create_timer(
                self.settings.control_period, self._tick, callback_group=self._control_group, clock=self.get_clock()
            )
        self.get_logger().info("active: controlling")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._halt("deactivated")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._halt_and_teardown("cleanup")

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._halt_and_teardown("shutdown")

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._halt_and_teardown("error")

    def _halt_and_teardown(self, why: str) -> TransitionCallbackReturn:
        self._halt(why)
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def _halt(self, why: str) -> None:
        """Stop the control timer and send the safe command once (a forward controller keeps the last one)."""
        with self._lock:
            was_active = self._active
            self._stop_control_timer()
            if self.command_pub is not None:
                self._publish_safe()
            if was_active:
                self.get_logger().info(f"{why}: safe command sent, control stopped")

    # ---- configure ---------------------------------------------------------------------------------------

    def _clear_runtime(self) -> None:
        self.settings: AgentSettings | None = None
        self.bundle = None
        self.bundle_path: Path | None = None
        self.device = None
        self.mpc = None
        self.loop: ControlLoop | None = None
        self.shaper: CommandShaper | None = None
        self.surprise = SurpriseMonitor(None)
        self.command_pub = None
        self.stats = ControlStats()
        self._goal_pixels: np.ndarray | None = None
        self.sensors = Sensors(self, self.stats)
        self._stopped: str | None = None
        self._latency_from: float | None = None
        self._tick_clock: int | None = None  # node-clock time (ns) of the last control tick
        self._block_timed = True  # every tick of the running block was on time (its surprise can be scored)
        self._precision = "fp32"
        self._encoder_precision = "fp32"
        self._warnings: list[str] = []
        self._log_limit = ReasonThrottle(period_s=LOG_REPEAT_S)
        self._limits = None  # lewm_ros.control.rules.Limits, from the settings at configure

    def _configure(self) -> None:
        from lewm_ros.control.assemble import AssemblyError, assemble

        if self._declare_errors:
            raise SettingsError("; ".join(self._declare_errors.values()))
        settings = build_settings(parameter_table.values(self, PARAMETERS))
        try:
            controller = assemble(settings.controller_spec(), log=self.get_logger().info)
        except AssemblyError as err:
            raise SettingsError(f"parameter {err}") from err
        bundle = controller.bundle
        action_dim = bundle.config.action.action_dim
        if len(settings.joint_names) != action_dim:
            raise SettingsError(
                f"joint_names has {len(settings.joint_names)} joints {list(settings.joint_names)}, the bundle "
                f"{controller.bundle_path} commands {action_dim}"
            )
        shaper = CommandShaper(action_dim, settings.action_scale, settings.max_command, settings.safe_action)
        for note in controller.notes:
            self.get_logger().info(note)
        for note in controller.fallbacks:  # what this device forced (precision, compile): also in diagnostics
            self._warn(note)
        self._precision, self._encoder_precision = controller.precision, controller.encoder_precision
        trained_dt = ((bundle.meta.get("training") or {}).get("data") or {}).get("control_dt")
        if isinstance(trained_dt, (int, float)) and abs(trained_dt * settings.control_rate_hz - 1.0) > 0.01:
            self._warn(
                f"control_rate_hz {settings.control_rate_hz:g} differs from the training data's "
                f"{1.0 / trained_dt:g} Hz: the model's predictions assume the training rate"
            )
        with self._lock:
            self.settings, self.bundle = settings, bundle
            self.sensors.configure(settings, bundle.image_size)
            self.bundle_path, self.device = controller.bundle_path, controller.device
            self.shaper = shaper
            self.mpc = controller.mpc
            self.loop = ControlLoop(controller.mpc, shaper, settings.limits(), self.surprise, settings.warm_start)
            self._limits = settings.limits()
            self._update_surprise_threshold()
        if settings.goal_image_path:
            self.sensors.pending_goal = self._read_goal_file(settings.goal_image_path)
        self._create_entities(settings)

    def _update_surprise_threshold(self) -> None:
        s = self.settings
        threshold = threshold_from_bundle(self.bundle.meta, s.surprise_factor, s.surprise_threshold)
        if threshold is None:
            self._warn("the bundle has no surprise calibration and surprise_threshold is 0: the alarm is off")
        self.surprise.threshold = threshold
        self.surprise.patience = s.surprise_patience

    def _read_goal_file(self, path: str) -> np.ndarray:
        import cv2

        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise SettingsError(f"goal_image_path {path!r}: not a readable image file")
        return self.sensors.fit(np.ascontiguousarray(bgr[..., ::-1]))

    def _create_entities(self, s: AgentSettings) -> None:
        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._control_group = MutuallyExclusiveCallbackGroup()
        self._report_group = MutuallyExclusiveCallbackGroup()
        command_type = Float64MultiArray if s.command_type == "float64_multi_array" else JointTrajectory
        self.command_pub = self._keep("pub", self.create_publisher(command_type, s.command_topic, STATE_QOS))
        self.surprise_pub = self._keep("pub", self.create_publisher(Float32, "~/surprise", STATE_QOS))
        self.cost_pub = self._keep("pub", self.create_publisher(Float32, "~/plan_cost", STATE_QOS))
        self.source_pub = self._keep("pub", self.create_publisher(Header, "~/plan_source", STATE_QOS))
        self.debug_pub = self._keep("pub", self.create_publisher(Image, "~/debug_image", qos_profile_sensor_data))
        self.diag_pub = self._keep("pub", self.create_publisher(DiagnosticArray, "/diagnostics", STATE_QOS))
        group, reports, inputs = self._sensor_group, self._report_group, self.sensors
        camera_type, camera_topic = Image, s.image_topic
        if s.compressed:
            camera_type, camera_topic = CompressedImage, s.image_topic.rstrip("/") + "/compressed"
        subscribe = self.create_subscription
        self._keep("sub", subscribe(camera_type, camera_topic, inputs.on_image, qos_profile_sensor_data,
                                    callback_group=group))  # fmt: skip
        self._keep("sub", subscribe(Image, s.goal_topic, inputs.on_goal, GOAL_QOS, callback_group=group))
        self._keep("sub", subscribe(JointState, s.joint_states_topic, inputs.on_joint_state, STATE_QOS,
                                    callback_group=group))  # fmt: skip
        self._keep("srv", self.create_service(Trigger, "~/set_goal_from_current", self._on_set_goal_from_current,
                                              callback_group=reports))  # fmt: skip
        self._keep("srv", self.create_service(SetBool, "~/enable", self._on_enable, callback_group=reports))
        self._keep("timer", self.create_timer(
            1.0 / s.diagnostics_rate_hz, self._publish_diagnostics, callback_group=self._report_group,
            clock=self._steady))  # fmt: skip
        self._keep("timer", self.create_timer(0.1, self._maybe_publish_debug, callback_group=self._report_group,
                                              clock=self._steady))  # fmt: skip
        self._watchdog_group = MutuallyExclusiveCallbackGroup()
        self._keep("timer", self.create_timer(s.control_period, self._watch_ticks,
                                              callback_group=self._watchdog_group, clock=self._steady))  # fmt: skip
        self._last_debug = 0.0

    def _keep(self, kind: str, entity: Any) -> Any:
        self._entities.append((kind, entity))
        return entity

    def _stop_control_timer(self) -> None:
        self._active = False
        if self._control_timer is not None:
            self.destroy_timer(self._control_timer)
            self._control_timer = None

    def _teardown(self) -> None:
        with self._lock:
            self._stop_control_timer()
            destroy = {"pub": self.destroy_publisher, "sub": self.destroy_subscription,
                       "srv": self.destroy_service, "timer": self.destroy_timer}  # fmt: skip
            for kind, entity in reversed(self._entities):
                destroy[kind](entity)
            self._entities.clear()
            self._clear_runtime()

    def _warn(self, text: str) -> None:
        self._warnings.append(text)
        self.get_logger().warning(text)

    # ---- sensor callbacks: decode and store only -------------------------------------------------------------

    # ---- services ------------------------------------------------------------------------------------------

    def _on_set_goal_from_current(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        frame = self.sensors.frame
        if frame is None or self.settings is None:
            response.success, response.message = False, "no camera frame received yet"
            return response
        self.sensors.pending_goal = frame.pixels.copy()
        age = 1000 * (time.monotonic() - frame.received)
        response.success, response.message = True, f"goal set from the camera frame received {age:.0f} ms ago"
        return response

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        with self._lock:
            self._enabled = bool(request.data)
            if self._enabled:
                self.surprise.clear()
                if self.mpc is not None:
                    self.mpc.reset()
        response.success = True
        response.message = "enabled" if request.data else "disabled: safe command until enabled"
        self.get_logger().info(response.message)
        return response

    # ---- control ---------------------------------------------------------------------------------------------

    def _stop_reason(self, now: float) -> str | None:
        frame = self.sensors.frame
        conditions = Conditions(
            enabled=self._enabled, surprise_alarm=self.surprise.alarm, has_goal=self.mpc.goal is not None,
            frame_age_ms=None if frame is None else 1000 * (now - frame.received),
            invalid_in_row=self.stats.invalid_in_row, has_measured_position=self.sensors.measured is not None,
        )  # fmt: skip
        return stop_reason(conditions, self._limits)

    def _tick(self) -> None:
        with self._lock:
            if not self._active:
                return
            now = time.monotonic()
            self.stats.tick_times.append(now)
            self._check_tick_start()
            try:
                self._apply_pending_goal()
                reason = self._stop_reason(now)
                if reason is None:
                    reason = self._control_step()
            except Exception as err:  # model/planner failures end in the safe command, not a crash
                self.stats.errors += 1
                reason = f"error: {type(err).__name__}: {err}"
            if reason is not None:
                self._stop(reason)

    def _watch_ticks(self) -> None:
        """Steady-clock watchdog: control ticks follow the node clock, which stops with /clock under use_sim_time
        (or never starts). While active, no command for longer than `_tick_stall_s()` means the loop stalled: send
        the safe command, since a forward controller would keep the last one forever."""
        if not self._active or not self._lock.acquire(blocking=False):
            return  # a tick (or a transition) holds the lock: the loop is alive, never queue behind it
        try:
            last = self.stats.last_command
            stalled = self._active and (math.isnan(last) or time.monotonic() - last > self._tick_stall_s())
            if stalled and self._activated_at + self._tick_stall_s() < time.monotonic():
                self.stats.stalls += 1
                self._publish_safe()
                self.mpc.reset()
                if self._stopped != "control ticks stalled":
                    self.get_logger().warning("safe command: control ticks stalled (is /clock running?)")
                    self._stopped = "control ticks stalled"
                    self.stats.stops["control ticks stalled"] += 1
        finally:
            self._lock.release()

    def _check_tick_start(self) -> None:
        """A tick more than half a period late means the previous command ran longer than the model was told."""
        clock = self.get_clock().now().nanoseconds
        last, self._tick_clock = self._tick_clock, clock
        if last is not None and clock - last > 1.5 * self.settings.control_period * 1e9:
            self._mark_late()

    def _check_command_time(self) -> None:
        """A command published after the next tick was due reached the arm late: the step before ran the old one."""
        if self._tick_clock is not None:
            if self.get_clock().now().nanoseconds - self._tick_clock > self.settings.control_period * 1e9:
                self._mark_late()

    def _mark_late(self) -> None:
        self.stats.late_ticks += 1
        self._block_timed = False

    def _tick_stall_s(self) -> float:
        """As long as the camera may be silent (frame_timeout_ms), and at least three control periods."""
        return max(3 * self.settings.control_period, self.settings.frame_timeout_ms / 1000.0)

    def _apply_pending_goal(self) -> None:
        goal = self.sensors.take_goal()
        if goal is not None:
            self.mpc.set_goal(goal)
            self._goal_pixels = goal
            self.stats.goals += 1

    def _control_step(self) -> str | None:
        """One tick of the ROS-free control loop (control/loop.py); this adds the frame pairing, the topics and
        the counters. Returns a stop reason instead of commanding when unsafe."""
        loop, stats = self.loop, self.stats
        frame, synchronised = self._synchronised_frame() if loop.at_block_start else (None, True)
        # The surprise compares the block's frame with what the model predicted from the actions it was told ran.
        # When a tick was late (the arm ran an old command longer) or the frame is not the block's own, it
        # measures our timing, not the world: counted (surprise_skipped), not scored.
        timed = self._block_timed and synchronised
        if loop.at_block_start:
            self._block_timed = True
        tick = loop.step(None if frame is None else frame.pixels, timed)
        if tick.surprise is not None and not tick.surprise_scored:
            stats.surprise_skipped += 1
        if tick.alarm_raised:
            self.get_logger().warning(
                f"surprise alarm: {tick.surprise:.3g} > {self.surprise.threshold:.3g} for "
                f"{self.surprise.patience} block(s): the world is not behaving as the model expects"
            )
        if tick.plan is not None:
            result = tick.plan
            stats.record_plan(result.time_ms, result.cost, result.partial, result.samples)
            self.cost_pub.publish(Float32(data=float(result.cost)))
            if tick.stop is None:
                self._latency_from = frame.received
                self.source_pub.publish(frame.header)  # which camera frame this plan saw: latency from a bag
            elif reason_key(tick.stop) == "plan overrun":
                stats.overruns += 1
        if tick.stop is not None:
            return tick.stop
        self._publish_command(tick.velocity)
        self._check_command_time()
        if self._latency_from is not None:
            self.stats.latency_ms.append(1000 * (time.monotonic() - self._latency_from))
            self._latency_from = None
        if not math.isnan(self.surprise.latest):
            self.surprise_pub.publish(Float32(data=float(self.surprise.latest)))
        if self._stopped is not None:
            held = self._log_limit.admit("resume after " + reason_key(self._stopped))
            if held is not None:
                more = f"; {held} more resumes after this reason in the last {LOG_REPEAT_S:g} s" if held else ""
                self.get_logger().info(f"resuming control (was stopped: {self._stopped}{more})")
            self._stopped = None
        return None

    def _synchronised_frame(self) -> tuple[Frame, bool]:
        """The newest frame; with frame_sync_ms > 0, wait up to that long for one stamped at or after this tick's
        clock time. Under use_sim_time the simulator stamps a frame with the step it shows, so this pairs each
        block boundary with the frame of that very step instead of, by a race, the step before."""
        limit = self.settings.frame_sync_ms / 1000.0
        frame = self.sensors.frame
        if limit <= 0:
            return frame, True
        tick = self.get_clock().now().nanoseconds
        deadline = time.monotonic() + limit
        while Time.from_msg(frame.header.stamp).nanoseconds < tick and time.monotonic() < deadline:
            time.sleep(0.0005)
            frame = self.sensors.frame
        synchronised = Time.from_msg(frame.header.stamp).nanoseconds >= tick
        self.stats.unsynchronised += int(not synchronised)
        return frame, synchronised

    def _stop(self, reason: str) -> None:
        self._publish_safe()
        key = reason_key(reason)
        # A stop for time keeps the planner's warm start: dropping it made the next plan a cold one, which on an
        # overloaded machine overran again, and the agent never left its safe state while the load lasted.
        self.loop.stop(reason)
        self._latency_from = None
        if reason != self._stopped:
            self.stats.stops[key] += 1
            held = self._log_limit.admit(reason)
            if held is not None:
                more = f" ({held} more held back in the last {LOG_REPEAT_S:g} s)" if held else ""
                self.get_logger().warning(f"safe command: {reason}{more}")
            self._stopped = reason

    def _publish_command(self, velocity: np.ndarray) -> None:
        stamp = self.get_clock().now().to_msg()
        self.command_pub.publish(command_message(self.settings, self.shaper, velocity, self.sensors.measured, stamp))
        self.stats.commands += 1
        self.stats.last_command = time.monotonic()

    def _publish_safe(self) -> None:
        if self.settings is None or self.command_pub is None:
            return
        try:
            msg = safe_message(self.settings, self.shaper, self.sensors.measured, self.get_clock().now().to_msg())
        except UnsafeCommandError as err:
            self.get_logger().error(f"cannot send the safe command: {err}", throttle_duration_sec=2.0)
            return
        self.command_pub.publish(msg)
        self.stats.safe_commands += 1
        self.stats.last_command = time.monotonic()

    # ---- observability ---------------------------------------------------------------------------------------

    def diagnostics(self) -> DiagnosticStatus:
        """The agent's health as one DiagnosticStatus (also used by tests and the in-process demo)."""
        stats, s = self.stats, self.settings
        now = time.monotonic()
        frame = self.sensors.frame
        state = "active" if self._active else ("inactive" if s is not None else "unconfigured")
        values = {
            "state": state,
            "enabled": str(self._enabled).lower(),
            "stopped": self._stopped or "",
            "bundle": str(self.bundle_path or ""),
            "device": str(self.device or ""),
            "precision": self._precision,
            "encoder_precision": self._encoder_precision,
            **stats.report(),
            "frame_age_ms": f"{1000 * (now - frame.received):.0f}" if frame else "",
            "roadmap_off_map_goals": str(roadmap.off_map_goals) if (roadmap := self._roadmap()) is not None else "",
            "surprise": f"{self.surprise.latest:.4g}",
            "surprise_threshold": "" if self.surprise.threshold is None else f"{self.surprise.threshold:.4g}",
            "surprise_alarm": str(self.surprise.alarm).lower(),
            "surprise_alarms": str(self.surprise.alarms),
            "stops": ", ".join(f"{k}={v}" for k, v in sorted(stats.stops.items())),
        }
        problems = []
        if self.surprise.alarm:
            problems.append("surprise alarm")
        if self._stopped and self._active:
            problems.append(f"holding: {self._stopped}")
        if stats.invalid_in_row:
            problems.append(f"{stats.invalid_in_row} invalid frame(s) in a row")
        if stats.dropped:
            problems.append("dropped frames")
        problems.extend(self._warnings)
        level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        if stats.errors and self._stopped and self._stopped.startswith("error"):
            level = DiagnosticStatus.ERROR
        return DiagnosticStatus(
            level=level, name=f"{self.get_name()}: latent MPC", hardware_id=str(self.bundle_path or ""),
            message="; ".join(problems) if problems else f"{state}, ok",
            values=[KeyValue(key=k, value=v) for k, v in values.items()],
        )  # fmt: skip

    def _roadmap(self) -> Any:
        return self.mpc.planner.roadmap if self.mpc is not None else None

    def _publish_diagnostics(self) -> None:
        if self.settings is None:
            return
        array = DiagnosticArray()
        array.header.stamp = self.get_clock().now().to_msg()
        array.status = [self.diagnostics()]
        self.diag_pub.publish(array)

    def _maybe_publish_debug(self) -> None:
        s = self.settings
        if s is None or s.debug_image_rate_hz <= 0 or self.sensors.frame is None:
            return
        now = time.monotonic()
        if now - self._last_debug < 1.0 / s.debug_image_rate_hz or self.debug_pub.get_subscription_count() == 0:
            return
        self._last_debug = now
        self.debug_pub.publish(image_codec.rgb_to_image(self.debug_view(), "rgb8", frame_id="lewm_debug"))

    def debug_view(self) -> np.ndarray:
        """Camera view beside the goal with cost, surprise and state written on it."""
        threshold = self.surprise.threshold
        lines = [
            f"cost {self.stats.last_cost:.3g}",
            f"surprise {self.surprise.latest:.3g}" + (f" / {threshold:.3g}" if threshold else ""),
            ("ALARM " if self.surprise.alarm else "") + (self._stopped or "running"),
        ]
        return debug_view(None if self.sensors.frame is None else self.sensors.frame.pixels, self._goal_pixels, lines)

    def publish_safe_and_stop(self) -> bool:
        """For Ctrl-C, SIGTERM and process exit: whatever the state, leave the arm with the safe command (when a
        command publisher exists, i.e. configured) and wait briefly for subscribers to acknowledge it, so it is
        not lost when the process ends right after. False when the safe command could not be sent."""
        try:
            with self._lock:
                sent_before = self.stats.safe_commands
                self._halt("exit")
                publisher = self.command_pub
                sent = self.stats.safe_commands > sent_before
            if publisher is not None and not sent:
                return False  # configured but the safe command was refused (hold without a measured position)
            if publisher is not None and not publisher.wait_for_all_acked(RosDuration(seconds=EXIT_ACK_S)):
                print(f"lewm_agent: the safe command was sent but not acknowledged within {EXIT_ACK_S:g} s",
                      file=sys.stderr)  # fmt: skip
            return True
        except Exception as err:  # the context may already be gone (external shutdown): say so, do not crash
            print(f"lewm_agent: could not send the safe command at exit: {err}", file=sys.stderr)
            return False


EXIT_OK = 0  # stopped by SIGINT/SIGTERM/shutdown with the safe command sent (or nothing was ever commanded)
EXIT_UNSAFE = 3  # the safe command could not be sent (safe_action hold without joint_states), or a second signal


def main(args: list[str] | None = None) -> int:
    """`ros2 run lewm_ros lewm_agent [--autostart]`: spin the agent; --autostart configures and activates it.

    SIGINT and SIGTERM (Ctrl-C, `docker stop`, systemd, `ros2 launch` shutdown) in any lifecycle state end the
    same way: the safe command (when configured), then exit within about a second with EXIT_OK, or EXIT_UNSAFE
    when the safe command could not be sent. A second signal while stopping exits at once (EXIT_UNSAFE)."""
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    from lewm_ros.ros.stop_signals import StopRequested, StopSignals

    argv = remove_ros_args(args if args is not None else sys.argv)
    autostart = "--autostart" in argv[1:]
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)  # ours: see stop_signals
    node: LewmAgent | None = None
    executor: ResponsiveExecutor | None = None
    status = EXIT_OK
    with StopSignals() as signals:
        try:
            node = LewmAgent()
            executor = ResponsiveExecutor(num_threads=4)
            executor.add_node(node)
            if autostart:
                node.trigger_configure()
                if node.settings is not None:
                    node.trigger_activate()
            else:
                node.get_logger().info("ready, unconfigured: configure and activate through ~/change_state")
            signals.spin(executor, rclpy.ok)
        except (StopRequested, KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            signals.starting = False
            if node is not None:
                if signals.signal_number:
                    node.get_logger().info(f"{signals.name}: stopping")
                if not node.publish_safe_and_stop():
                    status = EXIT_UNSAFE
            if executor is not None:
                executor.shutdown(timeout_sec=1.0)
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()
    return status

if __name__ == "__main__":
    sys.exit(main())
