"""`bag_recorder` (also `lewm-ros record`): record topics into a rosbag2 directory, MCAP or sqlite3.

    ros2 run lewm_ros bag_recorder --ros-args -p output:=my_bag -p storage:=mcap
    lewm-ros record -o my_bag [--topics /camera/image_raw /joint_states ...] [--storage sqlite3]

Messages are written as received: raw subscriptions hand over the CDR bytes, which go to the bag without a
decode/re-encode, stamped with the node clock at reception (`use_sim_time` gives simulated time). Topic types
come from the ROS graph (a topic is subscribed once a publisher appears; the graph is polled) or are given as
`topic:pkg/msg/Type` (subscribed at once). QoS follows the publishers, as `ros2 bag record` does: best effort
if any publisher is best effort, transient local when all are (the latched goal image); topics listed in
`sensor_data_topics` (the camera) always get sensor-data QoS (best effort, keep last).

Writing happens in a background thread fed by a bounded queue (`queue_size_mb`): a full queue drops the
message and counts it (logged every few seconds and in the final summary) rather than stalling the executor.
The writer flushes every `flush_interval_s` (MCAP: closes the zstd chunk, at most 1 MiB anyway; sqlite3:
commits), so a SIGKILL loses at most that much; `lewm-ros bag-check DIR` recovers the rest. Split: a new
storage file `<dir>_<i>.<ext>` in the same bag directory when `max_bag_size_mb` or `max_bag_duration_s` is
reached; metadata.yaml (version 8, readable by Humble's `ros2 bag`) lists them all.

Episodes: calling `~/mark_episode` (std_srvs/SetBool; true = start, false = stop) writes "start N" /
"stop N" (std_msgs/String) on `~/episode` into the bag, publishes it there, and lists the episodes in
metadata.yaml's custom_data (see lewm_ros/data/bag_metadata.py).

rclpy is imported inside functions: this module is imported by `lewm-ros --help`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lewm_ros.arguments import OneLineArgumentParser, UsageError, float_in, one_line

NODE_NAME = "bag_recorder"
DEFAULT_TOPICS = (
    "/camera/image_raw", "/velocity_controller/commands", "/joint_states", "/goal/image_raw",
    "/lewm_agent/surprise", "/lewm_agent/plan_source",
)  # fmt: skip
SENSOR_DATA_TOPICS = ("/camera/image_raw", "/camera/image_raw/compressed")
RELIABLE_DEPTH = 100  # keep-last depth of reliable subscriptions: room for bursts while the executor is busy
SENSOR_DEPTH = 10
DROP_REPORT_S = 5.0


class RecorderError(ValueError):
    """A recorder setting or topic that cannot work; the message says which and why, in one line."""


# ---- command line -----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Recorder options shared by `lewm-ros record` and the `bag_recorder` executable (unset = parameter)."""
    parser.add_argument("-o", "--output", help="bag directory to create (default rosbag2_<UTC date-time>)")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC",
                        help="topics to record, each `name` or `name:pkg/msg/Type` "
                             f"(default: {' '.join(DEFAULT_TOPICS)})")  # fmt: skip
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), help="storage format (default mcap)")
    parser.add_argument("--compression", choices=("zstd", "none"), help="MCAP chunk compression (default zstd)")
    parser.add_argument("--max-bag-size-mb", type=float_in(0, 1e7), help="split when a file reaches this (0 = off)")
    parser.add_argument("--max-bag-duration-s", type=float_in(0, 1e7),
                        help="split when a file spans this many seconds of bag time (0 = off)")  # fmt: skip
    parser.add_argument("--flush-interval-s", type=float_in(0.01, 60),
                        help="flush at least this often: what a SIGKILL can cost, s (default 1)")  # fmt: skip
    parser.add_argument("--queue-size-mb", type=float_in(1, 65536),
                        help="messages queued beyond this are dropped and counted (default 128)")  # fmt: skip
    parser.add_argument("--use-sim-time", action="store_true", help="stamp messages with /clock time")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing bag directory (only one holding nothing but bag files)")  # fmt: skip
    parser.add_argument("--duration-s", type=float_in(0, 1e7, low_open=True),
                        help="stop after this many wall-clock seconds (default: until Ctrl-C)")  # fmt: skip
    parser.add_argument("--summary", type=Path, metavar="FILE",
                        help="also write the final summary (counts per topic, drops, episodes) as JSON")  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "record", help="record topics into a rosbag2 directory (MCAP or sqlite3) with episode markers",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    add_arguments(parser)
    parser.set_defaults(run=run_record)


