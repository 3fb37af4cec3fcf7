"""Goals at a known, reachable distance: where the exploration policy takes the arm from the start in a given
number of control steps, like the LeWM paper's held-out start/goal pairs (its protocol uses 25 steps).
"""

from __future__ import annotations

import numpy as np

from lewm_ros.envs.policies import make_policy
from lewm_ros.envs.reach_env import ReachEnv, StepResult

GOAL_TRIES = 10  # policy rollouts tried before the drawn goal is kept


def reachable_goal(env: ReachEnv, start: StepResult, steps: int, rng: np.random.Generator) -> StepResult:
    """Reset `env` to the same start, the goal where the exploration policy (mixed) takes the arm in `steps`
    control steps from it; the drawn goal stays when every try ends within the success tolerance of the start."""
    start_qpos = start.observation.qpos.copy()
    policy = make_policy("mixed", *env.joint_limits)
    for _ in range(GOAL_TRIES):
        policy.reset(rng)
        qpos = start_qpos
        for _ in range(steps):
            qpos = env.step(policy.act(qpos)).observation.qpos
        if np.max(np.abs(qpos - start_qpos)) > env.config.success_tolerance:
            return env.reset(start_qpos=start_qpos, goal_qpos=qpos)
        env.set_state(start_qpos)
    return env.reset(start_qpos=start_qpos, goal_qpos=start.observation.qpos + start.joint_error)
