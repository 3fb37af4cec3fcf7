"""The one planning problem `lewm-ros bench planner` hands to both sides: random context latents, executed
action blocks inside the limits, and a goal latent, drawn from the bench's seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Problem:
    """One planning problem, the same for both sides: latents, executed blocks, goal."""

    context: Any  # (Tc, D) latents
    past_raw: Any  # (Tc-1, frameskip, action_dim) raw units
    past_norm: Any  # (Tc-1, A) normalised units (what the model sees)
    goal: Any  # (D,)


def make_problem(cfg: Any, n_ctx: int, action_mean: Any, action_std: Any, seed: int, device: Any) -> Problem:
    """A problem at `cfg`'s sizes with `n_ctx` context frames, the same for a given seed."""
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    fs, ad = cfg.action.frameskip, cfg.action.action_dim
    context = torch.randn(n_ctx, cfg.latent_dim, generator=gen)
    goal = torch.randn(cfg.latent_dim, generator=gen)
    noise = torch.randn(n_ctx - 1, fs, ad, generator=gen).numpy()
    past_raw = np.clip(action_mean + 0.5 * action_std * noise, -1.0, 1.0).astype(np.float32)  # inside the limits
    past_norm = torch.from_numpy(((past_raw - action_mean) / action_std).reshape(n_ctx - 1, fs * ad))
    return Problem(context.to(device), past_raw, past_norm.float().to(device), goal.to(device))
