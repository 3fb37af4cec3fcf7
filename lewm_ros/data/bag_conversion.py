"""rosbag2 recordings of an arm -> an HDF5 episode file, the format `collect` writes: the conversion pipeline
behind `lewm-ros bag2dataset` (whose command line is lewm_ros.data.bag2dataset).

ROS-free: bags are read with `rosbags` (lewm_ros.data.bag_source) and camera messages decoded with the same
decoder the agent uses (lewm_ros.data.image_decode) and fitted to the model's input with the agent's policy
(lewm_ros.data.frames.fit_frame), so training sees the pixels the robot will show the model.

How a bag becomes rows (docs/retraining.md has the user's version):
- Time: which command was in force when a frame came is decided by arrival order at the recorder (receive times,
  ties broken by the order messages were written), the one clock every topic shares, Float64MultiArray included.
  Where frames sit in time (the control grid, the timestamp column, joint-state interpolation) comes from header
  stamps when every frame and joint state has one (`--frame-time auto`, the default; `header` insists), else from
  receive times (`bag`): capture stamps are exact where receive times jitter, e.g. a recorder on a simulation's
  coarse /clock stamps a frame one step late now and then. (conversion_scan)
- Episodes: the recorder's markers (std_msgs/String "start N" / "stop N" on `--episode-topic`, by default
  /bag_recorder/episode) delimit episodes when the bag has them; frames outside a start/stop pair are dropped.
  Without markers, and within each marked episode, a pause longer than `--max-gap` seconds in the camera
  stream or in the command stream ends an episode. (frame_alignment)
- Resampling: rows are spaced one control period apart. From an episode's first frame, row k takes the unused
  frame nearest to first + k * control_dt, if it is less than `--sync-tolerance` away (default half a period);
  frames in between are dropped (a camera faster than the control rate), and when no frame is near enough the
  episode is split there (a dropped frame or a camera slower than the control rate) -- frames are never
  repeated or invented. (frame_alignment)
- Actions, zero-order hold: the command signal is the last command received (a held value, as a controller
  holds it). Row k's action is the command in force when frame k+1 arrived: the one that moved the arm from
  frame k to frame k+1. The last row of an episode has no action (NaN), as in every episode file. A
  JointTrajectory point acts for its time_from_start and then stops (zero); `--command-timeout` makes any
  command stop after that long (a controller's watchdog), and a command older than `--max-gap` is no command.
- Commands to actions: Float64MultiArray data are joint velocities in joint order; a JointTrajectory's first
  point gives velocities, or positions, which are differenced: (target - current position) / time_from_start
  (at least one control period), the current position being the joint state at that moment (or, without
  --joint-topic, the previous target). Velocities are divided by `--max-joint-speed` and clipped to [-1, 1]:
  ReachEnv's normalised action. (command_velocity)
- Joint states (`--joint-topic`, sensor_msgs/JointState) are interpolated linearly to each frame's time into
  qpos/qvel; without them qpos and qvel are zeros and the file's `joint_states` attribute says "none".
  (joint_states)

Everything dropped is counted with its reason, damage to a bag is reported (and refused unless
`--allow-partial`), and the output is written to a temporary file that replaces `--out` only when complete.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lewm_ros.arguments import one_line
from lewm_ros.data.bag_source import BagSource
from lewm_ros.data.command_velocity import command_velocities
from lewm_ros.data.conversion_report import BagConversionReport, ConversionReport
from lewm_ros.data.conversion_scan import check_topics, choose_clock, read_topics, scan_messages
from lewm_ros.data.conversion_spec import (
    ALIGNMENT,
    ARRAY_COMMAND,
    TOO_SHORT,
    UNDECODABLE,
    WRONG_SIZE,
    ConversionError,
    ConversionSpec,
)
from lewm_ros.data.episode_format import Episode
from lewm_ros.data.episode_writer import EpisodeWriter
from lewm_ros.data.frame_alignment import Row, plan_episodes
from lewm_ros.data.frames import FrameSizeError, fit_frame
from lewm_ros.data.image_decode import ImageDecodeError, to_rgb
from lewm_ros.data.joint_states import joint_at, joint_table, settle_joints

MAX_EPISODE_BYTES = 512 << 20  # frames of one episode held in memory before it is written


class _Converter:
    """Converts bags one after the other into one EpisodeWriter (created lazily at the first episode)."""

    def __init__(self, spec: ConversionSpec, partial: Path, attributes: dict[str, Any], *, progress: bool) -> None:
        self.spec = spec
        self.partial = partial
        self.progress = progress
        self.writer: EpisodeWriter | None = None
        self.joint_names: tuple[str, ...] | None = spec.joint_names
        self.speeds: np.ndarray | None = None
        self.attributes = attributes

    def convert_bag(self, path: Path) -> BagConversionReport:
        """Plan the bag's episodes from everything but pixels, then read the planned frames and write them."""
        spec = self.spec
        report = BagConversionReport(path)
        with BagSource(path, distro=spec.distro) as source:
            action_type, marker = check_topics(spec, source, report)
            scan = scan_messages(spec, source, report, marker)
            choose_clock(spec, scan, report)
            report.source_notes = list(source.notes)
            report.damaged = source.damaged
            if source.damaged and not spec.allow_partial:
                readable = ", ".join(f"{n} on {t}" for t, n in report.messages.items()) or "nothing"
                raise ConversionError(
                    f"bag {path} is damaged: {'; '.join(source.notes)}; readable: {readable}. "
                    "Pass --allow-partial to convert what is readable"
                )
            if not scan.frames:
                raise ConversionError(f"bag {path}: no messages on {spec.image_topic}")
            names = self._settle_names(settle_joints(spec, scan, path), action_type, report)
            joints = joint_table(spec, names, scan, report)

            def position_at(when: int) -> np.ndarray | None:
                state = None if joints is None else joint_at(spec, joints, when)
                return None if state is None else state[0]

            commands = command_velocities(scan.commands, names, min_duration=spec.control_dt,
                                          position_at=None if joints is None else position_at,
                                          refused=report.refused_commands)  # fmt: skip
            if not commands:
                raise ConversionError(f"bag {path}: no usable command on {spec.action_topic} ({action_type}); "
                                      f"{dict(report.refused_commands) or 'the topic is empty'}")  # fmt: skip
            plan = plan_episodes(spec, scan, commands, joints, len(names), report)
            self._decode_and_write(source, self._bounded(plan, report), report, marker)
        return report

    def _settle_names(self, names: tuple[str, ...], action_type: str,
                      report: BagConversionReport) -> tuple[str, ...]:  # fmt: skip
        """The run's joints and speeds come from its first bag; a later bag with other joints is refused."""
        spec = self.spec
        if self.joint_names is None:
            self.joint_names = names
            if spec.joint_names is None and action_type == ARRAY_COMMAND:
                report.notes.append(f"Float64MultiArray data taken to be in the joint order {list(names)}; "
                                    "pass --joint-names to pin it")  # fmt: skip
        elif sorted(names) != sorted(self.joint_names):
            raise ConversionError(f"bag {report.path}: joints {list(names)} differ from {list(self.joint_names)} "
                                  "of the bags before")  # fmt: skip
        if self.speeds is None:
            if len(spec.max_joint_speed) not in (1, len(names)):
                raise ConversionError(f"--max-joint-speed has {len(spec.max_joint_speed)} values for "
                                      f"{len(names)} joints {list(names)}; give one, or one per joint")  # fmt: skip
            self.speeds = np.broadcast_to(np.asarray(spec.max_joint_speed, np.float64), (len(names),)).copy()
        return self.joint_names

    def _bounded(self, plan: list[list[Row]], report: BagConversionReport) -> list[list[Row]]:
        """Episodes whose frames would pass MAX_EPISODE_BYTES are cut into parts that overlap by one row (the part's
        first row repeats the previous part's last frame), so no transition is lost and memory stays bounded."""
        side = self.spec.image_size
        limit = max(2, MAX_EPISODE_BYTES // (side * side * 3))
        bounded: list[list[Row]] = []
        for piece in plan:
            if len(piece) <= limit:
                bounded.append(piece)
                continue
            report.notes.append(f"an episode of {len(piece)} rows was cut into parts of at most {limit} rows "
                                f"({MAX_EPISODE_BYTES >> 20} MiB of frames), each repeating the previous part's "
                                "last frame")  # fmt: skip
            for start in range(0, len(piece) - 1, limit - 1):
                part = piece[start : start + limit]
                if start:
                    part = [dataclasses.replace(part[0], continued=True), *part[1:]]
                bounded.append(part)
        return bounded
    def _decode_and_write(self, source: BagSource, plan: list[list[Row]], report: BagConversionReport,
                          marker: str | None) -> None:  # fmt: skip
        """Pass 2: decode the planned frames in read order and write each episode once all its frames are in."""
        spec = self.spec
        wanted: dict[int, list[tuple[int, int]]] = {}  # image ordinal -> (episode, row) of each place it goes
        for e, piece in enumerate(plan):
            for r, row in enumerate(piece):
                wanted.setdefault(row.frame.ordinal, []).append((e, r))
        pixels: list[dict[int, np.ndarray | str]] = [{} for _ in plan]
        written = 0
        bar = _progress(len(wanted), f"{source.path.name}", enabled=self.progress)
        ordinal = -1
        try:
            for topic, _log_time, raw in source.messages(read_topics(spec, marker)):
                if topic != spec.image_topic:
                    continue
                ordinal += 1
                places = wanted.get(ordinal)
                if places is None:
                    continue
                image = self._frame(source, raw, report)
                for e, r in places:
                    pixels[e][r] = image
                bar.update(1)
                while written < len(plan) and len(pixels[written]) == len(plan[written]):
                    self._write_pieces(plan[written], pixels[written], report, source.path)
                    pixels[written] = {}
                    written += 1
        finally:
            bar.close()
        for e in range(written, len(plan)):  # frames the second read did not reach (cannot differ from pass 1)
            self._write_pieces(plan[e], pixels[e], report, source.path)

    def _frame(self, source: BagSource, raw: bytes, report: BagConversionReport) -> np.ndarray | str:
        """The fitted frame, or the reason it cannot be used."""
        spec = self.spec
        try:
            msg = source.deserialize(raw, spec.image_topic)
        except Exception:  # counted in pass 1 (report.undecodable), which deserialised every frame for its stamp
            return UNDECODABLE
        try:
            rgb = to_rgb(msg)
        except ImageDecodeError as error:
            report.first_errors.setdefault(UNDECODABLE, one_line(error))
            return UNDECODABLE
        height, width = rgb.shape[:2]
        try:
            fitted = fit_frame(rgb, spec.image_size, spec.image_policy)
        except FrameSizeError as error:
            report.first_errors.setdefault(WRONG_SIZE, one_line(error))
            return WRONG_SIZE
        if (height, width) != (spec.image_size, spec.image_size):
            report.resized[f"{width}x{height}"] += 1
        return fitted

    def _write_pieces(self, piece: list[Row], frames: dict[int, np.ndarray | str], report: BagConversionReport,
                      path: Path) -> None:  # fmt: skip
        """Write an episode, cut where a frame could not be used; pieces shorter than --min-frames are dropped."""
        current: list[tuple[Row, np.ndarray]] = []
        for r, row in enumerate(piece):
            image = frames.get(r, "frame not found on the second read")
            if isinstance(image, str):
                if not row.continued:  # a repeated frame is counted where it first appears
                    report.dropped[image] += 1
                self._flush(current, report, path)
                current = []
                continue
            current.append((row, image))
        self._flush(current, report, path)

    def _flush(self, rows: list[tuple[Row, np.ndarray]], report: BagConversionReport, path: Path) -> None:
        """Write one episode of decoded rows, actions normalised by the joint speeds; too short ones are dropped."""
        if not rows:
            return
        if len(rows) < self.spec.min_frames:
            report.dropped[TOO_SHORT] += len(rows)
            return
        speeds = self.speeds
        assert speeds is not None and self.joint_names is not None
        n, dim = len(rows), len(self.joint_names)
        action = np.full((n, dim), np.nan, dtype=np.float32)
        for k, (row, _image) in enumerate(rows[:-1]):
            velocity = row.action
            normalised = velocity / speeds
            report.clipped += int(np.count_nonzero(np.abs(normalised) > 1.0))
            action[k] = np.clip(normalised, -1.0, 1.0)
        t0 = rows[0][0].frame.time
        episode = Episode(
            pixels=np.stack([image for _row, image in rows]),
            action=action,
            qpos=np.stack([row.qpos for row, _ in rows]).astype(np.float64),
            qvel=np.stack([row.qvel for row, _ in rows]).astype(np.float64),
            timestamp=np.array([(row.frame.time - t0) * 1e-9 for row, _ in rows], dtype=np.float64),
            success=np.zeros(n, dtype=bool),
            goal_qpos=np.full(dim, np.nan),
            goal_pixels=np.zeros((self.spec.image_size, self.spec.image_size, 3), np.uint8),
            seed=-1,
            policy=f"rosbag:{path.name}",
        )
        self._writer().write_episode(episode)
        report.episodes.append(n)
        report.kept += n - rows[0][0].continued  # a repeated frame is counted once

    def _writer(self) -> EpisodeWriter:
        """The output file, created at the first episode, when the joints are known."""
        if self.writer is None:
            spec = self.spec
            assert self.joint_names is not None and self.speeds is not None
            dim = len(self.joint_names)
            self.attributes.update(
                joint_names=list(self.joint_names),
                max_joint_speed=self.speeds,
            )
            self.writer = EpisodeWriter.create(
                self.partial, image_shape=(spec.image_size, spec.image_size), action_dim=dim, state_dim=dim,
                attributes=self.attributes,
            )  # fmt: skip
        return self.writer


class _NoBar:
    """Stands in for a progress bar when there is none."""

    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, *, enabled: bool) -> Any:
    """A tqdm bar on stderr (tqdm hides itself when stderr is not a terminal), or nothing."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=None, leave=False)


def partial_path(out: Path) -> Path:
    """The temporary file next to `out` that the conversion writes and renames into place."""
    return out.with_name(f".{out.name}.{os.getpid()}.partial")


def convert(
    bags: Sequence[str | Path],
    out: str | Path,
    spec: ConversionSpec,
    *,
    overwrite: bool = False,
    progress: bool = False,
    on_bag: Callable[[BagConversionReport], None] | None = None,
) -> ConversionReport:
    """Convert `bags` (in order) into the episode file `out`, atomically; returns the report.

    Raises ConversionError (or BagError, DatasetError) with nothing written when a bag cannot be converted as
    asked, when a bag is damaged and `spec.allow_partial` is false, or when no episode is left; FileExistsError
    when `out` exists and `overwrite` is false.
    """
    spec.check()
    out = Path(out)
    if not bags:
        raise ConversionError("no bags given")
    if out.is_dir():
        raise ConversionError(f"output {out} is a directory")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists: pass --overwrite to replace it")
    paths = [Path(b) for b in bags]
    for path in paths:
        if not path.exists():
            raise ConversionError(f"bag {path} does not exist")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(out)
    attributes = {
        "source": "rosbag2",
        "scene": ", ".join(str(p) for p in paths),
        "camera": spec.image_topic,
        "control_dt": float(spec.control_dt),
        "seed": -1,
        "policy": "recorded",
        "action_space": "joint velocity / max_joint_speed, clipped to [-1, 1]",
        "action_topic": spec.action_topic,
        "joint_states": spec.joint_topic or "none",
        "image_policy": spec.image_policy,
        "alignment": ALIGNMENT,
        "bags": [str(p) for p in paths],
    }
    converter = _Converter(spec, partial, attributes, progress=progress)
    report = ConversionReport(out)
    try:
        for path in paths:
            bag_report = converter.convert_bag(path)
            report.bags.append(bag_report)
            if on_bag is not None:
                on_bag(bag_report)
        writer = converter.writer
        if writer is None or writer.num_episodes == 0:
            details = "; ".join(line.strip() for bag in report.bags for line in bag.lines(spec)[1:3])
            raise ConversionError(f"no episode of at least --min-frames {spec.min_frames} rows is left ({details})")
        report.episodes, report.rows = writer.num_episodes, writer.num_frames
        report.joint_names = converter.joint_names or ()
        writer.close()
        os.replace(partial, out)
    except BaseException:
        if converter.writer is not None:
            converter.writer.close()
        partial.unlink(missing_ok=True)
        raise
    return report
