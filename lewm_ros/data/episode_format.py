"""The episode file's format: its names, limits and dataset layouts, the root attributes and their checks, the
episode index rule, the error types, and the `Episode` / `DatasetSummary` records the store hands out.

Writer, reader and validation all take their rules from here, so that one never accepts what another refuses.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

FORMAT_NAME = "lewm_ros.episodes"
FORMAT_VERSION = 1
REQUIRED_ATTRIBUTES = (
    "format", "format_version", "scene", "camera", "image_height", "image_width",
    "control_dt", "seed", "policy", "action_dim", "state_dim",
)  # fmt: skip
PIXEL_COMPRESSION = {"compression": "gzip", "compression_opts": 1}
MAX_IMAGE_SIDE = 16384  # pixels per image side: beyond any camera, and one frame stays one HDF5 chunk (< 4 GiB)
MAX_DIM = 4096  # largest action_dim / state_dim accepted
# What h5py and numpy raise for a malformed, closed or hostile file: surfaced as DatasetError.
H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError, OverflowError, AttributeError)


class DatasetError(ValueError):
    """A file that is not a valid episode file, or that does not fit the data being added to it."""


class DatasetTypeError(DatasetError, TypeError):
    """An argument of the wrong type (a float or bool where an index belongs, say); also a TypeError."""


class DatasetIndexError(DatasetError, IndexError):
    """An episode or frame index outside the file; also an IndexError, for callers that catch those."""


@dataclass
class Episode:
    """One episode in memory: T+1 observations and the T actions between them (NaN-padded to T+1)."""

    pixels: np.ndarray  # (T+1, H, W, 3) uint8
    action: np.ndarray  # (T+1, A) float32, last row NaN
    qpos: np.ndarray  # (T+1, S) float64
    qvel: np.ndarray  # (T+1, S) float64
    timestamp: np.ndarray  # (T+1,) float64 seconds since the episode started
    success: np.ndarray  # (T+1,) bool
    goal_qpos: np.ndarray  # (S,) float64; NaN when the episode has no goal
    goal_pixels: np.ndarray  # (H, W, 3) uint8; zeros when the episode has no goal image
    seed: int = -1  # seed of the collection run (the episode index spawns the episode's stream); -1 = none
    policy: str = "unknown"

    def __len__(self) -> int:
        return len(self.pixels)


@dataclass(frozen=True)
class DatasetSummary:
    """What `validate` learned about a file."""

    path: Path
    attributes: dict[str, Any]
    episode_lengths: np.ndarray
    image_shape: tuple[int, int, int]
    action_dim: int
    state_dim: int
    policies: dict[str, int] = field(default_factory=dict)

    @property
    def num_episodes(self) -> int:
        return len(self.episode_lengths)

    @property
    def num_frames(self) -> int:
        return int(self.episode_lengths.sum())


def row_layout(height: int, width: int, action_dim: int, state_dim: int) -> dict[str, tuple[tuple, str]]:
    """Per-frame datasets: name -> (shape after the frame axis, dtype)."""
    return {
        "pixels": ((height, width, 3), "uint8"),
        "action": ((action_dim,), "float32"),
        "qpos": ((state_dim,), "float64"),
        "qvel": ((state_dim,), "float64"),
        "timestamp": ((), "float64"),
        "success": ((), "bool"),
    }


def episode_layout(height: int, width: int, state_dim: int) -> dict[str, tuple[tuple, Any]]:
    """Per-episode datasets in the episodes/ group; start and length are written last."""
    return {
        "goal_qpos": ((state_dim,), "float64"),
        "goal_pixels": ((height, width, 3), "uint8"),
        "seed": ((), "int64"),
        "policy": ((), h5py.string_dtype()),
        "start": ((), "int64"),
        "length": ((), "int64"),
    }


ROW_DATASETS = tuple(row_layout(1, 1, 1, 1))


def attribute_value(value: Any) -> Any:
    """Plain Python for printing and comparison (h5py hands back numpy scalars and arrays)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [attribute_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return attribute_value(value.item())
    return value


def short_repr(value: Any) -> str:
    """A repr that cannot flood an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def is_integer(value: Any) -> bool:
    """True for Python and numpy integers; bools are refused (True is not episode 1)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def integer_argument(name: str, value: Any) -> int:
    """`value` as an int, or DatasetTypeError naming the argument (a float index is a bug, not a request)."""
    if not is_integer(value):
        raise DatasetTypeError(f"{name} must be an integer, got {type(value).__name__} {short_repr(value)}")
    return int(value)


def as_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise DatasetTypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def check_attributes(attrs: Mapping[str, Any], fail: Callable[[str], DatasetError]) -> tuple[int, int, int, int]:
    """Types and ranges of the root attributes, shared by the writer and `validate` so that one never
    accepts what the other refuses; returns (image_height, image_width, action_dim, state_dim)."""
    if attrs.get("format") != FORMAT_NAME:
        raise fail(f"not a lewm_ros episode file (format attribute {short_repr(attrs.get('format'))}, "
                   f"expected {FORMAT_NAME!r})")  # fmt: skip
    version = attrs.get("format_version")
    if not is_integer(version) or version != FORMAT_VERSION:
        raise fail(
            f"format version {short_repr(version)} is not supported (this lewm_ros reads version {FORMAT_VERSION})"
        )
    missing = [name for name in REQUIRED_ATTRIBUTES if name not in attrs]
    if missing:
        raise fail(f"missing attributes {missing}")
    for name in ("scene", "camera", "policy"):
        if not isinstance(attrs[name], str):
            raise fail(f"attribute {name!r} must be a string, got {short_repr(attrs[name])}")
    if not is_integer(attrs["seed"]):
        raise fail(f"attribute 'seed' must be an integer, got {short_repr(attrs['seed'])}")
    control_dt = attrs["control_dt"]
    if (not isinstance(control_dt, (int, float)) or isinstance(control_dt, bool)
            or not math.isfinite(control_dt) or control_dt <= 0):  # fmt: skip
        raise fail(f"attribute 'control_dt' must be a finite number of seconds > 0, got {short_repr(control_dt)}")
    limits = {"image_height": MAX_IMAGE_SIDE, "image_width": MAX_IMAGE_SIDE, "action_dim": MAX_DIM}
    for name, high in {**limits, "state_dim": MAX_DIM}.items():
        value = attrs[name]
        if not is_integer(value) or not 1 <= value <= high:
            raise fail(f"attribute {name!r} must be an integer in [1, {high}], got {short_repr(value)}")
    return attrs["image_height"], attrs["image_width"], attrs["action_dim"], attrs["state_dim"]


def index_problem(starts: np.ndarray, lengths: np.ndarray, rows: int) -> str | None:
    """What is wrong with an episode index over per-frame datasets of `rows` rows, or None.

    Checked without overflow: huge or negative lengths in a hostile index must not wrap around.
    """
    if starts.ndim != 1 or lengths.ndim != 1 or len(starts) != len(lengths):
        return f"episodes/start {starts.shape} and episodes/length {lengths.shape} must be 1-D of equal length"
    if starts.dtype.kind != "i" or lengths.dtype.kind != "i":
        return f"episodes/start and episodes/length must hold integers, hold {starts.dtype} and {lengths.dtype}"
    if not len(lengths):
        return None
    if np.any(lengths < 1):
        return "episode lengths must be >= 1 (episodes/length holds zero or negative values)"
    covered = float(lengths.sum(dtype=np.float64))
    if np.any(lengths > rows) or covered > min(rows, 2**62):  # 2**62: cumsum below cannot overflow
        return f"the episode index covers {covered:.0f} frames but the datasets hold fewer ({rows})"
    ends = np.cumsum(lengths)
    if starts[0] != 0 or np.any(starts[1:] != ends[:-1]):
        return "episode boundaries are not contiguous (episodes/start and episodes/length disagree)"
    return None


def attributes_json(attributes: Mapping[str, Any]) -> str:
    """Attributes as stable JSON (for printing and for comparing two files' settings); values JSON cannot
    hold (a hostile file's compound attribute, say) are printed as strings rather than crashing."""
    return json.dumps(
        {str(k): attribute_value(v) for k, v in sorted(attributes.items())}, indent=2, sort_keys=True, default=str
    )
