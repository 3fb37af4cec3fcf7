"""`lewm-ros train` end to end on real episode files: outputs, exact resume, kill -9 and signals, input
errors, non-finite losses and the collapse monitor. Single process; the distributed run is in
test_train_ddp.py.

Every run uses the `tiny` preset and one torch thread (`--threads 1`; OMP_NUM_THREADS=1 for subprocesses):
fast on 2 cores, and immune to another process competing for them.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from lewm_ros import cli
from lewm_ros.data.windows import EpisodeBlock, WindowSpec, inspect_files, split_episodes
from lewm_ros.envs.collect import CollectionSpec, collect
from lewm_ros.envs.reach_env import ReachConfig
from lewm_ros.model.bundle import load_bundle, save_bundle
from lewm_ros.model.config import preset
from lewm_ros.model.lewm import LeWM
from lewm_ros.model.sigreg import SIGReg
from lewm_ros.training import loop as objective_module  # the training loop's own reference to the loss
from lewm_ros.training.checkpoint import load_checkpoint
from lewm_ros.training.evaluate import evaluate_windows
from lewm_ros.training.monitor import MetricsLog, latent_health

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--preset", "tiny", "--no-progress", "--threads", "1", "--device", "cpu"]
# Cheaper steps for the runs that only need "some training": 8 windows, 64 SIGReg directions.
SMALL = [*FAST, "--batch-size", "8", "--sigreg-directions", "64", "--precision", "fp32"]
CHILD_TIMEOUT = 240
WINDOW_FRAMES = preset("tiny").predictor.history * preset("tiny").action.frameskip + 1


# ------------------------------------------------------------------------------------------- helpers


def make_file(path: Path, scene: str = "reach2d", episodes: int = 12, steps: int = 40, image_size: int = 64) -> Path:
    spec = CollectionSpec(scene=scene, episodes=episodes, steps=steps, policy="mixed", seed=3,
                          env=ReachConfig(image_size=image_size))  # fmt: skip
    collect(spec, path, mode="create", workers=1)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("episodes")
    return SimpleNamespace(
        main=make_file(root / "reach64.h5"),  # 12 episodes x 41 frames
        small48=make_file(root / "reach48.h5", episodes=3, steps=20, image_size=48),
        arm=make_file(root / "arm64.h5", scene="arm3d", episodes=3, steps=20),
        short=make_file(root / "short.h5", episodes=3, steps=WINDOW_FRAMES - 2),  # one frame short of a window
        single=make_file(root / "single.h5", episodes=1, steps=40),
        two=make_file(root / "two.h5", episodes=2, steps=20),  # fewer windows than a batch of 16
    )


@pytest.fixture(autouse=True)
def restore_torch_threads():
    """`--threads 1` in-process sets torch's global thread count; give the next test its own."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def train(*args) -> int:
    """`lewm-ros train ARGS` in this process."""
    return cli.main(["train", *(str(a) for a in args)])


def train_captured(*args) -> SimpleNamespace:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = train(*args)
    return SimpleNamespace(code=code, stdout=out.getvalue(), stderr=err.getvalue())


def spawn(out_dir: Path, *args, name: str = "child") -> tuple[subprocess.Popen, Path, Path]:
    """`python -m lewm_ros.train ARGS` as a child process; stdout/stderr to files (no pipe can fill up)."""
    stdout, stderr = out_dir.parent / f"{name}.out", out_dir.parent / f"{name}.err"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with stdout.open("w") as o, stderr.open("w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "lewm_ros.train", *(str(a) for a in args)], stdout=o,
                                stderr=e, env=env, cwd=ROOT)  # fmt: skip
    return proc, stdout, stderr


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, err_file: Path, min_step: int = 1) -> dict:
    deadline = time.monotonic() + CHILD_TIMEOUT
    while time.monotonic() < deadline:
        if (out / "checkpoint.pt").is_file():
            state = load_checkpoint(out)  # the file is replaced atomically: never torn
            if state["step"] >= min_step:
                return state
        if proc.poll() is not None:
            pytest.fail(f"trainer exited ({proc.returncode}) before a checkpoint at step >= {min_step}:\n"
                        f"{err_file.read_text()}")  # fmt: skip
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no checkpoint appeared in time")


