"""The HDF5 episode store: round trips, the reader API, append, and validation of bad files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from lewm_ros.data.episode_format import FORMAT_VERSION, DatasetError, Episode
from lewm_ros.data.episode_reader import EpisodeReader
from lewm_ros.data.episode_validation import validate
from lewm_ros.data.episode_writer import EpisodeWriter

HEIGHT, WIDTH, DIM = 8, 12, 3


def make_episode(rng: np.random.Generator, frames: int, policy: str = "smooth", seed: int = 4) -> Episode:
    action = rng.uniform(-1, 1, (frames, DIM)).astype(np.float32)
    action[-1] = np.nan
    return Episode(
        pixels=rng.integers(0, 256, (frames, HEIGHT, WIDTH, 3), dtype=np.uint8),
        action=action,
        qpos=rng.normal(size=(frames, DIM)),
        qvel=rng.normal(size=(frames, DIM)),
        timestamp=np.arange(frames) * 0.05,
        success=rng.random(frames) < 0.3,
        goal_qpos=rng.normal(size=DIM),
        goal_pixels=rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8),
        seed=seed,
        policy=policy,
    )


ATTRIBUTES = {"scene": "test.xml", "camera": "cam", "control_dt": 0.05, "seed": 4, "policy": "smooth"}


def write_file(path: Path, episodes: list[Episode]) -> Path:
    with EpisodeWriter.create(
        path, image_shape=(HEIGHT, WIDTH), action_dim=DIM, state_dim=DIM, attributes=ATTRIBUTES
    ) as writer:
        for episode in episodes:
            writer.write_episode(episode)
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def episodes():
    rng = np.random.default_rng(0)
    return [make_episode(rng, n) for n in (5, 9, 1, 7)]


def test_round_trip_through_the_reader_api(tmp_path, episodes):
    path = write_file(tmp_path / "d.h5", episodes)
    with EpisodeReader(path) as reader:
        assert reader.num_episodes == 4
        assert reader.num_frames == 5 + 9 + 1 + 7
        np.testing.assert_array_equal(reader.episode_lengths, [5, 9, 1, 7])
        assert reader.episode_slice(1) == slice(5, 14)
        assert reader.episode_slice(-1) == slice(15, 22)
        assert reader.image_shape == (HEIGHT, WIDTH, 3)
        assert reader.action_dim == DIM
        for index, original in enumerate(episodes):
            stored = reader.episode(index)
            for name in ("pixels", "action", "qpos", "qvel", "timestamp", "success", "goal_qpos", "goal_pixels"):
                np.testing.assert_array_equal(getattr(stored, name), getattr(original, name), err_msg=name)
            assert stored.policy == original.policy and stored.seed == original.seed
        np.testing.assert_array_equal(reader.pixels(1, [0, 4, 8]), episodes[1].pixels[[0, 4, 8]])
        np.testing.assert_array_equal(reader.pixels(1, slice(2, 8, 3)), episodes[1].pixels[2:8:3])
        np.testing.assert_array_equal(reader.actions(3), episodes[3].action)
        goal_qpos, goal_pixels = reader.goal(2)
        np.testing.assert_array_equal(goal_qpos, episodes[2].goal_qpos)
        np.testing.assert_array_equal(goal_pixels, episodes[2].goal_pixels)
        assert reader.attributes["format_version"] == FORMAT_VERSION
        assert reader.attributes["camera"] == "cam"
        with pytest.raises(IndexError):
            reader.episode_slice(4)
        with pytest.raises(IndexError):
            reader.pixels(2, [0, 1])  # episode 2 has a single frame


def test_pixels_are_chunked_per_frame_and_compressed(tmp_path, episodes):
    path = write_file(tmp_path / "d.h5", episodes)
    with h5py.File(path) as handle:
        assert handle["pixels"].chunks == (1, HEIGHT, WIDTH, 3)
        assert handle["pixels"].compression == "gzip"
        assert handle["action"].dtype == np.float32


def test_append_adds_episodes_after_the_existing_ones(tmp_path, episodes):
    path = write_file(tmp_path / "d.h5", episodes[:2])
    with EpisodeWriter.open_for_append(path) as writer:
        assert writer.num_episodes == 2
        writer.write_episode(episodes[2])
        writer.write_episode(episodes[3])
    with EpisodeReader(path) as reader:
        assert reader.num_episodes == 4
        np.testing.assert_array_equal(reader.pixels(3), episodes[3].pixels)


def test_same_episodes_give_byte_identical_files(tmp_path, episodes):
    first = write_file(tmp_path / "a.h5", episodes)
    second = write_file(tmp_path / "b.h5", episodes)
    assert digest(first) == digest(second)


def test_an_empty_file_is_valid(tmp_path):
    path = write_file(tmp_path / "empty.h5", [])
    summary = validate(path, check_pixels=True)
    assert summary.num_episodes == 0 and summary.num_frames == 0


def test_writer_refuses_episodes_of_the_wrong_shape(tmp_path, episodes):
    path = write_file(tmp_path / "d.h5", [])
    wrong = make_episode(np.random.default_rng(1), 4)
    wrong.pixels = wrong.pixels[:, :4]
    with EpisodeWriter.open_for_append(path) as writer, pytest.raises(ValueError, match="pixels"):
        writer.write_episode(wrong)
    assert validate(path).num_episodes == 0


def test_rows_of_an_unfinished_write_are_ignored_and_trimmed(tmp_path, episodes):
    """A write cut short leaves frames beyond the index: readers ignore them, the next writer drops them."""
    path = write_file(tmp_path / "d.h5", episodes[:2])
    with h5py.File(path, "r+") as handle:  # frames of a third episode, but no index entry
        for name in ("pixels", "action", "qpos", "qvel", "timestamp", "success"):
            handle[name].resize(handle[name].shape[0] + 3, axis=0)
    assert validate(path).num_frames == 14
    with EpisodeReader(path) as reader:
        assert reader.num_frames == 14
    EpisodeWriter.open_for_append(path).close()
    with h5py.File(path) as handle:
        assert handle["pixels"].shape[0] == 14


# ----------------------------------------------------------------------------- validation of bad files


def test_validate_summarises_a_good_file(tmp_path, episodes):
    summary = validate(write_file(tmp_path / "d.h5", episodes), check_pixels=True)
    assert summary.num_episodes == 4 and summary.num_frames == 22
    assert summary.image_shape == (HEIGHT, WIDTH, 3) and summary.action_dim == DIM
    assert summary.policies == {"smooth": 4}


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="no such file"):
        validate(tmp_path / "nothing.h5")


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.h5"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DatasetError, match="not an HDF5 file"):
        validate(path)


def test_truncated_file(tmp_path, episodes):
    path = write_file(tmp_path / "d.h5", episodes)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="corrupt"):
        validate(path)


def test_corrupt_pixel_chunk_is_found_by_the_deep_check(tmp_path, episodes):
    path = write_file(tmp_path / "d.h5", episodes)
    with h5py.File(path) as handle:
        offset = handle["pixels"].id.get_chunk_info(3).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * 16)  # break the gzip stream of frame 3
    validate(path)  # structure is intact
    with pytest.raises(DatasetError, match="corrupt"):
        validate(path, check_pixels=True)


def test_hdf5_file_of_another_kind(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as handle:
        handle["x"] = np.arange(3)
    with pytest.raises(DatasetError, match="not a lewm_ros episode file"):
        validate(path)


def _tamper(path: Path, edit) -> None:
    with h5py.File(path, "r+") as handle:
        edit(handle)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.attrs.__setitem__("format_version", 99), "version 99"),
        (lambda f: f.attrs.__delitem__("camera"), "missing attributes"),
        (lambda f: f.__delitem__("qvel"), "'qvel' is missing"),
        (lambda f: f["episodes"].__delitem__("length"), "'episodes/length' is missing"),
        (lambda f: f["episodes/start"].__setitem__(1, 3), "not contiguous"),
        (lambda f: f["episodes/length"].__setitem__(3, 50), "fewer"),
        (lambda f: f["action"].__setitem__(0, [5.0, 0.0, 0.0]), "within"),
        (lambda f: f["action"].__setitem__(4, [0.0, 0.0, 0.0]), "NaN action"),
        (lambda f: f["timestamp"].__setitem__(3, -1.0), "non-decreasing"),
    ],
    ids=["version", "attribute", "dataset", "index", "boundaries", "short", "range", "last-action", "time"],
)
def test_inconsistent_files_are_refused_with_a_reason(tmp_path, episodes, edit, message):
    path = write_file(tmp_path / "d.h5", episodes)
    _tamper(path, edit)
    with pytest.raises(DatasetError, match=message):
        validate(path)


def test_append_refuses_an_invalid_file_and_leaves_it_untouched(tmp_path, episodes):
    path = write_file(tmp_path / "d.h5", episodes)
    _tamper(path, lambda f: f["episodes/start"].__setitem__(1, 3))
    before = digest(path)
    with pytest.raises(DatasetError):
        EpisodeWriter.open_for_append(path)
    assert digest(path) == before
