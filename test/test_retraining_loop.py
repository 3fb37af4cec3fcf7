"""The retraining loop at small scale, end to end, with real components: the demo graph (mujoco_sim + lewm_agent on
the shipped reach2d bundle) runs over DDS while a recorder writes a real MCAP rosbag2 on simulated time, with
"start N"/"stop N" episode markers on /bag_recorder/episode; `lewm-ros bag2dataset` turns the bag into an episode
file; `lewm-ros train --init models/reach2d` fine-tunes for a few steps and exports a bundle; a fresh lewm_agent
configures and plans with that bundle.

The recorder here is a small rclpy node (raw subscriptions: CDR bytes as received, stamped with the node clock on
sim time) writing with rosbags, the way the bag_recorder node does.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from bagkit import TS
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger

from lewm_ros.cli import main
from lewm_ros.data.episodes import EpisodeReader
from lewm_ros.ros.agent_node import LewmAgent
from lewm_ros.ros.bringup import find_config, parameter_overrides
from lewm_ros.ros.mujoco_sim import MujocoSim

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[1]
TOPICS = {
    "/camera/image_raw": (Image, "sensor_msgs/msg/Image"),
    "/velocity_controller/commands": (Float64MultiArray, "std_msgs/msg/Float64MultiArray"),
    "/joint_states": (JointState, "sensor_msgs/msg/JointState"),
}
EPISODE_TOPIC = "/bag_recorder/episode"
EPISODES, EPISODE_SIM_S = 3, 2.0
MAX_SPEED = 2.0  # reach2d's velocity servos: ctrlrange +-2 rad/s; the demo agent's action_scale


class Recorder:
    """Records TOPICS as received (raw CDR) into an MCAP bag, stamped with the node's clock (sim time)."""

    def __init__(self, context, path: Path) -> None:
        self.node = Node("loop_recorder", context=context, parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.writer = Writer(path, version=8, storage_plugin=StoragePlugin.MCAP)
        self.writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self.writer.open()
        self.lock = threading.Lock()
        self.counts: dict[str, int] = dict.fromkeys(TOPICS, 0)
        qos = QoSProfile(depth=200, reliability=ReliabilityPolicy.BEST_EFFORT)  # matches reliable publishers too
        for topic, (msg_type, type_name) in TOPICS.items():
            connection = self.writer.add_connection(topic, type_name, typestore=TS)
            self.node.create_subscription(msg_type, topic, self._writer_for(topic, connection), qos, raw=True)
        self.markers = self.writer.add_connection(EPISODE_TOPIC, "std_msgs/msg/String", typestore=TS)

    def _writer_for(self, topic: str, connection):
        def write(raw: bytes) -> None:
            with self.lock:
                self.writer.write(connection, self.node.get_clock().now().nanoseconds, raw)
                self.counts[topic] += 1

        return write

    def mark(self, text: str) -> None:
        msg = TS.types["std_msgs/msg/String"](data=text)
        with self.lock:
            self.writer.write(self.markers, self.node.get_clock().now().nanoseconds,
                              TS.serialize_cdr(msg, "std_msgs/msg/String"))  # fmt: skip

    def close(self) -> None:
        with self.lock:
            self.writer.close()


class Driver:
    """Episodes through the graph's ROS interfaces: pause the agent, reset the sim, mark, run, mark."""

    def __init__(self, context, recorder: Recorder) -> None:
        self.node = Node("loop_driver", context=context)
        self.recorder = recorder
        self.sim_time = 0.0
        self.node.create_subscription(Clock, "/clock", self._on_clock, 10)
        self.reset = self.node.create_client(Trigger, "/mujoco_sim/reset")
        self.enable = self.node.create_client(SetBool, "/lewm_agent/enable")

    def _on_clock(self, msg: Clock) -> None:
        self.sim_time = msg.clock.sec + msg.clock.nanosec * 1e-9

    def call(self, client, request):
        assert client.wait_for_service(timeout_sec=30.0), client.srv_name
        future = client.call_async(request)
        deadline = time.monotonic() + 30.0
        while not future.done():
            assert time.monotonic() < deadline, f"{client.srv_name} did not answer"
            time.sleep(0.01)
        return future.result()

    def wait_sim(self, seconds: float) -> None:
        start, deadline = self.sim_time, time.monotonic() + 30.0 + 5 * seconds
        while self.sim_time - start < seconds:
            assert time.monotonic() < deadline, "the simulation clock stopped"
            time.sleep(0.01)

    def episode(self, index: int) -> None:
        self.call(self.enable, SetBool.Request(data=False))
        assert self.call(self.reset, Trigger.Request()).success
        self.wait_sim(0.3)  # the new goal image reaches the agent; the arm is still
        self.recorder.mark(f"start {index}")
        self.call(self.enable, SetBool.Request(data=True))
        self.wait_sim(EPISODE_SIM_S)
        self.recorder.mark(f"stop {index}")
        self.call(self.enable, SetBool.Request(data=False))


def record_demo(context, bag: Path) -> dict[str, int]:
    """The sim_reach demo graph with the recorder beside it; returns the messages recorded per topic."""
    config = find_config("sim_reach.yaml")
    sim = MujocoSim(context=context, parameter_overrides=parameter_overrides(config, "mujoco_sim"))
    agent = LewmAgent(context=context, parameter_overrides=parameter_overrides(config, "lewm_agent"))
    recorder = Recorder(context, bag)
    driver = Driver(context, recorder)
    nodes = [sim, agent, recorder.node, driver.node]
    executor = MultiThreadedExecutor(num_threads=6, context=context)
    for node in nodes:
        executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    try:
        assert str(agent.trigger_configure()) == "TransitionCallbackReturnType.SUCCESS"
        agent.trigger_activate()
        for index in range(EPISODES):
            driver.episode(index)
        agent.trigger_deactivate()
    finally:
        executor.shutdown(timeout_sec=5.0)
        recorder.close()
        for node in reversed(nodes):
            node.destroy_node()
    return recorder.counts


def test_record_convert_finetune_and_deploy(tmp_path, ros_context, capsys):
    started = time.monotonic()
    bag, data, run = tmp_path / "bag", tmp_path / "reach_bag.h5", tmp_path / "run"
    counts = record_demo(ros_context, bag)
    assert min(counts.values()) > 0, counts

    # bag -> dataset: episodes from the markers, rows one control period apart, commands by zero-order hold
    assert main(["bag2dataset", str(bag), "--image-topic", "/camera/image_raw",
                 "--action-topic", "/velocity_controller/commands", "--joint-topic", "/joint_states",
                 "--joint-names", "shoulder,elbow", "--image-size", "64", "--control-dt", "0.05",
                 "--max-joint-speed", str(MAX_SPEED), "--min-frames", "16", "--out", str(data), "--no-progress"]) == 0
    report = capsys.readouterr().out
    print(report)  # shown with -s, and on failure
    assert f"split on episode markers ({EPISODE_TOPIC}); frames placed by header stamps" in report, report
    # the sim stamps frames and joint states with sim time: nothing is lost to timing, only frames between episodes
    # and the first frames of the first episode (before the agent's first command) may go
    assert "shorter than" not in report and "between control steps" not in report, report
    with EpisodeReader(data) as reader:
        assert reader.num_episodes == EPISODES, report
        assert min(reader.episode_lengths) >= EPISODE_SIM_S / 0.05 - 3, report
        assert reader.image_shape == (64, 64, 3) and reader.action_dim == 2
        aligned, shifted = [], []
        for e in range(reader.num_episodes):
            action, qvel = reader.actions(e)[:-1].astype(np.float64), reader.read("qvel", e)
            # reach2d's servos track the command within a step: qvel at frame k+1 is row k's action x max speed,
            # which checks the alignment rule on real data; the command one row earlier fits worse
            aligned.append(np.abs(qvel[1:] - action * MAX_SPEED)[1:])
            shifted.append(np.abs(qvel[2:] - action[:-1] * MAX_SPEED))
        aligned_error, shifted_error = np.median(np.concatenate(aligned)), np.median(np.concatenate(shifted))
        assert aligned_error < 0.05 and aligned_error < shifted_error / 2, (aligned_error, shifted_error)

    # dataset -> fine-tuned bundle (a few steps: the point is the loop, not the model)
    assert main(["train", "--init", str(ROOT / "models" / "reach2d"), "--data", str(data), "--out", str(run),
                 "--epochs", "1", "--batch-size", "8", "--max-val-windows", "16", "--no-progress",
                 "--device", "cpu"]) == 0  # fmt: skip
    bundle = run / "bundle"
    assert (bundle / "model.json").is_file()

    # bundle -> agent: a fresh lewm_agent configures with it and plans from a camera frame
    agent = LewmAgent(context=ros_context, parameter_overrides=[
        Parameter("bundle", value=str(bundle)), Parameter("joint_names", value=["shoulder", "elbow"]),
        Parameter("device", value="cpu"),
    ])  # fmt: skip
    try:
        assert str(agent.trigger_configure()) == "TransitionCallbackReturnType.SUCCESS"
        assert Path(agent.bundle_path).resolve() == bundle.resolve()
    finally:
        agent.destroy_node()
    assert time.monotonic() - started < 120
