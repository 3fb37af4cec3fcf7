"""SIGINT and SIGTERM, sent for real to real processes, in every state: the agent ends with the safe command on
the topic (when it was configured) and exits 0; the simulator zeroes its actuators; the recorder leaves a closed,
readable bag. Exit times are measured from the signal; the bound here is loose (a loaded CI machine also has to
tear down torch and DDS), the figures the issue asks for (< 1 s) are printed and reported by
bench/stop_signals.py."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String

from lewm_ros.envs.reach_env import ReachConfig, ReachEnv
from lewm_ros.ros import image_codec

ROOT = Path(__file__).resolve().parents[1]
EXIT_BOUND_S = 5.0  # loose on purpose: see the module docstring
GOAL_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
AGENT_PARAMS = ["joint_names:=[shoulder,elbow]", "samples:=24", "iterations:=2", "warm_iterations:=1",
                "elites:=4", "horizon:=3", "torch_threads:=1", "deadline_ms:=0.0", "plan_overrun_ms:=5000.0",
                "frame_timeout_ms:=2000.0"]  # fmt: skip


@pytest.fixture(scope="module")
def scene():
    with ReachEnv("reach2d", ReachConfig(image_size=64)) as env:
        result = env.reset(7)
        return {"start": result.observation.pixels.copy(), "goal": env.goal_image()}


class Process:
    """A node in its own process, its output collected by a thread (a full pipe must never block it)."""

    def __init__(self, command: list[str]) -> None:
        self.popen = subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        self.lines: list[str] = []
        self.namespace = ""
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.popen.stdout), daemon=True)
        self._reader.start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_line(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.popen.poll() is None, f"exited before {text!r}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout:.0f} s:\n{self.output}"
            time.sleep(0.02)

    def stop(self, sig: int) -> float:
        """Send `sig`; the seconds until the process exited."""
        sent = time.monotonic()
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout=30)
        finally:
            if self.popen.poll() is None:
                self.popen.kill()
                self.popen.wait()
        elapsed = time.monotonic() - sent
        self._reader.join(timeout=5)
        print(f"{signal.Signals(sig).name}: exited {self.popen.returncode} after {elapsed:.2f} s")
        return elapsed

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


class Controller:
    """The test's side of the wire: camera, goal, the command topic, and the agent's lifecycle service."""

    def __init__(self, context) -> None:
        self.node = Node("stop_signal_rig", context=context)
        self.camera = self.node.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
        self.goal = self.node.create_publisher(Image, "/goal/image_raw", GOAL_QOS)
        self.commands: list[list[float]] = []
        self.node.create_subscription(Float64MultiArray, "/velocity_controller/commands",
                                      lambda msg: self.commands.append(list(msg.data)), 100)  # fmt: skip
        self._clients: dict[str, object] = {}
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()

    def change_state(self, namespace: str):
        """The lifecycle client of the agent in `namespace` (each test's agent has its own, see `agent`)."""
        if namespace not in self._clients:
            self._clients[namespace] = self.node.create_client(ChangeState, f"{namespace}/lewm_agent/change_state")
        return self._clients[namespace]

    def transition(self, process: Process, transition_id: int, timeout: float = 120.0) -> bool:
        client = self.change_state(process.namespace)
        assert client.wait_for_service(timeout_sec=60.0), f"no {client.srv_name} service"
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
        deadline = time.monotonic() + timeout
        while not future.done():
            assert time.monotonic() < deadline, f"transition {transition_id} did not answer"
            time.sleep(0.02)
        return future.result().success

    def drive_until_moving(self, scene, process: Process, timeout: float = 90.0) -> None:
        """Goal and frames until the agent commands a non-zero velocity."""
        self.goal.publish(image_codec.rgb_to_image(scene["goal"]))
        frame = image_codec.rgb_to_image(scene["start"])
        deadline = time.monotonic() + timeout
        while not any(any(v != 0.0 for v in c) for c in self.commands):
            assert process.popen.poll() is None, process.output
            assert time.monotonic() < deadline, "the agent never commanded the arm:\n" + process.output
            self.camera.publish(frame)
            time.sleep(0.05)

    def wait_for_command_publisher(self, timeout: float = 30.0) -> None:
        """DDS discovery of the agent's command publisher (created at configure) takes a moment: a safe command
        sent before it matched our subscription would never reach us."""
        deadline = time.monotonic() + timeout
        while self.node.count_publishers("/velocity_controller/commands") == 0:
            assert time.monotonic() < deadline, "the agent's command publisher never appeared"
            time.sleep(0.05)
        time.sleep(0.3)  # matched on our side; give the writer side the same moment

    def settle(self) -> None:
        time.sleep(0.5)  # the last commands in flight arrive


_agents = itertools.count()


def agent(*args: str, params: list[str] = AGENT_PARAMS) -> Process:
    """An agent process in a namespace of its own (its lifecycle services too; the topics it uses are absolute):
    a service of the previous test's agent can linger in the DDS graph after that process exited, and a request
    sent to it would never be answered. Without --autostart, returned once the agent says it is ready."""
    namespace = f"/stop_test_{os.getpid()}_{next(_agents)}"
    command = [sys.executable, "-m", "lewm_ros.ros.agent_node", *args, "--ros-args", "-r", f"__ns:={namespace}"]
    for param in params:
        command += ["-p", param]
    process = Process(command)
    process.namespace = namespace
    if "--autostart" not in args:
        process.wait_for_line("ready, unconfigured")
    return process


@pytest.fixture
def controller(ros_context):
    rig = Controller(ros_context)
    try:
        yield rig
    finally:
        rig.close()


def assert_clean_exit(process: Process, elapsed: float) -> None:
    assert process.popen.returncode == 0, process.output[-3000:]
    assert elapsed < EXIT_BOUND_S, f"exit took {elapsed:.1f} s"
    assert "Traceback" not in process.output, process.output[-3000:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_active_agent_sends_the_safe_command_and_exits(controller, scene, sig):
    process = agent("--autostart")
    try:
        controller.drive_until_moving(scene, process)
        elapsed = process.stop(sig)
    finally:
        process.kill()
    controller.settle()
    assert_clean_exit(process, elapsed)
    assert controller.commands[-1] == [0.0, 0.0], "the last command after the signal was not the safe one"
    assert f"{signal.Signals(sig).name}: stopping" in process.output


def test_deactivated_agent_stays_safe_and_exits_on_sigterm(controller, scene):
    process = agent("--autostart")
    try:
        controller.drive_until_moving(scene, process)
        assert controller.transition(process, Transition.TRANSITION_DEACTIVATE)
        controller.settle()
        assert controller.commands[-1] == [0.0, 0.0]
        count = len(controller.commands)
        elapsed = process.stop(signal.SIGTERM)
    finally:
        process.kill()
    controller.settle()
    assert_clean_exit(process, elapsed)
    assert all(c == [0.0, 0.0] for c in controller.commands[count:])  # nothing but the safe command after


def test_configured_inactive_agent_exits_on_sigint_with_only_safe_commands(controller):
    process = agent()
    try:
        assert controller.transition(process, Transition.TRANSITION_CONFIGURE)
        controller.wait_for_command_publisher()
        elapsed = process.stop(signal.SIGINT)
    finally:
        process.kill()
    controller.settle()
    assert_clean_exit(process, elapsed)
    assert controller.commands and all(c == [0.0, 0.0] for c in controller.commands)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_unconfigured_agent_has_no_timer_yet_exits_promptly_without_commanding(controller, sig):
    """The case that ignored Ctrl-C for 10 s: no timer, so spin() never returned to Python."""
    process = agent()
    try:
        assert controller.change_state(process.namespace).wait_for_service(timeout_sec=60.0)
        time.sleep(1.0)  # idle in the executor's wait
        elapsed = process.stop(sig)
    finally:
        process.kill()
    assert_clean_exit(process, elapsed)
    assert controller.commands == []


def test_agent_after_a_failed_configure_exits_on_sigint(controller):
    process = agent(params=[*AGENT_PARAMS, "bundle:=/nonexistent"])
    try:
        assert not controller.transition(process, Transition.TRANSITION_CONFIGURE)
        elapsed = process.stop(signal.SIGINT)
    finally:
        process.kill()
    assert_clean_exit(process, elapsed)


def test_agent_after_lifecycle_shutdown_exits_on_sigint(controller):
    process = agent()
    try:
        assert controller.transition(process, Transition.TRANSITION_CONFIGURE)
        assert controller.transition(process, Transition.TRANSITION_INACTIVE_SHUTDOWN)
        time.sleep(1.0)
        elapsed = process.stop(signal.SIGINT)
    finally:
        process.kill()
    controller.settle()
    assert_clean_exit(process, elapsed)
    assert all(c == [0.0, 0.0] for c in controller.commands)


def test_agent_stopped_while_configuring_exits_without_commanding(controller):
    process = agent("--autostart")
    try:
        process.wait_for_line("measuring the planner on this machine")
        elapsed = process.stop(signal.SIGTERM)
    finally:
        process.kill()
    assert_clean_exit(process, elapsed)
    assert controller.commands == []


# ---- the simulator and the recorder ---------------------------------------------------------------------------


def test_simulator_zeroes_its_actuators_and_exits_on_sigterm(ros_context):
    node = Node("sim_signal_rig", context=ros_context)
    command = node.create_publisher(Float64MultiArray, "/velocity_controller/commands", 10)
    velocities: list[list[float]] = []
    node.create_subscription(JointState, "/joint_states", lambda m: velocities.append(list(m.velocity)), 100)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    process = Process([sys.executable, "-m", "lewm_ros.ros.mujoco_sim", "--ros-args", "-p", "image_size:=16",
                       "-p", "command_timeout_ms:=60000"])  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (velocities and abs(velocities[-1][0]) > 0.5):
            assert process.popen.poll() is None and time.monotonic() < deadline, process.output
            command.publish(Float64MultiArray(data=[1.0, 1.0]))
            time.sleep(0.05)
        elapsed = process.stop(signal.SIGTERM)
    finally:
        process.kill()
        executor.shutdown(timeout_sec=2.0)
        node.destroy_node()
    assert_clean_exit(process, elapsed)
    assert "SIGTERM: actuators zeroed" in process.output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_recorder_closes_a_readable_bag_on_a_signal(ros_context, tmp_path, sig):
    from lewm_ros.data.bag_recovery import check_bag

    bag = tmp_path / "stopped"
    process = Process([sys.executable, "-m", "lewm_ros.ros.bag_recorder", "-o", str(bag),
                       "--topics", "/signal_test:std_msgs/msg/String"])  # fmt: skip
    node = Node("recorder_signal_rig", context=ros_context)
    reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    publisher = node.create_publisher(String, "/signal_test", reliable)
    try:
        deadline = time.monotonic() + 60
        while publisher.get_subscription_count() == 0:
            assert process.popen.poll() is None and time.monotonic() < deadline, process.output
            time.sleep(0.05)
        for i in range(20):
            publisher.publish(String(data=f"message {i}"))
        assert publisher.wait_for_all_acked()
        time.sleep(0.3)
        elapsed = process.stop(sig)
    finally:
        process.kill()
        node.destroy_node()
    assert_clean_exit(process, elapsed)
    report = check_bag(bag, repair=False)
    assert (bag / "metadata.yaml").exists() and report.metadata == "ok" and report.intact
    assert report.topics["/signal_test"]["count"] == 20
