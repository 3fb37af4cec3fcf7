"""The agent's inputs: the newest camera frame, goal image and joint positions, decoded and stored only.

These callbacks run in their own callback group and never plan, so frames never queue behind a slow plan; the
control tick reads whatever is newest. Bad input is dropped and counted by reason (`stats.dropped`), never
raised: a camera message must not take the node down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Header

from lewm_ros.control.stats import ControlStats
from lewm_ros.data.frames import FrameSizeError, fit_frame
from lewm_ros.ros import image_codec


@dataclass
class Frame:
    pixels: np.ndarray  # (S, S, 3) uint8, the model's input size, owned (not a view of a message)
    received: float  # time.monotonic() at arrival
    sequence: int
    header: Header  # the camera's stamp and frame_id, echoed on ~/plan_source


class StaleFrameError(ValueError):
    """A frame whose header stamp is further from the node clock than max_frame_age_ms."""


DROP_REASONS = {"ImageDecodeError": "undecodable", "FrameSizeError": "wrong_size", "StaleFrameError": "stale"}


class Sensors:
    """Holds the newest valid inputs; `configure` tells it the model's image size and the agent's settings."""

    def __init__(self, node: Any, stats: ControlStats) -> None:
        self.node, self.stats = node, stats
        self.settings: Any = None
        self.image_size = 0
        self.frame: Frame | None = None
        self.pending_goal: np.ndarray | None = None  # a goal image not yet handed to the controller
        self.measured: np.ndarray | None = None  # joint positions in joint_names order

    def configure(self, settings: Any, image_size: int) -> None:
        self.settings, self.image_size = settings, image_size

    def take_goal(self) -> np.ndarray | None:
        goal, self.pending_goal = self.pending_goal, None
        return goal

    def fit(self, rgb: np.ndarray) -> np.ndarray:
        return fit_frame(rgb, self.image_size, self.settings.image_policy)

    def on_image(self, msg: Image | CompressedImage) -> None:
        received = time.monotonic()
        stats, logger = self.stats, self.node.get_logger()
        if self.settings is None:
            return  # a message racing a cleanup
        stats.frames += 1
        try:
            self._check_stamp(msg)
            pixels = self.fit(image_codec.to_rgb(msg))
        except (image_codec.ImageDecodeError, FrameSizeError, StaleFrameError) as err:
            stats.dropped[DROP_REASONS[type(err).__name__]] += 1
            stats.invalid_in_row += 1
            logger.warning(f"camera frame dropped: {err}", throttle_duration_sec=5.0)
            return
        except Exception as err:  # a camera message must never take the node down
            stats.dropped["unexpected"] += 1
            stats.invalid_in_row += 1
            logger.error(f"camera frame dropped (unexpected {type(err).__name__}): {err}", throttle_duration_sec=5.0)
            return
        if pixels.base is not None or not pixels.flags.writeable:
            pixels = pixels.copy()  # never keep a view of a message buffer the middleware may reuse
        stats.invalid_in_row = 0
        self.frame = Frame(pixels, received, stats.frames, msg.header)

    def _check_stamp(self, msg: Image | CompressedImage) -> None:
        limit = self.settings.max_frame_age_ms
        if limit <= 0:
            return
        clock = self.node.get_clock()
        age_ms = (clock.now() - Time.from_msg(msg.header.stamp, clock_type=clock.clock_type)).nanoseconds / 1e6
        if abs(age_ms) > limit:
            raise StaleFrameError(f"stamp is {age_ms:.0f} ms old (limit {limit:g} ms)")

    def on_goal(self, msg: Image) -> None:
        if self.settings is None:
            return
        try:
            pixels = self.fit(image_codec.to_rgb(msg))
        except (image_codec.ImageDecodeError, FrameSizeError) as err:
            self.stats.dropped["goal"] += 1
            self.node.get_logger().error(f"goal image rejected: {err}")
            return
        self.pending_goal = pixels.copy()
        self.node.get_logger().info("new goal image received")

    def on_joint_state(self, msg: JointState) -> None:
        if self.settings is None:
            return
        names = self.settings.joint_names
        try:
            index = {name: i for i, name in enumerate(msg.name)}
            measured = np.array([msg.position[index[name]] for name in names], np.float64)
        except (KeyError, IndexError):
            self.stats.dropped["joint_state"] += 1
            self.node.get_logger().warning(f"joint_states without all of {list(names)}", throttle_duration_sec=10.0)
            return
        if not np.all(np.isfinite(measured)):
            self.stats.dropped["joint_state"] += 1
            return
        self.measured = measured
