"""Exploration policies: bounds, reproducibility, temporal structure, and what they do to coverage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lewm_ros.envs.collection_episodes import episode_seeds
from lewm_ros.envs.policies import POLICIES, make_policy
from lewm_ros.envs.reach_env import ReachConfig, ReachEnv

LOWER, UPPER = np.array([-2.0, -1.0, -3.0]), np.array([2.0, 1.0, 3.0])
REACH2D = Path(__file__).resolve().parents[1] / "sim" / "reach2d.xml"


def run_policy(name: str, seed: int, steps: int, qpos: np.ndarray | None = None) -> np.ndarray:
    policy = make_policy(name, LOWER, UPPER)
    policy.reset(np.random.default_rng(seed))
    state = np.zeros(3) if qpos is None else qpos
    return np.array([policy.act(state) for _ in range(steps)])


def lag_one_correlation(actions: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(a[:-1], a[1:])[0, 1] for a in actions.T]))


@pytest.mark.parametrize("name", list(POLICIES))
def test_actions_are_float32_in_range_and_reproducible(name):
    actions = run_policy(name, seed=3, steps=500)
    assert actions.shape == (500, 3) and actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 1.0)
    np.testing.assert_array_equal(actions, run_policy(name, seed=3, steps=500))
    assert not np.array_equal(actions, run_policy(name, seed=4, steps=500))


def test_smooth_commands_are_temporally_correlated_random_ones_are_not():
    assert lag_one_correlation(run_policy("smooth", 0, 2000)) > 0.8
    assert abs(lag_one_correlation(run_policy("random", 0, 2000))) < 0.1


def test_smooth_policy_turns_back_at_the_joint_limits():
    at_upper = run_policy("smooth", 1, 300, qpos=UPPER.copy())
    at_lower = run_policy("smooth", 1, 300, qpos=LOWER.copy())
    assert np.all(at_upper <= 0) and np.any(at_upper < -0.1)
    assert np.all(at_lower >= 0) and np.any(at_lower > 0.1)


def test_mixed_policy_interleaves_sweeps_jitter_and_standing_still():
    actions = run_policy("mixed", 2, 3000)
    still = np.all(actions == 0, axis=1)
    assert 0.02 < still.mean() < 0.3
    moving = actions[~still]
    changes = np.abs(np.diff(moving, axis=0))
    assert np.mean(changes < 0.3) > 0.4  # smooth stretches: OU steps of sigma 0.2
    assert np.mean(changes > 1.0) > 0.03  # random jitter: uniform draws differ by > 1 a quarter of the time


def test_unknown_policy_name():
    with pytest.raises(ValueError, match="unknown policy 'brownian'"):
        make_policy("brownian", LOWER, UPPER)


def test_smooth_exploration_travels_further_than_iid_random_in_the_simulator():
    excursion = {}
    with ReachEnv(REACH2D, ReachConfig(image_size=8)) as env:
        for name in ("random", "smooth"):
            policy = make_policy(name, env.joint_lower, env.joint_upper)
            per_episode = []
            for index in range(6):
                env_seed, policy_seed = episode_seeds(0, index)
                result = env.reset(seed=env_seed)
                policy.reset(np.random.default_rng(policy_seed))
                start = result.observation.qpos
                furthest = np.zeros(2)
                for _ in range(60):
                    result = env.step(policy.act(result.observation.qpos))
                    furthest = np.maximum(furthest, np.abs(result.observation.qpos - start))
                per_episode.append(furthest.mean())
            excursion[name] = np.mean(per_episode)
    assert excursion["smooth"] > 2 * excursion["random"]
