"""Closed-loop evaluation, the linear probe and exporting a bundle from a run: mechanics on a tiny model."""

import json
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from signals_for_children import default_sigint

from lewm_ros.cli import main as cli_main
from lewm_ros.control.mpc import LatentMPC
from lewm_ros.envs.reach_env import ReachConfig, ReachEnv
from lewm_ros.evaluation.closed_loop import ClosedLoop
from lewm_ros.evaluation.tasks import Task, dataset_tasks
from lewm_ros.model.bundle import load_bundle
from lewm_ros.planning.core import PlanResult
from lewm_ros.probe import ridge_r2

ROOT = Path(__file__).resolve().parents[1]


class OraclePlanner:
    """Plans with the true joint state (a proportional controller) behind the planner interface LatentMPC
    uses: isolates the loop's bookkeeping from plan quality."""

    def __init__(self, env, frameskip=5, horizon=5):
        self.env, self.frameskip, self.horizon = env, frameskip, horizon
        self.config = SimpleNamespace(horizon=horizon, warm_start=True)
        self.action_dim, self.history = 2, 3
        self.action_mean, self.action_std = np.zeros(2, np.float32), np.ones(2, np.float32)
        self.warm = False
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


def oracle_controller(bundle, planner, receding):
    """The assembled controller's parts, with the planner swapped for one that knows the answer."""
    model = bundle.model.eval()
    mpc = LatentMPC(bundle.load_torchscript("encoder", "cpu"), model, planner, receding)
    return SimpleNamespace(mpc=mpc, planner=planner)


