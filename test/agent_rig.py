"""Test rig for the agent node: a real `lewm_agent` and a second rclpy node playing camera, goal publisher,
joint-state source and controller, all over DDS on loopback in one ResponsiveExecutor (a MultiThreadedExecutor).

Closed-loop tests with a simulated arm use the real mujoco_sim node (test_sim_reach.py).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float32, Float64MultiArray
from trajectory_msgs.msg import JointTrajectory

from lewm_ros.ros import image_codec
from lewm_ros.ros.agent_node import LewmAgent
from lewm_ros.ros.executor import ResponsiveExecutor

JOINTS = ["shoulder", "elbow"]
GOAL_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Small, fast planner settings: the tests check behaviour, not plan quality.
# A generous overrun limit: a loaded CI machine must not turn behaviour tests into overrun stops (the overrun
# test sets its own).
FAST = {"samples": 24, "iterations": 2, "warm_iterations": 1, "elites": 4, "horizon": 3, "deadline_ms": 0.0,
        "plan_overrun_ms": 2000.0}  # fmt: skip


@dataclass
class Received:
    commands: list = field(default_factory=list)  # (monotonic time, values) for arrays, (time, msg) for trajectories
    surprise: list = field(default_factory=list)
    diagnostics: list = field(default_factory=list)


class AgentRig:
    """Starts an agent with parameter overrides and a rig node; call close() (or use as a context manager)."""

    def __init__(self, context, command_type: str = "float64_multi_array", **params) -> None:
        values = {"joint_names": JOINTS, **FAST, "command_type": command_type, **params}
        overrides = [Parameter(k, value=v) for k, v in values.items()]
        self.agent = LewmAgent(context=context, parameter_overrides=overrides)
        self.node = Node("agent_test_rig", context=context)
        self.received = Received()
        self.commands: queue.Queue = queue.Queue()
        self.camera = self.node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.compressed = self.node.create_publisher(
            CompressedImage, "/camera/image_raw/compressed", qos_profile_sensor_data
        )
        self.goal = self.node.create_publisher(Image, "/goal/image_raw", GOAL_QOS)
        self.joints = self.node.create_publisher(JointState, "/joint_states", 10)
        command_msg = Float64MultiArray if command_type == "float64_multi_array" else JointTrajectory
        self.node.create_subscription(command_msg, "/velocity_controller/commands", self._on_command, 50)
        self.node.create_subscription(Float32, "/lewm_agent/surprise", self._on_surprise, 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.received.diagnostics.append, 10)
        self.executor = ResponsiveExecutor(num_threads=4, context=context)
        self.executor.add_node(self.agent)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()

    def _on_command(self, msg) -> None:
        values = list(msg.data) if isinstance(msg, Float64MultiArray) else msg
        self.received.commands.append((time.monotonic(), values))
        self.commands.put(values)

    def _on_surprise(self, msg: Float32) -> None:
        self.received.surprise.append(msg.data)

    def wait_for_subscribers(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.camera.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.camera.get_subscription_count() > 0, "the agent's camera subscription never matched"

    def publish_frame(self, pixels: np.ndarray, **kwargs) -> None:
        self.camera.publish(image_codec.rgb_to_image(pixels, **kwargs))

    def publish_joint_state(self, positions) -> None:
        msg = JointState(name=JOINTS, position=[float(p) for p in positions], velocity=[0.0, 0.0])
        self.joints.publish(msg)

    def stream(self, pixels: np.ndarray, seconds: float, rate_hz: float = 40.0) -> None:
        """A static camera: the same frame at `rate_hz` for `seconds`."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.publish_frame(pixels)
            time.sleep(1.0 / rate_hz)

    def commands_since(self, t0: float) -> list:
        return [values for t, values in self.received.commands if t >= t0]

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.agent.destroy_node()
        self.node.destroy_node()

    def __enter__(self) -> AgentRig:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
