"""The HDF5 episode store under hostile input (issue #14, part 3).

Every bad episode, argument or file must end in DatasetError from the public API (exit code 2 and one
line from `dataset-info`), never a raw h5py/numpy exception, a half-written file or a huge allocation.
"""

from __future__ import annotations

import argparse
import hashlib
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from lewm_ros.data import cli as data_cli
from lewm_ros.data import episode_chunks as store
from lewm_ros.data.episode_format import DatasetError, DatasetIndexError, DatasetTypeError, Episode
from lewm_ros.data.episode_reader import EpisodeReader
from lewm_ros.data.episode_validation import validate
from lewm_ros.data.episode_writer import EpisodeWriter

HEIGHT, WIDTH, DIM = 6, 8, 2
ATTRIBUTES = {"scene": "arm.xml", "camera": "cam", "control_dt": 0.05, "seed": 3, "policy": "random"}


def make_episode(frames: int = 5, seed: int = 0, height: int = HEIGHT, width: int = WIDTH) -> Episode:
    rng = np.random.default_rng(seed)
    action = rng.uniform(-1, 1, (frames, DIM)).astype(np.float32)
    action[-1] = np.nan
    return Episode(
        pixels=rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        action=action,
        qpos=rng.normal(size=(frames, DIM)),
        qvel=rng.normal(size=(frames, DIM)),
        timestamp=np.arange(frames) * 0.05,
        success=np.zeros(frames, dtype=bool),
        goal_qpos=rng.normal(size=DIM),
        goal_pixels=rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        seed=3,
        policy="random",
    )


def write_file(path: Path, lengths: tuple[int, ...] = (5, 3, 4)) -> Path:
    with EpisodeWriter.create(
        path, image_shape=(HEIGHT, WIDTH), action_dim=DIM, state_dim=DIM, attributes=ATTRIBUTES
    ) as writer:
        for seed, frames in enumerate(lengths):
            writer.write_episode(make_episode(frames, seed))
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def dataset_info(path: Path, *flags: str) -> int:
    """`lewm-ros dataset-info` in-process, through its own parser (fast; no other subcommands imported)."""
    parser = argparse.ArgumentParser(prog="lewm-ros")
    data_cli.register(parser.add_subparsers())
    args = parser.parse_args(["dataset-info", str(path), *flags])
    return args.run(args)


def _with_episode(**changes) -> Episode:
    episode = make_episode(5, seed=7)
    for name, value in changes.items():
        setattr(episode, name, value(getattr(episode, name)) if callable(value) else value)
    return episode


def _set_row(row: int, value) -> Callable[[np.ndarray], np.ndarray]:
    def edit(array: np.ndarray) -> np.ndarray:
        array = array.copy()
        array[row] = value
        return array

    return edit


# ----------------------------------------------------------------------------- the writer refuses first