def test_closed_loop_counts_steps_success_and_replans(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    env = ReachEnv("reach2d", ReachConfig(image_size=64))
    start = env.reset(7)
    task = Task(start.observation.qpos.copy(), None, env.goal_qpos.copy(), None)
    oracle = OraclePlanner(env)
    outcome = ClosedLoop(oracle_controller(bundle, oracle, 2), env, budget=50).run(task, seed=0)
    assert outcome.success and outcome.steps_to_success is not None and outcome.steps_to_success <= 50
    assert len(outcome.errors) == 51 and outcome.min_error <= 0.05 and outcome.stops == 0
    assert len(outcome.plan_ms) == 5 and oracle.advanced == [0, 2, 2, 2, 2]  # 50 steps / (2 blocks x 5 steps)

    class Idle(OraclePlanner):
        def plan(self, context, past, goal):
            zeros = np.zeros((self.horizon, self.frameskip, 2), np.float32)
            return PlanResult(zeros, zeros.reshape(self.horizon, -1), 0.0, 1, 1.0, False)

    idle = ClosedLoop(oracle_controller(bundle, Idle(env), 5), env, budget=20).run(task, seed=0)
    assert not idle.success and idle.final_error == pytest.approx(outcome.errors[0], abs=1e-3)

    class Broken(OraclePlanner):
        def plan(self, context, past, goal):
            result = super().plan(context, past, goal)
            result.plan[:] = np.nan
            return result

    broken = ClosedLoop(oracle_controller(bundle, Broken(env), 1), env, budget=20).run(task, seed=0)
    # every tick replans, the plan is refused, zeros go out: the arm never moves
    assert broken.stops == 20 and broken.final_error == pytest.approx(outcome.errors[0], abs=1e-3)
    env.close()


def test_eval_runs_the_scene_at_the_bundles_control_period_and_refuses_another(tiny_bundle):
    from argparse import Namespace

    from lewm_ros.evaluation.presets import scene_config

    meta = {"image_size": 64, "training": {"data": {"control_dt": 0.04}}}
    assert scene_config(Namespace(), meta).control_dt == 0.04  # recorded: used
    assert scene_config(Namespace(control_dt=0.04), meta).control_dt == 0.04
    with pytest.raises(ValueError, match="contradicts the bundle's training data"):
        scene_config(Namespace(control_dt=0.05), meta)
    assert scene_config(Namespace(control_dt=0.1), {"image_size": 64}).control_dt == 0.1  # none recorded: override
    config = scene_config(Namespace(camera="top", max_joint_speed=[1.5, 2.5]), meta)
    assert config.camera == "top" and config.max_joint_speed == (1.5, 2.5)


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


# ----------------------------------------------------------------------------- presets and stopping


def eval_args(*flags):
    from lewm_ros.cli import build_parser

    return build_parser().parse_args(["eval", "--bundle", "B", *flags])


def test_eval_defaults_to_the_demo_agents_planner_and_the_paper_is_one_flag_away():
    import yaml

    from lewm_ros.evaluation.presets import PRESETS, planner_config, receding_horizon, roadmap_file

    agent = yaml.safe_load((ROOT / "config" / "sim_reach.yaml").read_text())["lewm_agent"]["ros__parameters"]
    demo = planner_config(eval_args())
    for key in ("planner", "samples", "iterations", "warm_iterations", "elites", "horizon"):
        assert getattr(demo, key) == agent[key], key
    assert agent["cost_weighting"] == "uniform" and demo.cost_weights == (1.0,) * agent["horizon"]
    assert receding_horizon(eval_args()) == agent["receding_horizon"] and agent["roadmap"] == "bundle"
    assert demo.deadline_ms is None  # eval is not real time: results must not depend on the machine's speed
    assert eval_args().threads is None and PRESETS["demo"]["threads"] == agent["torch_threads"] == 1
    paper = planner_config(eval_args("--preset", "paper"))
    assert (paper.planner, paper.samples, paper.iterations, paper.elites, paper.horizon) == ("cem", 300, 30, 30, 5)
    assert paper.cost_weights is None and paper.warm_iterations is None
    paper_args = eval_args("--preset", "paper")
    assert receding_horizon(paper_args) == 5 and roadmap_file(paper_args) is None
    mixed = planner_config(eval_args("--samples", "100", "--horizon", "3"))  # flags override the preset
    assert mixed.samples == 100 and mixed.iterations == 6 and mixed.cost_weights == (1.0, 1.0, 1.0)


def test_eval_roadmap_choice(tiny_bundle, tmp_path):
    from lewm_ros.evaluation.presets import roadmap_file

    def chosen(*flags):
        return roadmap_file(build_parser_args(tiny_bundle, *flags))

    assert chosen() is None  # demo preset, a bundle without roadmap.npz: plain cost
    assert chosen("--roadmap", "bundle") == tiny_bundle / "roadmap.npz"  # asked for: missing is an error later
    assert chosen("--roadmap", str(tmp_path / "m.npz")) == tmp_path / "m.npz"
    assert roadmap_file(build_parser_args(ROOT / "models" / "reach2d")) == ROOT / "models" / "reach2d" / "roadmap.npz"
    assert roadmap_file(build_parser_args(ROOT / "models" / "reach2d", "--roadmap", "none")) is None


def build_parser_args(bundle, *flags):
    from lewm_ros.cli import build_parser

    return build_parser().parse_args(["eval", "--bundle", str(bundle), *flags])


def test_eval_help_states_both_presets(capsys):
    assert cli_main(["eval", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--preset {demo,paper}" in text and "300 x 30" in text and "130 and 143" in text


EVAL_FOREVER = ["--episodes", "1000", "--budget", "50", "--samples", "8", "--iterations", "1", "--elites", "2",
                "--precision", "fp32", "--no-progress", "--video-episodes", "0"]  # fmt: skip


def eval_json_with_episodes(path, process, minimum):
    """eval.json once it holds `minimum` episodes (waits on progress, not on a clock: 300 s is only a cap)."""
    import time

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if path.is_file():
            report = json.loads(path.read_text())  # always whole: written to a temporary file, then renamed
            if report["episodes_done"] >= minimum:
                return report
        time.sleep(0.2)
    raise AssertionError(f"no eval.json with {minimum} episodes; exit {process.poll()}")


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_a_stopped_eval_keeps_the_episodes_done(tiny_bundle, tmp_path, signum, status):
    out = tmp_path / "eval"
    command = [sys.executable, "-m", "lewm_ros.cli", "eval", "--bundle", str(tiny_bundle), *EVAL_FOREVER,
               "--out", str(out)]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)  # fmt: skip
    try:
        seen = eval_json_with_episodes(out / "eval.json", process, 2)
        assert seen["partial"] and seen["stopped_by"] is None and seen["episodes_requested"] == 1000
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == status, stderr
    report = json.loads((out / "eval.json").read_text())
    done = report["episodes_done"]
    assert report["partial"] and done >= seen["episodes_done"] and len(report["episodes"]) == done
    assert report["summary"]["episodes"] == done and 0.0 <= report["summary"]["success_rate"] <= 1.0
    assert [p.name for p in out.iterdir()] == ["eval.json"]  # no temporary file left behind
    if signum != signal.SIGKILL:
        name = signal.Signals(signum).name
        assert report["stopped_by"] == name
        assert f"stopped by {name} after {done} of 1000 episodes" in stderr
        assert f"over {done} episodes" in stdout


def test_a_finished_eval_is_not_partial_and_gives_the_thread_count_back(tiny_bundle, tmp_path):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path / "eval"
    assert cli_main(["eval", "--bundle", str(tiny_bundle), *EVAL_FOREVER[4:], "--episodes", "2", "--budget", "10",
                     "--out", str(out)]) == 0  # fmt: skip
    report = json.loads((out / "eval.json").read_text())
    assert not report["partial"] and report["episodes_done"] == 2 and report["stopped_by"] is None
    assert report["settings"]["machine"]["torch_threads"] == 1 and torch.get_num_threads() == threads


def test_eval_runs_with_its_default_precision_auto(tiny_bundle, tmp_path):
    """No --precision: auto, measured for the planner; the encoder is cast before that (fp32 on the CPU)."""
    import torch

    from lewm_ros.model.bundle import load_bundle as load
    from lewm_ros.model.precision import cast_encoder

    encoder = load(tiny_bundle).load_torchscript("encoder")
    assert cast_encoder(encoder, torch.device("cpu"), "auto")[1] == "fp32"
    out = tmp_path / "eval"
    assert cli_main(["eval", "--bundle", str(tiny_bundle), "--episodes", "1", "--budget", "10", "--samples", "8",
                     "--iterations", "1", "--elites", "2", "--no-progress", "--video-episodes", "0",
                     "--out", str(out)]) == 0  # fmt: skip
    assert json.loads((out / "eval.json").read_text())["episodes_done"] == 1
