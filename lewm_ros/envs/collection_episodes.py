"""Exploration episodes for collection: one rolled out from its own seed streams (so neither the worker count nor
appending changes what episode i contains), and the episodes of a run produced in index order, in this process or
in a pool of spawned workers."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Iterator
from typing import Any

import numpy as np

from lewm_ros.data.episodes import Episode
from lewm_ros.envs.collection_request import CollectionSpec
from lewm_ros.envs.policies import make_policy
from lewm_ros.envs.reach_env import ReachEnv, UnstableSimulationError


def episode_seeds(seed: int, index: int) -> tuple[np.random.SeedSequence, np.random.SeedSequence]:
    """Independent (environment, policy) seed streams of episode `index` of a run seeded `seed`."""
    environment, policy = np.random.SeedSequence(seed, spawn_key=(index,)).spawn(2)
    return environment, policy


def run_episode(env: ReachEnv, policy_name: str, steps: int, seed: int, index: int) -> Episode:
    """Roll out one exploration episode: steps actions, steps + 1 frames."""
    env_seed, policy_seed = episode_seeds(seed, index)
    policy = make_policy(policy_name, *env.joint_limits)
    policy.reset(np.random.default_rng(policy_seed))
    try:
        return _roll_out(env, policy, policy_name, steps, seed, env_seed)
    except UnstableSimulationError as error:
        raise UnstableSimulationError(f"episode {index}: {error}") from error


def _roll_out(
    env: ReachEnv, policy: Any, policy_name: str, steps: int, seed: int, env_seed: np.random.SeedSequence
) -> Episode:
    result = env.reset(seed=env_seed)
    n, dim = steps + 1, env.action_dim
    episode = Episode(
        pixels=np.empty((n, *env.image_shape), dtype=np.uint8),
        action=np.full((n, dim), np.nan, dtype=np.float32),
        qpos=np.empty((n, dim)),
        qvel=np.empty((n, dim)),
        timestamp=np.empty(n),
        success=np.empty(n, dtype=bool),
        goal_qpos=env.goal_qpos,
        goal_pixels=env.goal_image(),
        seed=seed,
        policy=policy_name,
    )
    for t in range(n):
        if t > 0:
            result = env.step(episode.action[t - 1])
        observation = result.observation
        episode.pixels[t] = observation.pixels
        episode.qpos[t] = observation.qpos
        episode.qvel[t] = observation.qvel
        episode.timestamp[t] = env.time
        episode.success[t] = result.success
        if t < steps:
            episode.action[t] = policy.act(observation.qpos)
    return episode


def serial_episodes(spec: CollectionSpec, indices: range, counter: list[int]) -> Iterator[Episode]:
    """The episodes of `indices` from one environment in this process; counter[0]: actions clipped so far."""
    with ReachEnv(spec.scene, spec.env) as env:
        for index in indices:
            yield run_episode(env, spec.policy, spec.steps, spec.seed, index)
            counter[0] = env.clipped_actions


_WORKER: dict[str, Any] = {}


def _start_worker(spec: CollectionSpec) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides what Ctrl-C means
    _WORKER["spec"] = spec
    try:
        _WORKER["env"] = ReachEnv(spec.scene, spec.env)
    except Exception as error:  # a failing initializer makes Pool respawn workers forever: report it per task
        _WORKER["error"] = error


def _worker_episode(index: int) -> tuple[Episode, int]:
    if "error" in _WORKER:
        raise RuntimeError(f"collection worker could not build its environment: {_WORKER['error']}")
    env, spec = _WORKER["env"], _WORKER["spec"]
    before = env.clipped_actions
    episode = run_episode(env, spec.policy, spec.steps, spec.seed, index)
    return episode, env.clipped_actions - before


def parallel_episodes(spec: CollectionSpec, indices: range, workers: int, counter: list[int]) -> Iterator[Episode]:
    """The episodes of `indices` from a pool of `workers` processes, in index order; counter[0] as above."""
    # spawn, not fork: a forked MuJoCo/EGL context is not safe to use in the child
    context = multiprocessing.get_context("spawn")
    pool = context.Pool(workers, initializer=_start_worker, initargs=(spec,))
    try:
        for episode, clipped in pool.imap(_worker_episode, indices):  # results arrive in index order
            counter[0] += clipped
            yield episode
        pool.close()
    finally:
        pool.terminate()
        pool.join()
