"""Camera -> agent -> command latency over real DDS on loopback, with the agent in its own process.

This process plays the robot: a reach2d arm simulated in real time (one control step per 1/rate seconds with
the latest command held, like a forward command controller), its camera published at the control rate with
the wall-clock stamp, the goal image (transient-local) and /joint_states. The agent (`lewm_agent --autostart`)
runs as a separate process, as on a robot. For every new plan the agent echoes the source frame's header on
`~/plan_source`; latency = arrival of the first command after it - that frame's stamp (same clock, one machine).

    MUJOCO_GL=egl .venv/bin/python bench/agent_latency.py [--seconds 20] [--rows default light heavy] [--load N]

--load N runs every row twice: on the machine as it is, then with N busy-loop processes (started and stopped
here) competing for the cores, as perception, logging and rosbag do on a robot's computer. Rows ending in
_fixed turn adaptive_samples off: the agent's behaviour before it sized its plans to the machine.

Prints one JSON line per row (agent settings), then a markdown table and the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import numpy as np

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(101, 200)))
os.environ.setdefault("MUJOCO_GL", "egl")

ROWS: dict[str, dict[str, object]] = {
    "default": {},  # config/lewm_agent.yaml defaults
    "default_1thread": {"torch_threads": 1},  # the camera/sim process shares the 2 cores
    "default_fixed": {"adaptive_samples": False},  # the defaults as they were before adaptive_samples
    "demo": {"torch_threads": 1, "planner": "cem", "samples": 64, "iterations": 6, "warm_iterations": 2,
             "elites": 8, "deadline_ms": 25.0},  # config/sim_reach.yaml's agent
    "demo_fixed": {"torch_threads": 1, "planner": "cem", "samples": 64, "iterations": 6, "warm_iterations": 2,
                   "elites": 8, "deadline_ms": 25.0, "adaptive_samples": False},
    "light": {"planner": "icem", "samples": 64, "iterations": 6, "warm_iterations": 2, "elites": 8},
    "heavy": {"planner": "cem", "samples": 300, "iterations": 30, "warm_iterations": 10, "elites": 30,
              "deadline_ms": 0.0, "plan_overrun_ms": 60000.0},
}  # fmt: skip


def ros_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(ros_value(v) for v in value) + "]"
    return str(value)


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[None]:
    """`count` processes spinning in pure Python for as long as the block runs; always stopped afterwards."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def start_agent(bundle: str, params: dict[str, object]) -> subprocess.Popen:
    values = {"bundle": bundle, "joint_names": ["shoulder", "elbow"], "device": "cpu", **params}
    args = [sys.executable, "-m", "lewm_ros.ros.agent_node", "--autostart", "--ros-args"]
    for key, value in values.items():
        args += ["-p", f"{key}:={ros_value(value)}"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_row(name: str, params: dict[str, object], bundle: str, seconds: float, warmup: float, rate: float,
            seed: int) -> dict:  # fmt: skip
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray, Header

    from lewm_ros.envs.reach_env import ReachConfig, ReachEnv
    from lewm_ros.ros import image_codec

    context = Context()
    rclpy.init(context=context)
    node = Node("agent_latency_bench", context=context)
    goal_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    camera = node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    goal = node.create_publisher(Image, "/goal/image_raw", goal_qos)
    joints = node.create_publisher(JointState, "/joint_states", 10)
    latest = {"command": np.zeros(2)}
    commands: list[tuple[float, np.ndarray]] = []
    sources: list[tuple[float, float]] = []  # (arrival, source frame stamp), wall clock
    diagnostics: list[DiagnosticArray] = []

    def on_command(msg: Float64MultiArray) -> None:
        latest["command"] = np.asarray(msg.data, np.float64)
        commands.append((time.time(), latest["command"]))

    def on_source(msg: Header) -> None:
        sources.append((time.time(), msg.stamp.sec + msg.stamp.nanosec * 1e-9))

    node.create_subscription(Float64MultiArray, "/velocity_controller/commands", on_command, 50)
    node.create_subscription(Header, "/lewm_agent/plan_source", on_source, 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    env = ReachEnv("reach2d", ReachConfig(image_size=64))
    env.reset(seed)
    goal.publish(image_codec.rgb_to_image(env.goal_image()))
    agent = start_agent(bundle, params)
    period = 1.0 / rate
    try:
        deadline = time.monotonic() + 120
        while not commands and time.monotonic() < deadline and agent.poll() is None:  # configure + warm-up
            camera.publish(image_codec.rgb_to_image(env.render(), stamp=node.get_clock().now().to_msg()))
            time.sleep(period)
        if not commands:
            raise RuntimeError(f"agent sent no command: {agent.stderr.read() if agent.poll() is not None else ''}")
        started = time.time()
        next_tick = time.monotonic()
        while time.time() - started < warmup + seconds:
            env.step(latest["command"] / env.max_joint_speed)
            stamp = node.get_clock().now().to_msg()
            camera.publish(image_codec.rgb_to_image(env.render(), stamp=stamp))
            state = JointState(name=list(env.joint_names), position=env.qpos.tolist(), velocity=env.qvel.tolist())
            joints.publish(state)
            next_tick += period
            time.sleep(max(0.0, next_tick - time.monotonic()))
    finally:
        agent.send_signal(signal.SIGINT)
        try:
            agent.wait(timeout=10)
        except subprocess.TimeoutExpired:
            agent.kill()
        executor.shutdown()
        node.destroy_node()
        context.try_shutdown()
        env.close()
    window = (started + warmup, started + warmup + seconds)
    arrivals = np.array([t for t, _ in commands])
    latency = []
    for arrived, stamp in sources:
        if not window[0] <= arrived <= window[1]:
            continue
        after = arrivals[arrivals >= arrived]
        if len(after):
            latency.append(1000 * (after[0] - stamp))
    in_window = [(t, c) for t, c in commands if window[0] <= t <= window[1]]
    agent_view = {kv.key: kv.value for kv in diagnostics[-1].status[0].values} if diagnostics else {}
    lat = np.array(latency) if latency else np.array([np.nan])
    return {
        "row": name, "params": params, "seconds": seconds,
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 1),
        "latency_ms_p95": round(float(np.percentile(lat, 95)), 1),
        "latency_ms_max": round(float(np.max(lat)), 1),
        "plans": len(latency),
        "control_rate_hz": round(len(in_window) / seconds, 2),
        "moving_commands": sum(1 for _, c in in_window if np.any(c != 0)),
        "moving_fraction": round(sum(1 for _, c in in_window if np.any(c != 0)) / max(1, len(in_window)), 3),
        "agent_plan_samples": agent_view.get("plan_samples"),
        "agent_plan_ms_p50": agent_view.get("plan_ms_p50"), "agent_plan_ms_p95": agent_view.get("plan_ms_p95"),
        "agent_camera_to_command_ms_p95": agent_view.get("camera_to_command_ms_p95"),
        "agent_stops": agent_view.get("stops"), "partial_plans": agent_view.get("partial_plans"),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="reach2d")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per row")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds ignored after the first command")
    parser.add_argument("--rate", type=float, default=20.0, help="camera and simulation rate (Hz)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--load", type=int, default=0, help="also run every row under N busy-loop processes")
    args = parser.parse_args()
    from lewm_ros.model.precision import machine_description

    results = []
    for name in args.rows:
        for load in ([0, args.load] if args.load > 0 else [0]):
            with busy_loops(load):
                result = run_row(name, ROWS[name], args.bundle, args.seconds, args.warmup, args.rate, args.seed)
            result["load"] = load
            print(json.dumps(result), flush=True)
            results.append(result)
    print("\n| row | load | commands/s | moving | camera->command p50 / p95 / max (ms) | plan p50 / p95 (ms) | "
          "samples | stops |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['row']} | {r['load']} | {r['control_rate_hz']} | {r['moving_fraction']:.0%} | "
              f"{r['latency_ms_p50']} / {r['latency_ms_p95']} / {r['latency_ms_max']} | "
              f"{r['agent_plan_ms_p50']} / {r['agent_plan_ms_p95']} | {r['agent_plan_samples']} | {r['agent_stops']} |")
    print("machine:", json.dumps(machine_description("cpu")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