def run_record(args: argparse.Namespace) -> int:
    """`lewm-ros record`: a bad setting is a usage error (one line, exit 2)."""
    status = record(args, ["lewm-ros"])
    if isinstance(status, str):
        raise UsageError(status)
    return status


def parameter_values(args: argparse.Namespace) -> dict[str, Any]:
    """Node parameters from the options that were given (the others keep their defaults / --ros-args)."""
    names = ("output", "topics", "storage", "compression", "max_bag_size_mb", "max_bag_duration_s",
             "flush_interval_s", "queue_size_mb")  # fmt: skip
    values = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if getattr(args, "use_sim_time", False):
        values["use_sim_time"] = True
    if getattr(args, "overwrite", False):
        values["overwrite"] = True
    return values


def record(args: argparse.Namespace, ros_args: Sequence[str]) -> int | str:
    """Record until Ctrl-C/SIGTERM, --duration-s or shutdown; returns the exit code, or a usage error text."""
    import rclpy
    from rclpy.context import Context
    from rclpy.exceptions import ParameterException
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.signals import SignalHandlerOptions

    from lewm_ros.data.bag_errors import BagError
    from lewm_ros.ros.stop_signals import StopRequested, StopSignals

    context = Context()
    # Our signal handling (stop_signals): SIGINT or SIGTERM ends the loop below and the bag is closed, readable.
    rclpy.init(args=list(ros_args), context=context, signal_handler_options=SignalHandlerOptions.NO)
    recorder: BagRecorder | None = None
    with StopSignals() as signals:
        try:
            overrides = [Parameter(k, value=v) for k, v in parameter_values(args).items()]
            try:
                recorder = BagRecorder(context=context, parameter_overrides=overrides)
            except (RecorderError, BagError, ParameterException) as error:
                return one_line(error)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(recorder.node)
            deadline = time.monotonic() + args.duration_s if getattr(args, "duration_s", None) else float("inf")
            print(f"recording into {recorder.path} (Ctrl-C to stop)", flush=True)
            finished = lambda: time.monotonic() >= deadline or recorder.error is not None  # noqa: E731
            try:
                signals.spin(executor, context.ok, until=finished)
            except (KeyboardInterrupt, ExternalShutdownException):
                pass
            executor.shutdown(timeout_sec=1.0)
        except StopRequested:
            pass
        finally:
            signals.starting = False
            summary = recorder.close() if recorder is not None else None
            if recorder is not None:
                recorder.node.destroy_node()
            context.try_shutdown()
    if summary is not None and getattr(args, "summary", None):
        Path(args.summary).write_text(json.dumps(asdict(summary), indent=2))
    return 1 if summary is None or summary.error else 0  # the summary is in the node's log


