"""`EpisodeReader`: read access to an episode file by episode: lengths, frame selections, goals and whole
episodes, with every index checked and every frame decoded within its declared size."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import h5py
import numpy as np

from lewm_ros.data.episode_chunks import decoded_chunk, one_frame_chunks
from lewm_ros.data.episode_format import (
    H5_ERRORS,
    ROW_DATASETS,
    DatasetError,
    DatasetIndexError,
    DatasetTypeError,
    Episode,
    as_path,
    attribute_value,
    index_problem,
    integer_argument,
    short_repr,
)
from lewm_ros.data.episode_validation import validate

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
        except H5_ERRORS as error:
            raise DatasetError(
                f"{self.path}: unreadable or corrupt episode file ({type(error).__name__}: {error})"
            ) from error

    return wrapper


class EpisodeReader:
    """Read access by episode: lengths, frame slices, and any per-frame dataset of an episode.

    Episode indices are integers in [-num_episodes, num_episodes) (negative counts from the end); frame
    indices are a slice or increasing integers in [0, length). Anything else, and anything wrong with the
    file, raises DatasetError (DatasetIndexError / DatasetTypeError for bad indices).
    """

    def __init__(self, path: str | Path, *, check: bool = True) -> None:
        self.path = as_path(path)
        self.summary = validate(self.path) if check else None
        try:
            self._file = h5py.File(self.path, "r")
        except H5_ERRORS as error:
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
        problem = index_problem(starts, lengths, rows)
        if problem:
            raise DatasetError(f"{self.path}: {problem}")
        return starts.astype(np.int64), lengths.astype(np.int64)

    @property
    @_surfaced
    def attributes(self) -> dict[str, Any]:
        return {name: attribute_value(value) for name, value in self._file.attrs.items()}

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
        index = integer_argument("episode index", index)
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
            raise DatasetError(f"unknown per-frame dataset {short_repr(name)}; choose one of {', '.join(ROW_DATASETS)}")
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
        deflate = one_frame_chunks(dataset)
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
            filter_mask, raw = dataset.id.read_direct_chunk((row, *origin))
            data, problem = decoded_chunk(raw, filter_mask, deflate, frame_bytes, keep=True)
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
            integer_argument(f"frames.{part}", value)
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
        raise DatasetTypeError(f"frames must be integers, got {selected.dtype} {short_repr(frames)}")
    if selected.min() < 0 or selected.max() >= length:
        raise DatasetIndexError(f"frames {short_repr(frames)} outside episode {index} of length {length}")
    selected = selected.astype(np.int64)
    if np.any(np.diff(selected) <= 0):
        raise DatasetError(f"frames must be strictly increasing, got {short_repr(frames)}")
    return selected
