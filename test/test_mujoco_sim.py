"""mujoco_sim over real DDS on loopback: a probe node talks to the sim exactly as the agent would."""

from __future__ import annotations

import itertools
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from builtin_interfaces.msg import Duration
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from lewm_ros.ros import image_codec as codec
from lewm_ros.ros.mujoco_sim import COMMAND_QOS, GOAL_QOS, STATE_QOS, MujocoSim, SimConfigError

CONFIG = Path(__file__).resolve().parents[1] / "config" / "sim_reach.yaml"
COMMAND_TOPIC = "/velocity_controller/commands"
FAST = {"image_size": 32, "speed_factor": 2.0}


class Inbox:
    """Messages of one topic, collected by an executor thread, waited on by the test."""

    def __init__(self, node: Node, msg_type: type, topic: str, qos: object) -> None:
        self.messages: list = []
        self._lock = threading.Lock()
        node.create_subscription(msg_type, topic, self._add, qos)

    def _add(self, msg: object) -> None:
        with self._lock:
            self.messages.append(msg)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def wait(self, count: int = 1, timeout: float = 5.0, where: Callable[[object], bool] | None = None) -> list:
        """At least `count` messages (matching `where`), or fail the test."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [m for m in self.messages if where is None or where(m)]
            if len(found) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        assert len(found) >= count, f"got {len(found)} of {count} messages in {timeout} s"
        return found

    def latest(self, timeout: float = 5.0) -> object:
        return self.wait(1, timeout)[-1]


class Probe:
    """The agent's side of the wire: subscriptions, a command publisher and service clients."""

    def __init__(self, node: Node, command_type: type) -> None:
        self.node = node
        self.images = Inbox(node, Image, "/camera/image_raw", qos_profile_sensor_data)
        self.info = Inbox(node, CameraInfo, "/camera/camera_info", qos_profile_sensor_data)
        self.joints = Inbox(node, JointState, "/joint_states", STATE_QOS)
        self.goals = Inbox(node, Image, "/goal/image_raw", GOAL_QOS)
        self.success = Inbox(node, Bool, "/mujoco_sim/success", STATE_QOS)
        self.goal_error = Inbox(node, Float64, "/mujoco_sim/goal_error", STATE_QOS)
        self.clock = Inbox(node, Clock, "/clock", STATE_QOS)
        self.commands = node.create_publisher(command_type, COMMAND_TOPIC, COMMAND_QOS)
        self.reset_client = node.create_client(Trigger, "/mujoco_sim/reset")
        self.teleport_client = node.create_client(Trigger, "/mujoco_sim/teleport")

    def wait_for_command_subscriber(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.commands.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.commands.get_subscription_count() == 1, "sim never subscribed to the command topic"

    def call(self, client, timeout: float = 5.0) -> Trigger.Response:
        assert client.wait_for_service(timeout_sec=timeout), f"{client.srv_name} not available"
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert future.done(), f"{client.srv_name} did not answer in {timeout} s"
        return future.result()


@contextmanager
def running_sim(context, command_type: type = Float64MultiArray, **params: object) -> Iterator[tuple[MujocoSim, Probe]]:
    """The sim and a probe node spun by one executor in a background thread.

    A single-threaded executor is enough (the services wait on the physics thread, not on the executor) and
    stops cleanly: the loop ends between callbacks, so nothing runs after the nodes are destroyed.
    """
    if command_type is JointTrajectory:
        params.setdefault("command_type", "joint_trajectory")
    overrides = [Parameter(name, value=value) for name, value in {**FAST, **params}.items()]
    sim = MujocoSim(context=context, parameter_overrides=overrides)
    probe_node = Node("sim_probe", context=context)
    probe = Probe(probe_node, command_type)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(sim)
    executor.add_node(probe_node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.02)

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    try:
        yield sim, probe
    finally:
        stop.set()
        spinner.join(timeout=5.0)
        executor.shutdown()
        sim.destroy_node()
        probe_node.destroy_node()


def stamp_s(msg: object) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def state_after(probe: Probe, sim_time: float, timeout: float = 5.0) -> JointState:
    """The first joint state stamped after `sim_time`: immune to how far the probe lags behind."""
    return probe.joints.wait(1, timeout, where=lambda m: stamp_s(m) > sim_time + 1e-9)[0]


def drive(probe: Probe, msg: object, until: Callable[[], bool], timeout: float = 5.0) -> None:
    """Publish `msg` at 20 Hz, like an agent at its control rate, until `until()` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "the arm never got there"
        probe.commands.publish(msg)
        time.sleep(0.05)


def towards_centre(qpos: np.ndarray) -> np.ndarray:
    """A direction per joint that keeps clear of the joint limits (reach2d ranges are centred on 0)."""
    return np.where(qpos > 0, -1.0, 1.0)


def joint_positions(msg: JointState, names: tuple[str, ...]) -> np.ndarray:
    return np.array([msg.position[list(msg.name).index(name)] for name in names])


def test_camera_joint_states_and_goal_arrive(ros_context):
    with running_sim(ros_context, image_size=32) as (sim, probe):
        image = probe.images.latest()
        assert (image.height, image.width, image.encoding) == (32, 32, "rgb8")
        assert image.header.frame_id == "camera"
        assert codec.image_to_rgb(image).shape == (32, 32, 3)
        info = probe.info.latest()
        focal = 16.0 / math.tan(math.radians(45.0) / 2.0)  # reach2d's camera: fovy 45 degrees
        assert (info.height, info.width, info.header.frame_id) == (32, 32, "camera")
        np.testing.assert_allclose(info.k, [focal, 0, 15.5, 0, focal, 15.5, 0, 0, 1])
        joints = probe.joints.latest()
        assert list(joints.name) == ["shoulder", "elbow"]
        assert len(joints.position) == len(joints.velocity) == 2
        goal = probe.goals.latest()  # latched: published before this subscriber existed
        assert (goal.height, goal.width, goal.encoding) == (32, 32, "rgb8")
        assert not np.array_equal(codec.image_to_rgb(goal), codec.image_to_rgb(image))
        error = probe.goal_error.latest().data
        assert error == pytest.approx(np.max(np.abs(sim.goal_qpos - sim.qpos)), abs=0.05)
        assert probe.success.latest().data is False


def test_velocity_command_moves_joints_then_watchdog_stops_them(ros_context):
    with running_sim(ros_context, command_timeout_ms=200) as (sim, probe):
        probe.wait_for_command_subscriber()
        start = sim.qpos
        direction = towards_centre(start)
        command = Float64MultiArray(data=(0.5 * direction).tolist())
        drive(probe, command, lambda: np.all(np.abs(sim.qpos - start) > 0.15))
        moving = state_after(probe, sim.sim_time - 0.1)
        moved = joint_positions(moving, sim.joint_names) - start
        assert np.all(np.sign(moved) == direction), f"moved {moved} for commanded direction {direction}"
        np.testing.assert_allclose(moving.velocity, 0.5 * direction, atol=0.05)  # rad/s, as commanded
        assert sim.accepted_commands > 0 and sim.rejected_commands == 0
        time.sleep(0.2 + 0.1)  # past the steady-clock timeout
        stopped = state_after(probe, sim.sim_time + 0.2)  # and some simulated time to settle
        assert np.max(np.abs(stopped.velocity)) < 0.02, f"still moving after the timeout: {stopped.velocity}"


def test_joint_names_parameter_orders_array_commands(ros_context):
    with running_sim(ros_context, joint_names=["elbow", "shoulder"]) as (sim, probe):
        probe.wait_for_command_subscriber()
        start = sim.qpos  # scene order: shoulder, elbow
        command = Float64MultiArray(data=[0.0, 0.6 * towards_centre(start)[0]])  # elbow, shoulder: shoulder only
        drive(probe, command, lambda: abs(sim.qpos[0] - start[0]) > 0.15)
        moved = joint_positions(state_after(probe, sim.sim_time), ("shoulder", "elbow")) - start
        assert abs(moved[0]) > 0.15 and abs(moved[1]) < 0.02, moved


def test_malformed_array_commands_are_counted_and_ignored(ros_context):
    with running_sim(ros_context) as (sim, probe):
        probe.wait_for_command_subscriber()
        start = sim.qpos
        bad = [[1.0], [1.0, 1.0, 1.0], [math.nan, 0.5], [0.5, math.inf], []]
        for data in bad:
            probe.commands.publish(Float64MultiArray(data=data))
            time.sleep(0.05)
        deadline = time.monotonic() + 5.0
        while sim.rejected_commands < len(bad) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sim.rejected_commands == len(bad)
        assert sim.accepted_commands == 0
        now = state_after(probe, sim.sim_time)  # still publishing: the node survived
        np.testing.assert_allclose(joint_positions(now, sim.joint_names), start, atol=1e-3)


def trajectory(names: list[str], velocities=(), positions=(), after_s: float = 0.0) -> JointTrajectory:
    msg = JointTrajectory(joint_names=names)
    seconds = int(after_s)
    duration = Duration(sec=seconds, nanosec=int((after_s - seconds) * 1e9))
    point = JointTrajectoryPoint(velocities=list(velocities), positions=list(positions), time_from_start=duration)
    msg.points = [point]
    return msg


def test_joint_trajectory_commands_by_name_and_malformed_ones(ros_context):
    with running_sim(ros_context, command_type=JointTrajectory) as (sim, probe):
        probe.wait_for_command_subscriber()
        bad = [
            trajectory(["shoulder", "wrist"], velocities=[0.5, 0.5]),  # unknown joint
            trajectory(["shoulder"], velocities=[0.5]),  # missing joint
            trajectory(["shoulder", "shoulder"], velocities=[0.5, 0.5]),  # duplicate
            trajectory(["shoulder", "elbow"], velocities=[0.5]),  # wrong length
            trajectory(["shoulder", "elbow"], velocities=[math.nan, 0.5]),  # NaN
            trajectory(["shoulder", "elbow"]),  # neither velocities nor positions
            JointTrajectory(joint_names=["shoulder", "elbow"]),  # no points
        ]
        for msg in bad:
            probe.commands.publish(msg)
            time.sleep(0.05)
        deadline = time.monotonic() + 5.0
        while sim.rejected_commands < len(bad) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sim.rejected_commands == len(bad) and sim.accepted_commands == 0

        # velocities, joints named in reverse order
        start = sim.qpos
        direction = towards_centre(start)
        command = trajectory(["elbow", "shoulder"], velocities=(0.5 * direction[::-1]).tolist())
        drive(probe, command, lambda: np.all(np.abs(sim.qpos - start) > 0.15))
        moved = joint_positions(state_after(probe, sim.sim_time), ("shoulder", "elbow")) - start
        assert np.all(np.sign(moved) == direction), moved

        # positions only: velocity = (target - current) / time_from_start, acting for time_from_start
        time.sleep(0.3)  # the velocity command above times out
        target = sim.qpos + 0.3 * towards_centre(sim.qpos)
        command = trajectory(["elbow", "shoulder"], positions=target[::-1].tolist(), after_s=0.2)
        drive(probe, command, lambda: np.max(np.abs(sim.qpos - target)) < 0.01)
        settled = state_after(probe, sim.sim_time + 0.3)  # the point has ended: the arm holds there
        np.testing.assert_allclose(joint_positions(settled, ("shoulder", "elbow")), target, atol=0.02)
        assert np.max(np.abs(settled.velocity)) < 0.02, settled.velocity


def test_reset_service_draws_a_new_goal(ros_context):
    with running_sim(ros_context) as (sim, probe):
        first_goal = codec.image_to_rgb(probe.goals.latest()).copy()
        goal_before = sim.goal_qpos
        response = probe.call(probe.reset_client)
        assert response.success, response.message
        assert re.match(r"episode 1\b", response.message), response.message
        assert sim.episode == 1
        assert not np.allclose(sim.goal_qpos, goal_before)
        second = probe.goals.wait(2)[-1]
        assert not np.array_equal(codec.image_to_rgb(second), first_goal)
        assert probe.call(probe.reset_client).message.startswith("episode 2")


def test_teleport_moves_the_arm_instantly(ros_context):
    with running_sim(ros_context, speed_factor=1.0) as (sim, probe):
        before, goal, when = sim.qpos, sim.goal_qpos, sim.sim_time
        response = probe.call(probe.teleport_client)
        assert response.success, response.message
        after = sim.qpos
        assert np.max(np.abs(after - before)) > 1.0, (before, after)
        assert sim.sim_time - when < 0.3  # no simulated travel time: a jump (service latency only)
        np.testing.assert_allclose(sim.goal_qpos, goal)  # the goal stays
        assert sim.teleports == 1
        seen = probe.joints.wait(
            1, where=lambda m: np.allclose(joint_positions(m, sim.joint_names), after, atol=1e-3)
        )[0]
        assert stamp_s(seen) <= sim.sim_time


def test_seed_makes_episodes_reproducible(ros_context):
    draws = []
    for _ in range(2):
        sim = MujocoSim(context=ros_context, parameter_overrides=[Parameter("image_size", value=16),
                                                                  Parameter("seed", value=7)])
        try:
            draws.append((sim.qpos, sim.goal_qpos))
        finally:
            sim.destroy_node()
    np.testing.assert_allclose(draws[0][1], draws[1][1])
    assert np.max(np.abs(draws[0][0] - draws[1][0])) < 0.05  # start; physics may have run a step or two


def test_clock_advances_and_stamps_follow_it(ros_context):
    with running_sim(ros_context, speed_factor=1.0) as (sim, probe):
        ticks = probe.clock.wait(5)
        seconds = [t.clock.sec + t.clock.nanosec * 1e-9 for t in ticks]
        assert all(b > a for a, b in itertools.pairwise(seconds))
        assert seconds[1] - seconds[0] == pytest.approx(0.05, abs=1e-9)
        wall = time.monotonic()
        sim_start = sim.sim_time
        time.sleep(0.5)
        # paced on the steady clock: never ahead of real time (one step of slack)
        assert sim.sim_time - sim_start <= (time.monotonic() - wall) + 0.05 + 1e-9
        stamp = probe.joints.latest().header.stamp
        assert stamp.sec + stamp.nanosec * 1e-9 <= sim.sim_time + 1e-9
        assert stamp.sec < 100  # sim time, not wall time


def test_no_clock_without_publish_clock(ros_context):
    with running_sim(ros_context, publish_clock=False) as (_sim, probe):
        stamp = probe.joints.latest().header.stamp
        assert stamp.sec > 1_000_000_000  # the node clock (system time)
        time.sleep(0.3)
        assert probe.clock.messages == []


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"scene": "no_such_scene"}, "no_such_scene"),
        ({"camera": "no_such_camera"}, "no_such_camera"),
        ({"joint_names": ["shoulder", "wrist"]}, "joint_names"),
        ({"joint_names": ["shoulder", "shoulder"]}, "joint_names"),
        ({"command_type": "twist"}, "command_type"),
        ({"control_dt": 0.0511}, "control_dt"),
    ],
)
def test_bad_configuration_fails_with_a_readable_error(ros_context, overrides, needle):
    params = [Parameter(name, value=value) for name, value in {"image_size": 16, **overrides}.items()]
    with pytest.raises(SimConfigError, match=needle):
        MujocoSim(context=ros_context, parameter_overrides=params)


def test_yaml_section_loads_and_documents_every_parameter(ros_context):
    section = yaml.safe_load(CONFIG.read_text())["mujoco_sim"]["ros__parameters"]
    sim = MujocoSim(context=ros_context, cli_args=["--ros-args", "--params-file", str(CONFIG),
                                                   "-p", "image_size:=16"])
    try:
        for name, value in section.items():
            assert sim.get_parameter(name).value == (16 if name == "image_size" else value), name
        text = CONFIG.read_text()
        declared = set(sim.list_parameters([], 0).names) - {"use_sim_time", "start_type_description_service"}
        undocumented = [name for name in declared if not re.search(rf"^\s*#?\s*{name}:", text, re.M)]
        assert not undocumented, f"parameters missing from {CONFIG.name}: {undocumented}"
    finally:
        sim.destroy_node()


def headless_env() -> dict[str, str]:
    """This session's ROS settings (loopback, domain), without a display or an explicit MUJOCO_GL."""
    return {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY")}


def test_console_script_refuses_a_bad_scene_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "lewm_ros.ros.mujoco_sim", "--ros-args", "-p", "scene:=no_such_scene"],
        capture_output=True, text=True, env=headless_env(), timeout=60,
    )
    assert result.returncode == 1
    assert "mujoco_sim: error: scene file not found: 'no_such_scene'" in result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_console_script_starts_headless_and_stops_on_ctrl_c():
    process = subprocess.Popen(
        [sys.executable, "-m", "lewm_ros.ros.mujoco_sim", "--ros-args", "-p", "image_size:=16"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=headless_env(),
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30.0
        while not any("scene reach2d" in line for line in lines):
            assert process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "no start-up line in 30 s:\n" + "".join(lines)
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=15) == 0, "".join(lines)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=5)
    assert "Traceback" not in "".join(lines), "".join(lines)
