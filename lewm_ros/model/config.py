"""LeWM configuration: one dataclass per part, presets by name.

The numbers of the `paper` preset are the LeWM paper's (arXiv 2603.19312); `reach64` is our CPU
preset for the 64x64 reach task (see its docstring for how its sizes were chosen).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class EncoderConfig:
    """ViT over RGB frames; the [CLS] token after the final LayerNorm is the frame's feature."""

    image_size: int = 224
    patch_size: int = 14
    width: int = 192
    layers: int = 12
    heads: int = 3
    mlp_dim: int = 768
    norm_eps: float = 1e-12  # HF ViTConfig default; the reference encoder is an HF ViTModel

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class PredictorConfig:
    """Causal transformer over the last `history` latents, AdaLN-zero conditioned on actions."""

    layers: int = 6
    heads: int = 16
    dim_head: int = 64
    mlp_dim: int = 2048
    dropout: float = 0.1
    history: int = 3


@dataclass(frozen=True)
class ActionConfig:
    """Action blocks: `frameskip` env steps of `action_dim` normalised commands, embedded together."""

    action_dim: int = 2
    frameskip: int = 5
    smoothed_dim: int = 10
    mlp_scale: int = 4

    @property
    def block_dim(self) -> int:
        return self.frameskip * self.action_dim


@dataclass(frozen=True)
class LeWMConfig:
    latent_dim: int = 192
    projector_hidden: int = 2048
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    predictor: PredictorConfig = field(default_factory=PredictorConfig)
    action: ActionConfig = field(default_factory=ActionConfig)

    def __post_init__(self) -> None:
        enc = self.encoder
        if enc.image_size % enc.patch_size:
            raise ValueError(f"image_size {enc.image_size} is not a multiple of patch_size {enc.patch_size}")
        if enc.width % enc.heads:
            raise ValueError(f"encoder width {enc.width} is not divisible by {enc.heads} heads")
        if self.predictor.history < 1:
            raise ValueError("predictor history must be >= 1")
        for name, value in (("action_dim", self.action.action_dim), ("frameskip", self.action.frameskip)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeWMConfig:
        """Inverse of to_dict; unknown keys are an error so a typo never silently falls back to a default."""
        parts = {"encoder": EncoderConfig, "predictor": PredictorConfig, "action": ActionConfig}
        kwargs: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown LeWM config keys: {sorted(unknown)}")
        for key, value in data.items():
            if key in parts:
                part = parts[key]
                part_known = {f.name for f in fields(part)}
                bad = set(value) - part_known
                if bad:
                    raise ValueError(f"unknown {key} config keys: {sorted(bad)}")
                kwargs[key] = part(**value)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def with_action(self, action_dim: int, frameskip: int | None = None) -> LeWMConfig:
        """Same model for another robot: only the action embedder's input width changes."""
        action = ActionConfig(
            action_dim=action_dim,
            frameskip=self.action.frameskip if frameskip is None else frameskip,
            smoothed_dim=self.action.smoothed_dim,
            mlp_scale=self.action.mlp_scale,
        )
        return LeWMConfig(self.latent_dim, self.projector_hidden, self.encoder, self.predictor, action)


def paper_config() -> LeWMConfig:
    """The paper's LeWM: ViT-tiny/14 at 224x224, 6-layer 16x64 predictor, ~18.0M parameters."""
    return LeWMConfig()


def reach64_config() -> LeWMConfig:
    """CPU preset for the 64x64 reach task: 2.35M parameters, paper structure (causal AdaLN-zero
    predictor, history 3, frameskip 5) at patch 8 on 64x64 (64 tokens), width 128.

    Sized by measurement (bench/reach64_sizing.py: 300 reach2d episodes, the LeWM loss end to end,
    bf16, batch 64, lr 1e-3, on the 2-core machine). In a 20-minute budget this preset (~0.65 s/step,
    1,854 steps) predicts the next latent with 0.7% of the copy-last error and ranks the true 5-block
    action sequence at mean rank 2.2 among 300 candidates; picking the lowest-cost candidate reaches the
    goal (all joints within 0.05 rad) in 35% of held-out pairs (an oracle over the 299 random candidates
    alone: 39%). A 1.05M model (width 96, 3+3 layers) matched it within the noise of 100 pairs (mean
    rank 2.4, 39%) at 0.6x the step cost, and is the fallback if planning time matters; an 8.4M model
    learned slower per minute (rank 7.0 vs 6.2 after 4 min). Dropout is off: these models under-fit.
    """
    return LeWMConfig(
        latent_dim=128,
        projector_hidden=512,
        encoder=EncoderConfig(image_size=64, patch_size=8, width=128, layers=4, heads=4, mlp_dim=512),
        predictor=PredictorConfig(layers=4, heads=4, dim_head=32, mlp_dim=512, dropout=0.0, history=3),
        action=ActionConfig(action_dim=2, frameskip=5),
    )


def reach64_small_config() -> LeWMConfig:
    """The 1.05M alternative to `reach64` from bench/reach64_sizing.py (width 96, 3+3 layers, 0.6x the step
    cost): more optimiser steps in the same wall-clock budget on slow CPUs."""
    return LeWMConfig(
        latent_dim=96,
        projector_hidden=384,
        encoder=EncoderConfig(image_size=64, patch_size=8, width=96, layers=3, heads=3, mlp_dim=384),
        predictor=PredictorConfig(layers=3, heads=4, dim_head=24, mlp_dim=384, dropout=0.0, history=3),
        action=ActionConfig(action_dim=2, frameskip=5),
    )


def tiny_config() -> LeWMConfig:
    """A ~0.1M model for tests and smoke runs of the pipeline (64x64, same structure); it does not plan well."""
    return LeWMConfig(
        latent_dim=32,
        projector_hidden=64,
        encoder=EncoderConfig(image_size=64, patch_size=16, width=32, layers=1, heads=2, mlp_dim=64),
        predictor=PredictorConfig(layers=1, heads=2, dim_head=16, mlp_dim=64, dropout=0.0, history=3),
        action=ActionConfig(action_dim=2, frameskip=5),
    )


PRESETS = {
    "paper": paper_config, "reach64": reach64_config, "reach64-small": reach64_small_config, "tiny": tiny_config,
}


def preset(name: str) -> LeWMConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}") from None
