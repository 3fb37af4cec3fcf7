"""The start/goal pairs `lewm-ros eval` runs. `random` uses ReachEnv's start/goal draws (seeded per episode).
`dataset:FILE.h5` is the paper's protocol: start from a frame of an episode of FILE, goal = the frame 25 env steps
later in the same episode (its pixels are the goal image, its joint state the target); pairs whose start already
meets the goal are skipped, since they would count as successes without planning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GOAL_OFFSET_STEPS = 25  # the paper: goal = the state 25 env steps after the start


@dataclass
class Task:
    """One start/goal pair."""

    start_qpos: np.ndarray
    start_qvel: np.ndarray | None
    goal_qpos: np.ndarray
    goal_pixels: np.ndarray | None  # None: render the goal configuration


def dataset_tasks(path: Path, count: int, seed: int, tolerance: float, offset: int = GOAL_OFFSET_STEPS) -> list[Task]:
    """`count` (start, start+offset) pairs from episodes of `path`, drawn with `seed`, skipping trivial ones."""
    from lewm_ros.data.episodes import EpisodeReader

    rng = np.random.default_rng(seed)
    with EpisodeReader(path) as reader:
        candidates = [
            (e, t) for e in range(reader.num_episodes) for t in range(int(reader.episode_lengths[e]) - offset)
        ]
        if not candidates:
            raise ValueError(f"{path}: no episode has more than {offset} frames; cannot draw start/goal pairs")
        tasks: list[Task] = []
        for index in rng.permutation(len(candidates)):
            episode, t = candidates[index]
            qpos = reader.read("qpos", episode, [t, t + offset])
            if np.max(np.abs(qpos[1] - qpos[0])) <= tolerance:
                continue
            qvel = reader.read("qvel", episode, [t])[0]
            goal_pixels = reader.pixels(episode, [t + offset])[0]
            tasks.append(Task(qpos[0], qvel, qpos[1], goal_pixels))
            if len(tasks) == count:
                break
    if len(tasks) < count:
        raise ValueError(f"{path}: only {len(tasks)} non-trivial start/goal pairs, {count} asked for")
    return tasks


def random_tasks(env: Any, count: int, seed: int) -> list[Task]:
    """`count` start/goal pairs from `env`'s own reset, each episode seeded from `seed`."""
    rng = np.random.default_rng(seed)
    tasks = []
    for _ in range(count):
        start = env.reset(int(rng.integers(2**31)))
        tasks.append(Task(start.observation.qpos.copy(), None, env.goal_qpos.copy(), None))
    return tasks
