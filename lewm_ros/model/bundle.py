"""Model bundle: one directory a robot can load without our training code.

    model.json     format version, config, image size, frameskip, action dim, action normalisation
    weights.pt     state dict (torch.load(weights_only=True))
    encoder.ts     TorchScript: uint8 images (B, H, W, 3) at the bundle's size -> latents (B, D)
    predictor.ts   TorchScript LatentDynamics: forward(latents, action_blocks) -> next latent,
                   plus .rollout(context, past_actions, candidates) for planning
    encoder.onnx / encoder.pt2   optional exports of the encoder for TensorRT / torch.export users

Actions inside the model are normalised: a = (raw - action_mean) / action_std per action dimension.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lewm_ros import __version__
from lewm_ros.model.config import LeWMConfig
from lewm_ros.model.lewm import IMAGENET_MEAN, IMAGENET_STD, LeWM

FORMAT_VERSION = 1
META_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
ENCODER_TS = "encoder.ts"
PREDICTOR_TS = "predictor.ts"
ENCODER_ONNX = "encoder.onnx"
ENCODER_PT2 = "encoder.pt2"


class BundleError(RuntimeError):
    """A bundle directory that is missing, corrupt or incompatible; the message says which and why."""


class PixelEncoder(nn.Module):
    """uint8 images (B, H, W, 3) -> latents (B, D), with scaling and ImageNet normalisation in-graph,
    so the robot side hands camera pixels over as they come out of the image codec."""

    def __init__(self, model: LeWM) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.projector = model.projector
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)

    def forward(self, images: Tensor) -> Tensor:
        x = images.permute(0, 3, 1, 2).to(self.mean.dtype)
        return self.projector(self.encoder((x - self.mean) / self.std))


@dataclass
class Bundle:
    path: Path
    config: LeWMConfig
    model: LeWM
    action_mean: np.ndarray
    action_std: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return self.config.encoder.image_size

    def normalize_actions(self, raw: np.ndarray) -> np.ndarray:
        return (np.asarray(raw, np.float32) - self.action_mean) / self.action_std

    def denormalize_actions(self, normalized: np.ndarray) -> np.ndarray:
        return np.asarray(normalized, np.float32) * self.action_std + self.action_mean

    def load_torchscript(self, which: str = "encoder", device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
        name = {"encoder": ENCODER_TS, "predictor": PREDICTOR_TS}[which]
        file = self.path / name
        if not file.is_file():
            raise BundleError(f"{self.path}: missing {name}")
        try:
            return torch.jit.load(str(file), map_location=device).eval()
        except (RuntimeError, ValueError) as err:
            raise BundleError(f"{file}: cannot load TorchScript: {err}") from err


def save_bundle(
    model: LeWM,
    path: str | Path,
    action_mean: np.ndarray | list[float] | None = None,
    action_std: np.ndarray | list[float] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write model.json, weights.pt, encoder.ts and predictor.ts into `path` (created if needed)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    dim = model.cfg.action.action_dim
    mean = np.zeros(dim, np.float32) if action_mean is None else np.asarray(action_mean, np.float32)
    std = np.ones(dim, np.float32) if action_std is None else np.asarray(action_std, np.float32)
    if mean.shape != (dim,) or std.shape != (dim,):
        raise ValueError(f"action mean/std must have shape ({dim},), got {mean.shape} and {std.shape}")
    if not np.all(np.isfinite(std)) or np.any(std <= 0):
        raise ValueError(f"action std must be finite and positive, got {std.tolist()}")
    model = _cpu_fp32_copy(model)  # exports need fp32 on CPU; never move the caller's (training) model
    meta = {
        "format_version": FORMAT_VERSION,
        "lewm_ros_version": __version__,
        "torch_version": torch.__version__,
        "config": model.cfg.to_dict(),
        "image_size": model.cfg.encoder.image_size,
        "latent_dim": model.cfg.latent_dim,
        "frameskip": model.cfg.action.frameskip,
        "action_dim": dim,
        "history": model.cfg.predictor.history,
        "action_normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "files": {"weights": WEIGHTS_FILE, "encoder_ts": ENCODER_TS, "predictor_ts": PREDICTOR_TS},
        **(extra or {}),
    }
    torch.save(model.state_dict(), out / WEIGHTS_FILE)
    torch.jit.script(PixelEncoder(model)).save(str(out / ENCODER_TS))
    torch.jit.script(model.dynamics).save(str(out / PREDICTOR_TS))
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _cpu_fp32_copy(model: LeWM) -> LeWM:
    return copy.deepcopy(model).cpu().float().eval()


def read_meta(path: str | Path) -> dict[str, Any]:
    """model.json of a bundle, checked for format version and required fields."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: bundle directory not found")
    meta_file = root / META_FILE
    if not meta_file.is_file():
        raise BundleError(f"{root}: missing {META_FILE}; not a lewm_ros bundle")
    try:
        meta = json.loads(meta_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{meta_file}: corrupt JSON: {err}") from err
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_file}: expected a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{meta_file}: bundle format version {version!r} is not supported (this lewm_ros reads {FORMAT_VERSION})"
        )
    missing = [k for k in ("config", "action_normalization", "image_size", "action_dim") if k not in meta]
    if missing:
        raise BundleError(f"{meta_file}: missing fields {missing}")
    return meta


