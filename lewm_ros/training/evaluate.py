"""Validation of a LeWM on held-out windows: prediction loss, SIGReg, latent health, surprise calibration."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from lewm_ros.data.windows import EpisodeBlock
from lewm_ros.model.lewm import LeWM
from lewm_ros.model.precision import autocast
from lewm_ros.model.sigreg import SIGReg
from lewm_ros.training.monitor import latent_health, surprise_percentiles


@torch.no_grad()
def evaluate_windows(
    model: LeWM, block: EpisodeBlock, windows: np.ndarray, sigreg: SIGReg, device: torch.device, precision: str,
    batch: int,
) -> dict[str, Any]:  # fmt: skip
    """Teacher-forced metrics over `windows` of `block`, in eval mode (BatchNorm running statistics).

    SIGReg is measured per chunk of `batch` windows (the statistic grows with the sample count, so chunks
    the size of a training batch keep it comparable with the training curve), with fixed directions.
    The surprise is the one-step error of the newest frame, ||z_hat_T - z_T||^2 given frames 0..T-1:
    exactly what the agent computes when a frame arrives.
    """
    model.eval()
    batch = max(2, batch)
    generator = torch.Generator(device=device).manual_seed(0)
    pred_sum, sig_values, surprise, first_latents = 0.0, [], [], []
    for i in range(0, len(windows), batch):
        frames, blocks = block.batch(windows[i : i + batch])
        frames_t, blocks_t = torch.from_numpy(frames).to(device), torch.from_numpy(blocks).to(device)
        with autocast(device, precision):
            z = model.encode(frames_t)
            pred = model.predict(z[:, :-1], model.embed_actions(blocks_t))
        z, pred = z.float(), pred.float()
        pred_sum += (pred - z[:, 1:]).square().mean(dim=(1, 2)).sum().item()
        if len(frames) >= 2:
            sig_values.append(sigreg(z.transpose(0, 1), generator=generator, local=True).item())
        surprise.append((pred[:, -1] - z[:, -1]).square().sum(-1).cpu().numpy())
        first_latents.append(z[:, 0])  # stays on the device: latent_health runs where they are
    health = latent_health(torch.cat(first_latents), sigreg, chunk=batch)
    return {
        "pred": pred_sum / max(1, len(windows)),
        "sigreg": float(np.mean(sig_values)) if sig_values else float("nan"),
        "health": asdict(health),
        "surprise": surprise_percentiles(np.concatenate(surprise)),
        "windows": len(windows),
        "collapse_warning": health.collapse_warning(),
    }