BAD_EPISODES = {
    "action-nan-inside": _with_episode(action=_set_row(1, np.nan)),
    "action-inf": _with_episode(action=_set_row(0, np.inf)),
    "action-out-of-range": _with_episode(action=_set_row(2, 1.5)),
    "action-last-row-not-nan": _with_episode(action=_set_row(-1, 0.0)),
    "action-float64-overflow": _with_episode(action=lambda a: np.where(np.isnan(a), np.nan, 1e39)),
    "action-int": _with_episode(action=lambda a: np.zeros(a.shape, dtype=np.int64)),
    "action-wrong-dim": _with_episode(action=lambda a: np.full((5, DIM + 1), np.nan, np.float32)),
    "qpos-nan": _with_episode(qpos=_set_row(4, np.nan)),
    "qvel-inf": _with_episode(qvel=_set_row(0, -np.inf)),
    "qpos-strings": _with_episode(qpos=lambda q: q.astype(str)),
    "qpos-objects": _with_episode(qpos=lambda q: q.astype(object)),
    "qpos-ragged": _with_episode(qpos=[[0.0, 1.0], [0.0]]),
    "qpos-short": _with_episode(qpos=lambda q: q[:-1]),
    "timestamp-backwards": _with_episode(timestamp=_set_row(3, 0.0)),
    "timestamp-nan": _with_episode(timestamp=_set_row(2, np.nan)),
    "timestamp-inf": _with_episode(timestamp=_set_row(4, np.inf)),
    "timestamp-complex": _with_episode(timestamp=lambda t: t.astype(complex)),
    "pixels-float": _with_episode(pixels=lambda p: p.astype(np.float32)),
    "pixels-int64": _with_episode(pixels=lambda p: p.astype(np.int64)),
    "pixels-wrong-size": _with_episode(pixels=lambda p: p[:, :, :-1]),
    "pixels-grey": _with_episode(pixels=lambda p: p[..., 0]),
    "pixels-scalar": _with_episode(pixels=np.uint8(3)),
    "success-int": _with_episode(success=lambda s: s.astype(np.int8)),
    "success-long": _with_episode(success=np.zeros(6, dtype=bool)),
    "empty": _with_episode(
        **{name: lambda a: a[:0] for name in ("pixels", "action", "qpos", "qvel", "timestamp", "success")}
    ),
    "goal-qpos-inf": _with_episode(goal_qpos=np.array([np.inf, 0.0])),
    "goal-qpos-shape": _with_episode(goal_qpos=np.zeros(DIM + 1)),
    "goal-pixels-float": _with_episode(goal_pixels=lambda g: g.astype(np.float64)),
    "seed-bool": _with_episode(seed=True),
    "seed-float": _with_episode(seed=2.0),
    "seed-negative": _with_episode(seed=-2),
    "seed-too-big": _with_episode(seed=2**63),
    "policy-none": _with_episode(policy=None),
    "policy-nul": _with_episode(policy="ran\x00dom"),
    "policy-surrogate": _with_episode(policy="\udc80"),
}


@pytest.mark.parametrize("name", sorted(BAD_EPISODES))
def test_writer_refuses_what_validate_would_reject_without_touching_the_file(tmp_path, name):
    path = write_file(tmp_path / "d.h5")
    before = digest(path)
    writer = EpisodeWriter.open_for_append(path)
    try:
        with pytest.raises(DatasetError):
            writer.write_episode(BAD_EPISODES[name])
        assert writer.num_episodes == 3 and writer.num_frames == 12
    finally:
        writer.close()
    assert digest(path) == before
    assert validate(path, check_pixels=True).num_episodes == 3


def test_writer_refuses_things_that_are_not_episodes(tmp_path):
    path = write_file(tmp_path / "d.h5")
    before = digest(path)
    with EpisodeWriter.open_for_append(path) as writer, pytest.raises(DatasetTypeError, match="Episode"):
        writer.write_episode({"pixels": np.zeros((1, HEIGHT, WIDTH, 3), np.uint8)})  # type: ignore[arg-type]
    assert digest(path) == before


def test_writer_accepts_other_float_widths_and_stores_the_file_dtype(tmp_path):
    path = write_file(tmp_path / "d.h5", ())
    episode = make_episode(4)
    episode.action = episode.action.astype(np.float64)
    episode.qpos = episode.qpos.astype(np.float32)
    episode.timestamp = [0.0, 0.05, 0.05, 0.1]
    with EpisodeWriter.open_for_append(path) as writer:
        writer.write_episode(episode)
    with EpisodeReader(path) as reader:
        assert reader.actions(0).dtype == np.float32
        np.testing.assert_array_equal(reader.read("qpos", 0), episode.qpos.astype(np.float64))


def test_a_closed_writer_says_so(tmp_path):
    writer = EpisodeWriter.create(
        tmp_path / "d.h5", image_shape=(HEIGHT, WIDTH), action_dim=DIM, state_dim=DIM, attributes=ATTRIBUTES
    )
    writer.close()
    with pytest.raises(DatasetError, match="closed"):
        writer.write_episode(make_episode())


# ----------------------------------------------------------------------------- create leaves nothing behind

