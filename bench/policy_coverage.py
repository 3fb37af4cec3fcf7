"""Workspace coverage of each exploration policy on reach2d: how much of joint space the data visit.

Coverage = fraction of occupied cells of a 20x20 grid over the two joint ranges, pooled over all
episodes, and the same per episode (averaged): per-episode coverage shows how far one episode travels
from its (uniformly drawn) start, which is what the pooled figure hides.

    python bench/policy_coverage.py [--episodes 20] [--steps 100] [--bins 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from lewm_ros.envs.collection_episodes import episode_seeds
from lewm_ros.envs.policies import POLICIES, make_policy
from lewm_ros.envs.reach_env import ReachConfig, ReachEnv


def occupied_fraction(qpos: np.ndarray, lower: np.ndarray, upper: np.ndarray, bins: int) -> float:
    """Fraction of grid cells (bins per joint) holding at least one sample."""
    histogram, _ = np.histogramdd(qpos, bins=bins, range=list(zip(lower, upper, strict=True)))
    return float(np.count_nonzero(histogram)) / histogram.size


def rollout_qpos(env: ReachEnv, policy_name: str, episodes: int, steps: int, seed: int) -> list[np.ndarray]:
    policy = make_policy(policy_name, env.joint_lower, env.joint_upper)
    trajectories = []
    for index in range(episodes):
        env_seed, policy_seed = episode_seeds(seed, index)
        result = env.reset(seed=env_seed)
        policy.reset(np.random.default_rng(policy_seed))
        visited = [result.observation.qpos]
        for _ in range(steps):
            result = env.step(policy.act(result.observation.qpos))
            visited.append(result.observation.qpos)
        trajectories.append(np.array(visited))
    return trajectories


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="reach2d")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--bins", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with ReachEnv(args.scene, ReachConfig(image_size=16)) as env:
        if env.action_dim != 2:
            print("coverage grid is 2-D: use a two-joint scene", file=sys.stderr)
            return 1
        lo, hi = env.joint_lower, env.joint_upper
        print(f"{args.scene}: {args.episodes} episodes x {args.steps} steps, {args.bins}x{args.bins} joint grid")
        print(f"{'policy':<8} {'pooled':>8} {'per-episode':>12} {'max excursion':>16} {'time':>7}")
        for name in POLICIES:
            started = time.perf_counter()
            trajectories = rollout_qpos(env, name, args.episodes, args.steps, args.seed)
            pooled = occupied_fraction(np.concatenate(trajectories), lo, hi, args.bins)
            per_episode = np.mean([occupied_fraction(t, lo, hi, args.bins) for t in trajectories])
            travel = np.mean([np.abs(t - t[0]).max(axis=0).mean() for t in trajectories])
            elapsed = time.perf_counter() - started
            print(f"{name:<8} {pooled:>8.1%} {per_episode:>12.1%} {travel:>12.2f} rad {elapsed:>6.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
