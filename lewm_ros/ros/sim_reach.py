"""`lewm-ros sim-reach`: the reaching demo graph (mujoco_sim + lewm_agent, config/sim_reach.yaml) in one process.

It is what `ros2 launch lewm_ros sim_reach.launch.py` starts, for machines without `ros2 launch`. A driver node
runs N episodes through ROS interfaces only: for each, it pauses the agent (`/lewm_agent/enable` false), asks
the simulator for a new start and goal (`/mujoco_sim/reset`), waits for the new goal image, resumes the agent,
and watches `/mujoco_sim/success` until success or the episode's simulated-time budget. It prints each outcome
and the success rate, and writes summary.json and a video (camera beside goal, with the surprise and plan-cost
traces) to --out.

--record DIR also runs the bag recorder (lewm_ros/ros/bag_recorder.py) in the same executor: the camera,
commands, joint states, goal image, surprise and plan source go into a rosbag2 directory stamped with simulated
time (the recorder follows /clock), and each episode is framed by `/bag_recorder/mark_episode` calls: start
when the agent is resumed after the reset, stop at success or the budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

VIDEO_SIDE = 192  # pixels per panel in the video
TRACE_HEIGHT = 96


def register(subparsers: argparse._SubParsersAction) -> None:
    from lewm_ros.arguments import float_in, int_in

    parser = subparsers.add_parser(
        "sim-reach", help="the reaching demo (MuJoCo sim + LeWM agent over ROS 2) in one process",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--episodes", type=int_in(1, 100_000), default=3, help="episodes to run (default 3)")
    parser.add_argument("--episode-seconds", type=float_in(0.0, 3600.0, low_open=True), default=10.0,
                        help="simulated seconds per episode before it counts as a failure (default 10)")
    parser.add_argument("--out", type=Path, default=Path("sim_reach_out"), help="summary.json and video go here")
    parser.add_argument("--config", default="sim_reach.yaml", help="parameter YAML for the graph")
    parser.add_argument("--scene", help="MJCF scene (overrides the YAML)")
    parser.add_argument("--bundle", help="model bundle (overrides the YAML)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="agent device (overrides the YAML)")
    parser.add_argument("--speed-factor", type=float_in(0.0, 1000.0),
                        help="simulated seconds per wall second, 0 = as fast as possible (overrides the YAML)")
    parser.add_argument("--headless", action="store_true",
                        help="accepted for parity with the launch file; this command never opens a window")
    parser.add_argument("--no-video", action="store_true", help="skip the video")
    parser.add_argument("--video-format", choices=("gif", "mp4"), default="gif",
                        help="mp4 needs an ffmpeg backend for imageio (imageio-ffmpeg); gif always works")
    parser.add_argument("--record", type=Path, metavar="DIR",
                        help="also record a rosbag2 directory (must not exist) with episode markers")
    parser.add_argument("--record-storage", choices=("mcap", "sqlite3"), default="mcap",
                        help="storage of --record (default mcap)")
    parser.set_defaults(run=run)


@dataclass
class EpisodeResult:
    episode: int
    success: bool
    sim_seconds: float  # simulated time until success or the budget
    final_goal_error: float  # rad, max over joints
    min_goal_error: float
    surprise_max: float
    message: str


@dataclass
class Recording:
    """What the driver saw, for the video: frames with the surprise and cost at that moment."""

    frames: list[tuple[np.ndarray, np.ndarray, float, float, int]] = field(default_factory=list)
    every: int = 2  # keep every n-th camera frame


def run(args: argparse.Namespace) -> int:
    try:
        summary = run_demo(args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"lewm-ros sim-reach: error: {err}", file=sys.stderr)
        return 1
    except Exception as err:  # a node refusing its parameters (rclpy ParameterException, ...): one line, no traceback
        print(f"lewm-ros sim-reach: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(results_block(summary, args.out / "summary.json"), flush=True)
    return 0


def results_block(summary: dict[str, Any], summary_path: Path) -> str:
    """The demo's outcome as a block a person finds at the end of the log, whatever the nodes logged before."""
    agent = summary.get("agent", {})
    lines = ["", "=" * 72, f"sim-reach: {summary['successes']}/{summary['episodes']} goals reached "
             f"({summary['success_rate']:.0%}) in {summary.get('wall_seconds', float('nan')):.0f} s"]  # fmt: skip
    for r in summary["results"]:
        outcome = "success" if r["success"] else "failure"
        lines.append(f"  episode {r['episode']}: {outcome:7s} {r['sim_seconds']:6.2f} s simulated, "
                     f"goal error {r['final_goal_error']:.3f} rad")  # fmt: skip
    if agent:
        lines.append(f"  agent: {agent.get('control_rate_hz')} commands/s, plan p50/p95 {agent.get('plan_ms_p50')}/"
                     f"{agent.get('plan_ms_p95')} ms at {agent.get('plan_samples')} samples, "
                     f"{agent.get('safe_commands')} safe commands ({agent.get('stops') or 'no stops'})")  # fmt: skip
    video = f", video {summary['video']}" if "video" in summary else ""
    lines += [f"  summary in {summary_path}{video}", "=" * 72]
    return "\n".join(lines)