BAD_CREATE = {
    "zero-height": {"image_shape": (0, WIDTH)},
    "zero-width": {"image_shape": (HEIGHT, 0)},
    "negative": {"image_shape": (-4, WIDTH)},
    "absurd": {"image_shape": (100_000, 100_000)},
    "absurd-thin": {"image_shape": (10**12, 1)},
    "float-size": {"image_shape": (6.0, WIDTH)},
    "bool-size": {"image_shape": (True, WIDTH)},
    "one-side": {"image_shape": (HEIGHT,)},
    "three-sides": {"image_shape": (HEIGHT, WIDTH, 3)},
    "string-shape": {"image_shape": "6x8"},
    "action-dim-zero": {"action_dim": 0},
    "action-dim-float": {"action_dim": 2.0},
    "state-dim-negative": {"state_dim": -1},
    "state-dim-absurd": {"state_dim": 10**9},
    "attributes-missing": {"attributes": {"scene": "arm.xml"}},
    "attributes-not-a-mapping": {"attributes": [("scene", "arm.xml")]},
    "control-dt-nan": {"attributes": {**ATTRIBUTES, "control_dt": float("nan")}},
    "control-dt-zero": {"attributes": {**ATTRIBUTES, "control_dt": 0.0}},
    "control-dt-string": {"attributes": {**ATTRIBUTES, "control_dt": "fast"}},
    "seed-float": {"attributes": {**ATTRIBUTES, "seed": 1.5}},
    "scene-path": {"attributes": {**ATTRIBUTES, "scene": Path("arm.xml")}},
    "unstorable-value": {"attributes": {**ATTRIBUTES, "extra": None}},
    "unstorable-dict": {"attributes": {**ATTRIBUTES, "extra": {"a": 1}}},
    "empty-name": {"attributes": {**ATTRIBUTES, "": 1}},
}


@pytest.mark.parametrize("name", sorted(BAD_CREATE))
def test_create_with_bad_arguments_leaves_no_file(tmp_path, name):
    arguments = {"image_shape": (HEIGHT, WIDTH), "action_dim": DIM, "state_dim": DIM, "attributes": ATTRIBUTES}
    arguments.update(BAD_CREATE[name])
    with pytest.raises(DatasetError):
        EpisodeWriter.create(tmp_path / "d.h5", **arguments)
    assert list(tmp_path.iterdir()) == []


def test_a_refused_create_leaves_an_existing_file_alone(tmp_path):
    path = write_file(tmp_path / "d.h5")
    before = digest(path)
    with pytest.raises(DatasetError):
        EpisodeWriter.create(path, image_shape=(0, 0), action_dim=DIM, state_dim=DIM, attributes=ATTRIBUTES)
    assert digest(path) == before


def test_create_in_a_missing_directory_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="cannot create"):
        write_file(tmp_path / "no" / "such" / "d.h5")


# ----------------------------------------------------------------------------- validate: values and bounded reads


def _tamper(path: Path, edit: Callable[[h5py.File], object]) -> Path:
    with h5py.File(path, "r+") as handle:
        edit(handle)
    return path


@pytest.mark.parametrize(
    ("name", "row", "value", "message"),
    [("qpos", 6, np.nan, "qpos must be finite"), ("qvel", 0, np.inf, "qvel must be finite")],
)
def test_validate_checks_joint_states_are_finite(tmp_path, name, row, value, message):
    path = _tamper(write_file(tmp_path / "d.h5"), lambda f: f[name].__setitem__(row, [value, 0.0]))
    with pytest.raises(DatasetError, match=message):
        validate(path)


def _reshuffled_pixels(path: Path) -> Path:
    """The same frames stored with shuffle + gzip (as h5repack might): validate must read them via h5py."""
    with h5py.File(path, "r+") as handle:
        frames = handle["pixels"][...]
        del handle["pixels"]
        handle.create_dataset(
            "pixels", data=frames, maxshape=(None, HEIGHT, WIDTH, 3), chunks=(1, HEIGHT, WIDTH, 3),
            compression="gzip", shuffle=True,
        )  # fmt: skip
    return path


