"""Import weights of the reference LeWM (`stable_worldmodel.wm.lewm.LeWM`) into our modules.

The reference's encoder is an HF-transformers `ViTModel`, whose state-dict names changed between
transformers 4.x (`encoder.layer.N.attention.attention.query`) and 5.x (`layers.N.attention.q_proj`);
both are read. Separate q/k/v projections are fused into our single qkv Linear (rows stacked q, k, v).
Numerics already agree by construction: LayerNorm eps 1e-12 in the ViT, exact GELU, ImageNet pixel
normalisation, position embeddings covering the [CLS] token, 1e-6 non-affine AdaLN norms.

Attention head counts are not recoverable from weights, so they are arguments (paper values by default),
and so is the split of the action input width into frameskip x action_dim: `action_dim`, when given, is
checked against the width. `history` defaults to the frames the checkpoint's position embedding covers
(the reference's own rollout default); a shorter one drops positions, which the command line refuses
without --force.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch
from torch import Tensor

from lewm_ros.model.config import ActionConfig, EncoderConfig, LeWMConfig, PredictorConfig
from lewm_ros.model.lewm import LeWM


class ReferenceImportError(ValueError):
    """A state dict that is not a reference LeWM we can map; lists the offending keys."""


_VIT_LAYER_4X = re.compile(r"^encoder\.encoder\.layer\.(\d+)\.(.+)$")
_VIT_LAYER_5X = re.compile(r"^encoder\.layers\.(\d+)\.(.+)$")
_VIT_4X_PARTS = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "proj",
    "intermediate.dense": "fc1",
    "output.dense": "fc2",
}
_VIT_5X_PARTS = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.o_proj": "proj",
    "mlp.fc1": "fc1",
    "mlp.fc2": "fc2",
}
_QKV_4X = {"attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2}
_QKV_5X = {"attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2}
_FIXED = {
    "encoder.embeddings.cls_token": "encoder.cls_token",
    "encoder.embeddings.position_embeddings": "encoder.pos_embed",
    "encoder.embeddings.patch_embeddings.projection.weight": "encoder.patch_embed.weight",
    "encoder.embeddings.patch_embeddings.projection.bias": "encoder.patch_embed.bias",
    "encoder.layernorm.weight": "encoder.norm.weight",
    "encoder.layernorm.bias": "encoder.norm.bias",
    "action_encoder.patch_embed.weight": "dynamics.action_embedder.smooth.weight",
    "action_encoder.patch_embed.bias": "dynamics.action_embedder.smooth.bias",
    "action_encoder.embed.0.weight": "dynamics.action_embedder.fc1.weight",
    "action_encoder.embed.0.bias": "dynamics.action_embedder.fc1.bias",
    "action_encoder.embed.2.weight": "dynamics.action_embedder.fc2.weight",
    "action_encoder.embed.2.bias": "dynamics.action_embedder.fc2.bias",
    "predictor.transformer.norm.weight": "dynamics.predictor.norm.weight",
    "predictor.transformer.norm.bias": "dynamics.predictor.norm.bias",
}
_PROJECTOR_PARTS = {"net.0": "fc1", "net.1": "bn", "net.3": "fc2"}
_PREDICTOR_LAYER = re.compile(r"^predictor\.transformer\.layers\.(\d+)\.(.+)$")
_PREDICTOR_PARTS = {
    "attn.norm": "attn.norm",
    "attn.to_qkv": "attn.qkv",
    "attn.to_out.0": "attn.out",
    "mlp.net.0": "mlp.norm",
    "mlp.net.1": "mlp.fc1",
    "mlp.net.4": "mlp.fc2",
    "adaLN_modulation.1": "modulation",
}


def _split_param(rest: str) -> tuple[str, str]:
    module, _, param = rest.rpartition(".")
    return module, param


def reference_history(state: dict[str, Tensor]) -> int:
    """Frames covered by the checkpoint's predictor position embedding (shape (1, frames, dim))."""
    if "predictor.pos_embedding" not in state:
        raise ReferenceImportError("missing key 'predictor.pos_embedding': not a reference LeWM state dict")
    embedding = state["predictor.pos_embedding"]
    if not isinstance(embedding, Tensor) or embedding.dim() != 3 or embedding.shape[1] < 1:
        shape = tuple(embedding.shape) if isinstance(embedding, Tensor) else type(embedding).__name__
        raise ReferenceImportError(f"predictor.pos_embedding must have shape (1, frames, dim), got {shape}")
    return int(embedding.shape[1])


