"""How well the agent's surprise separates teleports from normal control, in the real-time demo graph.

mujoco_sim (real time, /clock) and lewm_agent from config/sim_reach.yaml in one process, as `lewm-ros sim-reach`
runs them, with `surprise_action: warn` so control never stops. Phase 1: `--normal-seconds` of simulated time of
normal control, re-targeting to a fresh reset every 8 s (the agent disabled around each reset, as
`lewm-ros sim-reach` does). Phase 2: `--teleports` teleports of the arm 2 s apart.
Every scored block surprise is recorded (the agent skips blocks whose timing broke; those are counted apart).
A teleport's peak is the largest scored surprise in the 1 s after it.

    MUJOCO_GL=egl .venv/bin/python bench/surprise_separation.py [--normal-seconds 60] [--teleports 20]

Prints normal p50/p99/max, the teleport peaks, the detection rate and false-alarm count at factors 3, 4 and 5
of the bundle's p99.9, and the agent's late-tick and skipped-surprise counts.
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


def call(node, srv_type, name: str, **fields) -> str:
    client = node.create_client(srv_type, name)
    if not client.wait_for_service(timeout_sec=10):
        raise RuntimeError(f"{name} not available")
    future = client.call_async(srv_type.Request(**fields))
    deadline = time.monotonic() + 10
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    node.destroy_client(client)
    return future.result().message


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normal-seconds", type=float, default=60.0)
    parser.add_argument("--teleports", type=int, default=20)
    args = parser.parse_args()

    import rclpy
    from rclpy.context import Context
    from rclpy.node import Node
    from std_srvs.srv import SetBool, Trigger

    from lewm_ros.ros.agent_node import LewmAgent
    from lewm_ros.ros.bringup import find_config, parameter_overrides
    from lewm_ros.ros.executor import ResponsiveExecutor
    from lewm_ros.ros.mujoco_sim import MujocoSim

    context = Context()
    rclpy.init(context=context, args=[])
    config = find_config("sim_reach.yaml")
    sim = MujocoSim(context=context, parameter_overrides=parameter_overrides(config, "mujoco_sim"))
    agent_params = parameter_overrides(config, "lewm_agent", {"surprise_action": "warn"})
    agent = LewmAgent(context=context, parameter_overrides=agent_params)
    probe = Node("surprise_probe", context=context)
    executor = ResponsiveExecutor(num_threads=6, context=context)
    for node in (sim, agent, probe):
        executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    scored: list[tuple[float, float]] = []  # (sim time, surprise)

    def run_for(sim_seconds: float) -> None:
        target = sim.sim_time + sim_seconds
        while sim.sim_time < target:
            time.sleep(0.02)

    try:
        agent.trigger_configure()
        update = agent.surprise.update
        agent.surprise.update = lambda value: scored.append((sim.sim_time, value)) or update(value)
        agent.trigger_activate()
        run_for(2.0)
        scored.clear()  # warm-up
        elapsed = 0.0
        while elapsed < args.normal_seconds:
            chunk = min(8.0, args.normal_seconds - elapsed)
            run_for(chunk)
            elapsed += chunk
            call(probe, SetBool, "/lewm_agent/enable", data=False)  # a reset is a jump too: as the demo driver does
            call(probe, Trigger, "/mujoco_sim/reset")
            call(probe, SetBool, "/lewm_agent/enable", data=True)
        normal_end = sim.sim_time
        normal = np.array([v for t, v in scored if t <= normal_end])
        peaks = []
        for _ in range(args.teleports):
            run_for(1.0)
            call(probe, Trigger, "/mujoco_sim/teleport")
            at = sim.sim_time
            run_for(1.0)
            window = [v for t, v in scored if at <= t <= at + 1.0]
            peaks.append(max(window) if window else float("nan"))
        stats = agent.stats
        p999 = agent.surprise.threshold / agent.settings.surprise_factor
        agent.trigger_deactivate()
    finally:
        executor.shutdown(timeout_sec=5.0)
        for node in (probe, agent, sim):
            node.destroy_node()
        context.try_shutdown()
    peaks_arr = np.array(peaks)
    result = {
        "normal_blocks": len(normal), "normal_p50": float(np.median(normal)),
        "normal_p99": float(np.percentile(normal, 99)), "normal_max": float(normal.max()),
        "teleport_peaks": sorted(round(p, 1) for p in peaks), "late_ticks": stats.late_ticks,
        "surprise_skipped": stats.surprise_skipped, "unsynchronised": stats.unsynchronised,
        "commands": stats.commands, "bundle_p99.9": p999,
    }  # fmt: skip
    print(json.dumps(result))
    print("\n| factor x p99.9 | threshold | teleports detected | normal blocks above (false alarms) |")
    print("|---|---|---|---|")
    for factor in (3.0, 4.0, 5.0):
        threshold = factor * p999
        detected, false = int(np.sum(peaks_arr > threshold)), int(np.sum(normal > threshold))
        print(f"| {factor:g} | {threshold:.0f} | {detected}/{len(peaks)} | {false}/{len(normal)} |")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