def test_validate_reads_pixels_in_blocks_bounded_by_bytes(tmp_path, monkeypatch):
    """With a 1 KiB budget and 144-byte frames, no read may exceed 7 frames (today: 256 frames at once)."""
    path = _reshuffled_pixels(write_file(tmp_path / "d.h5", (40, 30)))
    monkeypatch.setattr(store, "READ_BLOCK_BYTES", 1024, raising=False)
    reads: list[int] = []
    original = h5py.Dataset.__getitem__

    def spy(self, selection):
        result = original(self, selection)
        if self.name == "/pixels":
            reads.append(np.asarray(result).nbytes)
        return result

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    validate(path, check_pixels=True)
    assert sum(reads) >= 70 * HEIGHT * WIDTH * 3  # every frame was decoded...
    assert max(reads) <= 1024  # ...in reads of at most the budget


def _peak_bytes(call: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_frames_are_checked_without_a_frame_sized_buffer(tmp_path):
    """Two 48 MiB frames: today both are read at once (96 MiB); now a frame is inflated piecewise."""
    side = 4096
    path = tmp_path / "big.h5"
    episode = make_episode(2)
    episode.pixels = np.zeros((2, side, side, 3), np.uint8)
    episode.goal_pixels = np.zeros((side, side, 3), np.uint8)
    with EpisodeWriter.create(
        path, image_shape=(side, side), action_dim=DIM, state_dim=DIM, attributes=ATTRIBUTES
    ) as writer:
        writer.write_episode(episode)
    del episode
    assert _peak_bytes(lambda: validate(path, check_pixels=True)) < 16 * 2**20


def _replace_chunk(path: Path, row: int, data: bytes, skipped_filters: int = 0) -> Path:
    with h5py.File(path, "r+") as handle:
        handle["pixels"].id.write_direct_chunk((row, 0, 0, 0), data, skipped_filters)
    return path


FRAME = HEIGHT * WIDTH * 3
BAD_CHUNKS = {
    "bomb": lambda: zlib.compress(bytes(FRAME * 20_000)),  # 2.9 MB of zeros in a 3 KB chunk
    "short": lambda: zlib.compress(bytes(FRAME - 1)),
    "cut-stream": lambda: zlib.compress(np.random.default_rng(0).bytes(FRAME))[:-20],
    "not-zlib": lambda: np.random.default_rng(1).bytes(100),
}


@pytest.mark.parametrize("name", sorted(BAD_CHUNKS))
def test_malformed_pixel_chunks_are_found_by_the_deep_check(tmp_path, name):
    path = _replace_chunk(write_file(tmp_path / "d.h5"), 6, BAD_CHUNKS[name]())
    validate(path)
    with pytest.raises(DatasetError, match="frame 6 is a corrupt chunk"):
        validate(path, check_pixels=True)


def test_an_uncompressed_chunk_of_the_wrong_size_is_found(tmp_path):
    path = _replace_chunk(write_file(tmp_path / "d.h5"), 2, bytes(FRAME + 3), skipped_filters=1)
    with pytest.raises(DatasetError, match="frame 2 is a corrupt chunk"):
        validate(path, check_pixels=True)


def test_a_chunk_stored_uncompressed_is_still_a_valid_frame(tmp_path):
    """HDF5 may skip an optional filter for a chunk (filter mask bit 0): the raw bytes are the frame."""
    frame = np.arange(FRAME, dtype=np.uint8).reshape(HEIGHT, WIDTH, 3)
    path = _replace_chunk(write_file(tmp_path / "d.h5"), 3, frame.tobytes(), skipped_filters=1)
    validate(path, check_pixels=True)
    with EpisodeReader(path) as reader:
        np.testing.assert_array_equal(reader.pixels(0, [3])[0], frame)
        np.testing.assert_array_equal(reader._file["pixels"][3], frame)  # h5py agrees


def test_a_compression_bomb_is_checked_in_bounded_memory(tmp_path):
    deflater = zlib.compressobj(9)
    block = bytes(2**20)
    bomb = b"".join(deflater.compress(block) for _ in range(200)) + deflater.flush()  # 200 MiB of zeros
    path = _replace_chunk(write_file(tmp_path / "d.h5"), 0, bomb)

    def refused() -> None:
        with pytest.raises(DatasetError, match="frame 0 is a corrupt chunk"):
            validate(path, check_pixels=True)

    assert _peak_bytes(refused) < 8 * 2**20


@pytest.mark.parametrize("name", sorted(BAD_CHUNKS))
def test_the_reader_refuses_malformed_chunks_by_frame(tmp_path, name):
    path = _replace_chunk(write_file(tmp_path / "d.h5"), 6, BAD_CHUNKS[name]())
    with EpisodeReader(path) as reader:  # structure only: the chunk is met when read
        reader.pixels(1, [0])  # frame 5
        with pytest.raises(DatasetError, match="pixels frame 6 is a corrupt chunk"):
            reader.pixels(1, slice(1, 2))
        with pytest.raises(DatasetError, match="frame 6"):
            reader.episode(1)


def test_the_reader_never_inflates_a_bomb_past_one_frame(tmp_path):
    deflater = zlib.compressobj(9)
    bomb = b"".join(deflater.compress(bytes(2**20)) for _ in range(200)) + deflater.flush()
    path = _replace_chunk(write_file(tmp_path / "d.h5"), 0, bomb)

    def refused() -> None:
        with EpisodeReader(path) as reader, pytest.raises(DatasetError, match="more than a frame"):
            reader.pixels(0)

    assert _peak_bytes(refused) < 8 * 2**20


def test_the_reader_decodes_goal_images_the_same_way(tmp_path):
    path = write_file(tmp_path / "d.h5")
    with h5py.File(path, "r+") as handle:
        handle["episodes/goal_pixels"].id.write_direct_chunk((1, 0, 0, 0), zlib.compress(bytes(FRAME - 5)))
    with EpisodeReader(path) as reader:
        np.testing.assert_array_equal(reader.goal(0)[1], make_episode(5, 0).goal_pixels)
        with pytest.raises(DatasetError, match="goal_pixels frame 1 is a corrupt chunk"):
            reader.goal(1)


def test_other_pixel_layouts_are_still_read_through_h5py(tmp_path):
    path = _reshuffled_pixels(write_file(tmp_path / "d.h5"))
    with EpisodeReader(path) as reader:
        np.testing.assert_array_equal(reader.pixels(2), make_episode(4, 2).pixels)
        np.testing.assert_array_equal(reader.pixels(0, [1, 4]), make_episode(5, 0).pixels[[1, 4]])


def test_frames_selected_every_way_match_the_episode(tmp_path):
    path = write_file(tmp_path / "d.h5")
    pixels = make_episode(5, 0).pixels
    with EpisodeReader(path) as reader:
        np.testing.assert_array_equal(reader.pixels(0), pixels)
        np.testing.assert_array_equal(reader.pixels(0, slice(None, None, 2)), pixels[::2])
        np.testing.assert_array_equal(reader.pixels(0, slice(-2, None)), pixels[-2:])
        np.testing.assert_array_equal(reader.pixels(0, np.array([0, 3], dtype=np.uint8)), pixels[[0, 3]])
        assert reader.pixels(0, []).shape == (0, HEIGHT, WIDTH, 3)
        assert reader.pixels(0, slice(3, 1)).shape == (0, HEIGHT, WIDTH, 3)


# ----------------------------------------------------------------------------- hostile files


def _lengths_that_overflow(handle: h5py.File) -> None:
    handle["episodes/length"][...] = [2**63 - 1, 2, 1]
    handle["episodes/start"][...] = [0, 2**63 - 1, 0]


def _sparse_declared_extent(handle: h5py.File) -> None:
    """A tiny file declaring 2 million rows that were never written (fill values: zeros)."""
    rows = 2_000_000
    for name in ("pixels", "action", "qpos", "qvel", "timestamp", "success"):
        handle[name].resize(rows, axis=0)
    for name in ("goal_qpos", "goal_pixels", "seed", "policy", "start", "length"):
        handle["episodes"][name].resize(1, axis=0)
    handle["episodes/length"][0] = rows
    handle["action"][rows - 1] = np.nan


def _external_storage(handle: h5py.File, directory: Path) -> None:
    raw = directory / "raw.bin"
    raw.write_bytes(np.zeros((12, DIM)).tobytes())
    del handle["qvel"]
    handle.create_dataset("qvel", shape=(12, DIM), dtype="f8", external=[(str(raw), 0, h5py.h5f.UNLIMITED)])


def _external_link(handle: h5py.File, directory: Path) -> None:
    with h5py.File(directory / "other.h5", "w") as other:
        other["qvel"] = np.zeros((12, DIM))
    del handle["qvel"]
    handle["qvel"] = h5py.ExternalLink(str(directory / "other.h5"), "/qvel")


def _bad_policy_bytes(handle: h5py.File) -> None:
    handle["episodes/policy"][0] = b"\xff\xfe"


HOSTILE_EDITS: dict[str, Callable[[h5py.File, Path], object]] = {
    "height-float": lambda f, d: f.attrs.__setitem__("image_height", float(HEIGHT)),
    "height-string": lambda f, d: f.attrs.__setitem__("image_height", str(HEIGHT)),
    "height-array": lambda f, d: f.attrs.__setitem__("image_height", [HEIGHT, HEIGHT]),
    "height-zero": lambda f, d: f.attrs.__setitem__("image_height", 0),
    "width-huge": lambda f, d: f.attrs.__setitem__("image_width", 2**62),
    "action-dim-bool": lambda f, d: f.attrs.__setitem__("action_dim", True),
    "version-bool": lambda f, d: f.attrs.__setitem__("format_version", True),
    "version-float": lambda f, d: f.attrs.__setitem__("format_version", 1.0),
    "format-bytes-array": lambda f, d: f.attrs.__setitem__("format", np.array([b"lewm_ros.episodes"])),
    "control-dt-nan": lambda f, d: f.attrs.__setitem__("control_dt", np.nan),
    "control-dt-negative": lambda f, d: f.attrs.__setitem__("control_dt", -0.05),
    "control-dt-string": lambda f, d: f.attrs.__setitem__("control_dt", "0.05"),
    "camera-int": lambda f, d: f.attrs.__setitem__("camera", 3),
    "seed-float": lambda f, d: f.attrs.__setitem__("seed", 0.5),
    "negative-length": lambda f, d: f["episodes/length"].__setitem__(1, -3),
    "zero-length": lambda f, d: f["episodes/length"].__setitem__(2, 0),
    "overflowing-lengths": lambda f, d: _lengths_that_overflow(f),
    "start-past-the-end": lambda f, d: f["episodes/start"].__setitem__(2, 10**12),
    "index-longer-than-data": lambda f, d: f["episodes/length"].__setitem__(2, 10**15),
    "sparse-extent": lambda f, d: _sparse_declared_extent(f),
    "goal-qpos-inf": lambda f, d: f["episodes/goal_qpos"].__setitem__(0, [np.inf, 0.0]),
    "soft-link": lambda f, d: (f.__delitem__("qvel"), f.__setitem__("qvel", h5py.SoftLink("/qpos"))),
    "external-link": _external_link,
    "external-storage": _external_storage,
    "episodes-is-a-dataset": lambda f, d: (f.__delitem__("episodes"), f.__setitem__("episodes", np.zeros(3))),
    "missing-group": lambda f, d: f.__delitem__("episodes"),
    "start-float": lambda f, d: (f["episodes"].__delitem__("start"), f["episodes"].__setitem__("start", [0.0, 5, 8])),
    "policy-not-utf8": lambda f, d: _bad_policy_bytes(f),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_EDITS))