def run_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Build the graph, run the episodes, write the outputs; returns the summary."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from lewm_ros.model.bundle import read_meta
    from lewm_ros.model.shipped import find_bundle
    from lewm_ros.ros.agent_node import LewmAgent
    from lewm_ros.ros.bag_recorder import DEFAULT_TOPICS, BagRecorder
    from lewm_ros.ros.bringup import find_config, node_section, parameter_overrides
    from lewm_ros.ros.executor import ResponsiveExecutor
    from lewm_ros.ros.mujoco_sim import MujocoSim

    config = find_config(args.config)
    bundle = args.bundle or node_section(config, "lewm_agent").get("bundle", "reach2d")
    read_meta(find_bundle(bundle))  # a missing or broken bundle fails here, before any node starts
    sim_overrides = {k: v for k, v in (("scene", args.scene), ("speed_factor", args.speed_factor)) if v is not None}
    agent_overrides = {k: v for k, v in (("bundle", args.bundle), ("device", args.device)) if v is not None}
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    context = Context()
    rclpy.init(context=context, args=[])
    nodes: list[Any] = []
    executor = ResponsiveExecutor(num_threads=6, context=context)
    recorder: Any = None
    recording: dict[str, Any] | None = None
    try:
        if args.record is not None:  # first: a bad output directory fails before anything starts
            recorder = BagRecorder(context=context, parameter_overrides=[
                Parameter("output", value=str(args.record)), Parameter("storage", value=args.record_storage),
                Parameter("use_sim_time", value=True),
            ])  # fmt: skip
            nodes.append(recorder.node)
        sim = MujocoSim(context=context, parameter_overrides=parameter_overrides(config, "mujoco_sim", sim_overrides))
        nodes.append(sim)
        agent = LewmAgent(context=context,
                          parameter_overrides=parameter_overrides(config, "lewm_agent", agent_overrides))  # fmt: skip
        nodes.append(agent)
        driver = DemoDriver(context, record=recorder is not None)
        nodes.append(driver.node)
        for node in nodes:
            executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        if str(agent.trigger_configure()) != "TransitionCallbackReturnType.SUCCESS":
            raise RuntimeError("lewm_agent failed to configure (see its log above)")
        agent.trigger_activate()
        if recorder is not None:
            missing = recorder.wait_for_topics(DEFAULT_TOPICS, timeout=10.0)
            if missing:
                print(f"warning: not recording {', '.join(missing)} (no publisher appeared)", flush=True)
        results = [driver.run_episode(i, args.episode_seconds) for i in range(args.episodes)]
        agent.trigger_deactivate()
        diagnostics = {kv.key: kv.value for kv in agent.diagnostics().values}
    finally:
        executor.shutdown(timeout_sec=5.0)
        if recorder is not None:
            recording = asdict(recorder.close())
        for node in reversed(nodes):
            node.destroy_node()
        context.try_shutdown()
    successes = sum(r.success for r in results)
    summary = {
        "episodes": len(results), "successes": successes, "success_rate": successes / len(results),
        "episode_seconds": args.episode_seconds, "config": str(config),
        "wall_seconds": round(time.monotonic() - started, 1),
        "overrides": {"mujoco_sim": sim_overrides, "lewm_agent": agent_overrides},
        "agent": diagnostics, "results": [asdict(r) for r in results],
    }  # fmt: skip
    if recording is not None:
        summary["recording"] = recording
        print(f"recorded {recording['messages']} messages into {recording['path']} "
              f"({len(recording['episodes'])} episodes, {recording['dropped']} dropped)", flush=True)  # fmt: skip
    if not args.no_video and driver.recording.frames:
        summary["video"] = str(write_video(driver.recording, args.out, args.video_format))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class DemoDriver:
    """Runs episodes through the demo graph's ROS interfaces only."""

    def __init__(self, context: Any, record: bool = False) -> None:
        from rclpy.node import Node
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image
        from std_msgs.msg import Bool, Float32, Float64
        from std_srvs.srv import SetBool, Trigger

        self.node = Node("sim_reach_driver", context=context)
        goal_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)  # fmt: skip
        self.recording = Recording()
        self._lock = threading.Lock()
        self._goal_count = 0
        self._goal: np.ndarray | None = None
        self._success = False
        self._error = float("nan")
        self._errors: list[float] = []
        self._surprise = float("nan")
        self._surprises: list[float] = []
        self._cost = float("nan")
        self._sim_time = 0.0
        self._camera_count = 0
        self._episode: int | None = None
        self._reset = self.node.create_client(Trigger, "/mujoco_sim/reset")
        self._enable = self.node.create_client(SetBool, "/lewm_agent/enable")
        self._mark = self.node.create_client(SetBool, "/bag_recorder/mark_episode") if record else None
        self._trigger, self._set_bool = Trigger, SetBool
        sub = self.node.create_subscription
        sub(Image, "/goal/image_raw", self._on_goal, goal_qos)
        sub(Image, "/camera/image_raw", self._on_camera, qos_profile_sensor_data)
        sub(Bool, "/mujoco_sim/success", self._on_success, 10)
        sub(Float64, "/mujoco_sim/goal_error", self._on_error, 10)
        sub(Float32, "/lewm_agent/surprise", self._on_surprise, 10)
        sub(Float32, "/lewm_agent/plan_cost", self._on_cost, 10)
        sub(Clock, "/clock", self._on_clock, 10)

    # ---- subscriptions -----------------------------------------------------------------------------------------

    def _on_goal(self, msg: Any) -> None:
        from lewm_ros.ros.image_codec import to_rgb

        with self._lock:
            self._goal = np.array(to_rgb(msg))
            self._goal_count += 1

    def _on_camera(self, msg: Any) -> None:
        from lewm_ros.ros.image_codec import to_rgb

        self._camera_count += 1
        if self._goal is None or self._episode is None or self._camera_count % self.recording.every:
            return
        self.recording.frames.append((np.array(to_rgb(msg)), self._goal, self._surprise, self._cost, self._episode))

    def _on_success(self, msg: Any) -> None:
        self._success = self._success or bool(msg.data)

    def _on_error(self, msg: Any) -> None:
        self._error = float(msg.data)
        self._errors.append(self._error)

    def _on_surprise(self, msg: Any) -> None:
        self._surprise = float(msg.data)
        self._surprises.append(self._surprise)

    def _on_cost(self, msg: Any) -> None:
        self._cost = float(msg.data)

    def _on_clock(self, msg: Any) -> None:
        self._sim_time = msg.clock.sec + msg.clock.nanosec * 1e-9

    # ---- episodes ----------------------------------------------------------------------------------------------

    def _call(self, client: Any, request: Any, timeout: float = 30.0) -> Any:
        if not client.wait_for_service(timeout_sec=timeout):
            raise RuntimeError(f"service {client.srv_name} is not available")
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            if time.monotonic() > deadline:
                raise RuntimeError(f"service {client.srv_name} did not answer within {timeout:.0f} s")
            time.sleep(0.01)
        return future.result()

    def _mark_episode(self, start: bool) -> None:
        """Frame the episode in the bag (when recording): the recorder writes "start N" / "stop N"."""
        if self._mark is not None:
            reply = self._call(self._mark, self._set_bool.Request(data=start))
            if not reply.success:
                raise RuntimeError(f"/bag_recorder/mark_episode failed: {reply.message}")

    def run_episode(self, index: int, budget_s: float) -> EpisodeResult:
        self._episode = None  # no video frames while the arm is reset
        self._call(self._enable, self._set_bool.Request(data=False))
        goals_before = self._goal_count
        reply = self._call(self._reset, self._trigger.Request())
        if not reply.success:
            raise RuntimeError(f"/mujoco_sim/reset failed: {reply.message}")
        deadline = time.monotonic() + 10.0
        while self._goal_count == goals_before and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # let the agent take the new goal too (same transient-local message)
        self._episode = index
        self._success, self._errors, self._surprises = False, [], []
        self._surprise = self._cost = float("nan")
        start = self._sim_time
        self._mark_episode(True)
        self._call(self._enable, self._set_bool.Request(data=True))
        stalled_since = time.monotonic()
        last_time = self._sim_time
        while not self._success and self._sim_time - start < budget_s:
            time.sleep(0.02)
            if self._sim_time != last_time:
                last_time, stalled_since = self._sim_time, time.monotonic()
            elif time.monotonic() - stalled_since > 10.0:
                raise RuntimeError("the simulation clock stopped advancing")
        self._mark_episode(False)
        result = EpisodeResult(
            episode=index, success=self._success, sim_seconds=round(self._sim_time - start, 3),
            final_goal_error=self._error, min_goal_error=float(min(self._errors, default=float("nan"))),
            surprise_max=float(max(self._surprises, default=float("nan"))), message=reply.message,
        )  # fmt: skip
        outcome = "success" if result.success else "failure"
        print(f"episode {index}: {outcome} after {result.sim_seconds:.2f} s simulated, goal error "
              f"{result.final_goal_error:.3f} rad (min {result.min_goal_error:.3f})", flush=True)  # fmt: skip
        return result


