"""`lewm-ros bag2dataset`: the command line that turns rosbag2 recordings of an arm into an HDF5 episode file.

The flags map one to one onto ConversionSpec (lewm_ros.data.conversion_spec); the conversion itself and its
rules are in lewm_ros.data.bag_conversion. Every refusal is one stderr line and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lewm_ros.arguments import UsageError, float_in, int_in
from lewm_ros.data.conversion_spec import (
    DEFAULT_EPISODE_TOPIC,
    DEFAULT_MAX_GAP,
    DISTROS,
    FRAME_TIMES,
    MAX_IMAGE_SIZE,
    MAX_SPEED,
    ConversionError,
    ConversionSpec,
)
from lewm_ros.data.frames import IMAGE_POLICIES


def _speeds(text: str) -> tuple[float, ...]:
    """One speed, or a comma-separated list (one per joint), each in (0, MAX_SPEED]."""
    parse = float_in(0.0, MAX_SPEED, low_open=True)
    try:
        values = tuple(parse(part) for part in text.split(","))
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"max joint speed: {error}") from None
    return values


def _names(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(","))
    if not all(names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated joint names, got {text!r}")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bag2dataset",
        help="convert rosbag2 recordings (MCAP or sqlite3) into an HDF5 episode file for training",
        description="Convert rosbag2 recordings of a camera arm into the HDF5 episode format `collect` writes: "
        "frames decoded and fitted like the agent does, resampled to the control period, commands aligned to "
        "frames by zero-order hold, episodes split on recorder markers or gaps. See docs/retraining.md.",
    )
    parser.add_argument("bags", nargs="+", type=Path, metavar="BAG", help="rosbag2 directory or .mcap/.db3 file")
    parser.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    parser.add_argument("--action-topic", required=True,
                        help="command topic: std_msgs/Float64MultiArray or trajectory_msgs/JointTrajectory")
    parser.add_argument("--joint-topic", help="sensor_msgs/JointState topic for qpos/qvel (default: none, zeros)")
    parser.add_argument("--image-size", required=True, type=int_in(1, MAX_IMAGE_SIZE),
                        help="side of the square frames the model takes, pixels")
    parser.add_argument("--image-policy", choices=IMAGE_POLICIES, default="crop",
                        help="fit frames like the agent: crop (centre square, resize), resize (stretch) or exact")
    parser.add_argument("--control-dt", required=True, type=float_in(0.0, 10.0, low_open=True),
                        help="seconds between rows: the agent's control period")
    parser.add_argument("--max-joint-speed", required=True, type=_speeds,
                        help="rad/s (m/s) that an action of 1.0 means: one value, or one per joint (a,b,...)")
    parser.add_argument("--joint-names", type=_names,
                        help="joint order of actions and qpos, comma-separated (default: from the commands or "
                        "joint states; Float64MultiArray data must be in this order)")
    parser.add_argument("--episode-topic", default=DEFAULT_EPISODE_TOPIC,
                        help=f"std_msgs/String 'start N'/'stop N' markers (default {DEFAULT_EPISODE_TOPIC}; "
                        "used when the bag has it; '' to ignore markers)")
    parser.add_argument("--max-gap", type=float_in(0.0, 3600.0, low_open=True), default=DEFAULT_MAX_GAP,
                        help=f"seconds without frames or commands that end an episode (default {DEFAULT_MAX_GAP})")
    parser.add_argument("--sync-tolerance", type=float_in(0.0, 10.0, low_open=True),
                        help="seconds a frame may be off its control-period grid time (default control_dt/2)")
    parser.add_argument("--command-timeout", type=float_in(0.0, 3600.0, low_open=True),
                        help="seconds after which a held command counts as stopped (the controller's watchdog); "
                        "default: held until --max-gap")
    parser.add_argument("--min-frames", type=int_in(2, 10**9), default=2,
                        help="drop episodes with fewer rows (default 2; training windows need "
                        "(history + 1) x frameskip)")
    parser.add_argument("--frame-time", choices=FRAME_TIMES, default="auto",
                        help="place frames (and joint states) on the control grid by their header stamps or by the "
                        "bag's receive times; auto (default): header stamps when every one has a stamp")
    parser.add_argument("--distro", choices=DISTROS, default="jazzy",
                        help="message definitions for bags that store none (Humble sqlite3); default jazzy")
    parser.add_argument("--allow-partial", action="store_true",
                        help="convert what is readable of a damaged bag (truncated, corrupt chunks) instead of "
                        "refusing it")
    parser.add_argument("--out", required=True, type=Path, help="HDF5 episode file to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_bag2dataset)


def run_bag2dataset(args: argparse.Namespace) -> int:
    """Convert; every refusal is one stderr line and exit code 2, the report goes to stdout."""
    from lewm_ros.data.bag_conversion import convert  # rosbags and h5py: only when the command runs
    from lewm_ros.data.bag_errors import BagError
    from lewm_ros.data.episode_format import DatasetError

    spec = ConversionSpec(
        image_topic=args.image_topic, action_topic=args.action_topic, image_size=args.image_size,
        control_dt=args.control_dt, max_joint_speed=args.max_joint_speed, joint_topic=args.joint_topic,
        joint_names=args.joint_names, image_policy=args.image_policy, episode_topic=args.episode_topic or None,
        max_gap=args.max_gap, sync_tolerance=args.sync_tolerance, command_timeout=args.command_timeout,
        min_frames=args.min_frames, frame_time=args.frame_time, distro=args.distro, allow_partial=args.allow_partial,
    )  # fmt: skip
    try:
        spec.check()
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        report = convert(args.bags, args.out, spec, overwrite=args.overwrite, progress=not args.no_progress)
    except (ConversionError, BagError, DatasetError, FileExistsError) as error:
        raise UsageError(str(error)) from None
    except OSError as error:
        raise UsageError(f"{type(error).__name__}: {error}") from None
    for line in report.lines(spec):
        print(line)
    if any(bag.damaged for bag in report.bags):
        print("lewm-ros bag2dataset: warning: converted damaged bags partially (--allow-partial); see DAMAGED above",
              file=sys.stderr)  # fmt: skip
    return 0

