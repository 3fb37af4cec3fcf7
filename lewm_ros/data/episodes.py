"""The HDF5 episode store: one file of many episodes, written by simulation and rosbag2 conversion,
read by training-window sampling and evaluation. The layout is specified in docs/data_format.md.

Frames of all episodes are concatenated along the first axis of the per-frame datasets; the
`episodes/` group says where each episode starts and how long it is. Row k of an episode holds
observation k and the action applied after it, so the last row of every episode has no action: its
action is NaN.

Writers only ever extend a file, and update the episode index after the frames it points at: a reader
trusts `episodes/start` and `episodes/length`, and frames past the last indexed episode (a write that
was cut short) are ignored and trimmed on close.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
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
_VALIDATION_BLOCK = 256  # frames decoded at a time when checking pixels


class DatasetError(ValueError):
    """A file that is not a valid episode file, or that does not fit the data being added to it."""


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


def _row_layout(height: int, width: int, action_dim: int, state_dim: int) -> dict[str, tuple[tuple, str]]:
    """Per-frame datasets: name -> (shape after the frame axis, dtype)."""
    return {
        "pixels": ((height, width, 3), "uint8"),
        "action": ((action_dim,), "float32"),
        "qpos": ((state_dim,), "float64"),
        "qvel": ((state_dim,), "float64"),
        "timestamp": ((), "float64"),
        "success": ((), "bool"),
    }


def _episode_layout(height: int, width: int, state_dim: int) -> dict[str, tuple[tuple, Any]]:
    """Per-episode datasets in the episodes/ group; start and length are written last."""
    return {
        "goal_qpos": ((state_dim,), "float64"),
        "goal_pixels": ((height, width, 3), "uint8"),
        "seed": ((), "int64"),
        "policy": ((), h5py.string_dtype()),
        "start": ((), "int64"),
        "length": ((), "int64"),
    }


def _attribute_value(value: Any) -> Any:
    """Plain Python for printing and comparison (h5py hands back numpy scalars and arrays)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_attribute_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


class EpisodeWriter:
    """Appends whole episodes to an episode file; use `create` or `open_for_append`."""

    def __init__(self, handle: h5py.File) -> None:
        self._file = handle
        self._rows = {name: handle[name] for name in _row_layout(1, 1, 1, 1)}
        self._episodes = {name: handle["episodes"][name] for name in _episode_layout(1, 1, 1)}
        lengths = self._episodes["length"][...]
        self._committed_rows = int(lengths.sum())
        self._committed_episodes = len(lengths)
        self._trim_uncommitted()

    @classmethod
    def create(
        cls,
        path: str | Path,
        *,
        image_shape: tuple[int, int],
        action_dim: int,
        state_dim: int,
        attributes: Mapping[str, Any],
    ) -> EpisodeWriter:
        """A new, empty episode file (an existing file at `path` is replaced)."""
        height, width = image_shape
        attrs = dict(attributes)
        attrs.update(
            format=FORMAT_NAME, format_version=FORMAT_VERSION, image_height=height, image_width=width,
            action_dim=action_dim, state_dim=state_dim,
        )  # fmt: skip
        missing = [name for name in REQUIRED_ATTRIBUTES if name not in attrs]
        if missing:
            raise ValueError(f"episode file attributes missing: {missing}")
        handle = h5py.File(path, "w")
        try:
            for name, value in attrs.items():
                handle.attrs[name] = value
            for name, (shape, dtype) in _row_layout(height, width, action_dim, state_dim).items():
                _create_extensible(handle, name, shape, dtype, pixels=name == "pixels")
            group = handle.create_group("episodes")
            for name, (shape, dtype) in _episode_layout(height, width, state_dim).items():
                _create_extensible(group, name, shape, dtype, pixels=name == "goal_pixels")
            handle.flush()
        except BaseException:
            handle.close()
            raise
        return cls(handle)

    @classmethod
    def open_for_append(cls, path: str | Path) -> EpisodeWriter:
        """An existing file, validated first: a file that is not a valid episode file is refused."""
        validate(path)
        return cls(h5py.File(path, "r+"))

    @property
    def attributes(self) -> dict[str, Any]:
        return {name: _attribute_value(value) for name, value in self._file.attrs.items()}

    @property
    def num_episodes(self) -> int:
        return self._committed_episodes

    @property
    def num_frames(self) -> int:
        return self._committed_rows

    def write_episode(self, episode: Episode) -> None:
        """Add one episode: frames first, then its index entry, then flush to disk."""
        self._check_episode(episode)
        rows, episodes = self._committed_rows, self._committed_episodes
        n = len(episode)
        for name, dataset in self._rows.items():
            dataset.resize(rows + n, axis=0)
            dataset[rows:] = getattr(episode, name)
        per_episode = {
            "goal_qpos": episode.goal_qpos, "goal_pixels": episode.goal_pixels, "seed": episode.seed,
            "policy": episode.policy, "start": rows, "length": n,
        }  # fmt: skip
        for name, dataset in self._episodes.items():  # start and length come last
            dataset.resize(episodes + 1, axis=0)
            dataset[episodes] = per_episode[name]
        self._file.flush()
        self._committed_rows += n
        self._committed_episodes += 1

    def close(self) -> None:
        if self._file.id.valid:
            self._trim_uncommitted()
            self._file.close()

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _trim_uncommitted(self) -> None:
        """Drop rows and index entries written by an episode write that did not finish."""
        if self._file.mode == "r":
            return
        for dataset in self._rows.values():
            if dataset.shape[0] != self._committed_rows:
                dataset.resize(self._committed_rows, axis=0)
        for dataset in self._episodes.values():
            if dataset.shape[0] != self._committed_episodes:
                dataset.resize(self._committed_episodes, axis=0)

    def _check_episode(self, episode: Episode) -> None:
        n = len(episode)
        if n < 1:
            raise ValueError("an episode needs at least one frame")
        for name, dataset in self._rows.items():
            value = np.asarray(getattr(episode, name))
            if value.shape != (n, *dataset.shape[1:]):
                raise ValueError(f"episode {name} has shape {value.shape}, file expects {(n, *dataset.shape[1:])}")
        for name in ("goal_qpos", "goal_pixels"):
            expected = self._episodes[name].shape[1:]
            if np.shape(getattr(episode, name)) != expected:
                raise ValueError(f"episode {name} has shape {np.shape(getattr(episode, name))}, expected {expected}")


