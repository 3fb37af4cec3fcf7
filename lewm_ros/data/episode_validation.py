"""`validate`: whether a file is a complete, consistent episode file, and if not, one DatasetError saying why.

Reads are bounded by bytes (episode_chunks.READ_BLOCK_BYTES), so a hostile file cannot make validation allocate
much more than one frame, whatever sizes it declares.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lewm_ros.data.episode_chunks import decode_frames, row_blocks
from lewm_ros.data.episode_format import (
    H5_ERRORS,
    DatasetError,
    DatasetSummary,
    as_path,
    attribute_value,
    check_attributes,
    episode_layout,
    index_problem,
    row_layout,
)


def validate(path: str | Path, *, check_pixels: bool = False) -> DatasetSummary:
    """Check that `path` is a complete, consistent episode file; raise DatasetError saying what is wrong.

    Structure, attributes, dtypes, shapes, episode boundaries, actions, joint states and timestamps are
    always checked; `check_pixels` also decompresses every frame (finds corrupt chunks, costs a full read).
    Reads are bounded by bytes (READ_BLOCK_BYTES), so memory stays small whatever the file declares.
    """
    path = as_path(path)
    try:
        if not path.is_file():
            raise DatasetError(f"{path}: no such file")
        if not h5py.is_hdf5(path):
            raise DatasetError(f"{path}: not an HDF5 file (no HDF5 signature; wrong file or overwritten)")
        with h5py.File(path, "r") as handle:
            return _validate_open_file(path, handle, check_pixels)
    except DatasetError:
        raise
    except (*H5_ERRORS, MemoryError) as error:
        raise DatasetError(f"{path}: unreadable or corrupt HDF5 ({type(error).__name__}: {error})") from error


def _validate_open_file(path: Path, handle: h5py.File, check_pixels: bool) -> DatasetSummary:
    def fail(reason: str) -> DatasetError:
        return DatasetError(f"{path}: {reason}")

    attrs = {name: attribute_value(value) for name, value in handle.attrs.items()}
    height, width, action_dim, state_dim = check_attributes(attrs, fail)

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
        for name, (shape, dtype) in row_layout(height, width, action_dim, state_dim).items()
    }
    group = member(handle, "episodes", h5py.Group, "episodes")
    episode_data = {
        name: check_dataset(group, name, shape, dtype, "episodes/")
        for name, (shape, dtype) in episode_layout(height, width, state_dim).items()
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
    problem = index_problem(starts, lengths, stored_rows)
    if problem:
        raise fail(problem)
    num_rows = int(lengths.sum())
    for dataset in row_data.values():
        check_stored(dataset, num_rows)

    last_rows = starts + lengths - 1
    action = row_data["action"]
    for begin, end in row_blocks(num_rows, action_dim * 4):
        block = action[begin:end]
        is_last = _last_rows_mask(last_rows, begin, end)
        if not np.all(np.isnan(block[is_last])):
            raise fail("the last frame of every episode must have a NaN action (no action follows it)")
        inner = block[~is_last]
        if not np.all(np.isfinite(inner)) or np.any(np.abs(inner) > 1.0):
            raise fail("actions must be finite and within [-1, 1] (normalised commands) except on last frames")
    for name in ("qpos", "qvel"):
        for begin, end in row_blocks(num_rows, state_dim * 8):
            if not np.all(np.isfinite(row_data[name][begin:end])):
                raise fail(f"{name} must be finite (rows {begin}..{end - 1} hold NaN or inf)")
    timestamp = row_data["timestamp"]
    for begin, end in row_blocks(num_rows, 8):
        first = max(begin - 1, 0)  # one row of overlap, to compare across the block boundary
        block = timestamp[first:end]
        steps_back = np.diff(block) < 0
        steps_back &= ~_last_rows_mask(last_rows, first, end - 1)  # a new episode may restart its clock
        if not np.all(np.isfinite(block)) or steps_back.any():
            raise fail("timestamps must be finite and non-decreasing within each episode")
    for begin, end in row_blocks(num_episodes, state_dim * 8):
        if np.any(np.isinf(episode_data["goal_qpos"][begin:end])):
            raise fail("episodes/goal_qpos must be finite, or NaN when an episode has no goal")
    if check_pixels:
        for dataset, rows in ((row_data["pixels"], num_rows), (episode_data["goal_pixels"], num_episodes)):
            decode_frames(dataset, rows, fail)
    policies: dict[str, int] = {}
    for begin, end in row_blocks(num_episodes, 1024):
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


def _last_rows_mask(last_rows: np.ndarray, begin: int, end: int) -> np.ndarray:
    """Which rows in [begin, end) are the last row of an episode (`last_rows` is sorted)."""
    mask = np.zeros(max(0, end - begin), dtype=bool)
    low, high = np.searchsorted(last_rows, [begin, end])
    mask[last_rows[low:high] - begin] = True
    return mask
