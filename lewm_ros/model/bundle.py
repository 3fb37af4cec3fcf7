"""Model bundle: one directory a robot can load without our training code.

    model.json     format version, config, image size, frameskip, action dim, action normalisation
    weights.pt     state dict (torch.load(weights_only=True))
    encoder.ts     TorchScript: uint8 images (B, H, W, 3) at the bundle's size -> latents (B, D)
    predictor.ts   TorchScript LatentDynamics: forward(latents, action_blocks) -> next latent,
                   plus .rollout(context, past_actions, candidates) for planning
    encoder.onnx / encoder.pt2   optional exports of the encoder for TensorRT / torch.export users

Actions inside the model are normalised: a = (raw - action_mean) / action_std per action dimension.

A bundle is untrusted input (a robot loads whatever directory it is given), so loading checks, in this
order and before any tensor is allocated: model.json's size (<= META_MAX_BYTES), its JSON (nesting and
number limits included), every field's type and range (`LeWMConfig.from_dict`, naming the field), the
model size computed from the config (<= config.MAX_PARAMETERS, 500M), the action statistics (finite, std
> 0, action_dim of each), and weights.pt's size against what the config's parameters can need. Then every
weight must be a tensor of the expected name and shape, compared with shapes computed on torch's meta device
(no memory) before the model is built, so a config claiming sizes its weights do not have (a 2^21-wide
projector: 1.1 GB) is refused naming the config field, not after allocating them; then of the expected kind,
with finite values. Each failure is one `BundleError` whose message (one line) names the file and the field
or entry.
"""

from __future__ import annotations

import copy
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lewm_ros import __version__
from lewm_ros.arguments import MESSAGE_LIMIT, one_line
from lewm_ros.model.config import ConfigError, LeWMConfig
from lewm_ros.model.lewm import IMAGENET_MEAN, IMAGENET_STD, LeWM

FORMAT_VERSION = 1
META_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
ENCODER_TS = "encoder.ts"
PREDICTOR_TS = "predictor.ts"
ENCODER_ONNX = "encoder.onnx"
ENCODER_PT2 = "encoder.pt2"
META_MAX_BYTES = 1 << 20
"""model.json is a few kB; a larger one is refused before it is parsed."""
WEIGHTS_SLACK_BYTES = 1 << 20
"""weights.pt may hold up to 8 bytes per parameter (fp64) plus this much archive overhead."""


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
        """The bundle's TorchScript encoder or predictor; BundleError when missing or unreadable."""
        files = {"encoder": ENCODER_TS, "predictor": PREDICTOR_TS}
        if which not in files:
            raise ValueError(f"which must be one of {sorted(files)}, got {which!r}")
        file = self.path / files[which]
        if not file.is_file():
            raise BundleError(f"{self.path}: missing {files[which]}")
        try:
            return torch.jit.load(str(file), map_location=device).eval()
        except Exception as err:  # torch raises RuntimeError, ValueError, OSError, ... for bad files
            raise BundleError(f"{file}: cannot load TorchScript: {one_line(err, MESSAGE_LIMIT)}") from err


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


