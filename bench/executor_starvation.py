"""Control-tick regularity of the agent under rclpy's stock MultiThreadedExecutor and under ResponsiveExecutor.

One process, as in the agent tests and `lewm-ros sim-reach`: the agent (shipped reach2d bundle, 20 Hz, small
MPPI planner) and a feeder node (camera at 30 Hz, goal image) share one executor with 4 workers. rclpy 7.1.6
re-submits tasks still queued in the worker pool in a tight loop (ros2/rclpy#1452), which starves the workers;
lewm_ros/ros/executor.py fixes that. For each executor and trial: the control ticks in `--seconds` and the gaps
between them.

    MUJOCO_GL=egl .venv/bin/python bench/executor_starvation.py [--trials 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import threading
import time

import numpy as np

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(101, 200)))
os.environ.setdefault("MUJOCO_GL", "egl")

AGENT = {"joint_names": ["shoulder", "elbow"], "device": "cpu", "planner": "mppi", "samples": 24, "iterations": 2,
         "warm_iterations": 1, "elites": 4, "horizon": 3, "deadline_ms": 0.0, "plan_overrun_ms": 2000.0}  # fmt: skip


def trial(executor_cls: type, seconds: float, start: np.ndarray, goal: np.ndarray) -> dict:
    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from lewm_ros.ros import image_codec
    from lewm_ros.ros.agent_node import LewmAgent

    context = Context()
    rclpy.init(context=context)
    agent = LewmAgent(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in AGENT.items()])
    feeder = Node("starvation_feeder", context=context)
    camera = feeder.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    goal_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    goal_pub = feeder.create_publisher(Image, "/goal/image_raw", goal_qos)
    executor = executor_cls(num_threads=4, context=context)
    executor.add_node(agent)
    executor.add_node(feeder)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        agent.trigger_configure()
        goal_pub.publish(image_codec.rgb_to_image(goal))
        frame = image_codec.rgb_to_image(start)
        for _ in range(15):  # let the goal and a first frame arrive before control starts
            camera.publish(frame)
            time.sleep(1 / 30)
        agent.trigger_activate()
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            camera.publish(frame)
            time.sleep(1 / 30)
        ticks = np.array([t for t in agent.stats.tick_times if t >= began])
        agent.trigger_deactivate()
    finally:
        executor.shutdown(timeout_sec=2.0)
        agent.destroy_node()
        feeder.destroy_node()
        context.try_shutdown()
    gaps = 1000 * np.diff(ticks) if len(ticks) > 1 else np.array([seconds * 1000])
    return {"ticks": len(ticks), "gap_p50_ms": float(np.median(gaps)), "gap_p99_ms": float(np.percentile(gaps, 99)),
            "gap_max_ms": float(gaps.max())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    from rclpy.executors import MultiThreadedExecutor

    from lewm_ros.envs.reach_env import ReachConfig, ReachEnv
    from lewm_ros.ros.executor import ResponsiveExecutor

    with ReachEnv("reach2d", ReachConfig(image_size=64)) as env:
        start = env.reset(7).observation.pixels.copy()
        goal = env.goal_image()
    results: dict[str, list[dict]] = {"MultiThreadedExecutor": [], "ResponsiveExecutor": []}
    for _ in range(args.trials):  # interleaved, so drift in the machine's load hits both alike
        for name, cls in (("MultiThreadedExecutor", MultiThreadedExecutor), ("ResponsiveExecutor", ResponsiveExecutor)):
            row = trial(cls, args.seconds, start, goal)
            results[name].append(row)
            print(json.dumps({"executor": name, **row}), flush=True)
    expected = int(args.seconds * 20)
    print(f"\n| executor | ticks in {args.seconds:g} s (expected {expected}), min..max | gap p99 ms (median of trials) "
          "| worst gap ms |")  # fmt: skip
    print("|---|---|---|---|")
    summary = {}
    for name, rows in results.items():
        ticks = [r["ticks"] for r in rows]
        p99 = float(np.median([r["gap_p99_ms"] for r in rows]))
        worst = max(r["gap_max_ms"] for r in rows)
        summary[name] = (np.mean(ticks), worst)
        print(f"| {name} | {min(ticks)}..{max(ticks)} | {p99:.0f} | {worst:.0f} |")
    stock, fixed = summary["MultiThreadedExecutor"], summary["ResponsiveExecutor"]
    print(f"\nmean ticks ratio (responsive / stock): {fixed[0] / stock[0]:.2f}x; worst gap ratio (stock / responsive): "
          f"{stock[1] / fixed[1]:.1f}x")  # fmt: skip
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
