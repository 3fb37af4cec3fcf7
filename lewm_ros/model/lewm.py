"""LeWM: encode frames to latents, predict the next latent under an action block, roll out candidates.

Shapes: B batch, T time, S candidate sequences, H horizon (action blocks), D latent dim,
A = frameskip * action_dim (one action block, in normalised action units).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lewm_ros.model.config import LeWMConfig
from lewm_ros.model.predictor import ActionEmbedder, Predictor
from lewm_ros.model.vit import ViTEncoder

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Projector(nn.Module):
    """Linear -> BatchNorm1d -> GELU -> Linear on (N, in_dim).

    BatchNorm, not LayerNorm: the ViT already ends in a LayerNorm, and another per-sample
    normalisation would pin every latent's norm, which SIGReg's Gaussian target cannot tolerate.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = self.fc2(F.gelu(self.bn(self.fc1(x.reshape(-1, x.shape[-1])))))
        return y.reshape(lead + (y.shape[-1],))


class LeWM(nn.Module):
    def __init__(self, cfg: LeWMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = ViTEncoder(cfg.encoder)
        self.projector = Projector(cfg.encoder.width, cfg.projector_hidden, cfg.latent_dim)
        self.action_embedder = ActionEmbedder(cfg.action, cfg.latent_dim)
        self.predictor = Predictor(cfg.predictor, cfg.latent_dim)
        self.pred_projector = Projector(cfg.latent_dim, cfg.projector_hidden, cfg.latent_dim)
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

    # ---- dynamics ---------------------------------------------------------------------------------

    def embed_actions(self, action_blocks: Tensor) -> Tensor:
        if action_blocks.shape[-1] != self.cfg.action.block_dim:
            raise ValueError(
                f"action blocks must have {self.cfg.action.block_dim} features "
                f"(frameskip {self.cfg.action.frameskip} x action_dim {self.cfg.action.action_dim}), "
                f"got shape {tuple(action_blocks.shape)}"
            )
        return self.action_embedder(action_blocks)

    def predict(self, latents: Tensor, action_emb: Tensor) -> Tensor:
        """Teacher-forced prediction: (B, T, D) latents + (B, T, D) action embeddings -> (B, T, D),
        output t being the predicted latent t+1. T must not exceed `history`."""
        return self.pred_projector(self.predictor(latents, action_emb))

    def rollout(self, context: Tensor, past_actions: Tensor, candidates: Tensor) -> Tensor:
        """Predict latents after each candidate action block, reusing the candidates' shared prefix.

        context (B, Tc, D): latents of the last Tc <= history frames, oldest first;
        past_actions (B, Tc-1, A): the executed block that left each context frame but the newest;
        candidates (B, S, H, A): candidate blocks, the first leaving the newest context frame.
        Returns (B, S, H, D): the predicted latent after each candidate block.

        Equals `rollout_recompute` (the plain sliding-window loop). Window positions are learned, so a
        token's keys/values change whenever the window slides and cannot be carried across steps; what
        is shared is every token whose latent and action are the same for all candidates, run once per
        step at batch B instead of B*S.
        """
        batch, n_ctx, dim = self._check_rollout_inputs(context, past_actions, candidates)
        samples, horizon = candidates.shape[1], candidates.shape[2]
        past_emb = self.embed_actions(past_actions)
        cand_emb = self.embed_actions(candidates)
        ctx = context.unsqueeze(1).expand(batch, samples, n_ctx, dim)
        preds: list[Tensor] = []
        for step in range(horizon):
            total = n_ctx + step
            start = max(0, total - self.history)
            n_shared = max(0, n_ctx - 1 - start)
            past_k: list[Tensor] = []
            past_v: list[Tensor] = []
            if n_shared > 0:
                _, keys, values = self.predictor.run(
                    context[:, start : start + n_shared], past_emb[:, start : start + n_shared], 0, [], []
                )
                past_k = [_repeat_per_sample(k, samples) for k in keys]
                past_v = [_repeat_per_sample(v, samples) for v in values]
            latents: list[Tensor] = []
            conds: list[Tensor] = []
            for frame in range(start + n_shared, total):
                latents.append(ctx[:, :, frame] if frame < n_ctx else preds[frame - n_ctx])
                conds.append(cand_emb[:, :, frame - (n_ctx - 1)])
            x = torch.stack(latents, dim=2).reshape(batch * samples, len(latents), dim)
            c = torch.stack(conds, dim=2).reshape(batch * samples, len(conds), dim)
            out, _, _ = self.predictor.run(x, c, n_shared, past_k, past_v)
            preds.append(self.pred_projector(out[:, -1]).reshape(batch, samples, dim))
        return torch.stack(preds, dim=2)

    def rollout_recompute(self, context: Tensor, past_actions: Tensor, candidates: Tensor) -> Tensor:
        """The straightforward rollout: every step re-runs the whole window for every candidate."""
        batch, n_ctx, dim = self._check_rollout_inputs(context, past_actions, candidates)
        samples, horizon = candidates.shape[1], candidates.shape[2]
        flat = batch * samples
        latents = context.unsqueeze(1).expand(batch, samples, n_ctx, dim).reshape(flat, n_ctx, dim)
        past = past_actions.unsqueeze(1).expand((batch, samples) + tuple(past_actions.shape[1:]))
        actions = torch.cat([past, candidates], dim=2).reshape((flat, -1, candidates.shape[-1]))
        action_emb = self.embed_actions(actions)
        preds: list[Tensor] = []
        for step in range(horizon):
            total = n_ctx + step
            start = max(0, total - self.history)
            window = self.predict(latents[:, start:total], action_emb[:, start:total])
            nxt = window[:, -1]
            preds.append(nxt.reshape(batch, samples, dim))
            latents = torch.cat([latents, nxt.unsqueeze(1)], dim=1)
        return torch.stack(preds, dim=2)

    def _check_rollout_inputs(
        self, context: Tensor, past_actions: Tensor, candidates: Tensor
    ) -> tuple[int, int, int]:
        if context.dim() != 3 or context.shape[-1] != self.cfg.latent_dim:
            raise ValueError(f"context must be (B, Tc, {self.cfg.latent_dim}), got {tuple(context.shape)}")
        batch, n_ctx, dim = context.shape
        if not 1 <= n_ctx <= self.history:
            raise ValueError(f"context holds {n_ctx} frames; expected 1..history={self.history}")
        block = self.cfg.action.block_dim
        if past_actions.shape != (batch, n_ctx - 1, block):
            raise ValueError(
                f"past_actions must be (B, Tc-1, A) = {(batch, n_ctx - 1, block)}, got {tuple(past_actions.shape)}"
            )
        if candidates.dim() != 4 or candidates.shape[0] != batch or candidates.shape[-1] != block:
            raise ValueError(f"candidates must be (B, S, H, {block}), got {tuple(candidates.shape)}")
        if candidates.shape[2] < 1:
            raise ValueError("candidates need a horizon of at least one action block")
        return batch, n_ctx, dim


def _repeat_per_sample(t: Tensor, samples: int) -> Tensor:
    """(B, ...) -> (B*S, ...) with each batch row repeated S times, matching (B, S) flattening."""
    rest = tuple(t.shape[1:])
    return t.unsqueeze(1).expand((t.shape[0], samples) + rest).reshape((-1,) + rest)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
