"""The HDF5 episode store: one file of many episodes, written by simulation and rosbag2 conversion,
read by training-window sampling and evaluation. The layout is specified in docs/data_format.md.

Frames of all episodes are concatenated along the first axis of the per-frame datasets; the
`episodes/` group says where each episode starts and how long it is. Row k of an episode holds
observation k and the action applied after it, so the last row of every episode has no action: its
action is NaN.

Writers only ever extend a file, and update the episode index after the frames it points at: a reader
trusts `episodes/start` and `episodes/length`, and frames past the last indexed episode (a write that
was cut short) are ignored and trimmed on close.

Files and arguments are treated as untrusted: whatever is wrong with them surfaces as `DatasetError`
(never a raw h5py/numpy exception), a writer refuses data before touching the file, and validation
reads in blocks bounded by bytes, so a hostile file cannot make us allocate much more than one frame.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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
READ_BLOCK_BYTES = 64 << 20  # validation reads at most this much per read (at least one row)
_INFLATE_PIECE = 1 << 20  # bytes inflated at a time when checking a compressed frame
_H5_ERRORS = (OSError, KeyError, RuntimeError, ValueError, TypeError, OverflowError, AttributeError)


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


ROW_DATASETS = tuple(_row_layout(1, 1, 1, 1))


def _attribute_value(value: Any) -> Any:
    """Plain Python for printing and comparison (h5py hands back numpy scalars and arrays)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [_attribute_value(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return _attribute_value(value.item())
    return value


def _short(value: Any) -> str:
    """A repr that cannot flood an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any) -> bool:
    """True for Python and numpy integers; bools are refused (True is not episode 1)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _integer_argument(name: str, value: Any) -> int:
    """`value` as an int, or DatasetTypeError naming the argument (a float index is a bug, not a request)."""
    if not _is_int(value):
        raise DatasetTypeError(f"{name} must be an integer, got {type(value).__name__} {_short(value)}")
    return int(value)


def _as_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise DatasetTypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)


def _check_attributes(attrs: Mapping[str, Any], fail: Callable[[str], DatasetError]) -> tuple[int, int, int, int]:
    """Types and ranges of the root attributes, shared by the writer and `validate` so that one never
    accepts what the other refuses; returns (image_height, image_width, action_dim, state_dim)."""
    if attrs.get("format") != FORMAT_NAME:
        raise fail(f"not a lewm_ros episode file (format attribute {_short(attrs.get('format'))}, "
                   f"expected {FORMAT_NAME!r})")  # fmt: skip
    version = attrs.get("format_version")
    if not _is_int(version) or version != FORMAT_VERSION:
        raise fail(f"format version {_short(version)} is not supported (this lewm_ros reads version {FORMAT_VERSION})")
    missing = [name for name in REQUIRED_ATTRIBUTES if name not in attrs]
    if missing:
        raise fail(f"missing attributes {missing}")
    for name in ("scene", "camera", "policy"):
        if not isinstance(attrs[name], str):
            raise fail(f"attribute {name!r} must be a string, got {_short(attrs[name])}")
    if not _is_int(attrs["seed"]):
        raise fail(f"attribute 'seed' must be an integer, got {_short(attrs['seed'])}")
    control_dt = attrs["control_dt"]
    if (not isinstance(control_dt, (int, float)) or isinstance(control_dt, bool)
            or not math.isfinite(control_dt) or control_dt <= 0):  # fmt: skip
        raise fail(f"attribute 'control_dt' must be a finite number of seconds > 0, got {_short(control_dt)}")
    limits = {"image_height": MAX_IMAGE_SIDE, "image_width": MAX_IMAGE_SIDE, "action_dim": MAX_DIM}
    for name, high in {**limits, "state_dim": MAX_DIM}.items():
        value = attrs[name]
        if not _is_int(value) or not 1 <= value <= high:
            raise fail(f"attribute {name!r} must be an integer in [1, {high}], got {_short(value)}")
    return attrs["image_height"], attrs["image_width"], attrs["action_dim"], attrs["state_dim"]


def _blocks(total: int, row_bytes: int) -> Iterator[tuple[int, int]]:
    """Row ranges [begin, end) covering `total` rows, each at most READ_BLOCK_BYTES (but at least one row):
    bounded by bytes, not rows, so that huge frames are read one at a time."""
    step = max(1, READ_BLOCK_BYTES // max(1, row_bytes))
    for begin in range(0, total, step):
        yield begin, min(begin + step, total)


def _last_rows_mask(last_rows: np.ndarray, begin: int, end: int) -> np.ndarray:
    """Which rows in [begin, end) are the last row of an episode (`last_rows` is sorted)."""
    mask = np.zeros(max(0, end - begin), dtype=bool)
    low, high = np.searchsorted(last_rows, [begin, end])
    mask[last_rows[low:high] - begin] = True
    return mask


def _index_problem(starts: np.ndarray, lengths: np.ndarray, rows: int) -> str | None:
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


_T = TypeVar("_T")


def _surfaced(method: Callable[..., _T]) -> Callable[..., _T]:
    """Turn whatever h5py/numpy raise for a malformed or closed file into DatasetError."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> _T:
        if not self._file.id.valid:
            raise DatasetError(f"{self.path}: the episode file is closed")
        try:
            return method(self, *args, **kwargs)
        except DatasetError:
            raise
        except _H5_ERRORS as error:
            raise DatasetError(
                f"{self.path}: unreadable or corrupt episode file ({type(error).__name__}: {error})"
            ) from error

    return wrapper


class EpisodeWriter:
    """Appends whole episodes to an episode file; use `create` or `open_for_append`."""

    def __init__(self, handle: h5py.File) -> None:
        self._file = handle
        self.path = Path(handle.filename)
        self._rows = {name: handle[name] for name in ROW_DATASETS}
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
        """A new, empty episode file (an existing file at `path` is replaced).

        Every argument is checked before `path` is touched, so a refused request leaves no file behind.
        """
        path = _as_path(path)

        def fail(reason: str) -> DatasetError:
            return DatasetError(f"{path}: cannot create episode file: {reason}")

        if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 2:
            raise fail(f"image_shape must be (height, width), got {_short(image_shape)}")
        height = _integer_argument("image_shape height", image_shape[0])
        width = _integer_argument("image_shape width", image_shape[1])
        action_dim = _integer_argument("action_dim", action_dim)
        state_dim = _integer_argument("state_dim", state_dim)
        if not isinstance(attributes, Mapping):
            raise DatasetTypeError(f"attributes must be a mapping, got {type(attributes).__name__}")
        attrs = dict(attributes)
        attrs.update(
            format=FORMAT_NAME, format_version=FORMAT_VERSION, image_height=height, image_width=width,
            action_dim=action_dim, state_dim=state_dim,
        )  # fmt: skip
        if any(not isinstance(name, str) or not name for name in attrs):
            raise fail("attribute names must be non-empty strings")
        _check_attributes({name: _attribute_value(value) for name, value in attrs.items()}, fail)
        _check_storable(attrs, fail)
        try:
            handle = h5py.File(path, "w")
        except _H5_ERRORS as error:
            raise fail(str(error)) from error
        try:
            for name, value in attrs.items():
                handle.attrs[name] = value
            for name, (shape, dtype) in _row_layout(height, width, action_dim, state_dim).items():
                _create_extensible(handle, name, shape, dtype, pixels=name == "pixels")
            group = handle.create_group("episodes")
            for name, (shape, dtype) in _episode_layout(height, width, state_dim).items():
                _create_extensible(group, name, shape, dtype, pixels=name == "goal_pixels")
            handle.flush()
            return cls(handle)
        except BaseException:
            handle.close()
            path.unlink(missing_ok=True)  # a half-made file is no episode file
            raise

    @classmethod
    def open_for_append(cls, path: str | Path) -> EpisodeWriter:
        """An existing file, fully validated first (every frame decoded): a file that is not a valid episode
        file, corrupt chunks included, is refused before it is opened for writing, so it stays untouched."""
        path = _as_path(path)
        validate(path, check_pixels=True)
        try:
            handle = h5py.File(path, "r+")
        except _H5_ERRORS as error:
            raise DatasetError(f"{path}: cannot open for appending ({error})") from error
        try:
            return cls(handle)
        except BaseException:
            handle.close()
            raise

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
        """Add one episode: frames first, then its index entry, then flush to disk.

        The episode is checked against everything `validate` demands before the file is touched, so a
        refused episode (DatasetError) leaves the file exactly as it was.
        """
        if not self._file.id.valid:
            raise DatasetError(f"{self.path}: the episode writer is closed")
        values = self._checked(episode)
        rows, episodes = self._committed_rows, self._committed_episodes
        n = len(values["pixels"])
        for name, dataset in self._rows.items():
            dataset.resize(rows + n, axis=0)
            dataset[rows:] = values[name]
        per_episode = {**values, "start": rows, "length": n}
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

    def _checked(self, episode: Episode) -> dict[str, Any]:
        """The episode's values in the file's dtypes, or DatasetError: what validate would refuse is refused
        here, where the caller still knows which episode is at fault."""
        if not isinstance(episode, Episode):
            raise DatasetTypeError(f"write_episode takes an Episode, got {type(episode).__name__}")

        def fail(reason: str) -> DatasetError:
            return DatasetError(f"{self.path}: episode refused: {reason}")

        row_shapes = {name: dataset.shape[1:] for name, dataset in self._rows.items()}
        pixels = _episode_array(episode.pixels, "pixels", "uint8", None, fail)
        if pixels.ndim != 4:
            expected = ", ".join(map(str, row_shapes["pixels"]))
            raise fail(f"pixels has shape {pixels.shape}, file expects (frames, {expected})")
        n = len(pixels)
        if n < 1:
            raise fail("an episode needs at least one frame (pixels is empty)")
        values: dict[str, Any] = {"pixels": _episode_array(pixels, "pixels", "uint8", (n, *row_shapes["pixels"]), fail)}
        for name, dataset in list(self._rows.items())[1:]:
            values[name] = _episode_array(getattr(episode, name), name, dataset.dtype, (n, *row_shapes[name]), fail)
        for name in ("goal_qpos", "goal_pixels"):
            dataset = self._episodes[name]
            values[name] = _episode_array(getattr(episode, name), name, dataset.dtype, dataset.shape[1:], fail)

        action = values["action"]
        if not np.all(np.isnan(action[-1])):
            raise fail("the last row of action must be NaN (no action follows the final observation)")
        inner = action[:-1]
        if not np.all(np.isfinite(inner)) or np.any(np.abs(inner) > 1.0):
            raise fail("action must be finite and within [-1, 1] (normalised commands) on every row but the last")
        for name in ("qpos", "qvel"):
            if not np.all(np.isfinite(values[name])):
                raise fail(f"{name} must be finite")
        timestamp = values["timestamp"]
        if not np.all(np.isfinite(timestamp)) or np.any(np.diff(timestamp) < 0):
            raise fail("timestamp must be finite and non-decreasing")
        if np.any(np.isinf(values["goal_qpos"])):
            raise fail("goal_qpos must be finite, or NaN when the episode has no goal")
        seed = episode.seed
        if not _is_int(seed) or not -1 <= seed < 2**63:
            raise fail(f"seed must be an integer in [-1, 2**63), got {_short(seed)}")
        values["seed"] = int(seed)
        policy = episode.policy
        if not isinstance(policy, str) or "\x00" in policy:
            raise fail(f"policy must be a string without NUL characters, got {_short(policy)}")
        try:
            policy.encode("utf-8")
        except UnicodeEncodeError as error:
            raise fail(f"policy is not valid UTF-8 text ({error})") from error
        values["policy"] = policy
        return values


def _episode_array(
    value: Any, name: str, dtype: Any, shape: tuple | None, fail: Callable[[str], DatasetError]
) -> np.ndarray:
    """`value` as an array of the file's dtype and `shape`, refusing other kinds (float pixels, int actions,
    objects); floats of another width are converted, and overflow shows up as inf for the caller's checks."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise fail(f"{name} is not an array ({error})") from error
    target = np.dtype(dtype)
    if target.kind == "f":
        if array.dtype.kind != "f":
            raise fail(f"{name} has dtype {array.dtype}, expected floating point ({target})")
    elif array.dtype != target:
        raise fail(f"{name} has dtype {array.dtype}, expected {target}")
    if shape is not None and array.shape != tuple(shape):
        raise fail(f"{name} has shape {array.shape}, file expects {tuple(shape)}")
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(array, dtype=target)


def _check_storable(attrs: Mapping[str, Any], fail: Callable[[str], DatasetError]) -> None:
    """Store the attributes in a scratch in-memory HDF5 file first: a value h5py cannot store must be
    refused before the real file exists."""
    with h5py.File(io.BytesIO(), "w") as scratch:
        for name, value in attrs.items():
            try:
                scratch.attrs[name] = value
            except _H5_ERRORS as error:
                raise fail(f"attribute {name!r} cannot be stored in HDF5 ({type(error).__name__}: {error})") from error


def _create_extensible(group: h5py.Group, name: str, shape: tuple, dtype: Any, *, pixels: bool) -> None:
    if pixels:  # one frame per chunk: training reads scattered frames, each decompressed alone
        options = {"chunks": (1, *shape), **PIXEL_COMPRESSION}
    else:
        options = {"chunks": (1024, *shape)}
    group.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, **options)