def _shown(value: object) -> str:
    """A short description of an untrusted JSON value for an error message."""
    if isinstance(value, (list, dict, str)) and len(value) > 8:
        return f"a {type(value).__name__} of length {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _positive_int(meta: dict[str, Any], key: str, source: Path) -> int:
    value = meta[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BundleError(f"{source}: {key}: must be a positive int, got {_shown(value)}")
    return value


def _read_json(meta_file: Path) -> Any:
    try:
        with meta_file.open("rb") as f:
            raw = f.read(META_MAX_BYTES + 1)
    except OSError as err:
        raise BundleError(f"{meta_file}: cannot read: {one_line(err, MESSAGE_LIMIT)}") from err
    if len(raw) > META_MAX_BYTES:
        raise BundleError(f"{meta_file}: larger than the {META_MAX_BYTES:,}-byte limit for {META_FILE}")
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise BundleError(f"{meta_file}: corrupt JSON: nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError, and int() digit limits
        raise BundleError(f"{meta_file}: corrupt JSON: {one_line(err, MESSAGE_LIMIT)}") from err


def _action_stats(norm: object, dim: int, source: Path) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) as float32 arrays of action_dim finite values, std > 0."""
    if not isinstance(norm, dict):
        raise BundleError(f"{source}: action_normalization: must be an object with mean and std, got {_shown(norm)}")
    stats = []
    for key in ("mean", "std"):
        values = norm.get(key)
        field = f"action_normalization.{key}"
        if not isinstance(values, list) or len(values) != dim:
            raise BundleError(f"{source}: {field}: must be a list of action_dim = {dim} numbers, got {_shown(values)}")
        floats = []
        for i, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise BundleError(f"{source}: {field}[{i}]: must be a number, got {_shown(value)}")
            try:
                floats.append(float(value))
            except OverflowError:  # an int beyond float range
                floats.append(math.inf)
        with np.errstate(over="ignore"):
            array = np.asarray(floats, np.float64).astype(np.float32)
        bad = ~np.isfinite(array) if key == "mean" else ~(np.isfinite(array) & (array > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            need = "finite" if key == "mean" else "finite and positive"
            raise BundleError(f"{source}: {field}[{i}]: must be {need} as float32, got {_shown(values[i])}")
        stats.append(array)
    return stats[0], stats[1]


def _read_checked(root: Path) -> tuple[dict[str, Any], LeWMConfig, np.ndarray, np.ndarray]:
    """model.json parsed and fully validated: (meta, config, action mean, action std)."""
    if not root.is_dir():
        raise BundleError(f"{root}: bundle directory not found")
    meta_file = root / META_FILE
    if not meta_file.is_file():
        raise BundleError(f"{root}: missing {META_FILE}; not a lewm_ros bundle")
    meta = _read_json(meta_file)
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_file}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
        raise BundleError(
            f"{meta_file}: bundle format version {_shown(version)} is not supported "
            f"(this lewm_ros reads {FORMAT_VERSION})"
        )
    missing = [k for k in ("config", "action_normalization", "image_size", "action_dim") if k not in meta]
    if missing:
        raise BundleError(f"{meta_file}: missing fields {missing}")
    try:
        config = LeWMConfig.from_dict(meta["config"])
    except ConfigError as err:
        raise BundleError(f"{meta_file}: {err}") from err
    except (TypeError, ValueError) as err:  # a config field dataclasses could not even take
        raise BundleError(f"{meta_file}: invalid config: {one_line(err, MESSAGE_LIMIT)}") from err
    implied = {
        "image_size": config.encoder.image_size, "action_dim": config.action.action_dim,
        "frameskip": config.action.frameskip, "history": config.predictor.history, "latent_dim": config.latent_dim,
    }  # fmt: skip
    for key, expected in implied.items():
        if key in meta and _positive_int(meta, key, meta_file) != expected:
            raise BundleError(f"{meta_file}: {key} {meta[key]} disagrees with the config's {expected}")
    mean, std = _action_stats(meta["action_normalization"], config.action.action_dim, meta_file)
    return meta, config, mean, std


def read_meta(path: str | Path) -> dict[str, Any]:
    """model.json of a bundle, checked for format version, required fields, the config and the action
    statistics (BundleError naming the field), so a caller never acts on a malformed bundle."""
    return _read_checked(Path(path))[0]


def _check_weights_archive(weights_file: Path, config: LeWMConfig) -> None:
    """Refuse a weights.pt that could make torch.load allocate more than the config's model needs: it must
    be torch.save's zip archive, uncompressed, holding at most 8 bytes per parameter plus slack."""
    limit = 8 * config.parameter_estimate() + WEIGHTS_SLACK_BYTES
    try:
        size = weights_file.stat().st_size
        if size > limit:
            raise BundleError(
                f"{weights_file}: {size:,} bytes, larger than the {limit:,} bytes the config's model can need"
            )
        with zipfile.ZipFile(weights_file) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise BundleError(
            f"{weights_file}: corrupt or unreadable weights: not a zip archive written by torch.save "
            f"({one_line(err, MESSAGE_LIMIT)})"
        ) from err
    compressed = [e.filename for e in entries if e.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise BundleError(
            f"{weights_file}: corrupt or unreadable weights: compressed entries {compressed[:3]} "
            "(torch.save stores its data uncompressed)"
        )
    total = sum(e.file_size for e in entries)
    if total > limit:
        raise BundleError(
            f"{weights_file}: declares {total:,} bytes of data, larger than the {limit:,} bytes "
            "the config's model can need"
        )


def load_bundle(
    path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> Bundle:
    """Load an eager LeWM from a bundle, validating everything first (see the module docstring); every
    failure is a BundleError naming the file and the field or weight."""
    root = Path(path)
    meta, config, mean, std = _read_checked(root)
    weights_file = root / WEIGHTS_FILE
    if not weights_file.is_file():
        raise BundleError(f"{root}: missing {WEIGHTS_FILE}")
    _check_weights_archive(weights_file, config)
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for truncated/garbage files
        raise BundleError(f"{weights_file}: corrupt or unreadable weights: {one_line(err, MESSAGE_LIMIT)}") from err
    if not isinstance(state, dict):
        raise BundleError(f"{weights_file}: expected a state dict, got {type(state).__name__}")
    _check_entries(state, str(weights_file))
    _check_fits_config(state, config, root / META_FILE, weights_file)  # before LeWM(config) allocates anything
    model = LeWM(config)
    check_state_dict(model, state, str(weights_file))
    model.load_state_dict(state)
    model = model.to(device=device, dtype=dtype).eval()
    return Bundle(root, config, model, mean, std, meta)


def expected_shapes(config: LeWMConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every state-dict entry of LeWM(config), from a model built on the meta device: exact,
    and without allocating the tensors (a hostile config may claim gigabytes)."""
    with torch.device("meta"):
        model = LeWM(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def _check_fits_config(state: dict[str, Tensor], config: LeWMConfig, meta_file: Path, weights_file: Path) -> None:
    """BundleError when the weights' names or shapes disagree with the config, naming the config field whose
    value appears only on the config's side of the first mismatched shape (e.g. config.projector_hidden)."""
    expected = expected_shapes(config)
    if set(expected) != set(state):
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        problems = [f"missing keys {missing[:10]}" if missing else "", f"unexpected keys {unexpected[:10]}"
                    if unexpected else ""]  # fmt: skip
        raise BundleError(f"{weights_file} does not fit the config in {meta_file.name}: "
                          + "; ".join(p for p in problems if p))  # fmt: skip
    sizes = config.size_fields()
    for key, shape in expected.items():
        found = tuple(state[key].shape)
        if found == shape:
            continue
        claimed = [f"{path} = {value}" for path, value in sizes.items() if value in shape and value not in found]
        what = f"{key} has shape {found} in {weights_file.name}, the config needs {shape}"
        if claimed:
            raise BundleError(f"{meta_file}: the weights do not have the size the config claims for "
                              f"{', '.join(claimed[:3])}: {what}")  # fmt: skip
        raise BundleError(f"{meta_file}: the config disagrees with the weights: {what}")


def _check_entries(state: dict[Any, Any], source: str) -> None:
    """Every key a string and every value a tensor, so the name/shape checks can compare them."""
    for key, value in state.items():
        if not isinstance(key, str):
            raise BundleError(f"{source}: entry key {_shown(key)} is not a string")
        if not isinstance(value, Tensor):
            raise BundleError(f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor")
        if value.layout != torch.strided:
            raise BundleError(f"{source}: entry {key!r} is a {value.layout} tensor, not a dense one")


def check_state_dict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Raise BundleError naming missing, unexpected, mis-shaped, mis-typed and non-finite entries
    (load_state_dict says less, and would silently cast integers or copy NaN into the model)."""
    _check_entries(state, source)
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
    for key, reference in expected.items():
        tensor = state[key]
        if tensor.is_complex() or tensor.dtype.is_floating_point != reference.dtype.is_floating_point:
            raise BundleError(f"{source}: entry {key!r} has dtype {tensor.dtype}, expected {reference.dtype}")
        if tensor.dtype.is_floating_point:
            if not bool(torch.isfinite(tensor).all()):
                raise BundleError(f"{source}: entry {key!r} holds non-finite values (NaN or inf)")
            if key.endswith("running_var") and bool((tensor < 0).any()):
                raise BundleError(f"{source}: entry {key!r} holds negative variances")


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