def main(args: Sequence[str] | None = None) -> int:
    """Console entry point (`bag_recorder`, `python -m lewm_ros.ros.bag_recorder`): options, then --ros-args."""
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if args is None else [NODE_NAME, *args])
    parser = OneLineArgumentParser(prog=NODE_NAME, description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_arguments(parser)
    try:
        options = parser.parse_args(remove_ros_args(argv)[1:])
    except SystemExit as stop:
        return int(stop.code or 0)
    status = record(options, argv)
    if isinstance(status, str):
        print(f"{NODE_NAME}: error: {status}", file=sys.stderr)
        return 2
    return status


# ---- the node ---------------------------------------------------------------------------------------------------


def message_class(msgtype: str) -> type:
    """The Python class of a ROS message type name, for the subscription's type support."""
    from lewm_ros.data.bag_errors import BagError
    from lewm_ros.data.message_types import normalize_type

    try:
        package, _, name = normalize_type(msgtype).split("/")
    except BagError as err:
        raise RecorderError(str(err)) from None
    try:
        module = importlib.import_module(f"{package}.msg")
    except ImportError:
        raise RecorderError(f"unknown message type {msgtype}: no Python package {package}.msg is installed") from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        raise RecorderError(f"unknown message type {msgtype}: {package}.msg has no {name}")
    return cls


def _offered_qos(profile: Any) -> Any:
    """A publisher's rclpy QoS profile as the rosbags Qos record metadata.yaml lists."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, ReliabilityPolicy

    from lewm_ros.data.bag_metadata import make_qos

    return make_qos(
        reliable=profile.reliability == ReliabilityPolicy.RELIABLE,
        transient_local=profile.durability == DurabilityPolicy.TRANSIENT_LOCAL,
        depth=profile.depth, history_keep_all=profile.history == HistoryPolicy.KEEP_ALL,
        deadline_ns=profile.deadline.nanoseconds, lifespan_ns=profile.lifespan.nanoseconds,
        lease_ns=profile.liveliness_lease_duration.nanoseconds,
    )  # fmt: skip


def _resolve_name(node: Any, name: str) -> str:
    """A topic name made absolute (`~/x`, relative names); Node.resolve_topic_name where rclpy has it."""
    resolve = getattr(node, "resolve_topic_name", None)
    if resolve is not None:
        return resolve(name)
    if name.startswith("/"):
        return name
    if name.startswith("~"):
        return node.get_fully_qualified_name().rstrip("/") + name[1:]
    return f"{node.get_namespace().rstrip('/')}/{name}"


def _graph_hash(info: Any) -> str:
    """RIHS01 type hash a publisher announced (Jazzy and newer); '' where the graph has none (Humble)."""
    type_hash = getattr(info, "topic_type_hash", None)
    if type_hash is None or getattr(type_hash, "version", -1) != 1:
        return ""
    return "RIHS01_" + bytes(type_hash.value).hex()


class BagRecorder:
    """The recorder node (`self.node`), its subscriptions and its writer thread.

    A plain class around an rclpy Node so the module imports without ROS; add `recorder.node` to an executor.
    Construction fails with RecorderError/BagError on a bad setting, topic or output, and leaves nothing
    behind (an output directory it created is removed again).
    """

    def __init__(self, context: Any = None, parameter_overrides: Sequence[Any] | None = None,
                 node_name: str = NODE_NAME) -> None:  # fmt: skip
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from rclpy.node import Node
        from std_msgs.msg import String
        from std_srvs.srv import SetBool

        self.node = Node(node_name, context=context, parameter_overrides=list(parameter_overrides or []))
        try:
            self._setup(String, SetBool, MutuallyExclusiveCallbackGroup)
        except BaseException:
            self.node.destroy_node()
            raise

    def _setup(self, String: type, SetBool: type, group_class: type) -> None:  # noqa: N803 - message classes
        from lewm_ros.data.bag_errors import BagError
        from lewm_ros.data.bag_writer import prepare_output
        from lewm_ros.data.message_types import MessageTypes
        from lewm_ros.data.threaded_bag_writer import ThreadedBagWriter

        self._declare_parameters()
        settings = self._settings()
        self._types = MessageTypes()
        self._wanted: dict[str, str | None] = {}
        for entry in settings["topics"]:
            topic, _, given = entry.partition(":")
            try:
                topic = _resolve_name(self.node, topic.strip())
            except Exception as err:  # rclpy's invalid-name exceptions differ between distros
                raise RecorderError(f"invalid topic name {topic!r}: {one_line(err)}") from None
            self._wanted[topic] = given.strip() or None
        self.episode_topic = f"{self.node.get_fully_qualified_name().rstrip('/')}/episode"
        self._wanted.pop(self.episode_topic, None)  # written by the recorder itself, never subscribed
        self._sensor_topics = {_resolve_name(self.node, t) for t in settings["sensor_data_topics"]}
        resolved = {topic: self._resolve(topic, given) for topic, given in self._wanted.items() if given}
        self.path = prepare_output(Path(settings["output"]), overwrite=settings["overwrite"])
        clock = self.node.get_clock()
        self.writer = ThreadedBagWriter(
            self.path, clock=lambda: clock.now().nanoseconds, queue_bytes=int(settings["queue_size_mb"] * 2**20),
            flush_interval_s=settings["flush_interval_s"], log=lambda text: self.node.get_logger().error(text),
            storage=settings["storage"], compression=settings["compression"],
            max_bytes=int(settings["max_bag_size_mb"] * 1e6), max_duration_ns=int(settings["max_bag_duration_s"] * 1e9),
            episode_topic=self.episode_topic, types=self._types,
        )  # fmt: skip
        try:
            self.writer.start()
        except BagError:
            if not any(self.path.iterdir()):
                self.path.rmdir()  # leave nothing behind for a recording that never started
            raise
        self._lock = threading.Lock()
        self._group = group_class()
        self._subscriptions: dict[str, Any] = {}
        self._failed: dict[str, str] = {}
        self._warned: set[str] = set()
        self._closed = False
        self._dropped_reported = 0
        self._episode_pub = self.node.create_publisher(String, "~/episode", 10)
        self._string = String
        self.node.create_service(SetBool, "~/mark_episode", self._on_mark_episode)
        for topic, (msgtype, cls) in resolved.items():
            self._subscribe(topic, msgtype, cls)
        self.discover()
        self._discovery = self.node.create_timer(settings["discovery_interval_s"], self.discover)
        self._drop_timer = self.node.create_timer(DROP_REPORT_S, self._report_drops)
        self.node.get_logger().info(
            f"recording into {self.path} ({settings['storage']}); waiting for: "
            + (", ".join(t for t in self._wanted if t not in self._subscriptions) or "nothing")
        )  # fmt: skip

    # -- parameters --

    def _declare_parameters(self) -> None:
        from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor

        def describe(name: str, text: str, low: float | None = None, high: float | None = None) -> Any:
            ranges = [FloatingPointRange(from_value=low, to_value=high)] if low is not None else []
            return ParameterDescriptor(name=name, description=text, read_only=True, floating_point_range=ranges)

        node = self.node
        node.declare_parameter("output", "", describe(
            "output", "bag directory to create; empty = rosbag2_<UTC date-time> in the working directory"))
        node.declare_parameter("topics", list(DEFAULT_TOPICS), describe(
            "topics", "topics to record: `name` (type from the graph) or `name:pkg/msg/Type`"))
        node.declare_parameter("storage", "mcap", describe("storage", "mcap or sqlite3"))
        node.declare_parameter("compression", "zstd", describe("compression", "MCAP chunk compression: zstd or none"))
        node.declare_parameter("max_bag_size_mb", 0.0, describe(
            "max_bag_size_mb", "start a new storage file at this size, MB (0 = never)", 0.0, 1e7))
        node.declare_parameter("max_bag_duration_s", 0.0, describe(
            "max_bag_duration_s", "start a new storage file after this many seconds of bag time (0 = never)", 0.0, 1e7))
        node.declare_parameter("flush_interval_s", 1.0, describe(
            "flush_interval_s", "flush to disk at least this often; what a SIGKILL can cost", 0.01, 60.0))
        node.declare_parameter("queue_size_mb", 128.0, describe(
            "queue_size_mb", "bytes waiting for the writer beyond this are dropped and counted", 1.0, 65536.0))
        node.declare_parameter("overwrite", False, describe(
            "overwrite", "replace an existing output directory that holds nothing but bag files"))
        node.declare_parameter("sensor_data_topics", list(SENSOR_DATA_TOPICS), describe(
            "sensor_data_topics", "topics always subscribed best effort, keep last (camera streams)"))
        node.declare_parameter("discovery_interval_s", 0.5, describe(
            "discovery_interval_s", "how often the graph is polled for topics still missing", 0.05, 60.0))

    def _settings(self) -> dict[str, Any]:
        names = ("output", "topics", "storage", "compression", "max_bag_size_mb", "max_bag_duration_s", "overwrite",
                 "flush_interval_s", "queue_size_mb", "sensor_data_topics", "discovery_interval_s")  # fmt: skip
        values = {name: self.node.get_parameter(name).value for name in names}
        if values["storage"] not in ("mcap", "sqlite3"):
            raise RecorderError(f"storage must be mcap or sqlite3, got {values['storage']!r}")
        if values["compression"] not in ("zstd", "none"):
            raise RecorderError(f"compression must be zstd or none, got {values['compression']!r}")
        topics = [t for t in (values["topics"] or []) if t.strip()]
        if not topics:
            raise RecorderError("no topics to record")
        values["topics"] = topics
        values["sensor_data_topics"] = [t for t in (values["sensor_data_topics"] or []) if t.strip()]
        if not values["output"]:
            values["output"] = time.strftime("rosbag2_%Y_%m_%d-%H_%M_%S", time.gmtime())
        return values

    # -- topics --

    def _resolve(self, topic: str, msgtype: str) -> tuple[str, type]:
        """(normalized type, Python class), checking that the bag can describe it; RecorderError if not."""
        from lewm_ros.data.bag_errors import BagError
        from lewm_ros.data.message_types import normalize_type

        try:
            msgtype = normalize_type(msgtype)
            self._types.definition(msgtype)
        except BagError as err:
            raise RecorderError(f"{topic}: {err}") from None
        return msgtype, message_class(msgtype)

    def discover(self) -> None:
        """Subscribe to wanted topics that have appeared in the graph (timer callback; also callable)."""
        with self._lock:
            if self._closed:
                return
            graph = dict(self.node.get_topic_names_and_types())
            for topic in self._wanted:
                if topic in self._subscriptions or topic in self._failed or topic not in graph:
                    continue
                types = graph[topic]
                if len(types) > 1 and topic not in self._warned:
                    self._warned.add(topic)
                    self.node.get_logger().warning(f"{topic} has several types {types}: recording {types[0]}")
                try:
                    msgtype, cls = self._resolve(topic, types[0])
                except RecorderError as err:
                    self._failed[topic] = str(err)
                    self.node.get_logger().error(f"not recording {err}")
                    continue
                self._subscribe(topic, msgtype, cls)

    def _subscribe(self, topic: str, msgtype: str, cls: type) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        from lewm_ros.data.bag_metadata import TopicSpec

        publishers = self.node.get_publishers_info_by_topic(topic)
        msgdef, rihs01 = self._types.definition(msgtype)
        announced = {h for h in (_graph_hash(p) for p in publishers) if h}
        if announced and rihs01 not in announced:
            rihs01 = sorted(announced)[0]
            self.node.get_logger().warning(
                f"{topic}: publishers announce type hash {rihs01}, which differs from the definition of {msgtype} "
                "known here; the bag stores their hash with this definition")  # fmt: skip
        best_effort = topic in self._sensor_topics or any(
            p.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for p in publishers)  # fmt: skip
        latched = bool(publishers) and all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                                           for p in publishers)  # fmt: skip
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=SENSOR_DEPTH if best_effort else RELIABLE_DEPTH,
            reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
        )  # fmt: skip
        offered = tuple(_offered_qos(p.qos_profile) for p in publishers)
        key = self.writer.add_topic(TopicSpec(topic, msgtype, msgdef, rihs01, offered))
        put = self.writer.put

        def on_message(data: bytes) -> None:
            put(key, data)

        self._subscriptions[topic] = self.node.create_subscription(
            cls, topic, on_message, qos, raw=True, callback_group=self._group)  # fmt: skip
        kind = "best effort" if best_effort else "reliable"
        self.node.get_logger().info(
            f"recording {topic} [{msgtype}] ({kind}{', transient local' if latched else ''})")  # fmt: skip

    @property
    def subscribed(self) -> list[str]:
        """Topics being recorded now."""
        with self._lock:
            return list(self._subscriptions)

    @property
    def error(self) -> str | None:
        """The writer's failure (disk full, ...), which ends the recording; None while all is well."""
        return self.writer.error

    def wait_for_topics(self, topics: Sequence[str], timeout: float = 5.0) -> list[str]:
        """Poll the graph until all of `topics` are recorded or `timeout` passes; returns those still missing."""
        deadline = time.monotonic() + timeout
        while True:
            self.discover()
            missing = [t for t in topics if t not in self.subscribed]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(0.05)

    # -- episodes --

    def mark_episode(self, start: bool) -> tuple[bool, str]:
        """Start (true) or stop (false) an episode: a marker in the bag, on ~/episode and in metadata."""
        done, text = self.writer.mark_episode(start)
        if done:
            for part in text.split("; "):
                try:
                    self._episode_pub.publish(self._string(data=part))
                except Exception as err:  # after shutdown: the bag has the marker anyway
                    self.node.get_logger().debug(f"episode marker not published: {err}")
        return done, text

    def _on_mark_episode(self, request: Any, response: Any) -> Any:
        response.success, response.message = self.mark_episode(bool(request.data))
        return response

    # -- health and shutdown --

    def _report_drops(self) -> None:
        dropped = sum(t.dropped for t in self.writer.stats)
        if dropped > self._dropped_reported:
            self.node.get_logger().warning(
                f"dropped {dropped - self._dropped_reported} messages in the last {DROP_REPORT_S:.0f} s: the writer "
                f"is slower than the incoming data ({self.writer.queued_bytes / 2**20:.0f} MB queued)")  # fmt: skip
            self._dropped_reported = dropped

    def close(self) -> Any:
        """Stop recording: close an open episode, write what is queued, close the bag; returns the summary."""
        with self._lock:
            first = not self._closed
            self._closed = True
        if first:
            for timer in (self._discovery, self._drop_timer):
                timer.cancel()
            if self.writer.episode_open is not None:
                self.mark_episode(False)
        summary = self.writer.stop()
        if first:
            logger = self.node.get_logger()
            for line in summary.lines():
                (logger.error if summary.error else logger.info)(line)
        return summary


if __name__ == "__main__":
    sys.exit(main())
