"""Action embedder and the causal AdaLN-zero predictor, with a key/value prefix for shared tokens.

Planning rolls out hundreds of candidate action sequences from one context. Tokens whose latent and
action are the same for every candidate (the context frames paired with already-executed actions) are
run once at batch size B and their per-layer keys/values are handed to the candidates' tokens, so each
candidate only pays for the tokens that actually depend on it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lewm_ros.model.config import ActionConfig, PredictorConfig


class ActionEmbedder(nn.Module):
    """Action blocks (..., T, frameskip*action_dim) -> embeddings (..., T, dim).

    Conv1d(k=1) over the feature axis, then Linear -> SiLU -> Linear. A k=1 convolution is a linear map
    on features, applied here with F.linear so any number of leading axes works.
    """

    def __init__(self, cfg: ActionConfig, dim: int) -> None:
        super().__init__()
        self.smooth = nn.Conv1d(cfg.block_dim, cfg.smoothed_dim, kernel_size=1)
        self.fc1 = nn.Linear(cfg.smoothed_dim, cfg.mlp_scale * dim)
        self.fc2 = nn.Linear(cfg.mlp_scale * dim, dim)

    def forward(self, blocks: Tensor) -> Tensor:
        x = blocks.to(self.fc1.weight.dtype)
        x = F.linear(x, self.smooth.weight[:, :, 0], self.smooth.bias)
        return self.fc2(F.silu(self.fc1(x)))


class CausalAttention(nn.Module):
    """Pre-norm multi-head causal attention; optionally attends to keys/values of earlier tokens."""

    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dim_head = dim_head
        self.dropout = dropout
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.out = nn.Linear(heads * dim_head, dim)

    def forward(
        self, x: Tensor, past_k: Tensor | None, past_v: Tensor | None, last_only: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`last_only`: keys/values for every token, but attention output only for the newest one (which
        attends to everything, so no mask is needed); exact, and what a rollout's last layer needs."""
        batch, tokens, _ = x.shape
        qkv = self.qkv(self.norm(x)).view(batch, tokens, 3, self.heads, self.dim_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        drop = self.dropout if self.training else 0.0
        if last_only:
            keys = k if past_k is None else torch.cat([past_k, k], dim=2)
            values = v if past_v is None else torch.cat([past_v, v], dim=2)
            attn = F.scaled_dot_product_attention(q[:, :, -1:], keys, values, dropout_p=drop)
            attn = attn.transpose(1, 2).reshape(batch, 1, self.heads * self.dim_head)
            return F.dropout(self.out(attn), drop, self.training), k, v
        if past_k is None or past_v is None:
            attn = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=True)
        else:
            keys = torch.cat([past_k, k], dim=2)
            values = torch.cat([past_v, v], dim=2)
            prefix = past_k.shape[2]
            mask = torch.ones(tokens, prefix + tokens, dtype=torch.bool, device=x.device).tril(prefix)
            attn = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=drop)
        attn = attn.transpose(1, 2).reshape(batch, tokens, self.heads * self.dim_head)
        return F.dropout(self.out(attn), drop, self.training), k, v


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        hidden = F.dropout(F.gelu(self.fc1(self.norm(x))), self.dropout, self.training)
        return F.dropout(self.fc2(hidden), self.dropout, self.training)


class ConditionalBlock(nn.Module):
    """Transformer block whose norms are shifted/scaled and whose branches are gated by the action.

    The modulation Linear starts at zero (AdaLN-zero), so a fresh block is the identity map.
    """

    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = CausalAttention(dim, heads, dim_head, dropout)
        self.mlp = FeedForward(dim, mlp_dim, dropout)
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def modulate(self, cond: Tensor) -> Tensor:
        """The action's shift/scale/gate values (..., 6*dim); depends on the action only, so a rollout computes
        it once per candidate block and reuses it at every step the block appears in."""
        return self.modulation(F.silu(cond))

    def forward(
        self, x: Tensor, cond: Tensor, past_k: Tensor | None, past_v: Tensor | None, last_only: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        return self.forward_modulated(x, self.modulate(cond), past_k, past_v, last_only)

    def forward_modulated(
        self, x: Tensor, mod: Tensor, past_k: Tensor | None, past_v: Tensor | None, last_only: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`last_only`: return only the newest token's output (keys/values still cover every token)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)
        attn, k, v = self.attn(self.norm1(x) * (1 + scale1) + shift1, past_k, past_v, last_only)
        if last_only:
            x, gate1, shift2, scale2, gate2 = x[:, -1:], gate1[:, -1:], shift2[:, -1:], scale2[:, -1:], gate2[:, -1:]
        x = x + gate1 * attn
        x = x + gate2 * self.mlp(self.norm2(x) * (1 + scale2) + shift2)
        return x, k, v


class Predictor(nn.Module):
    """Latents (B, T, dim) + action embeddings (B, T, dim) -> next-latent features (B, T, dim).

    Output t predicts latent t+1 and sees only inputs 0..t. Positions are learned over the `history`
    window, so a token's position is its index inside the window, not its time in the episode.
    """

    def __init__(self, cfg: PredictorConfig, dim: int) -> None:
        super().__init__()
        self.history = cfg.history
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.history, dim))
        self.blocks = nn.ModuleList(
            ConditionalBlock(dim, cfg.heads, cfg.dim_head, cfg.mlp_dim, cfg.dropout) for _ in range(cfg.layers)
        )
        self.norm = nn.LayerNorm(dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for name, param in self.named_parameters():
            if param.dim() == 2 and "modulation" not in name and name != "pos_embed":
                nn.init.trunc_normal_(param, std=0.02)
            elif name.endswith("bias") and "modulation" not in name:
                nn.init.zeros_(param)

    def forward(self, latents: Tensor, cond: Tensor) -> Tensor:
        out, _, _ = self.run(latents, cond, 0, [], [])
        return out

    def modulations(self, cond: Tensor) -> list[Tensor]:
        """Per-layer modulation values of action embeddings (..., dim) -> [(..., 6*dim)] (see `run`)."""
        return [block.modulate(cond) for block in self.blocks]

    def run(
        self, latents: Tensor, cond: Tensor, start: int, past_k: list[Tensor], past_v: list[Tensor],
        last_only: bool = False, mods: list[Tensor] | None = None,
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """Run tokens at window positions start..start+T-1 after an optional per-layer key/value prefix.

        Returns the normalised outputs and the new tokens' keys/values per layer. `last_only`: the last
        layer computes only the newest token (B, 1, dim), which is all a rollout step uses. `mods`: the
        tokens' per-layer modulation values, precomputed with `modulations` (then `cond` is not used).
        """
        tokens = latents.shape[1]
        if start + tokens > self.history:
            raise ValueError(f"window of {start + tokens} tokens exceeds history {self.history}")
        x = latents + self.pos_embed[:, start : start + tokens]
        keys: list[Tensor] = []
        values: list[Tensor] = []
        use_past = len(past_k) > 0
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            pk: Tensor | None = past_k[i] if use_past else None
            pv: Tensor | None = past_v[i] if use_past else None
            mod = block.modulate(cond) if mods is None else mods[i]
            x, k, v = block.forward_modulated(x, mod, pk, pv, last_only and i == last)
            keys.append(k)
            values.append(v)
        return self.norm(x), keys, values
