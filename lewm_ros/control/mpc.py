"""Receding-horizon latent MPC as a state machine driven one control tick at a time.

The world model works in action blocks: one latent per `frameskip` control ticks, one block = the
`frameskip` actions executed between two latents. At the start of every block the caller hands over the
newest camera frame (`observe`): it is encoded, compared with what the model predicted for it (the surprise),
and appended to the history the predictor needs. Every `receding_horizon` blocks (or when the plan runs out) a
new plan is made from that history, warm-started from the previous one. Each tick then takes one action of
the current block (`next_action`) and reports the action actually sent (`record_executed`), so the history
always holds what the arm was really told, after clamping.

Whenever the loop is interrupted (safe stop, goal change) `reset()` forgets history and plan: the actions
executed meanwhile were not the model's, so continuing the old context would feed the predictor a lie.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from lewm_ros.planning.core import LatentPlanner, PlanResult

Encoder = Callable[[Tensor], Tensor]  # uint8 (B, H, W, 3) on the device -> (B, D) latents


@dataclass
class Observation:
    """What `observe` learned from one frame."""

    latent: Tensor
    surprise: float | None  # None when there was no prediction to compare with (first frame after reset)


class LatentMPC:
    """History of latents and executed blocks, the current plan, and the tick position inside it."""

    def __init__(
        self, encoder: Encoder, model: torch.nn.Module, planner: LatentPlanner, receding_horizon: int,
        device: torch.device | str = "cpu",
    ) -> None:  # fmt: skip
        if receding_horizon < 1 or receding_horizon > planner.config.horizon:
            raise ValueError(
                f"receding_horizon must be in 1..horizon={planner.config.horizon}, got {receding_horizon}"
            )
        self.encoder, self.model, self.planner = encoder, model, planner
        self.receding_horizon = int(receding_horizon)
        self.device = torch.device(device)
        self.frameskip, self.action_dim, self.history = planner.frameskip, planner.action_dim, planner.history
        self._mean = torch.as_tensor(planner.action_mean, dtype=torch.float32, device=self.device)
        self._std = torch.as_tensor(planner.action_std, dtype=torch.float32, device=self.device)
        self.goal: Tensor | None = None
        self.plans = 0
        self.reset()

    # ---- state ---------------------------------------------------------------------------------------

    def reset(self, keep_warm_start: bool = False) -> None:
        """Forget history and plan (after a stop, a goal change, or a failure) and, unless `keep_warm_start`, the
        planner's warm start. Keep it after a stop for time (an overrun): the search it holds still aims at the
        same goal from nearly the same place, and starting cold on a machine that just ran late would overrun
        again."""
        self.latents: list[Tensor] = []
        self.blocks: list[np.ndarray] = []  # blocks[i] ran between latents[i] and latents[i + 1]
        self._current: list[np.ndarray] = []  # actions of the block being executed
        self._pending: np.ndarray | None = None  # the finished block not yet followed by a latent
        self.plan_result: PlanResult | None = None
        self.block_index = 0  # block of the current plan being executed
        self.step_in_block = 0
        self.blocks_since_plan = 0
        if not keep_warm_start:
            self.planner.reset()

    @property
    def at_block_start(self) -> bool:
        return self.step_in_block == 0

    @property
    def needs_plan(self) -> bool:
        result = self.plan_result
        return (
            result is None
            or self.blocks_since_plan >= self.receding_horizon
            or self.block_index >= len(result.plan)
        )

    # ---- inputs --------------------------------------------------------------------------------------

    @torch.inference_mode()
    def encode(self, pixels: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 frame -> (D,) latent on the device."""
        batch = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)[None]
        return self.encoder(batch)[0].float()

    def set_goal(self, pixels: np.ndarray) -> Tensor:
        """A new goal image: encode it and start over (the old plan aimed elsewhere)."""
        latent = self.encode(pixels)
        if not bool(torch.isfinite(latent).all()):
            raise ValueError("the goal image encodes to a non-finite latent")
        self.goal = latent
        self.reset()
        return latent

    def observe(self, pixels: np.ndarray) -> Observation:
        """Encode the frame that starts a block; its surprise is measured against the model's prediction."""
        if not self.at_block_start:
            raise RuntimeError("observe() is for the first tick of a block")
        latent = self.encode(pixels)
        if not bool(torch.isfinite(latent).all()):
            raise ValueError("the camera frame encodes to a non-finite latent")
        surprise = None
        if self.latents and self._pending is not None:
            predicted = self.predict_next(self._pending)
            surprise = float((predicted - latent).square().sum())
            self.blocks.append(self._pending)
        elif self.latents:
            # A block boundary without a finished block cannot happen in normal use; keep history consistent.
            self.latents.clear()
            self.blocks.clear()
        self._pending = None
        self.latents.append(latent)
        keep = self.history
        self.latents = self.latents[-keep:]
        self.blocks = self.blocks[-(keep - 1) :] if keep > 1 else []
        return Observation(latent, surprise)

    @torch.inference_mode()
    def predict_next(self, block: np.ndarray) -> Tensor:
        """The model's prediction of the next latent after executing raw `block` from the current history."""
        context = torch.stack(self.latents[-self.history :])[None]
        past = self._normalised(self.blocks[-(context.shape[1] - 1) :]) if context.shape[1] > 1 else None
        if past is None:
            past = torch.zeros(1, 0, self.frameskip * self.action_dim, device=self.device)
        candidate = self._normalised([block]).reshape(1, 1, 1, -1)
        return self.model.rollout(context, past, candidate)[0, 0, 0].float()

    def _normalised(self, blocks: list[np.ndarray]) -> Tensor:
        raw = torch.as_tensor(np.stack(blocks), dtype=torch.float32, device=self.device)
        return ((raw - self._mean) / self._std).reshape(1, len(blocks), -1)

    # ---- planning and acting ---------------------------------------------------------------------------

    def plan(self) -> PlanResult:
        """A new plan from the newest latent; the warm start is shifted by the blocks run since the last one."""
        if self.goal is None:
            raise RuntimeError("no goal latent: set a goal before planning")
        if not self.latents or not self.at_block_start:
            raise RuntimeError("plan() needs an observed frame at the start of a block")
        self.planner.advance(self.blocks_since_plan)
        context = torch.stack(self.latents)
        past = np.stack(self.blocks) if self.blocks else None
        result = self.planner.plan(context, past, self.goal)
        self.plan_result = result
        self.block_index = 0
        self.blocks_since_plan = 0
        self.plans += 1
        return result

    def next_action(self) -> np.ndarray:
        """The raw action for this tick (dataset units: normalised joint speeds)."""
        if self.plan_result is None or self.block_index >= len(self.plan_result.plan):
            raise RuntimeError("no plan covers this tick")
        return self.plan_result.plan[self.block_index, self.step_in_block].astype(np.float64)

    def record_executed(self, action: np.ndarray) -> None:
        """The action really sent this tick (after clamping); closes the block after `frameskip` ticks."""
        self._current.append(np.asarray(action, np.float32).reshape(self.action_dim))
        self.step_in_block += 1
        if self.step_in_block == self.frameskip:
            self._pending = np.stack(self._current)
            self._current = []
            self.step_in_block = 0
            self.block_index += 1
            self.blocks_since_plan += 1