def load_bundle(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Bundle:
    """Load an eager LeWM from a bundle, validating metadata against the weights' names and shapes."""
    root = Path(path)
    meta = read_meta(root)
    try:
        config = LeWMConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as err:
        raise BundleError(f"{root / META_FILE}: invalid config: {err}") from err
    if meta["image_size"] != config.encoder.image_size or meta["action_dim"] != config.action.action_dim:
        raise BundleError(f"{root / META_FILE}: image_size/action_dim disagree with the config")
    norm = meta["action_normalization"]
    mean = np.asarray(norm.get("mean"), np.float32)
    std = np.asarray(norm.get("std"), np.float32)
    if mean.shape != (config.action.action_dim,) or std.shape != mean.shape or np.any(std <= 0):
        raise BundleError(f"{root / META_FILE}: action normalisation must hold action_dim means and positive stds")
    weights_file = root / WEIGHTS_FILE
    if not weights_file.is_file():
        raise BundleError(f"{root}: missing {WEIGHTS_FILE}")
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/garbage files
        raise BundleError(f"{weights_file}: corrupt or unreadable weights: {err}") from err
    if not isinstance(state, dict):
        raise BundleError(f"{weights_file}: expected a state dict, got {type(state).__name__}")
    model = LeWM(config)
    check_state_dict(model, state, str(weights_file))
    model.load_state_dict(state)
    model = model.to(device=device, dtype=dtype).eval()
    return Bundle(root, config, model, mean, std, meta)


def check_state_dict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Raise BundleError naming missing, unexpected and mis-shaped tensors (load_state_dict says less)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if shapes:
        problems.append(f"shape mismatches {shapes[:10]}")
    if problems:
        raise BundleError(f"{source} does not fit the bundle's config: " + "; ".join(problems))


def export_encoder_onnx(bundle: Bundle, opset: int = 18) -> Path:
    """encoder.onnx (uint8 NHWC in, latents out, dynamic batch) for TensorRT on the Jetson."""
    encoder = PixelEncoder(_cpu_fp32_copy(bundle.model))
    size = bundle.image_size
    example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)  # batch 1 would be specialised
    out = bundle.path / ENCODER_ONNX
    batch = torch.export.Dim("batch", min=1, max=1024)
    torch.onnx.export(
        encoder,
        (example,),
        str(out),
        input_names=["images"],
        output_names=["latents"],
        opset_version=opset,
        dynamic_shapes={"images": {0: batch}},
        dynamo=True,
        external_data=False,
    )
    return out


def export_encoder_pt2(bundle: Bundle) -> Path:
    """encoder.pt2 via torch.export (dynamic batch), loadable with torch.export.load."""
    encoder = PixelEncoder(_cpu_fp32_copy(bundle.model))
    size = bundle.image_size
    example = torch.randint(0, 256, (2, size, size, 3), dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(encoder, (example,), dynamic_shapes={"images": {0: batch}})
    out = bundle.path / ENCODER_PT2
    torch.export.save(program, str(out))
    return out