def metric_rows(run: Path) -> list[dict[str, str]]:
    with (run / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def assert_no_duplicate_rows(run: Path) -> None:
    keys = [(int(r["step"]), r["kind"]) for r in metric_rows(run)]
    assert len(keys) == len(set(keys)), f"duplicate metrics rows: {keys}"
    for kind in ("train", "val"):
        steps = [s for s, k in keys if k == kind]
        assert steps == sorted(steps), f"{kind} rows out of order: {steps}"


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "bundle" / "weights.pt", map_location="cpu", weights_only=True)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def full_run(data, tmp_path_factory) -> SimpleNamespace:
    """The documented command, in-process through the umbrella CLI; precision left on auto."""
    out = tmp_path_factory.mktemp("full") / "run"
    result = train_captured("--data", data.main, "--preset", "tiny", "--out", out, "--epochs", 2,
                            "--batch-size", 16, "--no-progress", "--threads", 1, "--device", "cpu")  # fmt: skip
    assert result.code == 0, result.stderr
    result.out = out
    result.run = json.loads((out / "run.json").read_text())
    return result


def test_run_writes_every_output(full_run, data):
    out = full_run.out
    for name in ("run.json", "metrics.csv", "curves.png", "checkpoint.pt", "bundle"):
        assert (out / name).exists(), name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or p.name.endswith((".tmp", ".partial"))]

    run = full_run.run
    assert run["settings"]["preset"] == "tiny" and run["settings"]["world_size"] == 1
    assert run["precision"] in ("fp32", "bf16")
    assert set(run["precision_ms_per_step"]) == {"fp32", "bf16"}  # auto measured both
    per_epoch = run["batches_per_epoch"]
    assert per_epoch == run["data"]["train_windows"] // 16
    assert run["total_steps"] == 2 * per_epoch

    rows = metric_rows(out)
    train_rows = [r for r in rows if r["kind"] == "train"]
    val_rows = [r for r in rows if r["kind"] == "val"]
    assert train_rows and all(math.isfinite(float(r["pred"])) for r in train_rows)
    assert [int(r["step"]) for r in val_rows] == [per_epoch, 2 * per_epoch]  # one evaluation per epoch
    assert int(train_rows[-1]["step"]) == 2 * per_epoch
    assert_no_duplicate_rows(out)
    assert "done:" in full_run.stdout


def test_bundle_records_training_and_calibration(full_run, data):
    bundle = load_bundle(full_run.out / "bundle")
    assert bundle.image_size == 64 and bundle.config.action.action_dim == 2
    training = bundle.meta["training"]
    with h5py.File(data.main) as handle:
        lengths = handle["episodes/length"][...]
    files = training["data"]["files"]
    assert files == [{"file": str(data.main.resolve()), "episodes": len(lengths), "frames": int(lengths.sum())}]
    assert training["data"]["train_episodes"] + training["data"]["val_episodes"] == len(lengths)
    assert training["data"]["val_episodes"] >= 1
    assert training["steps"] == full_run.run["total_steps"]

    last_val = [r for r in metric_rows(full_run.out) if r["kind"] == "val"][-1]
    assert math.isfinite(training["val_pred_loss"]) and training["val_pred_loss"] > 0
    assert training["val_pred_loss"] == pytest.approx(float(last_val["pred"]), rel=1e-5)

    percentiles = bundle.meta["surprise"]["percentiles"]
    values = [percentiles[k] for k in ("p50", "p90", "p99", "p99.9")]
    assert all(math.isfinite(v) and v >= 0 for v in values)
    assert values == sorted(values), percentiles
    assert bundle.meta["surprise"]["windows"] > 0

    # the bundle's model runs
    frames = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    with torch.no_grad():
        assert torch.isfinite(bundle.model.encode(frames)).all()