def write_video(recording: Recording, out: Path, fmt: str) -> Path:
    """Camera beside goal, with the surprise (red) and plan cost (blue) traces of the episode underneath."""
    import cv2
    import imageio.v2 as imageio

    frames = []
    for i, (camera, goal, _, _, episode) in enumerate(recording.frames):
        panels = [cv2.resize(p, (VIDEO_SIDE, VIDEO_SIDE), interpolation=cv2.INTER_NEAREST) for p in (camera, goal)]
        top = np.concatenate(panels, axis=1)
        history = [f for f in recording.frames[: i + 1] if f[4] == episode]
        trace = np.full((TRACE_HEIGHT, top.shape[1], 3), 255, np.uint8)
        for column, colour in ((2, (220, 30, 30)), (3, (30, 60, 220))):
            values = np.array([f[column] for f in history], np.float64)
            finite = np.isfinite(values)
            if finite.sum() < 2:
                continue
            scale = values[finite].max() or 1.0
            xs = np.linspace(0, top.shape[1] - 1, len(values))[finite]
            ys = TRACE_HEIGHT - 4 - (values[finite] / scale) * (TRACE_HEIGHT - 8)
            points = np.stack([xs, ys], axis=1).astype(np.int32)
            cv2.polylines(trace, [points], False, colour, 1, cv2.LINE_AA)
        cv2.putText(top, f"episode {episode}", (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1)
        cv2.putText(top, "goal", (VIDEO_SIDE + 6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1)
        cv2.putText(trace, "surprise", (4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (220, 30, 30), 1)
        cv2.putText(trace, "plan cost", (80, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (30, 60, 220), 1)
        frames.append(np.concatenate([top, trace], axis=0))
    path = out / f"sim_reach.{fmt}"
    if fmt == "gif":
        imageio.mimsave(path, frames, duration=1000 * 0.05 * recording.every, loop=0)
    else:
        imageio.mimsave(path, frames, fps=round(20 / recording.every))
    return path
