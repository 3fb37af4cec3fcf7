"""What `lewm-ros bag2dataset` is asked to do: the conversion settings, their limits and checks, and the
message types and drop reasons every stage of the conversion (lewm_ros.data.bag_conversion) shares."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lewm_ros.data.frames import IMAGE_POLICIES

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
ARRAY_COMMAND = "std_msgs/msg/Float64MultiArray"
TRAJECTORY_COMMAND = "trajectory_msgs/msg/JointTrajectory"
COMMAND_TYPES = (ARRAY_COMMAND, TRAJECTORY_COMMAND)
JOINT_STATE = "sensor_msgs/msg/JointState"
# rosbags-free copies, so the command line's parser (and --help) needs no rosbags; test_bag2dataset holds them equal
MARKER_TYPE = "std_msgs/msg/String"  # bag_metadata.EPISODE_TYPE: the recorder's "start N" / "stop N" markers
DISTROS = ("jazzy", "humble")  # message_types.TYPESTORES' keys: the distributions whose definitions we know
DEFAULT_EPISODE_TOPIC = "/bag_recorder/episode"
DEFAULT_MAX_GAP = 0.5
MAX_IMAGE_SIZE = 4096
MAX_SPEED = 1000.0
FRAME_TIMES = ("auto", "header", "bag")
ALIGNMENT = "zero-order hold: row k's action is the command in force when frame k+1 arrived"

# reasons a camera frame is not in the output
OUTSIDE_MARKERS = "outside episode markers"
BETWEEN_STEPS = "between control steps (camera faster than the control period)"
NO_COMMAND = "no command in force (none yet, or the command stream paused longer than --max-gap)"
NO_JOINT_STATE = "no joint state near the frame"
UNDECODABLE = "undecodable image"
WRONG_SIZE = "frame size differs from --image-size (--image-policy exact)"
TOO_SHORT = "episode shorter than --min-frames"
NO_STAMP = "no header stamp (--frame-time header)"


class ConversionError(ValueError):
    """The bags cannot be converted as asked (missing topics, unsupported types, damage, nothing left)."""


@dataclass(frozen=True)
class ConversionSpec:
    """What to convert and how; lewm_ros.data.bag_conversion's docstring has the rules each field controls."""

    image_topic: str
    action_topic: str
    image_size: int
    control_dt: float
    max_joint_speed: tuple[float, ...]  # one value for all joints, or one per joint
    joint_topic: str | None = None
    joint_names: tuple[str, ...] | None = None
    image_policy: str = "crop"
    episode_topic: str | None = DEFAULT_EPISODE_TOPIC  # None: never split on markers
    max_gap: float = DEFAULT_MAX_GAP
    sync_tolerance: float | None = None  # seconds; None = control_dt / 2
    command_timeout: float | None = None
    min_frames: int = 2
    frame_time: str = "auto"
    distro: str = "jazzy"
    allow_partial: bool = False

    @property
    def tolerance(self) -> float:
        return self.control_dt / 2 if self.sync_tolerance is None else self.sync_tolerance

    def check(self) -> None:
        """Refuse inconsistent settings before any bag is opened."""
        if self.image_policy not in IMAGE_POLICIES:
            raise ValueError(f"image policy must be one of {IMAGE_POLICIES}, got {self.image_policy!r}")
        if self.frame_time not in FRAME_TIMES:
            raise ValueError(f"frame time must be one of {FRAME_TIMES}, got {self.frame_time!r}")
        if self.distro not in DISTROS:
            raise ValueError(f"distro must be one of {DISTROS}, got {self.distro!r}")
        if not 1 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ValueError(f"image size must be in [1, {MAX_IMAGE_SIZE}], got {self.image_size}")
        if not (math.isfinite(self.control_dt) and self.control_dt > 0):
            raise ValueError(f"control_dt must be a finite number of seconds > 0, got {self.control_dt}")
        if not (self.max_gap >= self.control_dt):
            raise ValueError(f"--max-gap ({self.max_gap:g} s) must be at least --control-dt ({self.control_dt:g} s)")
        if not 0 < self.tolerance < self.control_dt:
            raise ValueError(
                f"--sync-tolerance must be in (0, control_dt = {self.control_dt:g}) s, got {self.tolerance:g}"
            )
        if not self.max_joint_speed or not all(math.isfinite(v) and v > 0 for v in self.max_joint_speed):
            raise ValueError(f"--max-joint-speed must be positive numbers, got {self.max_joint_speed}")
        if self.joint_names is not None:
            if len(set(self.joint_names)) != len(self.joint_names) or not all(self.joint_names):
                raise ValueError(f"--joint-names must be distinct non-empty names, got {list(self.joint_names)}")
            if len(self.max_joint_speed) not in (1, len(self.joint_names)):
                raise ValueError(f"--max-joint-speed has {len(self.max_joint_speed)} values for "
                                 f"{len(self.joint_names)} joints; give one, or one per joint")  # fmt: skip
        if self.min_frames < 2:
            raise ValueError(f"--min-frames must be at least 2 (one action), got {self.min_frames}")