def test_hostile_files_are_refused_everywhere(tmp_path, capsys, name):
    path = write_file(tmp_path / "d.h5")
    with h5py.File(path, "r+") as handle:
        HOSTILE_EDITS[name](handle, tmp_path)
    with pytest.raises(DatasetError):
        validate(path)
    with pytest.raises(DatasetError):
        EpisodeReader(path)
    before = digest(path)
    with pytest.raises(DatasetError):
        EpisodeWriter.open_for_append(path)
    assert digest(path) == before
    capsys.readouterr()
    assert dataset_info(path, "--quick") == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "invalid episode file" in captured.err


def _truncated(path: Path) -> None:
    data = write_file(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_chunk(path: Path, dataset: str = "pixels", chunk: int = 4) -> Path:
    write_file(path)
    with h5py.File(path) as handle:
        offset = handle[dataset].id.get_chunk_info(chunk).byte_offset
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * 16)
    return path


BROKEN_FILES: dict[str, Callable[[Path], object]] = {
    "missing": lambda p: None,
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(np.random.default_rng(0).bytes(5000)),
    "hdf5-signature-then-garbage": lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 3000),
    "truncated": _truncated,
    "directory": lambda p: p.mkdir(),
    "foreign-hdf5": lambda p: h5py.File(p, "w").close(),
    "corrupt-pixel-chunk": _corrupt_chunk,
    "corrupt-goal-chunk": lambda p: _corrupt_chunk(p, "episodes/goal_pixels", 1),
}


