"""LeWM configuration: one dataclass per part, presets by name.

The numbers of the `paper` preset are the LeWM paper's (arXiv 2603.19312); `reach64` is our CPU
preset for the 64x64 reach task (see its docstring for how its sizes were chosen).

Configs arrive from files a robot is handed (a bundle's model.json, a checkpoint), so `LeWMConfig` checks
every field's type and range on construction and names the field in the error (`ConfigError`, e.g.
"config.encoder.patch_size: must be a positive int, got 0.5"); `from_dict` additionally refuses a model
whose parameter count, computed from the config without building it, exceeds `MAX_PARAMETERS`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

MAX_PARAMETERS = 500_000_000
"""Largest model `from_dict` accepts (2 GB of fp32 weights; the paper's LeWM has 18M): a config from a
file is refused up front rather than letting a typo or a hostile bundle allocate tens of gigabytes."""


class ConfigError(ValueError):
    """A config field with the wrong type or value; the message starts with the field's path."""


def _check_int(path: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{path}: must be a positive int, got {value!r}")


def _check_real(path: str, value: object, low: float, high: float, high_open: bool) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not (low <= value and (value < high if high_open else value <= high)):  # type: ignore[operator]
        bound = f"[{low:g}, {high:g}{')' if high_open else ']'}"
        raise ConfigError(f"{path}: must be a finite number in {bound}, got {value!r}")


def _check_part(path: str, part: object, kinds: dict[str, str]) -> None:
    """Type and range of each field; kinds: int (positive int), eps (0 < x <= 1), prob (0 <= x < 1)."""
    for name, kind in kinds.items():
        value = getattr(part, name)
        if kind == "int":
            _check_int(f"{path}.{name}", value)
        elif kind == "eps":
            _check_real(f"{path}.{name}", value, 0.0, 1.0, high_open=False)
            if value == 0:
                raise ConfigError(f"{path}.{name}: must be > 0, got {value!r}")
        else:
            _check_real(f"{path}.{name}", value, 0.0, 1.0, high_open=True)


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
        self._check_fields()

    def _check_fields(self) -> None:
        """Types, ranges and divisibility of every field, named as config.part.field; no allocation."""
        for name in ("latent_dim", "projector_hidden"):
            _check_int(f"config.{name}", getattr(self, name))
        for name, part_cls in _PARTS.items():
            part = getattr(self, name)
            if not isinstance(part, part_cls):
                raise ConfigError(f"config.{name}: must be an {part_cls.__name__}, got {type(part).__name__}")
            _check_part(f"config.{name}", part, _FIELD_KINDS[part_cls])
        enc = self.encoder
        if enc.image_size % enc.patch_size:
            raise ConfigError(
                f"config.encoder.image_size: {enc.image_size} is not a multiple of "
                f"config.encoder.patch_size {enc.patch_size}"
            )
        if enc.width % enc.heads:
            raise ConfigError(
                f"config.encoder.heads: encoder width {enc.width} is not divisible by {enc.heads} heads"
            )

    def parameter_estimate(self) -> int:
        """Exact parameter count of LeWM(self), from the config alone: lets a loader refuse a huge model
        before allocating it (Python ints, so no overflow whatever the sizes)."""
        enc, pred, act = self.encoder, self.predictor, self.action
        w, d, hidden = enc.width, self.latent_dim, self.projector_hidden

        def linear(n_in: int, n_out: int, bias: bool = True) -> int:
            return n_in * n_out + (n_out if bias else 0)

        def projector(n_in: int, n_out: int) -> int:
            return linear(n_in, hidden) + 2 * hidden + linear(hidden, n_out)  # fc1, BatchNorm affine, fc2

        vit_block = 4 * w + linear(w, 3 * w) + linear(w, w) + linear(w, enc.mlp_dim) + linear(enc.mlp_dim, w)
        encoder = 3 * enc.patch_size**2 * w + w + w + (1 + enc.num_patches) * w + enc.layers * vit_block + 2 * w
        inner = pred.heads * pred.dim_head
        pred_block = linear(d, 6 * d) + 2 * d + linear(d, 3 * inner, bias=False) + linear(inner, d)
        pred_block += 2 * d + linear(d, pred.mlp_dim) + linear(pred.mlp_dim, d)
        predictor = pred.history * d + pred.layers * pred_block + 2 * d
        embedder = linear(act.block_dim, act.smoothed_dim) + linear(act.smoothed_dim, act.mlp_scale * d)
        embedder += linear(act.mlp_scale * d, d)
        return encoder + projector(w, d) + embedder + predictor + projector(d, d)

    def validate(self, max_parameters: int | None = MAX_PARAMETERS) -> LeWMConfig:
        """Field checks plus the model-size bound (None: no bound); returns self for chaining."""
        self._check_fields()
        if max_parameters is not None:
            count = self.parameter_estimate()
            if count > max_parameters:
                shown = f"{count:,}" if count < 10**18 else f"~10^{len(str(count)) - 1}"
                raise ConfigError(
                    f"config: the model would have {shown} parameters (computed from the config), "
                    f"over the limit of {max_parameters:,}"
                )
        return self

    def size_fields(self) -> dict[str, int]:
        """Every integer field by its path ("config.encoder.width": 128), so a loader whose weights disagree
        with the config can name the field that claims the odd size."""
        sizes = {f"config.{name}": getattr(self, name) for name in ("latent_dim", "projector_hidden")}
        for part_name in _PARTS:
            part = getattr(self, part_name)
            for name, kind in _FIELD_KINDS[type(part)].items():
                if kind == "int":
                    sizes[f"config.{part_name}.{name}"] = getattr(part, name)
        return sizes

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], max_parameters: int | None = MAX_PARAMETERS) -> LeWMConfig:
        """Inverse of to_dict, for configs read from files: unknown keys are an error so a typo never
        silently falls back to a default; every field is type- and range-checked (ConfigError naming it)
        and a model over `max_parameters` (None: no bound) is refused, all before any tensor exists."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"config: must be an object (dict), got {type(data).__name__}")
        kwargs: dict[str, Any] = {}
        known = {f.name for f in fields(cls)}
        unknown = [k for k in data if k not in known]
        if unknown:
            raise ConfigError(f"config: unknown LeWM config keys: {sorted(map(str, unknown))}")
        for key, value in data.items():
            if key in _PARTS:
                part = _PARTS[key]
                if not isinstance(value, Mapping):
                    raise ConfigError(f"config.{key}: must be an object (dict), got {type(value).__name__}")
                part_known = {f.name for f in fields(part)}
                bad = [k for k in value if k not in part_known]
                if bad:
                    raise ConfigError(f"config.{key}: unknown {key} config keys: {sorted(map(str, bad))}")
                kwargs[key] = part(**value)
            else:
                kwargs[key] = value
        return cls(**kwargs).validate(max_parameters)

    def with_action(self, action_dim: int, frameskip: int | None = None) -> LeWMConfig:
        """Same model for another robot: only the action embedder's input width changes."""
        action = ActionConfig(
            action_dim=action_dim,
            frameskip=self.action.frameskip if frameskip is None else frameskip,
            smoothed_dim=self.action.smoothed_dim,
            mlp_scale=self.action.mlp_scale,
        )
        return LeWMConfig(self.latent_dim, self.projector_hidden, self.encoder, self.predictor, action)


_PARTS: dict[str, type] = {"encoder": EncoderConfig, "predictor": PredictorConfig, "action": ActionConfig}
_FIELD_KINDS: dict[type, dict[str, str]] = {
    EncoderConfig: {
        "image_size": "int", "patch_size": "int", "width": "int", "layers": "int", "heads": "int", "mlp_dim": "int",
        "norm_eps": "eps",
    },
    PredictorConfig: {
        "layers": "int", "heads": "int", "dim_head": "int", "mlp_dim": "int", "dropout": "prob", "history": "int",
    },
    ActionConfig: {"action_dim": "int", "frameskip": "int", "smoothed_dim": "int", "mlp_scale": "int"},
}


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
