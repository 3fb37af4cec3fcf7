"""From a planned action (normalised joint speeds, the model's units) to a joint command, and the safe command.

Model actions are what the dataset recorded: per-joint velocity commands in [-1, 1] of the joint's maximum
speed (ReachEnv's convention). On the wire a command is a joint velocity in rad/s (m/s for slides):
`action x action_scale`, clamped to `max_command`. A command is never NaN: a non-finite value raises, and the
caller sends the safe command instead.

Safe command (DESIGN.md, safety model): `zeros` (zero velocity) for velocity and effort interfaces; `hold` (the
last measured joint positions) for position and trajectory interfaces. "Zero position" is never sent: it would
slam the arm to its zero pose. Without a measured position, `hold` has nothing safe to send and says so.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SAFE_ACTIONS = ("zeros", "hold")


class UnsafeCommandError(ValueError):
    """A command that must not be sent (non-finite values, or hold without a measured position)."""


class CommandShaper:
    """Scales and clamps actions into joint velocity commands; knows the safe command."""

    def __init__(
        self, joint_count: int, action_scale: Sequence[float] | float, max_command: Sequence[float] | float,
        safe_action: str = "zeros",
    ) -> None:  # fmt: skip
        if safe_action not in SAFE_ACTIONS:
            raise ValueError(f"safe_action must be one of {SAFE_ACTIONS}, got {safe_action!r}")
        self.joint_count = int(joint_count)
        self.scale = self._per_joint(action_scale, "action_scale")
        self.limit = self._per_joint(max_command, "max_command")
        self.safe_action = safe_action
        self.clamped = 0  # commands that needed clamping

    def _per_joint(self, value: Sequence[float] | float, name: str) -> np.ndarray:
        array = np.atleast_1d(np.asarray(value, np.float64)).ravel()
        if array.size == 1:
            array = np.full(self.joint_count, float(array[0]))
        if array.shape != (self.joint_count,):
            raise ValueError(f"{name} needs 1 or {self.joint_count} values (one per joint), got {array.size}")
        if not np.all(np.isfinite(array)) or np.any(array <= 0):
            raise ValueError(f"{name} values must be finite and > 0, got {array.tolist()}")
        return array

    def velocity(self, action: np.ndarray) -> np.ndarray:
        """Joint velocity command for one normalised action; raises UnsafeCommandError on NaN/inf."""
        action = np.asarray(action, np.float64).reshape(-1)
        if action.shape != (self.joint_count,):
            raise UnsafeCommandError(f"action has {action.size} values, {self.joint_count} joints are commanded")
        if not np.all(np.isfinite(action)):
            raise UnsafeCommandError(f"non-finite action {action.tolist()}")
        command = action * self.scale
        clamped = np.clip(command, -self.limit, self.limit)
        if not np.array_equal(clamped, command):
            self.clamped += 1
        return clamped

    def executed_action(self, velocity: np.ndarray) -> np.ndarray:
        """The normalised action a (clamped) velocity command amounts to: what the model should believe ran."""
        return np.asarray(velocity, np.float64) / self.scale

    def safe_velocity(self) -> np.ndarray:
        return np.zeros(self.joint_count)

    def hold_position(self, measured: np.ndarray | None) -> np.ndarray:
        """The hold target; refuses when no finite measured position exists."""
        if measured is None:
            raise UnsafeCommandError("hold needs a measured joint position and none has arrived on joint_states")
        measured = np.asarray(measured, np.float64)
        if measured.shape != (self.joint_count,) or not np.all(np.isfinite(measured)):
            raise UnsafeCommandError(f"measured joint position unusable for hold: {measured.tolist()}")
        return measured
