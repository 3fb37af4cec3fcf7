"""Closed-loop evaluation, the linear probe and exporting a bundle from a run: mechanics on a tiny model."""

import json

import numpy as np
import pytest

from lewm_ros.cli import main as cli_main
from lewm_ros.envs.reach_env import ReachConfig, ReachEnv
from lewm_ros.evaluate import ClosedLoop, Task, dataset_tasks
from lewm_ros.model.bundle import load_bundle
from lewm_ros.planning.core import PlanResult
from lewm_ros.probe import ridge_r2


class OraclePlanner:
    """Plans with the true joint state (a proportional controller): isolates the loop's bookkeeping."""

    def __init__(self, env, frameskip=5, horizon=5):
        self.env, self.frameskip, self.horizon = env, frameskip, horizon
        self.advanced = []

    def reset(self, seed=None):
        pass

    def plan(self, context, past, goal):
        error = self.env.goal_qpos - self.env.qpos
        speed = np.clip(error / (self.env.max_joint_speed * self.env.control_dt * 4), -1, 1)
        block = np.repeat(speed[None].astype(np.float32), self.frameskip, axis=0)
        plan = np.repeat(block[None], self.horizon, axis=0)
        return PlanResult(plan, plan.reshape(self.horizon, -1), 0.0, 1, 1.0, False)

    def advance(self, blocks):
        self.advanced.append(blocks)


def test_closed_loop_counts_steps_success_and_replans(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    env = ReachEnv("reach2d", ReachConfig(image_size=64))
    start = env.reset(7)
    task = Task(start.observation.qpos.copy(), None, env.goal_qpos.copy(), None)
    oracle = OraclePlanner(env)
    outcome = ClosedLoop(bundle, oracle, env, budget=50, receding_horizon=2, device="cpu").run(task, seed=0)
    assert outcome.success and outcome.steps_to_success is not None and outcome.steps_to_success <= 50
    assert len(outcome.errors) == 51 and outcome.min_error <= 0.05
    assert len(outcome.plan_ms) == 5 and oracle.advanced == [2, 2, 2, 2, 2]  # 50 steps / (2 blocks x 5 steps)

    class Idle(OraclePlanner):
        def plan(self, context, past, goal):
            zeros = np.zeros((self.horizon, self.frameskip, 2), np.float32)
            return PlanResult(zeros, zeros.reshape(self.horizon, -1), 0.0, 1, 1.0, False)

    idle = ClosedLoop(bundle, Idle(env), env, budget=20, receding_horizon=5, device="cpu").run(task, seed=0)
    assert not idle.success and idle.final_error == pytest.approx(outcome.errors[0], abs=1e-3)
    env.close()


def test_dataset_protocol_draws_nontrivial_pairs_25_steps_apart(episodes):
    tasks = dataset_tasks(episodes, 10, seed=1, tolerance=0.05)
    again = dataset_tasks(episodes, 10, seed=1, tolerance=0.05)
    assert len(tasks) == 10
    for a, b in zip(tasks, again, strict=True):
        np.testing.assert_array_equal(a.goal_qpos, b.goal_qpos)
        assert np.max(np.abs(a.goal_qpos - a.start_qpos)) > 0.05
        assert a.goal_pixels.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="non-trivial"):
        dataset_tasks(episodes, 10_000, seed=1, tolerance=0.05)


def test_eval_cli_writes_json_plot_and_gif_and_is_deterministic(tiny_bundle, tmp_path, capsys):
    common = ["eval", "--bundle", str(tiny_bundle), "--episodes", "2", "--budget", "10", "--samples", "16",
              "--iterations", "2", "--elites", "4", "--no-progress", "--precision", "fp32"]  # fmt: skip
    assert cli_main([*common, "--out", str(tmp_path / "a"), "--video-episodes", "1"]) == 0
    assert cli_main([*common, "--out", str(tmp_path / "b"), "--video-episodes", "0"]) == 0
    a = json.loads((tmp_path / "a" / "eval.json").read_text())
    b = json.loads((tmp_path / "b" / "eval.json").read_text())
    assert {"success_rate", "mean_final_error", "plan_ms_p50", "plan_ms_p95"} <= set(a["summary"])
    assert [e["errors"] for e in a["episodes"]] == [e["errors"] for e in b["episodes"]]
    assert (tmp_path / "a" / "eval.png").stat().st_size > 0 and (tmp_path / "a" / "episodes.gif").stat().st_size > 0
    assert "success" in capsys.readouterr().out


def test_eval_rejects_bad_input_with_a_message(tiny_bundle, episodes, tmp_path, capsys):
    base = ["eval", "--bundle", str(tiny_bundle), "--episodes", "1", "--no-progress", "--precision", "fp32"]
    assert cli_main([*base, "--scene", "arm3d"]) == 2
    assert "actuators" in capsys.readouterr().err
    assert cli_main([*base, "--goals", "sometimes"]) == 2
    assert "--goals" in capsys.readouterr().err
    assert cli_main(["eval", "--bundle", str(tmp_path / "none"), "--episodes", "1"]) == 2
    assert "bundle" in capsys.readouterr().err
    assert cli_main([*base, "--elites", "500"]) == 2
    assert "elites" in capsys.readouterr().err


def test_ridge_probe_recovers_a_linear_signal_and_not_noise():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    y = x @ rng.normal(size=(16, 2))
    assert np.all(ridge_r2(x[:300], y[:300], x[300:], y[300:]) > 0.99)
    noise = rng.normal(size=(400, 2))
    assert np.all(ridge_r2(x[:300], noise[:300], x[300:], noise[300:]) < 0.2)


def test_probe_cli_reports_r2_per_joint(tiny_bundle, episodes, capsys):
    assert cli_main(["probe", str(tiny_bundle), "--data", str(episodes), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(result["r2_per_joint"]) == 2 and result["test_episodes"] >= 1
    assert all(np.isfinite(result["r2_per_joint"]))


def test_export_cli_rejects_a_directory_without_checkpoint(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path), "--out", str(tmp_path / "b")]) == 2
    assert "checkpoint" in capsys.readouterr().err


def test_probe_refuses_absurd_flags(tiny_bundle, episodes, capsys):
    assert cli_main(["probe", str(tiny_bundle), "--data", str(episodes), "--held-out", "-1"]) == 2
    assert "--held-out" in capsys.readouterr().err
