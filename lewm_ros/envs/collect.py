"""Offline dataset collection: exploration episodes of a ReachEnv into an HDF5 episode file.

Guarantees, and how they are kept:
- Same seed, same file: episode i draws everything (start, goal, policy noise) from
  SeedSequence(seed, spawn_key=(i,)), so neither the worker count nor appending in several runs changes
  what an episode contains, and episodes are written in index order.
- The output path only ever holds a file that was closed cleanly: episodes go to a temporary file next
  to it (a copy of the original when appending) that replaces the output at the end with os.replace.
- Ctrl-C keeps every complete episode: each episode is written and flushed as a whole (with SIGINT held
  back during the write); on interrupt the temporary file is closed and moved into place all the same.
- Bad files are refused before anything is written: an existing output needs --append or --overwrite,
  and --append validates the file first, so a corrupt original is reported and left untouched.
- Absurd requests are refused before anything is simulated (`RequestError`): counts outside
  [1, MAX_EPISODES] / [1, MAX_STEPS], workers outside [1, MAX_WORKERS] (the command line also refuses
  more workers than episodes), an episode too big to hold in memory (MAX_EPISODE_BYTES), or an estimated
  output larger than the free disk space.
- Unstable physics stops the run: ReachEnv raises UnstableSimulationError, collection stops, the
  temporary file is deleted and the output is left exactly as it was (an unstable scene is unstable in
  the next episode too, and the episodes before were simulated with the same marginal settings).

This module writes the file (`collect`) and holds `lewm-ros collect`; the request and its refusals are in
collection_request.py, rolling out the episodes (seeded, serial or in a worker pool) in collection_episodes.py.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lewm_ros.arguments import UsageError, float_in, int_in, one_line
from lewm_ros.data.episodes import DatasetError, EpisodeWriter, validate
from lewm_ros.envs.collection_episodes import parallel_episodes, serial_episodes
from lewm_ros.envs.collection_request import (
    MAX_EPISODES,
    MAX_SEED,
    MAX_STEPS,
    MAX_WORKERS,
    CollectionSpec,
    RequestError,
    check_disk_space,
    check_workers,
)
from lewm_ros.envs.policies import POLICIES
from lewm_ros.envs.reach_env import MAX_CONTROL_DT, MAX_IMAGE_SIDE, ReachConfig, ReachEnv, UnstableSimulationError

PROGRESS_MODES = ("auto", "bar", "lines", "none")
MAX_JOINT_SPEED = 1000.0  # rad/s or m/s, for --max-joint-speed
# settings that must match between a file and the episodes appended to it
_APPEND_MUST_MATCH = ("camera", "image_height", "image_width", "control_dt", "action_dim", "joint_names")


@dataclass(frozen=True)
class CollectionReport:
    path: Path
    episodes_written: int  # by this run
    frames_written: int
    episodes_in_file: int
    seconds: float
    interrupted: bool
    clipped_actions: int

    @property
    def frames_per_second(self) -> float:
        return self.frames_written / self.seconds if self.seconds > 0 else 0.0


def file_attributes(env: ReachEnv, spec: CollectionSpec) -> dict[str, Any]:
    """Root attributes of an episode file collected from `env` (see docs/data_format.md)."""
    return {
        "source": "mujoco",
        "scene": str(spec.scene),
        "camera": env.camera_name,
        "control_dt": env.control_dt,
        "seed": spec.seed,
        "policy": spec.policy,
        "joint_names": list(env.joint_names),
        "joint_lower": env.joint_lower,
        "joint_upper": env.joint_upper,
        "max_joint_speed": env.max_joint_speed,  # NaN on torque joints
        "max_joint_effort": env.max_joint_effort,  # NaN on servo joints
        "command_interfaces": list(env.command_interfaces),
        "action_scale": env.action_scale,
        "continuous_joints": [name for name, c in zip(env.joint_names, env.continuous, strict=True) if c],
        "action_space": _action_space(env),
        "success_tolerance": env.config.success_tolerance,
        "show_target": env.config.show_target,
    }


def _action_space(env: ReachEnv) -> str:
    """What one action component means, per joint kind (velocity servos, torque motors or both)."""
    kinds = set(env.command_interfaces)
    parts = []
    if "velocity" in kinds:
        parts.append("joint velocity / max_joint_speed")
    if "effort" in kinds:
        parts.append("joint effort / max_joint_effort")
    joined = " or ".join(parts) + (" (per command_interfaces)" if len(parts) > 1 else "")
    return f"{joined}, clipped to [-1, 1]"


# ------------------------------------------------------------------ writing


@contextlib.contextmanager
def _sigint_held_back(reraise: bool = True) -> Iterator[list[int]]:
    """Delay Ctrl-C until the block is done, so a write finishes whole (main thread only).

    Yields the list of signals received; with reraise, a held-back Ctrl-C is raised after the block.
    """
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield received
    finally:
        signal.signal(signal.SIGINT, previous)
    if received and reraise:
        raise KeyboardInterrupt


def _partial_path(out: Path) -> Path:
    return out.with_name(f".{out.name}.{os.getpid()}.partial")


def _check_appendable(out: Path, attributes: dict[str, Any]) -> int:
    """Validate `out` and check it was collected with the same settings; return its episode count."""
    summary = validate(out)
    mismatched = {
        name: (summary.attributes.get(name), attributes[name])
        for name in _APPEND_MUST_MATCH
        if _comparable(summary.attributes.get(name)) != _comparable(attributes[name])
    }
    if mismatched:
        details = "; ".join(f"{name}: file {old!r}, this run {new!r}" for name, (old, new) in mismatched.items())
        raise DatasetError(f"{out}: cannot append, settings differ ({details})")
    return summary.num_episodes


def _comparable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, float):
        return round(value, 12)
    return value


def collect(
    spec: CollectionSpec,
    out: str | Path,
    *,
    mode: str = "create",
    workers: int = 1,
    on_episode: Callable[[int, int], None] | None = None,
) -> CollectionReport:
    """Collect `spec.episodes` episodes into `out`; mode is create (refuse an existing file), append or
    overwrite. `on_episode(written, frames)` runs after each episode is safely on disk.

    KeyboardInterrupt stops collection early; the file then holds every complete episode and the
    report says `interrupted`. UnstableSimulationError stops it with nothing written (see the module notes);
    RequestError refuses absurd requests (workers outside [1, MAX_WORKERS], too big for memory or disk)
    before any work; more workers than episodes are reduced to the episode count.
    """
    spec.check()
    if mode not in ("create", "append", "overwrite"):
        raise ValueError(f"mode must be create, append or overwrite, got {mode!r}")
    check_workers(workers)
    workers = min(workers, spec.episodes)  # the command line refuses more; a caller topping up a file may ask
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"output {out} is a directory")
    if out.exists() and mode == "create":
        raise FileExistsError(f"{out} exists: pass --append to add episodes or --overwrite to replace it")
    # the environment is built once here to check the scene and describe it, before touching any file
    with ReachEnv(spec.scene, spec.env) as probe:
        attributes = file_attributes(probe, spec)
        image_shape, dim = probe.config.image_shape, probe.action_dim
    check = {**attributes, "image_height": image_shape[0], "image_width": image_shape[1], "action_dim": dim}
    appending = mode == "append" and out.exists()
    first_index = _check_appendable(out, check) if appending else 0
    # the temporary file (a copy of the original when appending) and the output coexist until the end
    check_disk_space(out, spec.estimated_bytes(dim) + (out.stat().st_size if appending else 0))

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = _partial_path(out)
    try:
        if appending:
            shutil.copyfile(out, partial)
            writer = EpisodeWriter.open_for_append(partial)
        else:
            writer = EpisodeWriter.create(partial, image_shape=image_shape, action_dim=dim, state_dim=dim,
                                          attributes=attributes)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    indices = range(first_index, first_index + spec.episodes)
    clipped = [0]
    written = frames = 0
    interrupted = False
    started = time.perf_counter()
    try:
        source = (serial_episodes(spec, indices, clipped) if workers == 1
                  else parallel_episodes(spec, indices, workers, clipped))
        try:
            for episode in source:
                with _sigint_held_back():  # counted inside: a Ctrl-C held back here is raised on leaving it
                    writer.write_episode(episode)
                    written += 1
                    frames += len(episode)
                if on_episode is not None:
                    on_episode(written, frames)
        except KeyboardInterrupt:
            interrupted = True
        with _sigint_held_back(reraise=False) as received:  # a second Ctrl-C must not lose the file
            source.close()
            episodes_in_file = writer.num_episodes
            writer.close()
            os.replace(partial, out)
        interrupted = interrupted or bool(received)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return CollectionReport(
        path=out,
        episodes_written=written,
        frames_written=frames,
        episodes_in_file=episodes_in_file,
        seconds=time.perf_counter() - started,
        interrupted=interrupted,
        clipped_actions=clipped[0],
    )


# ------------------------------------------------------------------ command line


def _image_size(text: str) -> int | tuple[int, int]:
    """64 (square) or HxW, e.g. 48x64; each side in [1, MAX_IMAGE_SIDE] (what the renderer is asked for)."""
    rule = f"N or HxW with sides in [1, {MAX_IMAGE_SIDE}]"
    try:
        sides = [int(v, 10) for v in text.lower().split("x")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be {rule}, got {text!r}") from None
    if len(sides) not in (1, 2) or not all(1 <= side <= MAX_IMAGE_SIDE for side in sides):
        raise argparse.ArgumentTypeError(f"image size must be {rule}, got {text!r}")
    return sides[0] if len(sides) == 1 else (sides[0], sides[1])


def _speeds(values: list[float] | float | None) -> float | tuple[float, ...] | None:
    """--max-joint-speed: one value for every joint, or a tuple with one per joint."""
    if values is None or isinstance(values, float):
        return values
    return values[0] if len(values) == 1 else tuple(values)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "collect",
        help="collect exploration episodes from a MuJoCo scene into an HDF5 episode file",
        description="Roll out an exploration policy in a MuJoCo reach scene and store the episodes "
        "(pixels, normalised joint-velocity actions, joint states) in an HDF5 episode file.",
    )
    parser.add_argument("--scene", required=True, help="MJCF file, or a bundled scene name (reach2d, arm3d)")
    parser.add_argument("--out", required=True, type=Path, help="HDF5 episode file to write")
    parser.add_argument("--episodes", type=int_in(1, MAX_EPISODES), default=100,
                        help=f"episodes to collect, at most {MAX_EPISODES} (default 100)")
    parser.add_argument("--steps", type=int_in(1, MAX_STEPS), default=100,
                        help=f"actions per episode, at most {MAX_STEPS}; frames = steps + 1 (default 100)")
    parser.add_argument("--policy", choices=tuple(POLICIES), default="mixed", help="exploration policy")
    parser.add_argument("--image-size", type=_image_size, default=64,
                        help=f"N or HxW pixels, at most {MAX_IMAGE_SIDE} per side (default 64)")
    parser.add_argument("--seed", type=int_in(0, MAX_SEED), default=0,
                        help="run seed; same seed, same file (default 0)")
    parser.add_argument("--workers", type=int_in(1, MAX_WORKERS), default=1,
                        help=f"parallel simulator processes, at most --episodes and {MAX_WORKERS} (default 1)")
    parser.add_argument("--camera", default=None, help="camera name (default: the scene's first camera)")
    parser.add_argument("--control-dt", type=float_in(0.0, MAX_CONTROL_DT, low_open=True),
                        default=ReachConfig.control_dt, help=f"seconds per action, at most {MAX_CONTROL_DT:g}")
    parser.add_argument("--max-joint-speed", type=float_in(0.0, MAX_JOINT_SPEED, low_open=True), default=None,
                        nargs="+", metavar="SPEED",
                        help="rad/s (m/s for slides), one value for all joints or one per joint in actuator "
                        "order; overrides the scene (servo joints only: torque joints are scaled by ctrlrange)")
    parser.add_argument("--show-target", action="store_true", help="render the goal marker into frames")
    existing = parser.add_mutually_exclusive_group()
    existing.add_argument("--append", action="store_true", help="add episodes to an existing file")
    existing.add_argument("--overwrite", action="store_true", help="replace an existing file")
    parser.add_argument(
        "--progress", choices=PROGRESS_MODES, default="auto",
        help="bar (tqdm), lines (one line per episode), none; auto = bar on a terminal, else none",
    )  # fmt: skip
    parser.set_defaults(run=run_collect)


def run_collect(args: argparse.Namespace) -> int:
    """Bad arguments raise UsageError (one line, exit 2); scene, file and physics problems exit 1."""
    try:
        env_config = ReachConfig(
            camera=args.camera,
            image_size=args.image_size,
            control_dt=args.control_dt,
            max_joint_speed=_speeds(args.max_joint_speed),
            show_target=args.show_target,
        )
        spec = CollectionSpec(
            scene=args.scene, episodes=args.episodes, steps=args.steps, policy=args.policy, seed=args.seed,
            env=env_config,
        )  # fmt: skip
        spec.check()
        check_workers(args.workers, spec.episodes)
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from error
    mode = "append" if args.append else "overwrite" if args.overwrite else "create"
    progress = args.progress
    if progress == "auto":
        progress = "bar" if sys.stderr.isatty() else "none"
    total_frames = spec.episodes * (spec.steps + 1)
    bar = None
    if progress == "bar":
        from tqdm import tqdm

        bar = tqdm(total=total_frames, unit="frame", desc="collect", file=sys.stderr, dynamic_ncols=True)

    def on_episode(written: int, frames: int) -> None:
        if bar is not None:
            bar.update(frames - bar.n)
            bar.set_postfix_str(f"episode {written}/{spec.episodes}", refresh=False)
        elif progress == "lines":
            print(f"episode {written}/{spec.episodes} written ({frames} frames)", file=sys.stderr, flush=True)

    try:
        report = collect(spec, args.out, mode=mode, workers=args.workers, on_episode=on_episode)
    except RequestError as error:  # too big for the disk: a bad argument, found once the scene is known
        raise UsageError(str(error)) from error
    except UnstableSimulationError as error:
        print(f"lewm-ros collect: error: {one_line(error)}; stopped, nothing written to {args.out}", file=sys.stderr)
        return 1
    except (OSError, ValueError, RuntimeError) as error:  # DatasetError and FileExistsError included
        print(f"lewm-ros collect: error: {one_line(error)}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    state = "interrupted: kept" if report.interrupted else "collected"
    print(
        f"{state} {report.episodes_written} episodes ({report.frames_written} frames) in {report.seconds:.1f} s "
        f"({report.frames_per_second:.0f} frames/s); {args.out} holds {report.episodes_in_file} episodes; "
        f"clipped actions: {report.clipped_actions}",
        file=sys.stderr,
    )
    return 130 if report.interrupted else 0

