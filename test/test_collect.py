"""Dataset collection end to end: real MuJoCo, real HDF5 files, the real CLI in a subprocess."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from signals_for_children import default_sigint

from lewm_ros.data.episode_format import DatasetError
from lewm_ros.data.episode_reader import EpisodeReader
from lewm_ros.data.episode_validation import validate
from lewm_ros.envs.collect import CollectionSpec, collect
from lewm_ros.envs.reach_env import ReachConfig, ReachEnv

ROOT = Path(__file__).resolve().parents[1]
REACH2D = str(ROOT / "sim" / "reach2d.xml")
TINY = ReachConfig(image_size=16)


def spec(**changes) -> CollectionSpec:
    settings = {"scene": REACH2D, "episodes": 3, "steps": 8, "policy": "mixed", "seed": 5, "env": TINY}
    settings.update(changes)
    return CollectionSpec(**settings)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_all(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path) as handle:
        content = {}
        handle.visititems(lambda name, obj: content.update({name: obj[...]}) if isinstance(obj, h5py.Dataset) else None)
        return content


def assert_same_content(first: Path, second: Path) -> None:
    a, b = read_all(first), read_all(second)
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lewm_ros.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120, **kwargs
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".partial"))


# ----------------------------------------------------------------------------- content


def test_collected_file_is_valid_and_described_by_its_attributes(tmp_path):
    out = tmp_path / "d.h5"
    report = collect(spec(), out)
    assert report.episodes_written == 3 and report.frames_written == 27 and not report.interrupted
    summary = validate(out, check_pixels=True)
    assert summary.num_episodes == 3
    np.testing.assert_array_equal(summary.episode_lengths, [9, 9, 9])
    attrs = summary.attributes
    assert attrs["scene"] == REACH2D and attrs["camera"] == "top" and attrs["policy"] == "mixed"
    assert (attrs["image_height"], attrs["image_width"]) == (16, 16)
    assert attrs["control_dt"] == pytest.approx(0.05) and attrs["seed"] == 5
    assert attrs["joint_names"] == ["shoulder", "elbow"]
    with EpisodeReader(out) as reader:
        timestamps = reader.read("timestamp", 1)
        np.testing.assert_allclose(timestamps, np.arange(9) * 0.05, atol=1e-9)
        actions = reader.actions(1)
        assert np.all(np.isnan(actions[-1])) and np.all(np.abs(actions[:-1]) <= 1)
    assert leftovers(tmp_path) == []


def test_stored_episode_replays_exactly_in_the_simulator(tmp_path):
    """Row k holds observation k and the action applied after it: replaying the actions reproduces the rows."""
    out = tmp_path / "d.h5"
    collect(spec(episodes=2, steps=12), out)
    with EpisodeReader(out) as reader, ReachEnv(REACH2D, TINY) as env:
        for index in range(reader.num_episodes):
            episode = reader.episode(index)
            result = env.reset(start_qpos=episode.qpos[0], goal_qpos=episode.goal_qpos)
            np.testing.assert_array_equal(result.observation.pixels, episode.pixels[0])
            np.testing.assert_array_equal(env.goal_image(), episode.goal_pixels)
            for k, action in enumerate(episode.action[:-1], start=1):
                result = env.step(action)
                np.testing.assert_array_equal(result.observation.qpos, episode.qpos[k])
                np.testing.assert_array_equal(result.observation.qvel, episode.qvel[k])
                np.testing.assert_array_equal(result.observation.pixels, episode.pixels[k])
                assert result.success == episode.success[k]


def test_success_flags_follow_the_joint_error(tmp_path):
    out = tmp_path / "d.h5"
    collect(spec(episodes=4, steps=20, policy="smooth"), out)
    with EpisodeReader(out) as reader:
        for index in range(reader.num_episodes):
            episode = reader.episode(index)
            expected = np.all(np.abs(episode.qpos - episode.goal_qpos) <= 0.05, axis=1)
            np.testing.assert_array_equal(episode.success, expected)


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_a_byte_identical_file_and_another_seed_does_not(tmp_path):
    collect(spec(), tmp_path / "a.h5")
    collect(spec(), tmp_path / "b.h5")
    collect(spec(seed=6), tmp_path / "c.h5")
    assert digest(tmp_path / "a.h5") == digest(tmp_path / "b.h5")
    with EpisodeReader(tmp_path / "a.h5") as a, EpisodeReader(tmp_path / "c.h5") as c:
        assert not np.array_equal(a.read("qpos", 0), c.read("qpos", 0))


def test_two_workers_write_the_same_file_as_one(tmp_path):
    collect(spec(episodes=4), tmp_path / "one.h5", workers=1)
    report = collect(spec(episodes=4), tmp_path / "two.h5", workers=2)
    assert report.episodes_written == 4
    assert_same_content(tmp_path / "one.h5", tmp_path / "two.h5")
    assert digest(tmp_path / "one.h5") == digest(tmp_path / "two.h5")


def test_appending_continues_the_episode_sequence(tmp_path):
    """Two runs of 2 episodes with the same seed hold what one run of 4 holds."""
    collect(spec(episodes=2), tmp_path / "split.h5")
    report = collect(spec(episodes=2), tmp_path / "split.h5", mode="append")
    assert report.episodes_written == 2 and report.episodes_in_file == 4
    collect(spec(episodes=4), tmp_path / "whole.h5")
    assert_same_content(tmp_path / "split.h5", tmp_path / "whole.h5")


def test_append_to_a_missing_file_creates_it(tmp_path):
    report = collect(spec(episodes=1), tmp_path / "new.h5", mode="append")
    assert report.episodes_in_file == 1 and validate(tmp_path / "new.h5").num_episodes == 1


# ----------------------------------------------------------------------------- existing and bad outputs


def test_existing_output_is_refused_without_append_or_overwrite(tmp_path):
    out = tmp_path / "d.h5"
    collect(spec(episodes=1), out)
    before = digest(out)
    with pytest.raises(FileExistsError, match=r"--append.*--overwrite"):
        collect(spec(episodes=1, seed=9), out)
    assert digest(out) == before


def test_overwrite_replaces_the_file(tmp_path):
    out = tmp_path / "d.h5"
    collect(spec(episodes=3), out)
    collect(spec(episodes=1, seed=9), out, mode="overwrite")
    summary = validate(out)
    assert summary.num_episodes == 1 and summary.attributes["seed"] == 9


@pytest.mark.parametrize("damage", ["garbage", "truncated", "foreign"])
def test_corrupt_file_on_append_is_refused_and_left_untouched(tmp_path, damage):
    out = tmp_path / "d.h5"
    if damage == "garbage":
        out.write_bytes(b"not hdf5 at all " * 300)
    elif damage == "truncated":
        collect(spec(episodes=2), out)
        data = out.read_bytes()
        out.write_bytes(data[: len(data) * 2 // 3])
    else:
        with h5py.File(out, "w") as handle:
            handle["pixels"] = np.zeros((2, 16, 16, 3), np.uint8)
    before = digest(out)
    with pytest.raises(DatasetError):
        collect(spec(episodes=1), out, mode="append")
    assert digest(out) == before
    assert leftovers(tmp_path) == []


def test_append_with_different_settings_is_refused(tmp_path):
    out = tmp_path / "d.h5"
    collect(spec(episodes=1), out)
    before = digest(out)
    with pytest.raises(DatasetError, match="image_height"):
        collect(spec(episodes=1, env=ReachConfig(image_size=24)), out, mode="append")
    assert digest(out) == before


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"scene": "/nonexistent/arm.xml"}, FileNotFoundError, "arm.xml"),
        ({"env": ReachConfig(image_size=16, camera="wrist")}, ValueError, "unknown camera"),
        ({"episodes": 0}, ValueError, "--episodes"),
        ({"steps": 0}, ValueError, "--steps"),
        ({"policy": "greedy"}, ValueError, "unknown policy"),
        ({"seed": -1}, ValueError, "--seed"),
    ],
    ids=["scene", "camera", "episodes", "steps", "policy", "seed"],
)
def test_bad_requests_fail_before_any_file_is_written(tmp_path, changes, error, message):
    with pytest.raises(error, match=message):
        collect(spec(**changes), tmp_path / "d.h5")
    assert list(tmp_path.iterdir()) == []


def test_an_interrupt_between_episodes_keeps_the_complete_ones(tmp_path):
    out = tmp_path / "d.h5"

    def interrupt_after_two(written: int, frames: int) -> None:
        if written == 2:
            raise KeyboardInterrupt

    report = collect(spec(episodes=10), out, on_episode=interrupt_after_two)
    assert report.interrupted and report.episodes_in_file == 2
    assert validate(out, check_pixels=True).num_episodes == 2
    assert leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- command line


def test_cli_collect_then_dataset_info(tmp_path):
    out = tmp_path / "d.h5"
    args = ["--scene", REACH2D, "--episodes", "2", "--steps", "5", "--image-size", "16", "--out", str(out)]
    collected = run_cli("collect", *args, "--policy", "smooth", "--seed", "1")
    assert collected.returncode == 0, collected.stderr
    assert "collected 2 episodes (12 frames)" in collected.stderr
    info = run_cli("dataset-info", str(out))
    assert info.returncode == 0, info.stderr
    assert "episodes:    2" in info.stdout and "frames:      12" in info.stdout and "valid:" in info.stdout
    refused = run_cli("collect", *args)
    assert refused.returncode == 1 and "--append" in refused.stderr
    appended = run_cli("collect", *args, "--append")
    assert appended.returncode == 0, appended.stderr
    assert validate(out).num_episodes == 4


def test_cli_reports_bad_input_clearly(tmp_path):
    missing = run_cli("collect", "--scene", str(tmp_path / "none.xml"), "--out", str(tmp_path / "d.h5"))
    assert missing.returncode == 1 and "scene file not found" in missing.stderr
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x00" * 100)
    info = run_cli("dataset-info", str(garbage))
    assert info.returncode == 2 and "invalid episode file" in info.stderr and "not an HDF5 file" in info.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_leaves_a_valid_file_of_complete_episodes(tmp_path, workers):
    out = tmp_path / "d.h5"
    command = [
        sys.executable, "-m", "lewm_ros.cli", "collect", "--scene", REACH2D, "--out", str(out),
        "--episodes", "1000", "--steps", "20", "--image-size", "16", "--progress", "lines",
        "--workers", str(workers),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        seen = []
        for line in process.stderr:
            seen.append(line)
            if line.startswith("episode 2/"):
                break
        assert seen and seen[-1].startswith("episode 2/"), "".join(seen)
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, "".join(seen) + rest
    assert "interrupted" in rest
    summary = validate(out, check_pixels=True)
    assert 2 <= summary.num_episodes < 1000
    assert np.all(summary.episode_lengths == 21)
    assert leftovers(tmp_path) == []
    assert f"holds {summary.num_episodes} episodes" in rest
    assert f"kept {summary.num_episodes} episodes" in rest


# A collect process that sends itself a real SIGINT while its third episode is being written: the moment a
# Ctrl-C is held back until the write is whole (the "kept 65 episodes" of a file holding 66 came from there).
SIGINT_DURING_WRITE = """
import os, signal, sys
from lewm_ros.cli import main
from lewm_ros.data.episode_writer import EpisodeWriter

write, calls = EpisodeWriter.write_episode, []

def write_and_interrupt(self, episode):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGINT)  # delivered while the episode is being written
    return write(self, episode)

EpisodeWriter.write_episode = write_and_interrupt
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("append", [False, True])
def test_ctrl_c_during_a_write_reports_the_episodes_the_file_holds(tmp_path, append):
    out = tmp_path / "d.h5"
    before = 0
    if append:
        collect(spec(episodes=2, steps=20), out, mode="create")
        before = 2
    command = [sys.executable, "-c", SIGINT_DURING_WRITE, "collect", "--scene", REACH2D, "--out", str(out),
               "--episodes", "1000", "--steps", "20", "--image-size", "16", "--policy", "mixed", "--seed", "5",
               "--progress", "none", *(["--append"] if append else [])]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=default_sigint)
    assert done.returncode == 130, done.stderr
    held = validate(out).num_episodes
    assert held == before + 3  # the interrupted write finished whole
    assert f"interrupted: kept {held - before} episodes" in done.stderr, done.stderr
    assert f"holds {held} episodes" in done.stderr


def test_no_stray_files_in_the_working_directory():
    assert not any(name.endswith(".partial") for name in os.listdir(ROOT))