class EpisodeReader:
    """Read access by episode: lengths, frame slices, and any per-frame dataset of an episode.

    Episode indices are integers in [-num_episodes, num_episodes) (negative counts from the end); frame
    indices are a slice or increasing integers in [0, length). Anything else, and anything wrong with the
    file, raises DatasetError (DatasetIndexError / DatasetTypeError for bad indices).
    """

    def __init__(self, path: str | Path, *, check: bool = True) -> None:
        self.path = _as_path(path)
        self.summary = validate(self.path) if check else None
        try:
            self._file = h5py.File(self.path, "r")
        except _H5_ERRORS as error:
            raise DatasetError(f"{self.path}: cannot open episode file ({error})") from error
        try:
            self._starts, self._lengths = self._read_index()
        except BaseException:
            self._file.close()
            raise

    @_surfaced
    def _read_index(self) -> tuple[np.ndarray, np.ndarray]:
        """The episode index, checked (cheaply, also when check=False) so that no slice points outside."""
        group = self._file["episodes"]
        starts, lengths = np.asarray(group["start"][...]), np.asarray(group["length"][...])
        rows = min(self._file[name].shape[0] for name in ROW_DATASETS if name in self._file)
        problem = _index_problem(starts, lengths, rows)
        if problem:
            raise DatasetError(f"{self.path}: {problem}")
        return starts.astype(np.int64), lengths.astype(np.int64)

    @property
    @_surfaced
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
    @_surfaced
    def image_shape(self) -> tuple[int, int, int]:
        _, height, width, channels = self._file["pixels"].shape
        return int(height), int(width), int(channels)

    @property
    @_surfaced
    def action_dim(self) -> int:
        return int(self._file["action"].shape[1])

    def _episode_number(self, index: int) -> int:
        """`index` as a non-negative episode number, or DatasetTypeError / DatasetIndexError."""
        index = _integer_argument("episode index", index)
        if not -self.num_episodes <= index < self.num_episodes:
            raise DatasetIndexError(f"episode {index} out of range: the file holds {self.num_episodes}")
        return index % self.num_episodes

    def episode_slice(self, index: int) -> slice:
        """Rows of episode `index` in the per-frame datasets."""
        number = self._episode_number(index)
        start = int(self._starts[number])
        return slice(start, start + int(self._lengths[number]))

    @_surfaced
    def read(self, name: str, index: int, frames: slice | Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Dataset `name` (pixels, action, qpos, qvel, timestamp, success) for episode `index`.

        `frames` selects rows relative to the episode start: a slice, or increasing indices.
        """
        if not isinstance(name, str) or name not in ROW_DATASETS:
            raise DatasetError(f"unknown per-frame dataset {_short(name)}; choose one of {', '.join(ROW_DATASETS)}")
        rows = self.episode_slice(index)
        length = rows.stop - rows.start
        dataset = self._file[name]
        if frames is None:
            selection: slice | np.ndarray = rows
        elif isinstance(frames, slice):
            start, stop, step = _slice_bounds(frames, length)
            selection = slice(rows.start + start, rows.start + stop, step)
        else:
            selection = rows.start + _frame_indices(frames, length, index)
        return self._frames(dataset, selection) if name == "pixels" else dataset[selection]

    def _frames(self, dataset: h5py.Dataset, selection: slice | np.ndarray) -> np.ndarray:
        """Rows of an image dataset. One-frame chunks are decoded here from their raw bytes, so a corrupt or
        bomb chunk is a DatasetError naming the frame, and no frame inflates past its declared size."""
        deflate = _one_frame_chunks(dataset)
        if deflate is None:
            return dataset[selection]
        if isinstance(selection, slice):
            selection = np.arange(selection.start, selection.stop, selection.step or 1)
        frame_shape = dataset.shape[1:]
        frame_bytes = math.prod(frame_shape) * dataset.dtype.itemsize
        out = np.empty((len(selection), *frame_shape), dtype=dataset.dtype)
        flat = out.reshape(len(selection), frame_bytes // dataset.dtype.itemsize).view(np.uint8)
        origin = (0,) * len(frame_shape)
        for position, row in enumerate(selection.tolist()):
            skipped, raw = dataset.id.read_direct_chunk((row, *origin))
            data, problem = _inflate_frame(raw, frame_bytes) if deflate and not skipped & 1 else (raw, None)
            if problem is None and len(data) != frame_bytes:
                problem = f"it decodes to {len(data)} bytes, a frame has {frame_bytes}"
            if problem:
                raise DatasetError(f"{self.path}: {dataset.name} frame {row} is a corrupt chunk: {problem}")
            flat[position] = np.frombuffer(data, dtype=np.uint8)
        return out

    def pixels(self, index: int, frames: slice | Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        return self.read("pixels", index, frames)

    def actions(self, index: int) -> np.ndarray:
        """(T+1, A) float32; the last row is NaN (no action follows the final observation)."""
        return self.read("action", index)

    @_surfaced
    def goal(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(goal_qpos, goal_pixels) of episode `index`."""
        number = self._episode_number(index)
        group = self._file["episodes"]
        return group["goal_qpos"][number], self._frames(group["goal_pixels"], np.array([number]))[0]

    @_surfaced
    def episode(self, index: int) -> Episode:
        number = self._episode_number(index)
        group = self._file["episodes"]
        policy = group["policy"][number]
        return Episode(
            **{name: self.read(name, number) for name in ROW_DATASETS},
            goal_qpos=group["goal_qpos"][number],
            goal_pixels=self._frames(group["goal_pixels"], np.array([number]))[0],
            seed=int(group["seed"][number]),
            policy=policy.decode("utf-8") if isinstance(policy, bytes) else str(policy),
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


def _slice_bounds(frames: slice, length: int) -> tuple[int, int, int]:
    """A frame slice resolved against an episode of `length` frames; integer parts and a positive step only."""
    for part in ("start", "stop", "step"):
        value = getattr(frames, part)
        if value is not None:
            _integer_argument(f"frames.{part}", value)
    if frames.step is not None and frames.step < 1:
        raise DatasetError(f"frames slice step must be >= 1, got {frames.step}")
    start, stop, step = frames.indices(length)
    return start, max(start, stop), step


def _frame_indices(frames: Sequence[int] | np.ndarray, length: int, index: int) -> np.ndarray:
    """Frame indices as int64, refusing floats, bools, strings, out-of-range and unordered indices."""
    try:
        selected = np.asarray(frames)
    except (ValueError, TypeError) as error:
        raise DatasetTypeError(f"frames must be a slice or a sequence of integers ({error})") from error
    if selected.ndim != 1:
        raise DatasetTypeError(f"frames must be a slice or a 1-D sequence of integers, got shape {selected.shape}")
    if not selected.size:
        return np.zeros(0, dtype=np.int64)
    if selected.dtype.kind not in "iu":
        raise DatasetTypeError(f"frames must be integers, got {selected.dtype} {_short(frames)}")
    if selected.min() < 0 or selected.max() >= length:
        raise DatasetIndexError(f"frames {_short(frames)} outside episode {index} of length {length}")
    selected = selected.astype(np.int64)
    if np.any(np.diff(selected) <= 0):
        raise DatasetError(f"frames must be strictly increasing, got {_short(frames)}")
    return selected


def validate(path: str | Path, *, check_pixels: bool = False) -> DatasetSummary:
    """Check that `path` is a complete, consistent episode file; raise DatasetError saying what is wrong.

    Structure, attributes, dtypes, shapes, episode boundaries, actions, joint states and timestamps are
    always checked; `check_pixels` also decompresses every frame (finds corrupt chunks, costs a full read).
    Reads are bounded by bytes (READ_BLOCK_BYTES), so memory stays small whatever the file declares.
    """
    path = _as_path(path)
    try:
        if not path.is_file():
            raise DatasetError(f"{path}: no such file")
        if not h5py.is_hdf5(path):
            raise DatasetError(f"{path}: not an HDF5 file (no HDF5 signature; wrong file or overwritten)")
        with h5py.File(path, "r") as handle:
            return _validate_open_file(path, handle, check_pixels)
    except DatasetError:
        raise
    except (*_H5_ERRORS, MemoryError) as error:
        raise DatasetError(f"{path}: unreadable or corrupt HDF5 ({type(error).__name__}: {error})") from error


def _validate_open_file(path: Path, handle: h5py.File, check_pixels: bool) -> DatasetSummary:
    def fail(reason: str) -> DatasetError:
        return DatasetError(f"{path}: {reason}")

    attrs = {name: _attribute_value(value) for name, value in handle.attrs.items()}
    height, width, action_dim, state_dim = _check_attributes(attrs, fail)

    def member(group: h5py.Group, name: str, kind: type, full_name: str) -> Any:
        """A dataset or group stored in this file: links elsewhere (soft, external) are refused unresolved."""
        link = group.get(name, getlink=True)
        if link is None:
            raise fail(f"{'dataset' if kind is h5py.Dataset else 'group'} {full_name!r} is missing")
        if not isinstance(link, h5py.HardLink):
            raise fail(f"{full_name!r} is a {type(link).__name__}; episode files must hold their own data")
        item = group[name]
        if not isinstance(item, kind):
            raise fail(f"{full_name!r} is not a {'dataset' if kind is h5py.Dataset else 'group'}")
        return item

    def check_dataset(group: h5py.Group, name: str, shape: tuple, dtype: Any, prefix: str = "") -> h5py.Dataset:
        full_name = prefix + name
        dataset = member(group, name, h5py.Dataset, full_name)
        if dataset.is_virtual or dataset.id.get_create_plist().get_external_count():
            raise fail(f"dataset {full_name!r} keeps its data outside the file (virtual or external storage)")
        if dataset.ndim != 1 + len(shape) or tuple(dataset.shape[1:]) != shape:
            raise fail(f"dataset {full_name!r} has shape {dataset.shape}, expected (n, {', '.join(map(str, shape))})")
        expected = np.dtype(dtype)
        if expected.kind == "O":
            if h5py.check_string_dtype(dataset.dtype) is None:
                raise fail(f"dataset {full_name!r} should hold strings, holds {dataset.dtype}")
        elif dataset.dtype != expected:
            raise fail(f"dataset {full_name!r} has dtype {dataset.dtype}, expected {expected}")
        return dataset

    def check_stored(dataset: h5py.Dataset, rows: int) -> None:
        """The first `rows` rows must be backed by data in the file: a hostile file could declare a huge,
        unwritten extent that reads as fill values (time and memory out of proportion to its size)."""
        if not rows:
            return
        if dataset.chunks is not None:
            needed = -(-rows // dataset.chunks[0])
            if dataset.id.get_num_chunks() < needed:
                raise fail(f"dataset {dataset.name!r} has unwritten rows among its first {rows} (sparse or truncated)")
        elif dataset.dtype.kind != "O":
            if dataset.id.get_storage_size() < rows * math.prod(dataset.shape[1:]) * dataset.dtype.itemsize:
                raise fail(f"dataset {dataset.name!r} has unwritten rows among its first {rows} (sparse or truncated)")

    row_data = {
        name: check_dataset(handle, name, shape, dtype)
        for name, (shape, dtype) in _row_layout(height, width, action_dim, state_dim).items()
    }
    group = member(handle, "episodes", h5py.Group, "episodes")
    episode_data = {
        name: check_dataset(group, name, shape, dtype, "episodes/")
        for name, (shape, dtype) in _episode_layout(height, width, state_dim).items()
    }
    episode_counts = {name: dataset.shape[0] for name, dataset in episode_data.items()}
    if len(set(episode_counts.values())) != 1:
        raise fail(f"per-episode datasets disagree on the number of episodes: {episode_counts}")
    num_episodes = episode_counts["start"]
    stored_rows = min(dataset.shape[0] for dataset in row_data.values())
    if num_episodes > stored_rows:
        raise fail(f"the episode index lists {num_episodes} episodes but the datasets hold fewer frames "
                   f"({stored_rows}) than that")  # fmt: skip
    for dataset in episode_data.values():
        check_stored(dataset, num_episodes)
    starts, lengths = episode_data["start"][...], episode_data["length"][...]
    problem = _index_problem(starts, lengths, stored_rows)
    if problem:
        raise fail(problem)
    num_rows = int(lengths.sum())
    for dataset in row_data.values():
        check_stored(dataset, num_rows)

    last_rows = starts + lengths - 1
    action = row_data["action"]
    for begin, end in _blocks(num_rows, action_dim * 4):
        block = action[begin:end]
        is_last = _last_rows_mask(last_rows, begin, end)
        if not np.all(np.isnan(block[is_last])):
            raise fail("the last frame of every episode must have a NaN action (no action follows it)")
        inner = block[~is_last]
        if not np.all(np.isfinite(inner)) or np.any(np.abs(inner) > 1.0):
            raise fail("actions must be finite and within [-1, 1] (normalised commands) except on last frames")
    for name in ("qpos", "qvel"):
        for begin, end in _blocks(num_rows, state_dim * 8):
            if not np.all(np.isfinite(row_data[name][begin:end])):
                raise fail(f"{name} must be finite (rows {begin}..{end - 1} hold NaN or inf)")
    timestamp = row_data["timestamp"]
    for begin, end in _blocks(num_rows, 8):
        first = max(begin - 1, 0)  # one row of overlap, to compare across the block boundary
        block = timestamp[first:end]
        steps_back = np.diff(block) < 0
        steps_back &= ~_last_rows_mask(last_rows, first, end - 1)  # a new episode may restart its clock
        if not np.all(np.isfinite(block)) or steps_back.any():
            raise fail("timestamps must be finite and non-decreasing within each episode")
    for begin, end in _blocks(num_episodes, state_dim * 8):
        if np.any(np.isinf(episode_data["goal_qpos"][begin:end])):
            raise fail("episodes/goal_qpos must be finite, or NaN when an episode has no goal")
    if check_pixels:
        for dataset, rows in ((row_data["pixels"], num_rows), (episode_data["goal_pixels"], num_episodes)):
            _decode_frames(dataset, rows, fail)
    policies: dict[str, int] = {}
    for begin, end in _blocks(num_episodes, 1024):
        for policy in episode_data["policy"][begin:end]:
            try:
                key = policy.decode("utf-8") if isinstance(policy, bytes) else str(policy)
            except UnicodeDecodeError as error:
                raise fail(f"episodes/policy holds text that is not UTF-8 ({error})") from error
            policies[key] = policies.get(key, 0) + 1
    return DatasetSummary(
        path=path,
        attributes=attrs,
        episode_lengths=lengths.astype(np.int64),
        image_shape=(height, width, 3),
        action_dim=action_dim,
        state_dim=state_dim,
        policies=policies,
    )


def _one_frame_chunks(dataset: h5py.Dataset) -> bool | None:
    """Whether a dataset stored one frame per chunk (the layout our writer makes) is deflated; None for any
    other layout, which is then read through h5py."""
    if dataset.chunks != (1, *dataset.shape[1:]):
        return None
    plist = dataset.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if filters in ([], [h5py.h5z.FILTER_DEFLATE]):
        return bool(filters)
    return None


def _inflate_frame(raw: bytes, frame_bytes: int) -> tuple[bytes, str | None]:
    """A deflated frame, never inflating more than `frame_bytes` (a compression bomb cannot make us
    allocate more than one frame), and what is wrong with the stream, if anything."""
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(raw, frame_bytes)
        if not inflater.eof and inflater.decompress(inflater.unconsumed_tail, 1):
            return data, "it decodes to more than a frame"
    except zlib.error as error:
        return b"", f"zlib: {error}"
    if not inflater.eof:
        return data, "the compressed stream ends early"
    return data, None


def _decode_frames(dataset: h5py.Dataset, rows: int, fail: Callable[[str], DatasetError]) -> None:
    """Decode every frame of the first `rows` rows, so a corrupt chunk is found now, not mid-training.

    One-frame chunks, deflated or not (what our writer makes), are checked from their raw bytes: the
    stream is inflated piecewise and only counted, so a huge frame (or a compression bomb) never needs a
    frame-sized buffer. Other layouts go through h5py in blocks of at most READ_BLOCK_BYTES (one frame at
    least).
    """
    frame_shape = dataset.shape[1:]
    frame_bytes = math.prod(frame_shape) * dataset.dtype.itemsize
    deflate = _one_frame_chunks(dataset)
    if deflate is None:
        for begin, end in _blocks(rows, frame_bytes):
            try:
                dataset[begin:end]
            except _H5_ERRORS as error:
                raise fail(
                    f"{dataset.name} rows {begin}..{end - 1} cannot be decoded: corrupt chunk ({error})"
                ) from error
        return
    origin = (0,) * len(frame_shape)
    for row in range(rows):
        try:
            skipped, raw = dataset.id.read_direct_chunk((row, *origin))
        except _H5_ERRORS as error:
            raise fail(f"{dataset.name} frame {row} cannot be read: corrupt or missing chunk ({error})") from error
        deflated = deflate and not skipped & 1  # bit 0 set: HDF5 stored this chunk uncompressed
        size, problem = _inflated_size(raw, frame_bytes) if deflated else (len(raw), None)
        if problem is None and size != frame_bytes:
            problem = f"it decodes to {size} bytes, a frame has {frame_bytes}"
        if problem:
            raise fail(f"{dataset.name} frame {row} is a corrupt chunk: {problem}")


def _inflated_size(raw: bytes, limit: int) -> tuple[int, str | None]:
    """Bytes a zlib stream inflates to (counting stops past `limit`) and what is wrong with it, if anything."""
    inflater = zlib.decompressobj()
    size = 0
    pending = raw
    try:
        while not inflater.eof and size <= limit:
            piece = inflater.decompress(pending, min(_INFLATE_PIECE, READ_BLOCK_BYTES))
            pending = inflater.unconsumed_tail
            if not piece and not pending:
                break
            size += len(piece)
    except zlib.error as error:
        return size, f"zlib: {error}"
    if size <= limit and not inflater.eof:
        return size, "the compressed stream ends early"
    return size, None


def attributes_json(attributes: Mapping[str, Any]) -> str:
    """Attributes as stable JSON (for printing and for comparing two files' settings); values JSON cannot
    hold (a hostile file's compound attribute, say) are printed as strings rather than crashing."""
    return json.dumps(
        {str(k): _attribute_value(v) for k, v in sorted(attributes.items())}, indent=2, sort_keys=True, default=str
    )