@pytest.mark.parametrize("name", sorted(BROKEN_FILES))
def test_broken_files_give_one_line_and_exit_code_2(tmp_path, capsys, name):
    path = tmp_path / "d.h5"
    BROKEN_FILES[name](path)
    assert dataset_info(path) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "invalid episode file" in captured.err
    with pytest.raises(DatasetError):
        validate(path, check_pixels=True)


@pytest.mark.parametrize("name", ["truncated", "garbage", "foreign-hdf5", "directory", "missing"])
def test_an_unchecked_reader_still_raises_dataset_error(tmp_path, name):
    path = tmp_path / "d.h5"
    BROKEN_FILES[name](path)
    with pytest.raises(DatasetError):
        EpisodeReader(path, check=False)


def test_corrupt_frames_read_through_an_unchecked_reader_are_dataset_errors(tmp_path):
    path = _corrupt_chunk(tmp_path / "d.h5")
    with EpisodeReader(path, check=False) as reader:
        reader.pixels(0, [0, 1, 2, 3])  # the frames before the broken one are fine
        with pytest.raises(DatasetError, match="corrupt"):
            reader.pixels(0)
        with pytest.raises(DatasetError):
            reader.episode(0)


def test_append_onto_a_corrupt_chunk_is_refused_and_leaves_the_file_identical(tmp_path):
    path = _corrupt_chunk(tmp_path / "d.h5")
    validate(path)  # the structure alone looks fine...
    before = digest(path)
    with pytest.raises(DatasetError, match="corrupt"):
        EpisodeWriter.open_for_append(path)  # ...but appending decodes every frame first
    assert digest(path) == before


