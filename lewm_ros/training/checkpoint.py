"""Atomic training checkpoints that load with `torch.load(weights_only=True)` (no pickled code).

A checkpoint is written to a temporary file in the run directory, flushed to disk and renamed over
`checkpoint.pt`, so a crash or `kill -9` at any moment leaves either the previous checkpoint or the new
one, never a torn file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = "lewm_ros.checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A run directory without a usable checkpoint; the message says why."""


def save_checkpoint(run_dir: Path, state: dict[str, Any]) -> Path:
    """Write `state` (tensors, numbers, strings, lists, dicts only) atomically to run_dir/checkpoint.pt."""
    target = run_dir / CHECKPOINT_FILE
    tmp = run_dir / f".{CHECKPOINT_FILE}.{os.getpid()}.tmp"
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}
    try:
        with tmp.open("wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(target)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(run_dir)
    for stale in run_dir.glob(f".{CHECKPOINT_FILE}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)
    return target


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(run_dir: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    file = Path(run_dir) / CHECKPOINT_FILE
    if not file.is_file():
        raise CheckpointError(f"{run_dir}: no {CHECKPOINT_FILE} (not a training run directory, or no checkpoint yet)")
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{file}: unreadable checkpoint: {err}") from err
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{file}: not a lewm_ros training checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{file}: checkpoint version {state.get('version')!r} is not {CHECKPOINT_VERSION}")
    return state
