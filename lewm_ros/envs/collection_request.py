"""What a collection may ask for: the CollectionSpec and the refusals made before anything is simulated
(`RequestError`): counts outside [1, MAX_EPISODES] / [1, MAX_STEPS], workers outside [1, MAX_WORKERS], an
episode too big to hold in memory (MAX_EPISODE_BYTES), or an estimated output larger than the free disk space."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lewm_ros.envs.policies import POLICIES
from lewm_ros.envs.reach_env import ReachConfig

MAX_EPISODES = 100_000
MAX_STEPS = 10_000  # actions per episode (the paper's episodes are a few hundred steps)
MAX_WORKERS = min(64, max(2, os.cpu_count() or 1))  # the CPU count, at least 2, at most 64
MAX_EPISODE_BYTES = 1 << 30  # one episode's frames are held in memory while it is rolled out
MAX_SEED = 2**63 - 1
_STATE_BYTES_PER_JOINT = 4 + 8 + 8  # float32 action, float64 qpos and qvel
_DISK_MARGIN = 1.05, 16 << 20  # estimate x 1.05 + 16 MiB (HDF5 metadata, attributes, chunk slack)


@dataclass(frozen=True)
class CollectionSpec:
    """What to collect: scene, environment settings, policy, episode count and length, seed."""

    scene: str
    episodes: int
    steps: int  # actions per episode; an episode stores steps + 1 frames
    policy: str = "mixed"
    seed: int = 0
    env: ReachConfig = field(default_factory=ReachConfig)

    def check(self) -> None:
        """Refuse absurd requests (RequestError, naming the flag) before any simulation."""
        for flag, value, high in (("--episodes", self.episodes, MAX_EPISODES), ("--steps", self.steps, MAX_STEPS)):
            if not _is_int(value):
                raise RequestError(f"{flag} must be an integer, got {value!r}")
            if not 1 <= value <= high:
                raise RequestError(f"{flag} must be in [1, {high}], got {value}")
        if not isinstance(self.policy, str) or self.policy not in POLICIES:
            raise RequestError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise RequestError(f"--seed must be a non-negative 64-bit integer, got {self.seed!r}")
        if not isinstance(self.env, ReachConfig):
            raise RequestError(f"env must be a ReachConfig, got {type(self.env).__name__}")
        height, width = self.env.image_shape
        episode_bytes = (self.steps + 2) * height * width * 3  # frames + goal image
        if episode_bytes > MAX_EPISODE_BYTES:
            raise RequestError(
                f"one episode of --steps {self.steps} at {height}x{width} pixels needs {_size(episode_bytes)} of "
                f"memory while it is rolled out (limit {_size(MAX_EPISODE_BYTES)}): use fewer --steps per episode "
                "and more --episodes, or a smaller --image-size"
            )

    def estimated_bytes(self, action_dim: int) -> int:
        """Upper bound of the file size this spec adds: uncompressed pixels and states, plus a margin."""
        height, width = self.env.image_shape
        frames = self.steps + 1
        per_episode = (frames + 1) * height * width * 3 + frames * (action_dim * _STATE_BYTES_PER_JOINT + 8 + 1)
        scale, extra = _DISK_MARGIN
        return int(self.episodes * per_episode * scale) + extra


class RequestError(ValueError):
    """A collection request refused before any work: bad counts, too many workers, too big for memory
    or disk. The command line reports it as a bad argument (exit code 2)."""


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def check_workers(workers: object, episodes: int | None = None) -> None:
    """Worker processes: at least 1, at most MAX_WORKERS and, when given, the episode count (RequestError)."""
    if not _is_int(workers):
        raise RequestError(f"--workers must be an integer, got {workers!r}")
    high = MAX_WORKERS if episodes is None else min(episodes, MAX_WORKERS)
    if not 1 <= workers <= high:  # type: ignore[operator]
        episodes_part = "" if episodes is None else f"--episodes {episodes} and "
        raise RequestError(
            f"--workers must be in [1, {high}] (at most {episodes_part}{MAX_WORKERS}, the CPU count bounded to "
            f"[2, 64]), got {workers}"
        )


def check_disk_space(out: Path, needed: int) -> None:
    """Refuse (RequestError) when `needed` bytes exceed the free space where `out` will be written."""
    folder = out.parent.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent  # the output folder is created later: measure the disk it will be on
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise RequestError(
            f"{out}: the collection needs up to {_size(needed)} (uncompressed estimate with margin) but only "
            f"{_size(free)} is free on the disk of {folder}: collect fewer episodes or steps, smaller images, "
            "or write elsewhere"
        )