def _create_extensible(group: h5py.Group, name: str, shape: tuple, dtype: Any, *, pixels: bool) -> None:
    if pixels:  # one frame per chunk: training reads scattered frames, each decompressed alone
        options = {"chunks": (1, *shape), **PIXEL_COMPRESSION}
    else:
        options = {"chunks": (1024, *shape)}
    group.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, **options)


class EpisodeReader:
    """Read access by episode: lengths, frame slices, and any per-frame dataset of an episode."""

    def __init__(self, path: str | Path, *, check: bool = True) -> None:
        self.path = Path(path)
        self.summary = validate(self.path) if check else None
        self._file = h5py.File(self.path, "r")
        self._starts = self._file["episodes/start"][...]
        self._lengths = self._file["episodes/length"][...]

    @property
    def attributes(self) -> dict[str, Any]:
        return {name: _attribute_value(value) for name, value in self._file.attrs.items()}

    @property
    def num_episodes(self) -> int:
        return len(self._lengths)

    @property
    def num_frames(self) -> int:
        return int(self._lengths.sum())

    @property
    def episode_lengths(self) -> np.ndarray:
        return self._lengths.copy()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self._file["pixels"].shape[1:])

    @property
    def action_dim(self) -> int:
        return int(self._file["action"].shape[1])

    def episode_slice(self, index: int) -> slice:
        """Rows of episode `index` in the per-frame datasets."""
        if not -self.num_episodes <= index < self.num_episodes:
            raise IndexError(f"episode {index} out of range: the file holds {self.num_episodes}")
        start = int(self._starts[index])
        return slice(start, start + int(self._lengths[index]))

    def read(self, name: str, index: int, frames: slice | Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Dataset `name` (pixels, action, qpos, qvel, timestamp, success) for episode `index`.

        `frames` selects rows relative to the episode start: a slice, or increasing indices.
        """
        rows = self.episode_slice(index)
        dataset = self._file[name]
        if frames is None:
            return dataset[rows]
        if isinstance(frames, slice):
            start, stop, step = frames.indices(rows.stop - rows.start)
            return dataset[rows.start + start : rows.start + stop : step]
        selected = np.asarray(frames, dtype=np.int64)
        if selected.size and (selected.min() < 0 or selected.max() >= rows.stop - rows.start):
            raise IndexError(f"frames {selected} outside episode {index} of length {rows.stop - rows.start}")
        return dataset[rows.start + selected]

    def pixels(self, index: int, frames: slice | Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        return self.read("pixels", index, frames)

    def actions(self, index: int) -> np.ndarray:
        """(T+1, A) float32; the last row is NaN (no action follows the final observation)."""
        return self.read("action", index)

    def goal(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(goal_qpos, goal_pixels) of episode `index`."""
        self.episode_slice(index)
        group = self._file["episodes"]
        return group["goal_qpos"][index], group["goal_pixels"][index]

    def episode(self, index: int) -> Episode:
        group = self._file["episodes"]
        policy = group["policy"][index]
        return Episode(
            **{name: self.read(name, index) for name in _row_layout(1, 1, 1, 1)},
            goal_qpos=group["goal_qpos"][index],
            goal_pixels=group["goal_pixels"][index],
            seed=int(group["seed"][index]),
            policy=policy.decode() if isinstance(policy, bytes) else str(policy),
        )

    def __iter__(self) -> Iterator[Episode]:
        for index in range(self.num_episodes):
            yield self.episode(index)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EpisodeReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def validate(path: str | Path, *, check_pixels: bool = False) -> DatasetSummary:
    """Check that `path` is a complete, consistent episode file; raise DatasetError saying what is wrong.

    Structure, attributes, dtypes, shapes, episode boundaries, actions and timestamps are always checked;
    `check_pixels` also decompresses every frame (finds corrupt chunks, costs a full read).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{path}: not an HDF5 file (no HDF5 signature; wrong file or overwritten)")
    try:
        with h5py.File(path, "r") as handle:
            return _validate_open_file(path, handle, check_pixels)
    except DatasetError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as error:
        raise DatasetError(f"{path}: unreadable or corrupt HDF5 ({error})") from error


def _validate_open_file(path: Path, handle: h5py.File, check_pixels: bool) -> DatasetSummary:
    def fail(reason: str) -> DatasetError:
        return DatasetError(f"{path}: {reason}")

    attrs = {name: _attribute_value(value) for name, value in handle.attrs.items()}
    if attrs.get("format") != FORMAT_NAME:
        raise fail(f"not a lewm_ros episode file (format attribute {attrs.get('format')!r}, expected {FORMAT_NAME!r})")
    version = attrs.get("format_version")
    if version != FORMAT_VERSION:
        raise fail(f"format version {version!r} is not supported (this lewm_ros reads version {FORMAT_VERSION})")
    missing = [name for name in REQUIRED_ATTRIBUTES if name not in attrs]
    if missing:
        raise fail(f"missing attributes {missing}")
    height, width = int(attrs["image_height"]), int(attrs["image_width"])
    action_dim, state_dim = int(attrs["action_dim"]), int(attrs["state_dim"])

    def check_dataset(group: h5py.Group, name: str, shape: tuple, dtype: Any, prefix: str = "") -> int:
        full_name = prefix + name
        if name not in group or not isinstance(group[name], h5py.Dataset):
            raise fail(f"dataset {full_name!r} is missing")
        dataset = group[name]
        if dataset.ndim != 1 + len(shape) or tuple(dataset.shape[1:]) != shape:
            raise fail(f"dataset {full_name!r} has shape {dataset.shape}, expected (n, {', '.join(map(str, shape))})")
        expected = np.dtype(dtype)
        if expected.kind == "O":
            if h5py.check_string_dtype(dataset.dtype) is None:
                raise fail(f"dataset {full_name!r} should hold strings, holds {dataset.dtype}")
        elif dataset.dtype != expected:
            raise fail(f"dataset {full_name!r} has dtype {dataset.dtype}, expected {expected}")
        return dataset.shape[0]

    row_counts = {
        name: check_dataset(handle, name, shape, dtype)
        for name, (shape, dtype) in _row_layout(height, width, action_dim, state_dim).items()
    }
    if "episodes" not in handle or not isinstance(handle["episodes"], h5py.Group):
        raise fail("group 'episodes' is missing")
    group = handle["episodes"]
    episode_counts = {
        name: check_dataset(group, name, shape, dtype, "episodes/")
        for name, (shape, dtype) in _episode_layout(height, width, state_dim).items()
    }
    if len(set(episode_counts.values())) != 1:
        raise fail(f"per-episode datasets disagree on the number of episodes: {episode_counts}")
    starts, lengths = group["start"][...], group["length"][...]
    num_rows = int(lengths.sum())
    if len(lengths) and (np.any(lengths < 1) or starts[0] != 0 or np.any(starts[1:] != np.cumsum(lengths)[:-1])):
        raise fail("episode boundaries are not contiguous (episodes/start and episodes/length disagree)")
    short = {name: count for name, count in row_counts.items() if count < num_rows}
    if short:
        raise fail(f"the episode index covers {num_rows} frames but datasets hold fewer: {short}")

    actions = handle["action"][:num_rows]
    last_rows = starts + lengths - 1
    is_last = np.zeros(num_rows, dtype=bool)
    is_last[last_rows] = True
    if not np.all(np.isnan(actions[is_last])):
        raise fail("the last frame of every episode must have a NaN action (no action follows it)")
    inner = actions[~is_last]
    if not np.all(np.isfinite(inner)) or np.any(np.abs(inner) > 1.0):
        raise fail("actions must be finite and within [-1, 1] (normalised commands) except on last frames")
    timestamps = handle["timestamp"][:num_rows]
    steps_back = np.diff(timestamps) < 0
    steps_back[last_rows[:-1]] = False  # a new episode may restart its clock
    if not np.all(np.isfinite(timestamps)) or steps_back.any():
        raise fail("timestamps must be finite and non-decreasing within each episode")
    if check_pixels:
        pixels = handle["pixels"]
        for begin in range(0, num_rows, _VALIDATION_BLOCK):
            pixels[begin : min(begin + _VALIDATION_BLOCK, num_rows)]
    policies: dict[str, int] = {}
    for policy in group["policy"][...]:
        key = policy.decode() if isinstance(policy, bytes) else str(policy)
        policies[key] = policies.get(key, 0) + 1
    return DatasetSummary(
        path=path,
        attributes=attrs,
        episode_lengths=lengths,
        image_shape=(height, width, 3),
        action_dim=action_dim,
        state_dim=state_dim,
        policies=policies,
    )


def attributes_json(attributes: Mapping[str, Any]) -> str:
    """Attributes as stable JSON (for printing and for comparing two files' settings)."""
    return json.dumps({k: _attribute_value(v) for k, v in sorted(attributes.items())}, indent=2, sort_keys=True)