def test_collect_append_onto_a_corrupt_chunk_is_refused(tmp_path):
    from lewm_ros.envs.collect import CollectionSpec, collect
    from lewm_ros.envs.reach_env import ReachConfig

    scene = str(Path(__file__).resolve().parents[1] / "sim" / "reach2d.xml")
    spec = CollectionSpec(scene=scene, episodes=2, steps=4, policy="random", seed=1, env=ReachConfig(image_size=16))
    out = tmp_path / "d.h5"
    collect(spec, out)
    with h5py.File(out) as handle:
        offset = handle["pixels"].id.get_chunk_info(7).byte_offset
    with open(out, "r+b") as handle:
        handle.seek(offset)
        handle.write(b"\xff" * 16)
    before = digest(out)
    with pytest.raises(DatasetError, match="corrupt"):
        collect(spec, out, mode="append")
    assert digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]


# ----------------------------------------------------------------------------- index arguments

BAD_INDEX_TYPES = [True, False, np.bool_(True), 1.0, np.float64(1), np.float32(0), "1", b"1", None, [1], 1 + 0j]
READERS: dict[str, Callable[[EpisodeReader, object], object]] = {
    "episode_slice": lambda r, i: r.episode_slice(i),
    "read": lambda r, i: r.read("qpos", i),
    "pixels": lambda r, i: r.pixels(i),
    "actions": lambda r, i: r.actions(i),
    "goal": lambda r, i: r.goal(i),
    "episode": lambda r, i: r.episode(i),
}


