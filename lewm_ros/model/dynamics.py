"""Latent dynamics: action embedder + predictor + pred projector, and the rollouts planning needs.

Kept as one TorchScript-able module so the same rollout code runs eagerly, in `predictor.ts` on a
Jetson, and in tests. Shapes: B batch, Tc context frames, S candidates, H horizon (action blocks),
D latent dim, A = frameskip * action_dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lewm_ros.model.config import LeWMConfig
from lewm_ros.model.predictor import ActionEmbedder, Predictor


class Projector(nn.Module):
    """Linear -> BatchNorm1d -> GELU -> Linear over the last axis.

    BatchNorm, not LayerNorm: the ViT already ends in a LayerNorm, and another per-sample
    normalisation would pin every latent's norm, which SIGReg's Gaussian target cannot tolerate.
    """

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.fc2(F.gelu(self.bn(self.fc1(x.reshape(-1, x.shape[-1])))))
        return y.reshape(list(x.shape[:-1]) + [y.shape[-1]])


class LatentDynamics(nn.Module):
    def __init__(self, cfg: LeWMConfig) -> None:
        super().__init__()
        self.history = cfg.predictor.history
        self.action_embedder = ActionEmbedder(cfg.action, cfg.latent_dim)
        self.predictor = Predictor(cfg.predictor, cfg.latent_dim)
        self.pred_projector = Projector(cfg.latent_dim, cfg.projector_hidden, cfg.latent_dim)

    def predict(self, latents: Tensor, action_emb: Tensor) -> Tensor:
        """Teacher forcing: (B, T, D) latents and action embeddings -> (B, T, D) next latents."""
        return self.pred_projector(self.predictor(latents, action_emb))

    def forward(self, latents: Tensor, action_blocks: Tensor) -> Tensor:
        """One planning step: the last <= history latents (B, T, D) and their action blocks (B, T, A)
        -> the predicted latent after the newest block (B, D)."""
        return self.predict(latents, self.action_embedder(action_blocks))[:, -1]

    @torch.jit.export
    def rollout(self, context: Tensor, past_actions: Tensor, candidates: Tensor) -> Tensor:
        """Predicted latent after each candidate block, running candidate-independent tokens once.

        context (B, Tc, D): latents of the last Tc <= history frames, oldest first;
        past_actions (B, Tc-1, A): the executed block that left each context frame but the newest;
        candidates (B, S, H, A): candidate blocks, the first leaving the newest context frame.
        Returns (B, S, H, D).

        Equals `rollout_recompute`. Window positions are learned, so a token's keys/values change
        whenever the window slides and cannot be carried from one step to the next; what can be shared
        is every token whose latent and action are the same for all candidates. Those run once per step
        at batch B and hand their per-layer keys/values to the candidates' tokens; and the last layer
        computes only the newest token, the one whose output is used. The action modulation (AdaLN) of each
        candidate block is computed once, not at every step the block appears in.
        """
        batch, n_ctx, dim = context.shape[0], context.shape[1], context.shape[2]
        samples, horizon = candidates.shape[1], candidates.shape[2]
        past_emb = self.action_embedder(past_actions)
        cand_mods = self.predictor.modulations(self.action_embedder(candidates))  # per layer (B, S, H, 6D)
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
            for frame in range(start + n_shared, total):
                latents.append(ctx[:, :, frame] if frame < n_ctx else preds[frame - n_ctx])
            tokens = len(latents)
            x = torch.stack(latents, dim=2).reshape(batch * samples, tokens, dim)
            # the candidate tokens pair with candidate blocks first..first+tokens-1, contiguous in the horizon
            first = start + n_shared - (n_ctx - 1)
            mods = [m[:, :, first : first + tokens].reshape(batch * samples, tokens, m.shape[-1]) for m in cand_mods]
            out, _, _ = self.predictor.run(x, x, n_shared, past_k, past_v, True, mods)
            preds.append(self.pred_projector(out[:, -1]).reshape(batch, samples, dim))
        return torch.stack(preds, dim=2)

    @torch.jit.export
    def rollout_recompute(self, context: Tensor, past_actions: Tensor, candidates: Tensor) -> Tensor:
        """The straightforward rollout: every step re-runs the whole window for every candidate."""
        batch, n_ctx, dim = context.shape[0], context.shape[1], context.shape[2]
        samples, horizon, block = candidates.shape[1], candidates.shape[2], candidates.shape[3]
        flat = batch * samples
        latents = context.unsqueeze(1).expand(batch, samples, n_ctx, dim).reshape(flat, n_ctx, dim)
        past = past_actions.unsqueeze(1).expand(batch, samples, n_ctx - 1, block)
        action_emb = self.action_embedder(torch.cat([past, candidates], dim=2).reshape(flat, -1, block))
        preds: list[Tensor] = []
        for step in range(horizon):
            total = n_ctx + step
            start = max(0, total - self.history)
            nxt = self.predict(latents[:, start:total], action_emb[:, start:total])[:, -1]
            preds.append(nxt.reshape(batch, samples, dim))
            latents = torch.cat([latents, nxt.unsqueeze(1)], dim=1)
        return torch.stack(preds, dim=2)


def _repeat_per_sample(t: Tensor, samples: int) -> Tensor:
    """(B, ...) -> (B*S, ...) with each batch row repeated S times, matching (B, S) flattening."""
    rest = list(t.shape[1:])
    return t.unsqueeze(1).expand([t.shape[0], samples] + rest).reshape([-1] + rest)
