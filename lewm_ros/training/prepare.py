"""Everything a training run checks and builds before its first step: --out, the checkpoint to resume from, the
settings, the device, the data and its split, the model config, the action statistics and the window stream.
A problem found here is a TrainError before any work is done or any file is written."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lewm_ros.data.episodes import DatasetError
from lewm_ros.data.windows import WindowSpec, WindowStream, action_statistics, inspect_files, split_episodes
from lewm_ros.model.bundle import BundleError, load_bundle
from lewm_ros.model.config import preset
from lewm_ros.model.precision import enable_tf32, resolve_device
from lewm_ros.training.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint
from lewm_ros.training.settings import Dist, RunOptions, Settings, TrainError, dist_from_env, resolve_settings


@dataclass
class PreparedRun:
    """Everything `run_training` checks and builds before the first step, handed to the loop as one value."""

    options: RunOptions
    settings: Settings
    ddp: Dist
    device: torch.device
    info: Any  # lewm_ros.data.windows.DatasetInfo of the --data files
    cfg: Any  # lewm_ros.model.config.LeWMConfig
    spec: WindowSpec
    train_eps: list
    val_eps: list
    action_mean: np.ndarray
    action_std: np.ndarray
    stream: WindowStream
    batches_per_epoch: int
    train_windows: int
    init_bundle: Any  # the --init bundle, or None
    saved_state: dict[str, Any] | None  # the checkpoint on --resume, else None


def prepare_run(args: argparse.Namespace) -> PreparedRun:
    """Checks everything that can be checked before any work or file is written (TrainError when not), and
    builds what the loop starts from."""
    options = RunOptions.from_args(args)
    options.check()
    ddp = dist_from_env()
    out = options.out
    saved_state: dict[str, Any] | None = None
    if options.resume:
        _prepare_out_dir(out, True, ddp.main)
        try:
            saved_state = load_checkpoint(out)
        except CheckpointError as err:
            raise TrainError(str(err)) from err
    settings = resolve_settings(args, ddp.world, saved_state["settings"] if saved_state else None)
    if options.threads:
        torch.set_num_threads(options.threads)
    try:
        device = resolve_device(options.device)
    except ValueError as err:
        raise TrainError(str(err)) from err
    if device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
        enable_tf32(device)  # fp32 matmuls on tensor cores (precision.enable_tf32 says why and at what error)

    # ---- data and model config: every check before any work or file is written
    try:
        info = inspect_files(settings.data)
    except DatasetError as err:
        raise TrainError(str(err)) from err
    init_bundle = None
    if settings.init:
        try:
            init_bundle = load_bundle(settings.init)
        except BundleError as err:
            raise TrainError(f"--init: {err}") from err
    cfg = model_config(settings, info, init_bundle)
    spec = WindowSpec(cfg.predictor.history, cfg.action.frameskip)
    try:
        train_eps, val_eps = split_episodes(info, spec, settings.val_fraction, settings.seed)
    except DatasetError as err:
        raise TrainError(str(err)) from err
    if init_bundle is not None:  # fine-tuning keeps the action units the pretrained embedder knows
        action_mean, action_std = init_bundle.action_mean, init_bundle.action_std
    elif saved_state is not None:
        action_mean = np.asarray(saved_state["action_mean"], np.float32)
        action_std = np.asarray(saved_state["action_std"], np.float32)
    else:
        action_mean, action_std = action_statistics(info, train_eps)
    local_batch = settings.batch_size // ddp.world
    stream = WindowStream(
        info, train_eps, spec, action_mean, action_std, batch_size=local_batch,
        budget_bytes=options.max_ram_bytes, seed=settings.seed, rank=ddp.rank, world=ddp.world,
    )  # fmt: skip
    batches_per_epoch = stream.batches_per_epoch()
    train_windows = sum(stream.windows_per_shard)
    if batches_per_epoch == 0:
        raise TrainError(
            f"the training split holds {train_windows} windows in {len(train_eps)} episodes: fewer than one "
            f"batch of {settings.batch_size}; collect more data or lower --batch-size"
        )
    if not options.resume:
        _prepare_out_dir(out, False, ddp.main)
    return PreparedRun(
        options, settings, ddp, device, info, cfg, spec, train_eps, val_eps, action_mean, action_std, stream,
        batches_per_epoch, train_windows, init_bundle, saved_state,
    )  # fmt: skip


def _prepare_out_dir(out: Path, resume: bool, is_main: bool) -> None:
    """--out must hold a checkpoint to resume, or be new or empty and writable (checked by rank 0)."""
    if resume:
        if not (out / CHECKPOINT_FILE).is_file():
            raise TrainError(f"--resume: {out} holds no {CHECKPOINT_FILE} to continue from")
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TrainError(
            f"--out {out} exists and is not empty; pass --resume to continue it, or choose a new directory"
        )
    if not is_main:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise TrainError(f"--out {out} is not writable: {err}") from err


def model_config(settings: Settings, info: Any, init_bundle: Any) -> Any:
    """The preset (or --init bundle's) config, fitted to the data's action dimension and checked against it."""
    try:
        cfg = preset(settings.preset) if settings.preset else None
    except ValueError as err:
        raise TrainError(str(err)) from err
    height, width, _ = info.image_shape
    if init_bundle is not None:
        base = init_bundle.config
        if cfg is not None and cfg.with_action(base.action.action_dim).to_dict() != base.to_dict():
            diff = _dict_diff(cfg.with_action(base.action.action_dim).to_dict(), base.to_dict())
            raise TrainError(f"--init bundle's architecture differs from --preset {settings.preset}: {diff}")
        if base.action.action_dim != info.action_dim:
            raise TrainError(f"--init bundle has action_dim {base.action.action_dim}, the data {info.action_dim}")
        if (height, width) != (base.encoder.image_size,) * 2:
            raise TrainError(
                f"--init bundle's image size is {base.encoder.image_size}x{base.encoder.image_size}, "
                f"the data's {height}x{width}; collect or convert the data at the bundle's size"
            )
        return base
    assert cfg is not None
    if height != width:
        raise TrainError(f"the model takes square images; the data's are {height}x{width}")
    if cfg.action.action_dim != info.action_dim:
        cfg = cfg.with_action(info.action_dim)
    if height != cfg.encoder.image_size:
        print(
            f"note: frames are {height}x{width}, preset {settings.preset} encodes "
            f"{cfg.encoder.image_size}x{cfg.encoder.image_size}: frames are resized in the model",
            file=sys.stderr,
        )
    return cfg


def _dict_diff(a: dict, b: dict, prefix: str = "") -> str:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            inner = _dict_diff(va, vb, f"{prefix}{key}.")
            if inner:
                out.append(inner)
        elif va != vb:
            out.append(f"{prefix}{key} {va!r} vs {vb!r}")
    return "; ".join(out)