def test_action_normalisation_is_the_training_split_statistics(full_run, data):
    bundle = load_bundle(full_run.out / "bundle")
    info = inspect_files([data.main.resolve()])
    cfg = preset("tiny")
    train_eps, val_eps = split_episodes(info, WindowSpec(cfg.predictor.history, cfg.action.frameskip), 0.1, 0)
    assert {e.index for e in train_eps}.isdisjoint({e.index for e in val_eps})
    assert len(train_eps) == full_run.run["data"]["train_episodes"]

    with h5py.File(data.main) as handle:  # read the file directly, not through the trainer's statistics
        start, length, action = handle["episodes/start"][...], handle["episodes/length"][...], handle["action"][...]

    def stats(indices) -> tuple[np.ndarray, np.ndarray]:
        rows = np.concatenate([action[start[i] : start[i] + length[i]] for i in indices]).astype(np.float64)
        rows = rows[np.isfinite(rows).all(axis=1)]
        return rows.mean(0), rows.std(0)

    mean, std = stats([e.index for e in train_eps])
    np.testing.assert_allclose(bundle.action_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bundle.action_std, std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(full_run.run["action_normalization"]["mean"], mean, rtol=1e-5, atol=1e-6)
    all_mean, _ = stats(range(len(length)))
    assert np.abs(all_mean - mean).max() > 1e-4  # the held-out episode is really excluded


def test_checkpoint_loads_without_pickled_code_and_matches_bundle(full_run):
    state = torch.load(full_run.out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["step"] == state["total_steps"] == full_run.run["total_steps"]
    bundle_weights = weights(full_run.out)
    assert set(state["model"]) == set(bundle_weights)
    for name, tensor in bundle_weights.items():
        assert torch.equal(state["model"][name], tensor), name


# ------------------------------------------------------------------------------------------- exact resume


def test_stop_and_resume_is_bit_identical(full_run, data, tmp_path):
    """Stop mid-epoch 0, mid-epoch 1 and at the very last step (before its evaluation), resume each time:
    the final weights, the validation loss and the surprise calibration equal the uninterrupted run's."""
    out = tmp_path / "run"
    total, per_epoch = full_run.run["total_steps"], full_run.run["batches_per_epoch"]
    stops = [5, per_epoch + 3, total]
    assert 0 < stops[0] < per_epoch < stops[1] < total
    settings = ["--data", data.main, "--preset", "tiny", "--epochs", 2, "--batch-size", 16,
                "--precision", full_run.run["precision"], "--device", "cpu"]  # fmt: skip
    resume = ["--out", out, "--resume", "--no-progress", "--threads", 1, "--device", "cpu"]

    first = train_captured(*settings, "--out", out, "--stop-after", stops[0], "--no-progress", "--threads", 1)
    assert first.code == 0, first.stderr
    assert "--resume" in first.stdout
    assert not (out / "bundle").exists()
    for stop in stops:
        state = load_checkpoint(out)
        assert state["step"] == stop
        if stop < total:
            assert 0 < state["batch_in_epoch"] < per_epoch  # mid-epoch
        else:
            assert state["batch_in_epoch"] == per_epoch  # the last step, before the last evaluation
        nxt = stops[stops.index(stop) + 1] if stop != total else None
        if nxt is None:  # as if killed after the last evaluation had logged its row, before its checkpoint
            MetricsLog(out / "metrics.csv").append({"step": total, "epoch": 1, "kind": "val", "pred": 9.0})
        result = train_captured(*resume, *(["--stop-after", nxt] if nxt else []))
        assert result.code == 0, result.stderr
        assert f"resumed at step {stop}" in result.stdout

    reference, resumed = weights(full_run.out), weights(out)
    assert set(reference) == set(resumed)
    different = [name for name in reference if not torch.equal(reference[name], resumed[name])]
    assert not different, f"resumed weights differ: {different}"

    ref_meta = json.loads((full_run.out / "bundle" / "model.json").read_text())
    meta = json.loads((out / "bundle" / "model.json").read_text())
    assert meta["training"]["val_pred_loss"] == ref_meta["training"]["val_pred_loss"]
    assert meta["surprise"]["percentiles"] == ref_meta["surprise"]["percentiles"]
    assert load_checkpoint(out)["step"] == total

    assert_no_duplicate_rows(out)
    rows, ref_rows = metric_rows(out), metric_rows(full_run.out)
    for kind in ("train", "val"):
        assert [r["step"] for r in rows if r["kind"] == kind] == [r["step"] for r in ref_rows if r["kind"] == kind]
    assert [r["pred"] for r in rows if r["kind"] == "val"] == [r["pred"] for r in ref_rows if r["kind"] == "val"]


# ------------------------------------------------------------------------------------------- kill -9, signals

# ~200 steps of 8 windows: 10-20 s on 2 cores, long enough to be killed mid-run every time.
LONG_EPOCHS = 6


def test_kill_9_then_resume_continues_from_the_last_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    proc, _, err = spawn(out, "--data", data.main, "--out", out, "--epochs", LONG_EPOCHS, *SMALL,
                         "--checkpoint-minutes", 0.02, name="killed")  # fmt: skip
    try:
        wait_for_checkpoint(out, proc, err, min_step=1)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = load_checkpoint(out)  # read after the kill: the last one written
    assert 0 < saved["step"] < saved["total_steps"]
    assert not (out / "bundle").exists()

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "lewm_ros.train", "--out", str(out), "--resume", "--no-progress",
                             "--threads", "1", "--device", "cpu"], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=CHILD_TIMEOUT)  # fmt: skip
    assert result.returncode == 0, result.stderr
    match = re.search(r"resumed at step (\d+)", result.stdout)
    assert match, result.stdout
    assert int(match.group(1)) == saved["step"]
    final = load_checkpoint(out)
    assert final["step"] == final["total_steps"] == saved["total_steps"]
    bundle = load_bundle(out / "bundle")
    assert bundle.meta["training"]["steps"] == saved["total_steps"]
    assert_no_duplicate_rows(out)


