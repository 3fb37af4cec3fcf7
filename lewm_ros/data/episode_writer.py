"""`EpisodeWriter`: appends whole episodes to an episode file, refusing anything `validate` would refuse before
the file is touched, and indexing each episode only after its frames are on disk."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lewm_ros.data.episode_format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    H5_ERRORS,
    PIXEL_COMPRESSION,
    ROW_DATASETS,
    DatasetError,
    DatasetTypeError,
    Episode,
    as_path,
    attribute_value,
    check_attributes,
    episode_layout,
    integer_argument,
    is_integer,
    row_layout,
    short_repr,
)
from lewm_ros.data.episode_validation import validate


class EpisodeWriter:
    """Appends whole episodes to an episode file; use `create` or `open_for_append`."""

    def __init__(self, handle: h5py.File) -> None:
        self._file = handle
        self.path = Path(handle.filename)
        self._rows = {name: handle[name] for name in ROW_DATASETS}
        self._episodes = {name: handle["episodes"][name] for name in episode_layout(1, 1, 1)}
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
        path = as_path(path)

        def fail(reason: str) -> DatasetError:
            return DatasetError(f"{path}: cannot create episode file: {reason}")

        if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 2:
            raise fail(f"image_shape must be (height, width), got {short_repr(image_shape)}")
        height = integer_argument("image_shape height", image_shape[0])
        width = integer_argument("image_shape width", image_shape[1])
        action_dim = integer_argument("action_dim", action_dim)
        state_dim = integer_argument("state_dim", state_dim)
        if not isinstance(attributes, Mapping):
            raise DatasetTypeError(f"attributes must be a mapping, got {type(attributes).__name__}")
        attrs = dict(attributes)
        attrs.update(
            format=FORMAT_NAME, format_version=FORMAT_VERSION, image_height=height, image_width=width,
            action_dim=action_dim, state_dim=state_dim,
        )  # fmt: skip
        if any(not isinstance(name, str) or not name for name in attrs):
            raise fail("attribute names must be non-empty strings")
        check_attributes({name: attribute_value(value) for name, value in attrs.items()}, fail)
        _check_storable(attrs, fail)
        try:
            handle = h5py.File(path, "w")
        except H5_ERRORS as error:
            raise fail(str(error)) from error
        try:
            for name, value in attrs.items():
                handle.attrs[name] = value
            for name, (shape, dtype) in row_layout(height, width, action_dim, state_dim).items():
                _create_extensible(handle, name, shape, dtype, pixels=name == "pixels")
            group = handle.create_group("episodes")
            for name, (shape, dtype) in episode_layout(height, width, state_dim).items():
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
        path = as_path(path)
        validate(path, check_pixels=True)
        try:
            handle = h5py.File(path, "r+")
        except H5_ERRORS as error:
            raise DatasetError(f"{path}: cannot open for appending ({error})") from error
        try:
            return cls(handle)
        except BaseException:
            handle.close()
            raise

    @property
    def attributes(self) -> dict[str, Any]:
        return {name: attribute_value(value) for name, value in self._file.attrs.items()}

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
        if not is_integer(seed) or not -1 <= seed < 2**63:
            raise fail(f"seed must be an integer in [-1, 2**63), got {short_repr(seed)}")
        values["seed"] = int(seed)
        policy = episode.policy
        if not isinstance(policy, str) or "\x00" in policy:
            raise fail(f"policy must be a string without NUL characters, got {short_repr(policy)}")
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
            except H5_ERRORS as error:
                raise fail(f"attribute {name!r} cannot be stored in HDF5 ({type(error).__name__}: {error})") from error


def _create_extensible(group: h5py.Group, name: str, shape: tuple, dtype: Any, *, pixels: bool) -> None:
    if pixels:  # one frame per chunk: training reads scattered frames, each decompressed alone
        options = {"chunks": (1, *shape), **PIXEL_COMPRESSION}
    else:
        options = {"chunks": (1024, *shape)}
    group.create_dataset(name, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype, **options)
