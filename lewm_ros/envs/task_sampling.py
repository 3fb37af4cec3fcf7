"""Where reach tasks start and end: collision-free start and goal draws inside the joint limits (ReachEnv.reset)
and a far teleport target (the mujoco_sim node's ~/teleport). Goals the exploration policy reaches are in
reachable_goals.py.

Every draw takes its generator explicitly: a seeded generator makes the sequence of tasks reproducible.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

SAMPLING_TRIES = 200
TELEPORT_CANDIDATES = 64
TELEPORT_MARGIN = 0.05  # fraction of each joint range a teleport target keeps free


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Angles mapped to [-pi, pi): how far apart two poses of a continuous joint really are."""
    return np.mod(np.asarray(angle, dtype=np.float64) + np.pi, 2 * np.pi) - np.pi


def draw_configuration(
    rng: np.random.Generator,
    lower: np.ndarray,
    upper: np.ndarray,
    continuous: np.ndarray,
    collides: Callable[[np.ndarray], bool],
    *,
    limit_margin: float,
    away_from: np.ndarray | None = None,
    min_distance: float = 0.0,
    scene: object = "the scene",
) -> np.ndarray:
    """A uniform draw inside the limits (less `limit_margin` of each range; continuous joints on the whole
    circle) that collides with nothing and, given `away_from`, is more than `min_distance` from it on some
    joint. Raises RuntimeError after SAMPLING_TRIES draws, saying which condition failed how often."""
    span = upper - lower
    margin = np.where(continuous, 0.0, limit_margin * span)  # the circle has no ends
    low, high = lower + margin, upper - margin
    too_close = 0
    for _ in range(SAMPLING_TRIES):
        candidate = rng.uniform(low, high)
        if away_from is not None:
            apart = candidate - away_from
            apart = np.where(continuous, wrap_angle(apart), apart)
            if np.max(np.abs(apart)) <= min_distance:
                too_close += 1
                continue
        if not collides(candidate):
            return candidate
    raise RuntimeError(
        f"no usable configuration in {SAMPLING_TRIES} draws inside the joint limits of {scene}: "
        f"{too_close} too close to the start (joint ranges {np.round(span, 4).tolist()}; "
        "MJCF angles are in degrees unless <compiler angle='radian'/>), "
        f"{SAMPLING_TRIES - too_close} in collision (does the rest pose already touch other geoms?)"
    )


def far_configuration(
    rng: np.random.Generator,
    lower: np.ndarray,
    upper: np.ndarray,
    current: np.ndarray,
    penetrations: Callable[[np.ndarray], int],
) -> np.ndarray:
    """The farthest (largest per-joint share of the range) of TELEPORT_CANDIDATES uniform draws inside the
    limits that penetrates no more than the current pose does: an implausible jump, yet a physical pose."""
    span = upper - lower
    low, high = lower + TELEPORT_MARGIN * span, upper - TELEPORT_MARGIN * span
    candidates = rng.uniform(low, high, size=(TELEPORT_CANDIDATES, len(span)))
    distance = np.max(np.abs(candidates - current) / span, axis=1)
    allowed = penetrations(current)
    for index in np.argsort(-distance):
        if penetrations(candidates[index]) <= allowed:
            return candidates[index]
    raise RuntimeError(f"none of {TELEPORT_CANDIDATES} random configurations is free of collisions")