def test_sigterm_checkpoints_and_exits_143(data, tmp_path):
    out = tmp_path / "run"
    proc, _, err = spawn(out, "--data", data.main, "--out", out, "--epochs", LONG_EPOCHS, *SMALL,
                         "--checkpoint-minutes", 0.02, name="terminated")  # fmt: skip
    try:
        before = wait_for_checkpoint(out, proc, err, min_step=1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=CHILD_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    message = err.read_text()
    assert proc.returncode == 143, message
    assert "SIGTERM" in message and "--resume" in message
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert before["step"] <= state["step"] < state["total_steps"]
    assert f"step {state['step']}" in message
    LeWM(preset("tiny")).load_state_dict(state["model"])
    assert not (out / "bundle").exists()


def test_sigint_in_process_checkpoints_exits_130_and_restores_handlers(data, tmp_path, monkeypatch):
    """The signal arrives in the middle of step 3: that step is finished, saved, and the run exits."""
    out = tmp_path / "run"
    calls = []
    original = objective_module.prediction_loss

    def interrupting(z, pred):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(z, pred)

    monkeypatch.setattr(objective_module, "prediction_loss", interrupting)
    handler = signal.getsignal(signal.SIGINT)
    result = train_captured("--data", data.main, "--out", out, "--epochs", 1, *SMALL)
    assert result.code == 130, result.stderr
    assert "SIGINT" in result.stderr and "--resume" in result.stderr
    assert load_checkpoint(out)["step"] == 3
    assert signal.getsignal(signal.SIGINT) is handler


# ------------------------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def other_bundle(tmp_path_factory) -> Path:
    """A tiny bundle (64x64, 2 actions) for --init."""
    torch.manual_seed(0)
    return save_bundle(LeWM(preset("tiny")), tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="module")
def stopped_run(data, tmp_path_factory) -> Path:
    """A run stopped (resumably) at step 3; tests work on copies."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    result = train_captured("--data", data.main, "--out", out, "--epochs", 1, "--stop-after", 3, *SMALL)
    assert result.code == 0, result.stderr
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run, target)
    return target


def bad(tmp_path: Path, *args) -> SimpleNamespace:
    result = train_captured(*args)
    assert result.code == 2, f"exit {result.code}\n{result.stdout}\n{result.stderr}"
    assert result.stderr.startswith("error: "), result.stderr
    return result


def test_missing_data_file(tmp_path):
    out = tmp_path / "run"
    result = bad(tmp_path, "--data", tmp_path / "nope.h5", "--out", out, *FAST)
    assert "nope.h5" in result.stderr and "no such file" in result.stderr
    assert not out.exists()  # nothing was created


def test_file_that_is_not_an_episode_file(tmp_path):
    garbage = tmp_path / "notes.h5"
    garbage.write_text("not an episode file\n" * 10)
    with h5py.File(tmp_path / "other.h5", "w") as handle:
        handle["x"] = np.zeros(3)
    out = tmp_path / "run"
    assert "not an HDF5 file" in bad(tmp_path, "--data", garbage, "--out", out, *FAST).stderr
    assert "not a lewm_ros episode file" in bad(tmp_path, "--data", tmp_path / "other.h5", "--out", out, *FAST).stderr
    assert not out.exists()


def test_files_with_different_image_sizes(data, tmp_path):
    out = tmp_path / "run"
    result = bad(tmp_path, "--data", data.main, "--data", data.small48, "--out", out, *FAST)
    assert "image_shape" in result.stderr and "48" in result.stderr and "64" in result.stderr
    assert str(data.small48) in result.stderr
    assert not out.exists()


def test_files_with_different_action_dims(data, tmp_path):
    out = tmp_path / "run"
    result = bad(tmp_path, "--data", data.main, "--data", data.arm, "--out", out, *FAST)
    assert "action_dim 4" in result.stderr and "2" in result.stderr
    assert not out.exists()


def test_episodes_too_short_for_a_window(data, tmp_path):
    out = tmp_path / "run"
    result = bad(tmp_path, "--data", data.short, "--out", out, *FAST)
    message = result.stderr
    with h5py.File(data.short) as handle:
        lengths = handle["episodes/length"][...]
    assert f"a window needs {WINDOW_FRAMES} frames" in message
    assert f"{len(lengths)} episodes" in message and f"longest {lengths.max()} frames" in message
    assert not out.exists()


def test_one_episode_cannot_be_split(data, tmp_path):
    out = tmp_path / "run"
    message = bad(tmp_path, "--data", data.single, "--out", out, *FAST).stderr
    assert "validation" in message and "found 1 of 1" in message and "--val-fraction 0" in message
    assert not out.exists()


def test_fewer_windows_than_one_batch(data, tmp_path):
    out = tmp_path / "run"
    message = bad(tmp_path, "--data", data.two, "--out", out, "--batch-size", 16, *FAST).stderr
    with h5py.File(data.two) as handle:
        lengths = handle["episodes/length"][...]
    assert lengths.max() - WINDOW_FRAMES + 1 < 16  # the training episode (one of two) holds less than a batch
    assert f"{lengths.max() - WINDOW_FRAMES + 1} windows in 1 episodes" in message and "16" in message
    assert not out.exists()


def test_existing_run_directory_needs_resume(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    message = bad(tmp_path, "--data", data.main, "--out", out, *FAST).stderr
    assert "not empty" in message and "--resume" in message
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_resume_without_checkpoint(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    message = bad(tmp_path, "--out", out, "--resume", *FAST).stderr
    assert "--resume" in message and "checkpoint.pt" in message
    assert list(out.iterdir()) == []


def test_resume_with_a_different_setting_names_it(stopped_run, tmp_path):
    run = copy_run(stopped_run, tmp_path)
    before = digest(run / "checkpoint.pt")
    message = bad(tmp_path, "--out", run, "--resume", "--lr", 0.5, "--no-progress").stderr
    assert "lr" in message and "0.5" in message
    message = bad(tmp_path, "--out", run, "--resume", "--batch-size", 4, "--seed", 9, "--no-progress").stderr
    assert "batch_size" in message and "seed" in message
    assert digest(run / "checkpoint.pt") == before


def test_init_bundle_must_fit_the_data(data, other_bundle, tmp_path):
    out = tmp_path / "run"
    message = bad(tmp_path, "--data", data.small48, "--init", other_bundle, "--out", out, "--no-progress").stderr
    assert "image size" in message and "64x64" in message and "48x48" in message
    message = bad(tmp_path, "--data", data.arm, "--init", other_bundle, "--out", out, "--no-progress").stderr
    assert "action_dim 2" in message and "4" in message
    assert not out.exists()


def test_out_below_a_file_is_not_writable(data, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    message = bad(tmp_path, "--data", data.main, "--out", blocker / "run", *FAST).stderr
    assert "not writable" in message and str(blocker / "run") in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_out_is_not_writable(data, tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        message = bad(tmp_path, "--data", data.main, "--out", parent / "run", *FAST).stderr
        assert "not writable" in message
    finally:
        parent.chmod(0o755)


# ------------------------------------------------------------------------------------------- non-finite


def test_huge_learning_rate_stops_with_exit_3(data, tmp_path):
    out = tmp_path / "run"
    result = train_captured("--data", data.main, "--out", out, "--epochs", 1, "--lr", 1e30,
                            "--checkpoint-minutes", 0, *SMALL)  # fmt: skip
    assert result.code == 3, result.stdout + result.stderr
    assert "non-finite" in result.stderr
    state = load_checkpoint(out)  # checkpointed every step until the loss went non-finite
    assert 0 < state["step"] < state["total_steps"]
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())
    assert not (out / "bundle").exists()


class InfiniteGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_keeps_the_last_good_checkpoint(stopped_run, tmp_path, monkeypatch, where):
    run = copy_run(stopped_run, tmp_path)
    before = digest(run / "checkpoint.pt")
    original = objective_module.prediction_loss

    def broken(z, pred):
        loss = original(z, pred)
        return loss * float("nan") if where == "loss" else InfiniteGradient.apply(loss)

    monkeypatch.setattr(objective_module, "prediction_loss", broken)
    result = train_captured("--out", run, "--resume", "--no-progress", "--threads", 1, "--device", "cpu")
    assert result.code == 3, result.stdout + result.stderr
    assert "non-finite" in result.stderr and "step 3" in result.stderr
    assert digest(run / "checkpoint.pt") == before  # the last good checkpoint, untouched
    assert not (run / "bundle").exists()

    monkeypatch.setattr(objective_module, "prediction_loss", original)  # and it still resumes
    result = train_captured("--out", run, "--resume", "--stop-after", 4, *FAST)
    assert result.code == 0, result.stderr
    assert "resumed at step 3" in result.stdout and load_checkpoint(run)["step"] == 4


# ------------------------------------------------------------------------------------------- collapse monitor

N = 512


@pytest.mark.parametrize("dim", [8, 32, 128])
def test_latent_health_flags_points_and_lines_not_gaussians(dim):
    torch.manual_seed(dim)
    sigreg = SIGReg(num_directions=128)
    gaussian = latent_health(torch.randn(N, dim), sigreg)
    constant = latent_health(torch.full((N, dim), 0.3), sigreg)
    line = latent_health(torch.randn(N, 1) * torch.randn(1, dim).abs().add(0.5), sigreg)  # rank 1, std ~1

    assert gaussian.collapse_warning() is None, gaussian
    assert gaussian.mean_std == pytest.approx(1.0, abs=0.1) and gaussian.eff_rank > 0.5 * dim

    warning = constant.collapse_warning()
    assert warning and "collapse" in warning and "std" in warning
    assert constant.mean_std == 0 and constant.eff_rank == 0

    assert line.mean_std > 0.5 and line.eff_rank == pytest.approx(1.0, abs=1e-3)
    warning = line.collapse_warning()
    assert warning and "effective rank" in warning


@pytest.fixture(scope="module")
def validation_block(data) -> tuple[EpisodeBlock, np.ndarray]:
    info = inspect_files([data.main])
    cfg = preset("tiny")
    block = EpisodeBlock(info, info.episodes[:6], WindowSpec(cfg.predictor.history, cfg.action.frameskip),
                         np.zeros(2, np.float32), np.ones(2, np.float32))  # fmt: skip
    return block, np.arange(0, len(block), 2)


def evaluate(model: LeWM, block_and_windows) -> dict:
    block, windows = block_and_windows
    return evaluate_windows(model, block, windows, SIGReg(num_directions=128), torch.device("cpu"), "fp32", 32)


def healthy_random_model(block: EpisodeBlock) -> LeWM:
    """A random-init LeWM warns by itself (found: in eval mode its BatchNorm running statistics are still
    the init's and the 0.02-std output layer shrinks the latents to a per-dimension std ~0.004). Calibrate
    the projector's BatchNorm on the frames and give its output layer unit gain: random but healthy."""
    torch.manual_seed(0)
    model = LeWM(preset("tiny"))
    bn = model.projector.bn
    bn.momentum = None  # cumulative average: one pass sets the statistics of these frames
    bn.reset_running_stats()
    model.train()
    with torch.no_grad():
        model.encode(torch.from_numpy(block.pixels[::3]))
        torch.nn.init.normal_(model.projector.fc2.weight, std=model.cfg.projector_hidden**-0.5)
    return model


def test_evaluation_warns_on_a_collapsed_model_only(validation_block):
    model = healthy_random_model(validation_block[0])
    healthy = evaluate(model, validation_block)
    assert healthy["collapse_warning"] is None, healthy["health"]
    assert healthy["health"]["mean_std"] > 0.1

    with torch.no_grad():
        model.projector.fc2.weight.zero_()  # every frame -> the same latent (the bias)
    collapsed = evaluate(model, validation_block)
    assert collapsed["collapse_warning"] and "collapse" in collapsed["collapse_warning"]
    assert collapsed["health"]["mean_std"] == 0 and collapsed["health"]["eff_rank"] == 0
    percentiles = [collapsed["surprise"][k] for k in ("p50", "p90", "p99", "p99.9")]
    assert percentiles == sorted(percentiles)


def test_minutes_budget_sets_the_step_count_from_a_measured_step(data, tmp_path):
    out = tmp_path / "budget"
    result = train_captured("--data", data.main, "--preset", "tiny", "--out", out, "--minutes", 0.15,
                            "--batch-size", 16, "--threads", 1, "--precision", "fp32", "--no-progress")  # fmt: skip
    assert result.code == 0, result.stderr
    assert "budget 0.15 min: measured" in result.stdout
    run = json.loads((out / "run.json").read_text())
    state = load_checkpoint(out)
    planned = run["total_steps"]
    assert 1 <= state["step"] == state["total_steps"] <= planned  # the deadline may end it early, never late
    if state["step"] < planned:  # a slower machine than measured: it stopped at the deadline and said so
        assert f"budget ran out at step {state['step']} of {planned}" in result.stdout
    assert state["elapsed_s"] <= 0.15 * 60 + 10  # one step and the final evaluation may run past the deadline
    assert (out / "bundle" / "model.json").is_file()


@pytest.mark.parametrize(
    "flag, value",
    [("--log-every", 0), ("--max-val-windows", 0), ("--max-ram-gb", -1), ("--checkpoint-minutes", -1),
     ("--workers", -2), ("--threads", -1), ("--stop-after", 0)],
)  # fmt: skip
def test_absurd_run_flags_are_refused_before_any_work(data, tmp_path, flag, value):
    out = tmp_path / "absurd"
    result = train_captured("--data", data.main, "--preset", "tiny", "--out", out, flag, value)
    assert result.code == 2 and flag in result.stderr
    assert not out.exists()
