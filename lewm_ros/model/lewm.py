"""LeWM: encode frames to latents, predict the next latent under an action block, roll out candidates.

Shapes: B batch, T time, S candidate sequences, H horizon (action blocks), D latent dim,
A = frameskip * action_dim (one action block, in normalised action units).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lewm_ros.model.config import LeWMConfig
from lewm_ros.model.dynamics import LatentDynamics, Projector
from lewm_ros.model.vit import ViTEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LeWM(nn.Module):
    def __init__(self, cfg: LeWMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ViTEncoder(cfg.encoder)
        self.projector = Projector(cfg.encoder.width, cfg.projector_hidden, cfg.latent_dim)
        self.dynamics = LatentDynamics(cfg)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def history(self) -> int:
        return self.cfg.predictor.history

    # ---- encoding ---------------------------------------------------------------------------------

    def preprocess(self, pixels: Tensor) -> Tensor:
        """Images (..., 3, H, W) or (..., H, W, 3), uint8 in [0, 255] or float in [0, 1] ->
        ImageNet-normalised float (N, 3, size, size), resized (bilinear, antialiased) when H, W differ.

        Channels-last is recognised by a trailing axis of 3 with a non-3 axis at -3.
        """
        if pixels.dim() < 3:
            raise ValueError(f"expected images (..., 3, H, W) or (..., H, W, 3), got {tuple(pixels.shape)}")
        if pixels.shape[-1] == 3 and pixels.shape[-3] != 3:
            pixels = pixels.movedim(-1, -3)
        if pixels.shape[-3] != 3:
            raise ValueError(f"expected 3 colour channels, got shape {tuple(pixels.shape)}")
        images = pixels.reshape((-1,) + tuple(pixels.shape[-3:]))
        dtype = self.pixel_mean.dtype if self.pixel_mean.is_floating_point() else torch.float32
        if images.dtype == torch.uint8:
            images = images.to(dtype) / 255.0
        else:
            images = images.to(dtype)
        size = self.cfg.encoder.image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        return (images - self.pixel_mean) / self.pixel_std

    def encode(self, pixels: Tensor) -> Tensor:
        """Frames with any leading axes (see `preprocess`) -> latents with the same leading axes + (D,)."""
        lead = pixels.shape[:-3]
        features = self.encoder(self.preprocess(pixels))
        return self.projector(features).reshape(lead + (self.cfg.latent_dim,))

    # ---- dynamics (see LatentDynamics) -------------------------------------------------------------

    def embed_actions(self, action_blocks: Tensor) -> Tensor:
        self._check_blocks(action_blocks)
        return self.dynamics.action_embedder(action_blocks)

    def predict(self, latents: Tensor, action_emb: Tensor) -> Tensor:
        """Teacher-forced prediction: (B, T, D) latents + (B, T, D) action embeddings -> (B, T, D),
        output t being the predicted latent t+1. T must not exceed `history`."""
        return self.dynamics.predict(latents, action_emb)

    def rollout(self, context: Tensor, past_actions: Tensor, candidates: Tensor) -> Tensor:
        """(B, Tc, D), (B, Tc-1, A), (B, S, H, A) -> (B, S, H, D); see LatentDynamics.rollout."""
        self._check_rollout_inputs(context, past_actions, candidates)
        return self.dynamics.rollout(context, past_actions, candidates)

    def rollout_recompute(self, context: Tensor, past_actions: Tensor, candidates: Tensor) -> Tensor:
        """The straightforward rollout (whole window re-run per step and candidate); the baseline."""
        self._check_rollout_inputs(context, past_actions, candidates)
        return self.dynamics.rollout_recompute(context, past_actions, candidates)

    def _check_blocks(self, blocks: Tensor) -> None:
        if blocks.shape[-1] != self.cfg.action.block_dim:
            raise ValueError(
                f"action blocks must have {self.cfg.action.block_dim} features "
                f"(frameskip {self.cfg.action.frameskip} x action_dim {self.cfg.action.action_dim}), "
                f"got shape {tuple(blocks.shape)}"
            )

    def _check_rollout_inputs(self, context: Tensor, past_actions: Tensor, candidates: Tensor) -> None:
        if context.dim() != 3 or context.shape[-1] != self.cfg.latent_dim:
            raise ValueError(f"context must be (B, Tc, {self.cfg.latent_dim}), got {tuple(context.shape)}")
        batch, n_ctx, _ = context.shape
        if not 1 <= n_ctx <= self.history:
            raise ValueError(f"context holds {n_ctx} frames; expected 1..history={self.history}")
        block = self.cfg.action.block_dim
        if tuple(past_actions.shape) != (batch, n_ctx - 1, block):
            raise ValueError(f"past_actions must be {(batch, n_ctx - 1, block)}, got {tuple(past_actions.shape)}")
        if candidates.dim() != 4 or candidates.shape[0] != batch or candidates.shape[-1] != block:
            raise ValueError(f"candidates must be (B, S, H, {block}), got {tuple(candidates.shape)}")
        if candidates.shape[2] < 1:
            raise ValueError("candidates need a horizon of at least one action block")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