def normalise_reference_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The bare state dict: unwrap a Lightning-style {'state_dict': ...}, strip model./module. prefixes,
    and refuse entries that are not tensors."""
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    not_tensors = sorted(str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor))
    if not_tensors:
        raise ReferenceImportError(f"state dict entries that are not named tensors: {not_tensors[:10]}")
    return _strip_prefix(state, ("model.", "module."))


def convert_reference_state_dict(state: dict[str, Tensor], history: int = 3) -> dict[str, Tensor]:
    """Rename (and fuse q/k/v of) a reference LeWM state dict into ours. Unknown keys -> error."""
    out: dict[str, Tensor] = {}
    qkv_parts: dict[tuple[int, str], dict[int, Tensor]] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if key in _FIXED:
            out[_FIXED[key]] = value
            continue
        if key == "predictor.pos_embedding":
            if reference_history(state) < history:
                raise ReferenceImportError(
                    f"predictor.pos_embedding covers {value.shape[1]} frames, fewer than history {history}"
                )
            out["dynamics.predictor.pos_embed"] = value[:, :history].clone()
            continue
        projector = re.match(r"^(projector|pred_proj)\.(net\.\d)\.(\w+)$", key)
        if projector and projector.group(2) in _PROJECTOR_PARTS:
            target = "projector" if projector.group(1) == "projector" else "dynamics.pred_projector"
            out[f"{target}.{_PROJECTOR_PARTS[projector.group(2)]}.{projector.group(3)}"] = value
            continue
        layer = _PREDICTOR_LAYER.match(key)
        if layer:
            module, param = _split_param(layer.group(2))
            if module in _PREDICTOR_PARTS:
                out[f"dynamics.predictor.blocks.{layer.group(1)}.{_PREDICTOR_PARTS[module]}.{param}"] = value
                continue
        vit = _VIT_LAYER_4X.match(key) or _VIT_LAYER_5X.match(key)
        if vit:
            parts, qkv = (_VIT_4X_PARTS, _QKV_4X) if key.startswith("encoder.encoder.") else (_VIT_5X_PARTS, _QKV_5X)
            module, param = _split_param(vit.group(2))
            index = int(vit.group(1))
            if module in parts:
                out[f"encoder.blocks.{index}.{parts[module]}.{param}"] = value
                continue
            if module in qkv:
                qkv_parts.setdefault((index, param), {})[qkv[module]] = value
                continue
        unknown.append(key)
    if unknown:
        raise ReferenceImportError(f"unknown keys in reference state dict: {sorted(unknown)}")
    for (index, param), pieces in sorted(qkv_parts.items()):
        if sorted(pieces) != [0, 1, 2]:
            raise ReferenceImportError(f"encoder layer {index}: incomplete q/k/v {param}s")
        out[f"encoder.blocks.{index}.qkv.{param}"] = torch.cat([pieces[0], pieces[1], pieces[2]], dim=0)
    return out


def infer_reference_config(
    state: dict[str, Tensor],
    encoder_heads: int = 3,
    predictor_heads: int = 16,
    frameskip: int = 5,
    history: int | None = 3,
    action_dim: int | None = None,
) -> LeWMConfig:
    """Sizes from tensor shapes; head counts, frameskip and history from the arguments (history None:
    the position embedding's length); action_dim, when given, must split the action input width."""
    given = {"encoder_heads": encoder_heads, "predictor_heads": predictor_heads, "frameskip": frameskip,
             "history": history, "action_dim": action_dim}
    for name, value in given.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ReferenceImportError(f"{name} must be a positive integer, got {value!r}")
    if history is None:
        history = reference_history(state)

    def need(key: str) -> Tensor:
        if key not in state:
            raise ReferenceImportError(f"missing key {key!r}: not a reference LeWM state dict")
        return state[key]

    width = need("encoder.embeddings.cls_token").shape[-1]
    patch = need("encoder.embeddings.patch_embeddings.projection.weight").shape[-1]
    grid = math.isqrt(need("encoder.embeddings.position_embeddings").shape[1] - 1)
    enc_layers = _count_layers(state, (_VIT_LAYER_4X, _VIT_LAYER_5X))
    fc1 = next((v for k, v in state.items() if k.endswith((".intermediate.dense.weight", ".mlp.fc1.weight"))
                and k.startswith("encoder.")), None)
    if fc1 is None or enc_layers == 0:
        raise ReferenceImportError("no ViT layers found under encoder.*")
    qkv = need("predictor.transformer.layers.0.attn.to_qkv.weight")
    inner = qkv.shape[0] // 3
    if inner % predictor_heads:
        raise ReferenceImportError(f"predictor inner dim {inner} is not divisible by {predictor_heads} heads")
    if width % encoder_heads:
        raise ReferenceImportError(f"encoder width {width} is not divisible by {encoder_heads} heads")
    block_dim = need("action_encoder.patch_embed.weight").shape[1]
    if action_dim is not None and frameskip * action_dim != block_dim:
        raise ReferenceImportError(
            f"frameskip {frameskip} x action_dim {action_dim} = {frameskip * action_dim}, but the checkpoint's "
            f"action input is {block_dim} wide; splits that fit: {_splits(block_dim)}"
        )
    if block_dim % frameskip:
        raise ReferenceImportError(
            f"action block width {block_dim} is not a multiple of frameskip {frameskip}; splits that fit: "
            f"{_splits(block_dim)}"
        )
    latent = need("projector.net.3.weight").shape[0]
    return LeWMConfig(
        latent_dim=latent,
        projector_hidden=need("projector.net.0.weight").shape[0],
        encoder=EncoderConfig(
            image_size=grid * patch, patch_size=patch, width=width, layers=enc_layers, heads=encoder_heads,
            mlp_dim=fc1.shape[0],
        ),
        predictor=PredictorConfig(
            layers=_count_layers(state, (_PREDICTOR_LAYER,)), heads=predictor_heads, dim_head=inner // predictor_heads,
            mlp_dim=need("predictor.transformer.layers.0.mlp.net.1.weight").shape[0], history=history,
        ),
        action=ActionConfig(
            action_dim=block_dim // frameskip, frameskip=frameskip,
            smoothed_dim=need("action_encoder.patch_embed.weight").shape[0],
            mlp_scale=need("action_encoder.embed.0.weight").shape[0] // latent,
        ),
    )


def _splits(width: int) -> str:
    return ", ".join(f"frameskip {f} x action_dim {width // f}" for f in range(1, width + 1) if width % f == 0)


def _count_layers(state: dict[str, Tensor], patterns: tuple[re.Pattern[str], ...]) -> int:
    indices = {int(m.group(1)) for key in state for p in patterns if (m := p.match(key))}
    return max(indices) + 1 if indices else 0


def import_reference(
    state: dict[str, Tensor], history: int | None = 3, **config_args: int | None
) -> LeWM:
    """A LeWM whose outputs equal the reference model's for the same state dict (eval mode).

    history None takes every frame of the checkpoint's position embedding; config_args go to
    infer_reference_config (encoder_heads, predictor_heads, frameskip, action_dim).
    """
    state = normalise_reference_state(state)
    cfg = infer_reference_config(state, history=history, **config_args)  # type: ignore[arg-type]
    model = LeWM(cfg)
    converted = convert_reference_state_dict(state, history=cfg.predictor.history)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    if missing:
        raise ReferenceImportError(f"reference state dict lacks tensors for: {missing}")
    mismatched = [f"{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in converted.items()
                  if tuple(v.shape) != tuple(expected[k].shape)]
    if mismatched:
        raise ReferenceImportError(f"shape mismatches after mapping: {mismatched}")
    model.load_state_dict(converted)
    return model.eval()


def _strip_prefix(state: dict[str, Tensor], prefixes: tuple[str, ...]) -> dict[str, Tensor]:
    strip: Callable[[str], str] = lambda k: k  # noqa: E731
    for prefix in prefixes:
        if state and all(k.startswith(prefix) for k in state):
            strip = lambda k, p=prefix: k[len(p):]  # noqa: E731
            break
    return {strip(k): v for k, v in state.items()}
