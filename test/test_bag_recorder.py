"""bag_recorder over real DDS on loopback, read back by independent readers, and killed for real.

Readers: the `mcap` library with `mcap-ros2-support`'s CDR decoder for MCAP, Python's sqlite3 for .db3;
neither shares code with rosbags, which wrote the files. What was recorded is compared byte for byte with
what a second raw subscriber received off the wire, decoded by rclpy against the published messages, and
field by field through the independent decoder. (Bytes are not compared with rclpy's serialize_message: it
leaves CDR alignment padding uninitialised, so equal messages can serialize to different bytes.)
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import SetBool

from lewm_ros.cli import main as lewm_ros_main
from lewm_ros.data.bag_metadata import TopicSpec
from lewm_ros.data.bag_recovery import check_bag
from lewm_ros.data.bag_writer import BagWriter, prepare_output
from lewm_ros.data.message_types import MessageTypes
from lewm_ros.ros.bag_recorder import BagRecorder
from lewm_ros.ros.bag_recorder import main as recorder_main

ROOT = Path(__file__).resolve().parents[1]
RELIABLE = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
V8_KEYS = {
    "version", "storage_identifier", "relative_file_paths", "duration", "starting_time", "message_count",
    "topics_with_message_count", "compression_format", "compression_mode", "files", "custom_data", "ros_distro",
}  # fmt: skip
EPISODE_TOPIC = "/bag_recorder/episode"


# ---- helpers ----------------------------------------------------------------------------------------------------


@contextmanager
def spinning(context, *nodes: Node) -> Iterator[None]:
    """Spin nodes in a background thread; stops between callbacks so nodes can be destroyed afterwards."""
    executor = SingleThreadedExecutor(context=context)
    for node in nodes:
        executor.add_node(node)
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.02)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5.0)
        executor.shutdown()


def wait_until(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def image(index: int, side: int = 32) -> Image:
    rng = np.random.default_rng(index)
    msg = Image(height=side, width=side, encoding="rgb8", step=3 * side, is_bigendian=0)
    msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id = index, 1000 * index, "camera"
    msg.data = rng.integers(0, 256, side * side * 3, dtype=np.uint8).tobytes()
    return msg


def joint_state(index: int) -> JointState:
    msg = JointState(name=["shoulder", "elbow"], position=[0.01 * index, -0.02 * index], velocity=[0.5, -0.5])
    msg.header.stamp.sec = index
    return msg


def recorder(context, tmp_path: Path, **params: object) -> BagRecorder:
    params.setdefault("output", str(tmp_path / "bag"))
    params.setdefault("flush_interval_s", 0.2)
    params.setdefault("discovery_interval_s", 0.1)
    return BagRecorder(context=context, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])


def stats_of(rec: BagRecorder) -> dict[str, int]:
    return {t.name: t.received for t in rec.writer.stats}


def call(node: Node, client, request, timeout: float = 5.0):
    assert client.wait_for_service(timeout_sec=timeout), f"{client.srv_name} not available"
    future = client.call_async(request)
    wait_until(future.done, timeout, f"{client.srv_name} to answer")
    return future.result()


def check_metadata_v8(bag: Path) -> dict:
    document = yaml.safe_load((bag / "metadata.yaml").read_text())
    info = document["rosbag2_bagfile_information"]
    assert V8_KEYS <= set(info), sorted(V8_KEYS - set(info))
    assert info["version"] == 8
    for topic in info["topics_with_message_count"]:
        assert {"name", "type", "serialization_format", "offered_qos_profiles", "type_description_hash"} <= set(
            topic["topic_metadata"]
        )
        assert topic["topic_metadata"]["serialization_format"] == "cdr"
    assert info["message_count"] == sum(t["message_count"] for t in info["topics_with_message_count"])
    assert info["message_count"] == sum(f["message_count"] for f in info["files"])
    assert [f["path"] for f in info["files"]] == info["relative_file_paths"]
    for name in info["relative_file_paths"]:
        assert (bag / name).is_file()
    return info


def read_mcap(bag: Path) -> dict[str, list[tuple[int, bytes, object]]]:
    """Every message of every file, with the independent reader and decoder: topic -> [(log time, raw, decoded)]."""
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    out: dict[str, list] = {}
    for name in info["relative_file_paths"]:
        with (bag / name).open("rb") as stream:
            reader = make_reader(stream, decoder_factories=[DecoderFactory()])
            for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True):
                assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
                out.setdefault(channel.topic, []).append((message.log_time, bytes(message.data), decoded))
    return out


def rclpy_decoded(raws: list[bytes], msg_type: type) -> list:
    return [deserialize_message(raw, msg_type) for raw in raws]


class Tap:
    """Raw bytes of a topic as DDS delivers them to a second, independent subscriber."""

    def __init__(self, node: Node, msg_type: type, topic: str, qos: QoSProfile) -> None:
        self.raws: list[bytes] = []
        node.create_subscription(msg_type, topic, self.raws.append, qos, raw=True)


def episode_markers(messages: dict[str, list]) -> list[str]:
    return [decoded.data for _, _, decoded in messages.get(EPISODE_TOPIC, [])]


# ---- MCAP and sqlite3, read back independently ------------------------------------------------------------------


def test_mcap_bag_is_read_back_intact_by_the_mcap_library(ros_context, tmp_path):
    source = Node("bag_source", context=ros_context)
    goal_pub = source.create_publisher(Image, "/goal/image_raw", LATCHED)
    goal = image(999)
    goal_pub.publish(goal)  # before the recorder exists: it must still get it (transient local)
    camera_pub = source.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    command_pub = source.create_publisher(Float64MultiArray, "/velocity_controller/commands", RELIABLE)
    joints_pub = source.create_publisher(JointState, "/joint_states", RELIABLE)
    notes_pub = source.create_publisher(String, "/notes", RELIABLE)
    mark = source.create_client(SetBool, "/bag_recorder/mark_episode")
    taps = {topic: Tap(source, msg_type, topic, RELIABLE) for topic, msg_type in
            (("/velocity_controller/commands", Float64MultiArray), ("/notes", String))}  # fmt: skip
    rec = recorder(ros_context, tmp_path, topics=[
        "/camera/image_raw", "/velocity_controller/commands", "/joint_states", "/goal/image_raw",
        "/notes:std_msgs/String",
    ])  # fmt: skip
    bag = rec.path
    try:
        with spinning(ros_context, source, rec.node):
            assert rec.wait_for_topics(["/camera/image_raw", "/velocity_controller/commands", "/joint_states",
                                        "/goal/image_raw", "/notes"]) == []  # fmt: skip
            wait_until(lambda: all(p.get_subscription_count() for p in (camera_pub, command_pub, joints_pub)),
                       what="the recorder's subscriptions to match")  # fmt: skip
            assert call(source, mark, SetBool.Request(data=True)).message == "start 0"
            frames, commands, joints, notes = [], [], [], []
            for i in range(40):
                frames.append(image(i))
                commands.append(Float64MultiArray(data=[0.1 * i, -0.1 * i]))
                joints.append(joint_state(i))
                notes.append(String(data=f"note {i} ü"))
                camera_pub.publish(frames[-1])
                command_pub.publish(commands[-1])
                joints_pub.publish(joints[-1])
                notes_pub.publish(notes[-1])
                time.sleep(0.005)
            wait_until(lambda: all(stats_of(rec).get(t, 0) >= 40 for t in
                                   ("/velocity_controller/commands", "/joint_states", "/notes")),
                       what="the reliable topics to arrive")  # fmt: skip
            wait_until(lambda: stats_of(rec).get("/goal/image_raw", 0) >= 1, what="the latched goal")
            reply = call(source, mark, SetBool.Request(data=False))
            assert reply.success and reply.message == "stop 0"
            assert not call(source, mark, SetBool.Request(data=False)).success  # nothing open
            time.sleep(0.2)
    finally:
        summary = rec.close()
        rec.node.destroy_node()
        source.destroy_node()
    assert summary.error is None and summary.dropped == 0
    info = check_metadata_v8(bag)
    assert info["storage_identifier"] == "mcap"
    episodes = json.loads(info["custom_data"]["lewm_ros.episodes"])
    assert [e["episode"] for e in episodes] == [0] and episodes[0]["stop_ns"] > episodes[0]["start_ns"]
    assert info["custom_data"]["lewm_ros.episode_topic"] == EPISODE_TOPIC

    messages = read_mcap(bag)
    for topic, msg_type, sent in (("/velocity_controller/commands", Float64MultiArray, commands),
                                  ("/joint_states", JointState, joints), ("/notes", String, notes)):  # fmt: skip
        assert rclpy_decoded([raw for _, raw, _ in messages[topic]], msg_type) == sent, topic
    for topic, tap in taps.items():
        assert [raw for _, raw, _ in messages[topic]] == tap.raws, f"{topic}: bytes differ from the wire's"
    assert [list(d.data) for _, _, d in messages["/velocity_controller/commands"]] == [list(m.data) for m in commands]
    assert [list(d.position) for _, _, d in messages["/joint_states"]] == [list(m.position) for m in joints]
    assert [d.data for _, _, d in messages["/notes"]] == [m.data for m in notes]
    # Best effort over loopback: in practice all arrive; whatever arrived must be intact and in order.
    recorded = messages["/camera/image_raw"]
    assert len(recorded) >= 30
    by_stamp = {m.header.stamp.sec: m for m in frames}
    for _, raw, decoded in recorded:
        sent = by_stamp[decoded.header.stamp.sec]
        assert deserialize_message(raw, Image) == sent
        fields = (decoded.height, decoded.width, decoded.encoding, bytes(decoded.data))
        assert fields == (32, 32, "rgb8", bytes(sent.data))
    assert [d.header.stamp.sec for _, _, d in recorded] == sorted(d.header.stamp.sec for _, _, d in recorded)
    ((_, goal_raw, goal_decoded),) = messages["/goal/image_raw"]
    assert deserialize_message(goal_raw, Image) == goal and goal_decoded.header.stamp.sec == 999
    assert episode_markers(messages) == ["start 0", "stop 0"]
    start_time, stop_time = (t for t, _, _ in messages[EPISODE_TOPIC])
    assert all(start_time <= t <= stop_time for t, _, _ in messages["/notes"])
    qos = {t["topic_metadata"]["name"]: yaml.safe_load(t["topic_metadata"]["offered_qos_profiles"] or "[]")
           for t in info["topics_with_message_count"]}  # fmt: skip
    assert qos["/goal/image_raw"][0]["durability"] == 1  # transient local, as offered
    assert qos["/camera/image_raw"][0]["reliability"] == 2  # best effort, as offered
    report = check_bag(bag, repair=False)
    assert report.intact and report.metadata == "ok" and report.messages == info["message_count"]


def test_sqlite3_bag_is_read_back_intact_with_sqlite3(ros_context, tmp_path):
    source = Node("bag_source_db", context=ros_context)
    joints_pub = source.create_publisher(JointState, "/joint_states", RELIABLE)
    mark = source.create_client(SetBool, "/bag_recorder/mark_episode")
    rec = recorder(ros_context, tmp_path, storage="sqlite3", topics=["/joint_states"])
    bag = rec.path
    try:
        with spinning(ros_context, source, rec.node):
            assert rec.wait_for_topics(["/joint_states"]) == []
            wait_until(lambda: joints_pub.get_subscription_count() > 0, what="the subscription to match")
            call(source, mark, SetBool.Request(data=True))
            sent = [joint_state(i) for i in range(60)]
            for msg in sent:
                joints_pub.publish(msg)
                time.sleep(0.002)
            wait_until(lambda: stats_of(rec).get("/joint_states", 0) >= 60, what="60 joint states")
            assert call(source, mark, SetBool.Request(data=True)).message == "stop 0; start 1"  # start closes 0
    finally:
        summary = rec.close()  # closes episode 1 too
        rec.node.destroy_node()
        source.destroy_node()
    assert summary.error is None and summary.messages == 60 and len(summary.episodes) == 2
    info = check_metadata_v8(bag)
    assert info["storage_identifier"] == "sqlite3" and info["relative_file_paths"] == ["bag_0.db3"]
    connection = sqlite3.connect(bag / "bag_0.db3")
    topics = {name: (topic_id, msgtype) for topic_id, name, msgtype in
              connection.execute("SELECT id, name, type FROM topics")}  # fmt: skip
    assert topics["/joint_states"][1] == "sensor_msgs/msg/JointState"
    rows = connection.execute("SELECT timestamp, data FROM messages WHERE topic_id = ? ORDER BY id",
                              (topics["/joint_states"][0],)).fetchall()  # fmt: skip
    assert rclpy_decoded([bytes(data) for _, data in rows], JointState) == sent
    assert [t for t, _ in rows] == sorted(t for t, _ in rows)
    markers = connection.execute("SELECT data FROM messages WHERE topic_id = ? ORDER BY id",
                                 (topics[EPISODE_TOPIC][0],)).fetchall()  # fmt: skip
    assert [m.data for m in rclpy_decoded([bytes(d) for (d,) in markers], String)] == ["start 0", "stop 0", "start 1",
                                                                                "stop 1"]  # fmt: skip
    connection.close()
    assert [e["episode"] for e in json.loads(info["custom_data"]["lewm_ros.episodes"])] == [0, 1]


# ---- split ------------------------------------------------------------------------------------------------------


def test_split_by_size_keeps_every_message_across_files(ros_context, tmp_path):
    source = Node("bag_source_split", context=ros_context)
    camera_pub = source.create_publisher(Image, "/camera/image_raw", RELIABLE)
    rec = recorder(ros_context, tmp_path, topics=["/camera/image_raw"], sensor_data_topics=[""],
                   max_bag_size_mb=1.0, compression="none")  # fmt: skip
    bag = rec.path
    sent = [image(i, side=128) for i in range(40)]  # 48 KiB each: ~2 MB in all
    try:
        with spinning(ros_context, source, rec.node):
            assert rec.wait_for_topics(["/camera/image_raw"]) == []
            wait_until(lambda: camera_pub.get_subscription_count() > 0, what="the subscription to match")
            for msg in sent:
                camera_pub.publish(msg)
                time.sleep(0.003)
            wait_until(lambda: stats_of(rec).get("/camera/image_raw", 0) >= 40, what="40 frames")
    finally:
        rec.close()
        rec.node.destroy_node()
        source.destroy_node()
    info = check_metadata_v8(bag)
    assert len(info["relative_file_paths"]) >= 2, info["relative_file_paths"]
    assert info["relative_file_paths"][:2] == ["bag_0.mcap", "bag_1.mcap"]
    assert all((bag / f).stat().st_size < 1.6e6 for f in info["relative_file_paths"])
    messages = read_mcap(bag)
    assert rclpy_decoded([raw for _, raw, _ in messages["/camera/image_raw"]], Image) == sent


def test_split_by_duration_and_episode_metadata_without_ros(tmp_path):
    types = MessageTypes()
    msgdef, rihs01 = types.definition("std_msgs/msg/String")
    writer = BagWriter(prepare_output(tmp_path / "timed"), storage="sqlite3", max_duration_ns=10**9,
                       episode_topic=EPISODE_TOPIC, types=types)  # fmt: skip
    key = writer.add_topic(TopicSpec("/tick", "std_msgs/msg/String", msgdef, rihs01))
    writer.mark_episode(1, "start 0")
    for i in range(50):  # 0.1 s apart: 5 s of bag time
        writer.write(key, 10**9 + i * 10**8, serialize_message(String(data=str(i))))
    writer.mark_episode(6 * 10**9, "stop 0")
    writer.close()
    info = check_metadata_v8(tmp_path / "timed")
    assert len(info["files"]) >= 5
    assert all(f["duration"]["nanoseconds"] < 10**9 for f in info["files"])
    assert info["message_count"] == 52
    assert json.loads(info["custom_data"]["lewm_ros.episodes"]) == [{"episode": 0, "start_ns": 1, "stop_ns": 6 * 10**9}]


# ---- SIGKILL ----------------------------------------------------------------------------------------------------


def recorder_process(bag: Path, storage: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "lewm_ros.ros.bag_recorder", "-o", str(bag), "--storage", storage,
               "--topics", "/kill_test:std_msgs/msg/String", "--flush-interval-s", "0.2"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sigkill_loses_at_most_the_unflushed_data_and_bag_check_recovers(ros_context, tmp_path, storage, capsys):
    bag = tmp_path / "killed"
    process = recorder_process(bag, storage)
    source = Node("bag_source_kill", context=ros_context)
    publisher = source.create_publisher(String, "/kill_test", RELIABLE)
    sent = [String(data=f"{i:05d} " + "x" * 20_000) for i in range(150)]  # 3 MB: several 1 MiB chunks
    try:
        with spinning(ros_context, source):
            wait_until(lambda: publisher.get_subscription_count() > 0, 20.0, "the recorder process to subscribe")
            for msg in sent[:100]:
                publisher.publish(msg)
                time.sleep(0.002)

            def flushed() -> int:
                return check_bag(bag, repair=False).topics.get("/kill_test", {}).get("count", 0)

            wait_until(lambda: flushed() == 100, 10.0, "the first 100 messages to be flushed")
            for msg in sent[100:]:
                publisher.publish(msg)
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        source.destroy_node()
    assert process.returncode == -signal.SIGKILL, process.stdout.read()
    assert not (bag / "metadata.yaml").exists()  # killed before it closed anything

    capsys.readouterr()
    status = lewm_ros_main(["bag-check", str(bag), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert status in (0, 1)
    assert report["metadata_written"] and report["metadata"] == "missing"
    recovered = report["topics"]["/kill_test"]["count"]
    assert 100 <= recovered <= 150
    assert (status == 1) == bool(report["lost"])
    info = check_metadata_v8(bag)
    assert info["topics_with_message_count"][-1]["message_count"] == recovered or any(
        t["message_count"] == recovered for t in info["topics_with_message_count"]
    )
    if storage == "mcap":
        raws = [raw for _, raw, _ in read_mcap(bag)["/kill_test"]]
    else:
        connection = sqlite3.connect(bag / "killed_0.db3")
        raws = [bytes(d) for (d,) in connection.execute("SELECT data FROM messages ORDER BY id")]
        connection.close()
    assert rclpy_decoded(raws, String) == sent[:recovered]  # a prefix, every message intact
    again = check_bag(bag, repair=False)
    assert again.metadata == "ok" and again.intact and all(f.status == "complete" for f in again.files)


def test_bag_check_reports_a_torn_chunk_and_a_stale_metadata(tmp_path):
    types = MessageTypes()
    msgdef, rihs01 = types.definition("std_msgs/msg/String")
    bag = prepare_output(tmp_path / "torn")
    writer = BagWriter(bag, compression="none", types=types)
    key = writer.add_topic(TopicSpec("/t", "std_msgs/msg/String", msgdef, rihs01))
    for i in range(300):
        writer.write(key, 10**9 + i, serialize_message(String(data=f"{i} " + "y" * 10_000)))
    writer.close()
    mcap = bag / "torn_0.mcap"
    complete = check_bag(bag, repair=False)
    assert complete.intact and complete.messages == 300
    with mcap.open("r+b") as stream:  # cut inside the last chunk, as a kill in mid-write would
        stream.truncate(2 * 2**20 + 12345)
    report = check_bag(bag)
    assert report.metadata.startswith("stale") and report.metadata_written
    assert report.files[0].status == "torn" and report.files[0].lost_bytes > 0 and report.files[0].repaired
    assert report.lost and "partly written chunk" in report.lost[0]
    assert 100 <= report.messages < 300  # the chunks before the cut (about 105 messages each)
    messages = read_mcap(bag)["/t"]
    assert [d.data for _, _, d in messages] == [f"{i} " + "y" * 10_000 for i in range(report.messages)]
    metadata = bag / "metadata.yaml"
    metadata.write_text(metadata.read_text()[:200])  # a partial metadata.yaml
    report = check_bag(bag)
    assert report.metadata.startswith("unreadable") and report.metadata_written and report.intact
    assert check_metadata_v8(bag)["message_count"] == report.messages == len(messages)


# ---- bad input --------------------------------------------------------------------------------------------------


def run_recorder_cli(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    status = recorder_main(list(args))
    return status, capsys.readouterr().err


def test_bad_input_gives_one_line_errors(tmp_path, capsys):
    status, err = run_recorder_cli(capsys, "-o", str(tmp_path / "a"), "--topics", "/x:nope_msgs/msg/Nope")
    assert status == 2 and "unknown message type nope_msgs/msg/Nope" in err and not (tmp_path / "a").exists()
    status, err = run_recorder_cli(capsys, "-o", str(tmp_path / "a"), "--topics", "/x:NotAType")
    assert status == 2 and "not a message type name" in err
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me")
    status, err = run_recorder_cli(capsys, "-o", str(existing), "--duration-s", "0.1")
    assert status == 2 and "exists already" in err and "--overwrite" in err
    status, err = run_recorder_cli(capsys, "-o", str(existing), "--overwrite", "--duration-s", "0.1")
    assert status == 2 and "not deleting" in err and (existing / "notes.txt").read_text() == "keep me"
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, err = run_recorder_cli(capsys, "-o", str(blocker / "bag"), "--duration-s", "0.1")
    assert status == 2 and "cannot create output directory" in err
    status, err = run_recorder_cli(capsys, "-o", str(tmp_path / "b"), "--ros-args", "-p", "storage:=tape")
    assert status == 2 and "storage must be mcap or sqlite3" in err
    status, err = run_recorder_cli(capsys, "-o", str(tmp_path / "b"), "--flush-interval-s", "nan")
    assert status == 2 and err.count("\n") == 1
    # A finished bag may be replaced with --overwrite.
    assert run_recorder_cli(capsys, "-o", str(tmp_path / "c"), "--duration-s", "0.2")[0] == 0
    assert run_recorder_cli(capsys, "-o", str(tmp_path / "c"), "--duration-s", "0.2", "--overwrite")[0] == 0
    assert check_bag(tmp_path / "c", repair=False).metadata == "ok"
    # The umbrella CLI: the same errors as `lewm-ros record: error: ...`, exit 2.
    capsys.readouterr()
    assert lewm_ros_main(["record", "-o", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.startswith("lewm-ros record: error: output")
    for target in (tmp_path / "missing", existing):  # not a bag: one line, exit 2
        assert lewm_ros_main(["bag-check", str(target)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lewm-ros bag-check: error:") and err.count("\n") == 1


# ---- the demo, recorded -----------------------------------------------------------------------------------------


def test_sim_reach_record_frames_each_episode_in_the_bag(tmp_path, capsys):
    bag = tmp_path / "demo_bag"
    status = lewm_ros_main(["sim-reach", "--episodes", "2", "--episode-seconds", "1", "--no-video",
                            "--out", str(tmp_path / "out"), "--record", str(bag)])  # fmt: skip
    assert status == 0, capsys.readouterr().err[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["recording"]["error"] is None and summary["recording"]["dropped"] == 0
    report = check_bag(bag, repair=False)
    assert report.intact and report.metadata == "ok"
    assert {"/camera/image_raw", "/velocity_controller/commands", "/joint_states", "/goal/image_raw",
            "/lewm_agent/surprise", EPISODE_TOPIC} <= set(report.topics)  # fmt: skip
    episodes = report.episodes
    assert [e["episode"] for e in episodes] == [0, 1] and all(e["stop_ns"] for e in episodes)
    # simulated time: an episode lasts until success or the 1 s budget, as the driver reported it
    seconds = [r["sim_seconds"] for r in summary["results"]]
    for episode, sim_seconds in zip(episodes, seconds, strict=True):
        assert sim_seconds - 0.1 <= (episode["stop_ns"] - episode["start_ns"]) / 1e9 <= sim_seconds + 1.0
    messages = read_mcap(bag)
    for episode, sim_seconds in zip(episodes, seconds, strict=True):
        inside = [t for t, _, _ in messages["/camera/image_raw"] if episode["start_ns"] <= t <= episode["stop_ns"]]
        expected = 20 * sim_seconds  # 20 Hz camera
        assert len(inside) >= max(1, 0.75 * expected), f"episode {episode['episode']}: {len(inside)} frames"
    assert all(d.encoding == "rgb8" for _, _, d in messages["/camera/image_raw"])
