"""bag2dataset's timing rules: frames into episodes of rows one control period apart, each row labelled with
the command in force (zero-order hold).

Episodes are the recorder's marked ones (or the whole bag), split where the camera pauses longer than
--max-gap. Rows take the frame nearest each control-grid time within the sync tolerance (frames in between are
dropped, and with none near enough the episode is split: frames are never repeated or invented). Row k's action
is the command in force when frame k+1 arrived; a row without one ends its episode.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from lewm_ros.data.command_velocity import Command
from lewm_ros.data.conversion_report import BagConversionReport
from lewm_ros.data.conversion_scan import Frame, Key, MessageScan
from lewm_ros.data.conversion_spec import (
    BETWEEN_STEPS,
    NO_COMMAND,
    NO_JOINT_STATE,
    OUTSIDE_MARKERS,
    TOO_SHORT,
    ConversionSpec,
)
from lewm_ros.data.joint_states import JointTable, joint_at


@dataclass
class Row:
    """One planned row: its frame, its action (None where unknown, the reason in `end`), qpos and qvel."""

    frame: Frame
    action: np.ndarray | None
    end: str
    qpos: np.ndarray
    qvel: np.ndarray
    continued: bool = False  # repeats the previous part's last frame (an episode cut for memory)


def plan_episodes(spec: ConversionSpec, scan: MessageScan, commands: list[Command], joints: JointTable | None,
                  dim: int, report: BagConversionReport) -> list[list[Row]]:  # fmt: skip
    """The episodes of a bag as rows (pixels still to be read), every dropped frame counted with its reason."""
    windows = marker_windows(spec, scan, report)
    plan: list[list[Row]] = []
    for segment in segments(spec, scan.frames, windows, report):
        for run in resample(spec, segment, report):
            plan.extend(episodes(rows(spec, run, commands, joints, dim, report), report))
    return plan


def marker_windows(spec: ConversionSpec, scan: MessageScan,
                   report: BagConversionReport) -> list[tuple[Key, Key]] | None:  # fmt: skip
    """(start, stop) of the marked episodes as arrival keys (a frame belongs to an episode when it arrived
    between its markers), or None when the bag has no markers."""
    if not scan.markers:
        return None
    report.split_on = f"episode markers ({spec.episode_topic})"
    windows: list[tuple[Key, Key]] = []
    open_at: Key | None = None
    open_id = ""
    unknown = 0
    for when, text in sorted(scan.markers, key=lambda m: m[0]):
        words = text.strip().split()
        verb = words[0].lower() if words else ""
        label = " ".join(words[1:])
        if verb == "start":
            if open_at is not None:
                report.notes.append(f"episode {open_id or '?'} has no stop marker before the next start: "
                                    "ended there")  # fmt: skip
                windows.append((open_at, when))
            open_at, open_id = when, label
        elif verb == "stop":
            if open_at is None:
                report.notes.append(f"stop marker {text!r} without a start: ignored")
                continue
            if label and open_id and label != open_id:
                report.notes.append(f"stop marker {text!r} closes episode {open_id!r}")
            windows.append((open_at, when))
            open_at = None
        else:
            unknown += 1
    if open_at is not None:
        report.notes.append(f"episode {open_id or '?'} has no stop marker (the recording ended): kept to the end")
        windows.append((open_at, (2**63 - 1, 0)))
    if unknown:
        report.notes.append(f"{unknown} episode marker messages are neither 'start N' nor 'stop N': ignored")
    return windows


def segments(spec: ConversionSpec, frames: list[Frame], windows: list[tuple[Key, Key]] | None,
             report: BagConversionReport) -> list[list[Frame]]:  # fmt: skip
    """Frames grouped by marked episode (or all together), split where the camera paused > --max-gap."""
    by_arrival = sorted((f for f in frames if f.time >= 0), key=lambda f: f.key)
    groups: list[list[Frame]]
    if windows is None:
        groups = [by_arrival]
    else:
        keys = [f.key for f in by_arrival]
        groups = [by_arrival[bisect.bisect_right(keys, start) : bisect.bisect_left(keys, stop)]
                  for start, stop in windows]  # fmt: skip
        report.dropped[OUTSIDE_MARKERS] += len(by_arrival) - sum(len(group) for group in groups)
    groups = [sorted(group, key=lambda f: (f.time, f.key)) for group in groups]
    gap = round(spec.max_gap * 1e9)
    out: list[list[Frame]] = []
    for group in groups:
        current: list[Frame] = []
        for frame in group:
            if current and frame.time - current[-1].time > gap:
                out.append(current)
                current = []
            current.append(frame)
        if current:
            out.append(current)
    return out


def resample(spec: ConversionSpec, segment: list[Frame], report: BagConversionReport) -> list[list[Frame]]:
    """Runs of frames one control period apart (nearest frame to each grid time within the tolerance)."""
    dt = round(spec.control_dt * 1e9)
    tol = round(spec.tolerance * 1e9)
    times = np.array([f.time for f in segment], dtype=np.int64)
    runs: list[list[Frame]] = []
    i = 0
    while i < len(segment):
        run = [i]
        grid = int(times[i])
        while True:
            grid += dt
            j = int(np.searchsorted(times, grid))
            candidates = [k for k in (j - 1, j) if run[-1] < k < len(times)]
            if not candidates:
                break
            best = min(candidates, key=lambda k: abs(int(times[k]) - grid))
            if abs(int(times[best]) - grid) >= tol:  # half a period off is no longer this grid time
                break
            report.dropped[BETWEEN_STEPS] += best - run[-1] - 1
            run.append(best)
        runs.append([segment[k] for k in run])
        i = run[-1] + 1
    return runs


def rows(spec: ConversionSpec, run: list[Frame], commands: list[Command], joints: JointTable | None, dim: int,
         report: BagConversionReport) -> list[Row]:  # fmt: skip
    """The rows of a run: frame, action (None where unknown, with the reason in `end`), qpos, qvel.

    A frame without a joint state is dropped, and the row before it loses its action: the transition it
    would label leads to a frame that is not in the data.
    """
    keys = [c.key for c in commands]
    gap = round(spec.max_gap * 1e9)
    timeout = None if spec.command_timeout is None else round(spec.command_timeout * 1e9)
    zeros = np.zeros(dim)
    out: list[Row] = []
    for k, frame in enumerate(run):
        if joints is not None:
            state = joint_at(spec, joints, frame.time)
            if state is None:
                report.dropped[NO_JOINT_STATE] += 1
                if out and out[-1].action is not None:
                    out[-1].action, out[-1].end = None, "next frame dropped"
                continue
            qpos, qvel = state
        else:
            qpos, qvel = zeros, zeros
        action, end = None, "end of run"
        if k + 1 < len(run):
            nxt = run[k + 1]
            c = bisect.bisect_left(keys, nxt.key) - 1  # the last command that arrived before frame k+1
            end = "no command"
            if c >= 0:
                command = commands[c]
                age = nxt.key[0] - command.key[0]
                if age <= gap:
                    stopped = (command.expires is not None and nxt.key[0] > command.expires) or (
                        timeout is not None and age > timeout
                    )
                    action = zeros if stopped else command.velocity
        out.append(Row(frame, action, end, qpos, qvel))
    return out


def episodes(planned: list[Row], report: BagConversionReport) -> list[list[Row]]:
    """Cut rows into episodes: a row without an action ends its episode (it is the last observation); a row
    without an action that ends no transition either (it would be an episode of one row) is dropped."""
    pieces: list[list[Row]] = []
    current: list[Row] = []
    for row in planned:
        if row.action is not None:
            current.append(row)
        elif current:
            current.append(row)
            pieces.append(current)
            current = []
        else:
            report.dropped[NO_COMMAND if row.end == "no command" else TOO_SHORT] += 1
    if current:  # cannot happen (a run's last row has no action), but rows are never lost silently
        pieces.append(current)
    return pieces