@pytest.fixture
def reader(tmp_path):
    with EpisodeReader(write_file(tmp_path / "d.h5")) as opened:
        yield opened


@pytest.mark.parametrize("method", sorted(READERS))
def test_episode_indices_must_be_integers(reader, method):
    for value in BAD_INDEX_TYPES:
        with pytest.raises(DatasetTypeError, match="episode index must be an integer") as caught:
            READERS[method](reader, value)
        assert isinstance(caught.value, TypeError) and isinstance(caught.value, DatasetError)


@pytest.mark.parametrize("method", sorted(READERS))
def test_episode_indices_out_of_range_are_dataset_errors(reader, method):
    for value in (3, -4, 10**20, -(10**20), np.int64(2**63 - 1), np.uint64(2**64 - 1)):
        with pytest.raises(DatasetIndexError, match="out of range") as caught:
            READERS[method](reader, value)
        assert isinstance(caught.value, IndexError)


def test_numpy_integers_and_negative_indices_in_range_are_fine(reader):
    assert reader.episode_slice(np.int64(1)) == slice(5, 8)
    assert reader.episode_slice(np.uint8(2)) == slice(8, 12)
    np.testing.assert_array_equal(reader.goal(-1)[0], reader.goal(2)[0])
    np.testing.assert_array_equal(reader.episode(-3).qpos, reader.read("qpos", 0))


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        ([0.0, 1.0], DatasetTypeError),
        (np.array([0.5]), DatasetTypeError),
        ([True, False], DatasetTypeError),
        (["0", "1"], DatasetTypeError),
        ([[0, 1]], DatasetTypeError),
        (3, DatasetTypeError),
        ([0, [1, 2]], DatasetTypeError),
        ([-1], DatasetIndexError),
        ([0, 5], DatasetIndexError),
        ([2**70], DatasetTypeError),
        ([2, 1], DatasetError),
        ([1, 1], DatasetError),
        (slice(0.5, 2), DatasetTypeError),
        (slice(True, 2), DatasetTypeError),
        (slice(0, "2"), DatasetTypeError),
        (slice(0, 2, 0), DatasetError),
        (slice(3, 0, -1), DatasetError),
    ],
)
def test_frame_selections_are_checked(reader, frames, error):
    with pytest.raises(error):
        reader.pixels(0, frames)


def test_valid_frame_selections_still_work(reader):
    qpos = reader.read("qpos", 0)
    np.testing.assert_array_equal(reader.read("qpos", 0, [1, 3]), qpos[[1, 3]])
    np.testing.assert_array_equal(reader.read("qpos", 0, np.array([0, 4], dtype=np.uint16)), qpos[[0, 4]])
    np.testing.assert_array_equal(reader.read("qpos", 0, slice(-2, None)), qpos[-2:])
    np.testing.assert_array_equal(reader.read("qpos", 0, slice(np.int64(1), 100, 2)), qpos[1::2])
    assert reader.read("qpos", 0, []).shape == (0, DIM)
    assert reader.read("qpos", 0, slice(4, 1)).shape == (0, DIM)


@pytest.mark.parametrize("name", ["episodes", "episodes/start", "nothing", "/pixels", 3, None])
def test_read_only_serves_the_per_frame_datasets(reader, name):
    with pytest.raises(DatasetError, match="per-frame dataset"):
        reader.read(name, 0)  # type: ignore[arg-type]


def test_a_closed_reader_says_so(tmp_path):
    reader = EpisodeReader(write_file(tmp_path / "d.h5"))
    reader.close()
    for call in (lambda: reader.pixels(0), lambda: reader.goal(0), lambda: reader.attributes):
        with pytest.raises(DatasetError, match="closed"):
            call()


@pytest.mark.parametrize("path", [None, 3, b"d.h5"])
def test_paths_must_be_paths(path):
    for call in (validate, EpisodeReader, EpisodeWriter.open_for_append):
        with pytest.raises(DatasetTypeError, match="path"):
            call(path)
