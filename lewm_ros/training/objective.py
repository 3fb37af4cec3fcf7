"""The LeWM training objective: teacher-forced next-latent MSE + lambda x SIGReg, end to end."""

from __future__ import annotations

from torch import Tensor, nn

from lewm_ros.model.lewm import LeWM
from lewm_ros.model.sigreg import SIGReg


class Objective(nn.Module):
    """What DDP wraps (DDP needs the whole forward inside one module call).

    frames (B, T+1, H, W, 3) uint8 and blocks (B, T, A) -> latents (B, T+1, D) and the teacher-forced
    predictions of latents 1..T (B, T, D).
    """

    def __init__(self, model: LeWM) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: Tensor, blocks: Tensor) -> tuple[Tensor, Tensor]:
        z = self.model.encode(frames)
        pred = self.model.predict(z[:, :-1], self.model.embed_actions(blocks))
        return z, pred


def prediction_loss(z: Tensor, pred: Tensor) -> Tensor:
    """Mean squared error of the predictions of latents 1..T (computed in fp32)."""
    return (pred.float() - z[:, 1:].float()).square().mean()


def sigreg_loss(sigreg: SIGReg, z: Tensor) -> Tensor:
    """SIGReg over the batch at each time step of the window, averaged over time."""
    return sigreg(z.float().transpose(0, 1))
