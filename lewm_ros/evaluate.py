"""`lewm-ros eval`: closed-loop latent MPC in the MuJoCo reach environment, without ROS.

It runs the controller the robot runs: the same assembly (control/assemble.py: the TorchScript encoder as
deployed, the planner with its measured precision, the roadmap, warm-up) and the same tick (control/loop.py:
observe at each block start, plan on the receding horizon, accept or reject the plan, shape and clamp the
command, record what was sent), one tick per env step in simulated time, until the budget of env steps is
spent. Success = every joint within the tolerance of the goal at any step (the paper's Reacher criterion).
The scene runs as the bundle was trained: its image size and control period (model.json).

Goals: `random` uses ReachEnv's start/goal draws (seeded per episode). `dataset:FILE.h5` is the paper's
protocol: start from a frame of an episode of FILE, goal = the frame 25 env steps later in the same episode
(its pixels are the goal image, its joint state the target); pairs whose start already meets the goal are
skipped, since they would count as successes without planning.

Planner presets (`--preset`): `demo` (the default) is the real-time demo's agent (config/sim_reach.yaml):
CEM 64 samples, 6 iterations cold / 2 warm, top 8, horizon 5, replanning every block, every block's distance
counted, along the bundle's roadmap when it has one, one torch thread; about 1 s per episode on a 2-core CPU
with other work running. `paper` is the LeWM paper's CEM: 300 samples x 30 iterations, top 30, replanning every
5 blocks, final-latent cost, no roadmap, torch's threads; 5-15 s per episode on the same CPU, minutes when
other work oversubscribes its threads. Explicit flags override the preset's values.

Stopping: with `--out`, eval.json is rewritten (atomically) after every episode, marked `"partial": true`
until the last one, so even `kill -9` leaves the episodes done. Ctrl-C (SIGINT) and SIGTERM write it with
the episodes done so far and exit 130 and 143 (128 + the signal number, the shell convention).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lewm_ros.arguments import one_line

GOAL_OFFSET_STEPS = 25  # the paper: goal = the state 25 env steps after the start
DEFAULT_CONTROL_DT = 0.05  # for bundles whose model.json records no training control period (ReachConfig's)
ROADMAP_FILE = "roadmap.npz"  # lewm_ros.planning.roadmap.ROADMAP_FILE (not imported here: it imports torch)
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143

# Planner presets: values for the flags left unset. "uniform" cost weights are one per horizon block.
PRESETS: dict[str, dict[str, Any]] = {
    "demo": {  # config/sim_reach.yaml's lewm_agent, without its 25 ms deadline (eval is not real time)
        "planner": "cem", "samples": 64, "iterations": 6, "warm_iterations": 2, "elites": 8, "horizon": 5,
        "receding_horizon": 1, "cost_weights": "uniform", "roadmap": "auto", "threads": 1,
    },
    "paper": {  # the LeWM paper's CEM (and PlannerConfig's defaults)
        "planner": "cem", "samples": 300, "iterations": 30, "warm_iterations": None, "elites": 30, "horizon": 5,
        "receding_horizon": 5, "cost_weights": None, "roadmap": "none", "threads": 0,
    },
}  # fmt: skip
DEFAULT_PRESET = "demo"


class StoppedBySignalError(Exception):
    """Raised in the main thread by the SIGTERM handler so the episodes done so far are written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@dataclass
class EpisodeOutcome:
    success: bool
    steps_to_success: int | None
    final_error: float  # max joint error at the end of the budget
    min_error: float
    plan_ms: list[float]
    plan_costs: list[float]
    errors: list[float]  # max joint error after every env step (index 0 = start)
    partial_plans: int = 0
    stops: int = 0  # ticks the controller refused to command (the agent's safe command): rejected plans


@dataclass
class EvalReport:
    settings: dict[str, Any]
    episodes: list[EpisodeOutcome] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        plans = np.concatenate([e.plan_ms for e in self.episodes]) if self.episodes else np.zeros(0)
        return {
            "episodes": len(self.episodes),
            "success_rate": float(np.mean([e.success for e in self.episodes])) if self.episodes else float("nan"),
            "mean_final_error": float(np.mean([e.final_error for e in self.episodes]))
            if self.episodes
            else float("nan"),
            "median_final_error": float(np.median([e.final_error for e in self.episodes]))
            if self.episodes
            else float("nan"),
            "plan_ms_p50": float(np.percentile(plans, 50)) if len(plans) else float("nan"),
            "plan_ms_p95": float(np.percentile(plans, 95)) if len(plans) else float("nan"),
            "plans": len(plans),
            "partial_plans": int(sum(e.partial_plans for e in self.episodes)),
        }


@dataclass
class Task:
    """One start/goal pair."""

    start_qpos: np.ndarray
    start_qvel: np.ndarray | None
    goal_qpos: np.ndarray
    goal_pixels: np.ndarray | None  # None: render the goal configuration


def dataset_tasks(path: Path, count: int, seed: int, tolerance: float, offset: int = GOAL_OFFSET_STEPS) -> list[Task]:
    """`count` (start, start+offset) pairs from episodes of `path`, drawn with `seed`, skipping trivial ones."""
    from lewm_ros.data.episodes import EpisodeReader

    rng = np.random.default_rng(seed)
    with EpisodeReader(path) as reader:
        candidates = [
            (e, t) for e in range(reader.num_episodes) for t in range(int(reader.episode_lengths[e]) - offset)
        ]
        if not candidates:
            raise ValueError(f"{path}: no episode has more than {offset} frames; cannot draw start/goal pairs")
        tasks: list[Task] = []
        for index in rng.permutation(len(candidates)):
            episode, t = candidates[index]
            qpos = reader.read("qpos", episode, [t, t + offset])
            if np.max(np.abs(qpos[1] - qpos[0])) <= tolerance:
                continue
            qvel = reader.read("qvel", episode, [t])[0]
            goal_pixels = reader.pixels(episode, [t + offset])[0]
            tasks.append(Task(qpos[0], qvel, qpos[1], goal_pixels))
            if len(tasks) == count:
                break
    if len(tasks) < count:
        raise ValueError(f"{path}: only {len(tasks)} non-trivial start/goal pairs, {count} asked for")
    return tasks


class ClosedLoop:
    """Episodes of the robot's controller (control/loop.py, built by control/assemble.py) in MuJoCo: one
    control tick per env step in simulated time, the command shaped and clamped as the agent shapes it, the
    safe command (zero velocity) on any stop. The environment's velocity servos take actions in units of
    their maximum speed, so the agent's `action_scale` here is that speed."""

    def __init__(self, controller: Any, env: Any, budget: int) -> None:
        from lewm_ros.control.command import CommandShaper
        from lewm_ros.control.loop import ControlLoop
        from lewm_ros.control.rules import Limits
        from lewm_ros.control.surprise import SurpriseMonitor

        self.controller, self.env, self.budget = controller, env, budget
        self.speed = np.asarray(env.max_joint_speed, np.float64)
        shaper = CommandShaper(env.action_dim, self.speed, self.speed)
        # Not real time: no plan is too slow here (a --deadline-ms still bounds each plan's search).
        limits = Limits(plan_overrun_ms=math.inf)
        self.loop = ControlLoop(controller.mpc, shaper, limits, SurpriseMonitor(None),
                                controller.planner.config.warm_start)  # fmt: skip

    def run(self, task: Task, seed: int, record: list | None = None) -> EpisodeOutcome:
        env, loop = self.env, self.loop
        result = env.reset(start_qpos=task.start_qpos, goal_qpos=task.goal_qpos)
        if task.start_qvel is not None:
            result = env.set_state(task.start_qpos, task.start_qvel)
        goal_pixels = task.goal_pixels if task.goal_pixels is not None else env.goal_image()
        loop.set_goal(goal_pixels)  # encoded by the deployed encoder; forgets the previous episode
        self.controller.planner.reset(seed)
        errors = [result.max_joint_error]
        success_step = 0 if result.success else None
        plan_ms: list[float] = []
        costs: list[float] = []
        partial, stops, cost = 0, 0, math.nan
        for step in range(1, self.budget + 1):
            tick = loop.step(result.observation.pixels if loop.at_block_start else None)
            if tick.plan is not None:
                plan_ms.append(tick.plan.time_ms)
                costs.append(tick.plan.cost)
                partial += int(tick.plan.partial)
                cost = tick.plan.cost
            if tick.stop is not None:  # the agent would send the safe command: zero velocity
                stops += 1
                loop.stop(tick.stop)
                velocity = np.zeros(env.action_dim)
            else:
                velocity = tick.velocity
            result = env.step(velocity / self.speed)
            errors.append(result.max_joint_error)
            if result.success and success_step is None:
                success_step = step
            if record is not None:
                record.append((result.observation.pixels, goal_pixels, cost, step))
        return EpisodeOutcome(
            success=success_step is not None, steps_to_success=success_step, final_error=errors[-1],
            min_error=float(min(errors)), plan_ms=plan_ms, plan_costs=costs, errors=errors, partial_plans=partial,
            stops=stops,
        )  # fmt: skip


def evaluate(args: argparse.Namespace, on_episode: Callable[[EvalReport], None] | None = None) -> EvalReport:
    """Run the episodes; `on_episode(report)` after each one (run_eval writes eval.json there).

    Torch runs on `--threads` threads (demo preset: 1, as the demo's agent) for the run only: two OpenMP
    threads on a 2-core machine with other work running turned 1 s episodes into 3-7 s ones.
    """
    import torch

    threads = int(_preset_value(args, "threads"))
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        return _evaluate(args, on_episode)
    finally:
        torch.set_num_threads(previous)


def _evaluate(args: argparse.Namespace, on_episode: Callable[[EvalReport], None] | None) -> EvalReport:
    from tqdm import tqdm

    from lewm_ros.control.assemble import AssemblyError, ControllerSpec, assemble
    from lewm_ros.envs.reach_env import ReachEnv
    from lewm_ros.model.bundle import read_meta
    from lewm_ros.model.precision import machine_description

    config = planner_config(args)
    roadmap_path = roadmap_file(args)
    receding = receding_horizon(args)
    env_config = scene_config(args, read_meta(Path(args.bundle)))
    env = ReachEnv(args.scene, env_config)
    spec = ControllerSpec(
        bundle=str(args.bundle), planner=config, device=args.device, precision=args.precision or "auto",
        receding_horizon=receding, roadmap="" if roadmap_path is None else str(roadmap_path),
    )  # fmt: skip
    try:
        controller = assemble(spec)
    except AssemblyError as err:
        env.close()
        raise ValueError(str(err)) from err
    bundle = controller.bundle
    if env.action_dim != bundle.config.action.action_dim:
        env.close()
        raise ValueError(
            f"scene {args.scene} has {env.action_dim} actuators, the bundle {bundle.config.action.action_dim}"
        )
    tolerance = env.config.success_tolerance
    if args.goals == "random":
        rng = np.random.default_rng(args.seed)
        tasks = []
        for _ in range(args.episodes):
            start = env.reset(int(rng.integers(2**31)))
            tasks.append(Task(start.observation.qpos.copy(), None, env.goal_qpos.copy(), None))
    elif args.goals.startswith("dataset:"):
        tasks = dataset_tasks(Path(args.goals.split(":", 1)[1]), args.episodes, args.seed, tolerance)
    else:
        env.close()
        raise ValueError(f"--goals must be random or dataset:FILE.h5, got {args.goals!r}")
    loop = ClosedLoop(controller, env, args.budget)
    report = EvalReport(settings={
        "bundle": str(args.bundle), "scene": str(args.scene), "goals": args.goals, "episodes": args.episodes,
        "budget": args.budget, "seed": args.seed, "receding_horizon": receding, "device": str(controller.device),
        "preset": preset_name(args), "planner": asdict(controller.planner.config),
        "roadmap": None if roadmap_path is None else str(roadmap_path),
        "control_dt": env_config.control_dt, "camera": env.camera_name,
        "max_joint_speed": np.asarray(env.max_joint_speed, float).tolist(),
        "encoder": f"TorchScript ({controller.encoder_precision})", "controller_notes": controller.notes,
    })  # fmt: skip
    report.settings["machine"] = machine_description(controller.device)
    recorded: list[list] = []
    bar = tqdm(tasks, desc="eval", unit="episode", disable=args.no_progress, file=sys.stderr)
    for index, task in enumerate(bar):
        record: list | None = [] if index < args.video_episodes else None
        outcome = loop.run(task, args.seed * 100_003 + index, record)
        report.episodes.append(outcome)
        if record is not None:
            recorded.append(record)
        bar.set_postfix(success=f"{np.mean([e.success for e in report.episodes]):.2f}")
        if on_episode is not None:
            on_episode(report)
    env.close()
    report.recorded = recorded  # type: ignore[attr-defined]
    return report


def scene_config(args: argparse.Namespace, meta: dict[str, Any]) -> Any:
    """The environment as the bundle was trained: its image size, and the control period its training data
    recorded (model.json), unless --control-dt overrides a bundle that records none. --camera and
    --max-joint-speed override the scene's own. A --control-dt that contradicts the bundle's is refused: the
    predictor learned one block = frameskip steps of that period, and a figure at another rate measures a
    model driven outside its training."""
    from lewm_ros.envs.reach_env import ReachConfig

    recorded = ((meta.get("training") or {}).get("data") or {}).get("control_dt")
    recorded = float(recorded) if isinstance(recorded, (int, float)) and recorded > 0 else None
    given = getattr(args, "control_dt", None)
    if given is not None and recorded is not None and abs(given - recorded) > 1e-6 * recorded:
        raise ValueError(
            f"--control-dt {given:g} s contradicts the bundle's training data ({recorded:g} s, model.json "
            "training.data.control_dt): leave --control-dt out to evaluate at the rate the model learned"
        )
    speed = getattr(args, "max_joint_speed", None)
    return ReachConfig(
        image_size=int(meta["image_size"]), control_dt=given or recorded or DEFAULT_CONTROL_DT,
        camera=getattr(args, "camera", None) or None,
        max_joint_speed=None if speed is None else (speed[0] if len(speed) == 1 else tuple(speed)),
    )  # fmt: skip


def preset_name(args: argparse.Namespace) -> str:
    """The planner preset in force (`--preset`; callers that build args by hand may leave it out)."""
    return getattr(args, "preset", None) or DEFAULT_PRESET


def _preset_value(args: argparse.Namespace, key: str) -> Any:
    """The flag's value when given, else the preset's."""
    given = getattr(args, key, None)
    return PRESETS[preset_name(args)][key] if given is None else given


def receding_horizon(args: argparse.Namespace) -> int:
    """Blocks executed between plans: `--receding-horizon`, else the preset's."""
    return int(_preset_value(args, "receding_horizon"))


def roadmap_file(args: argparse.Namespace) -> Path | None:
    """The roadmap to plan along: `--roadmap FILE|bundle|none`, else the preset's (`auto`: the bundle's
    roadmap.npz when it has one, so the demo preset also runs on bundles without a roadmap)."""
    value = _preset_value(args, "roadmap")
    if str(value) == "none":
        return None
    if str(value) in ("bundle", "auto"):
        path = Path(args.bundle) / ROADMAP_FILE
        if str(value) == "auto" and not path.is_file():
            return None
        return path
    return Path(value)


def planner_config(args: argparse.Namespace) -> Any:
    """PlannerConfig from the flags given, the rest from the preset, then PlannerConfig's own defaults."""
    from lewm_ros.planning.core import PlannerConfig

    defaults = PlannerConfig()
    values = {
        "planner": args.planner, "samples": args.samples, "iterations": args.iterations, "elites": args.elites,
        "horizon": args.horizon, "warm_iterations": args.warm_iterations, "deadline_ms": args.deadline_ms,
        "stop_std": args.stop_std, "precision": args.precision, "seed": args.seed, "warm_start": not args.no_warm_start,
        "cost_weights": tuple(args.cost_weights) if args.cost_weights else None,
    }  # fmt: skip
    preset = PRESETS[preset_name(args)]
    for key in ("planner", "samples", "iterations", "elites", "horizon", "warm_iterations"):
        if values[key] is None:
            values[key] = preset[key]
    values = {k: (getattr(defaults, k) if v is None else v) for k, v in values.items()}
    if values["cost_weights"] is None and preset["cost_weights"] == "uniform":
        values["cost_weights"] = (1.0,) * values["horizon"]
    if values["precision"] == "auto":
        values["precision"] = "fp32"  # until `evaluate` has measured the alternatives on the device
    config = PlannerConfig(**values)
    config.check()
    return config


def _finite_or_none(value: Any) -> Any:
    """NaN/inf (a summary of no episodes) as null: eval.json stays standard JSON."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_json(report: EvalReport, out: Path, stopped_by: str | None = None) -> None:
    """eval.json via a temporary file and os.replace: a kill at any moment leaves the previous complete file.

    `partial` is true until every requested episode is in; `stopped_by` names the signal that ended the run.
    """
    out.mkdir(parents=True, exist_ok=True)
    done, requested = len(report.episodes), int(report.settings["episodes"])
    payload = {
        "partial": done < requested, "episodes_done": done, "episodes_requested": requested, "stopped_by": stopped_by,
        "summary": {k: _finite_or_none(v) for k, v in report.summary().items()},
        "settings": report.settings,
        "episodes": [asdict(e) for e in report.episodes],
    }  # fmt: skip
    tmp = out / f".eval.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, out / "eval.json")


def write_outputs(report: EvalReport, out: Path) -> None:
    """eval.json, eval.png and (when episodes were recorded) episodes.gif."""
    write_json(report, out)
    plot_report(report, out / "eval.png")
    recorded = getattr(report, "recorded", [])
    if recorded:
        write_gif(recorded, out / "episodes.gif")


def plot_report(report: EvalReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    budget = report.settings["budget"]
    steps = np.arange(budget + 1)
    solved = np.array(
        [[e.steps_to_success is not None and e.steps_to_success <= s for s in steps] for e in report.episodes]
    )
    axes[0].plot(steps, solved.mean(0) if len(solved) else steps * 0)
    axes[0].set(title="success rate by env step", xlabel="env step", ylabel="solved", ylim=(0, 1))
    for e in report.episodes:
        axes[1].plot(e.errors, alpha=0.3, color="tab:blue")
    axes[1].axhline(0.05, color="tab:red", linestyle="--", label="tolerance")
    axes[1].set(title="max joint error", xlabel="env step", ylabel="rad", yscale="log")
    axes[1].legend()
    plans = np.concatenate([e.plan_ms for e in report.episodes]) if report.episodes else []
    axes[2].hist(plans, bins=30)
    axes[2].set(title="plan time", xlabel="ms", ylabel="plans")
    s = report.summary()
    name, goals = report.settings["planner"]["planner"], report.settings["goals"]
    fig.suptitle(f"{name} on {goals}: success {s['success_rate']:.0%}, plan p50 {s['plan_ms_p50']:.0f} ms")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_gif(recorded: list[list], path: Path) -> None:
    """Camera view beside the goal image with the plan cost and step, a few episodes one after another."""
    import cv2
    import imageio.v2 as imageio

    frames = []
    for episode, record in enumerate(recorded):
        for pixels, goal, cost, step in record:
            scale = max(1, 192 // pixels.shape[0])
            view = np.concatenate([pixels, np.full((pixels.shape[0], 2, 3), 255, np.uint8), goal], axis=1)
            view = cv2.resize(view, (view.shape[1] * scale, view.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
            banner = np.full((24, view.shape[1], 3), 255, np.uint8)
            cv2.putText(banner, f"ep {episode} step {step} cost {cost:.3g}", (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                        (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
            frames.append(np.concatenate([banner, view]))
    imageio.mimsave(path, frames, duration=0.05, loop=0)


def add_planner_arguments(parser: argparse.ArgumentParser) -> None:
    demo, paper = PRESETS["demo"], PRESETS["paper"]
    parser.add_argument("--preset", choices=tuple(PRESETS), default=DEFAULT_PRESET,
                        help="planner settings for the flags left unset: demo (default) = the ROS demo's agent, "
                        "CEM 64 samples x 6 iterations (2 warm), top 8, every block replanned and counted, along the "
                        "bundle's roadmap if it has one, 1 thread (~1 s per episode on 2 CPU cores); paper = the LeWM "
                        "paper's CEM 300 x 30, top 30, replanning every 5 blocks, final-latent cost (5-15 s)")
    parser.add_argument("--planner", choices=("cem", "icem", "mppi", "grad"), help="update rule (default cem)")
    parser.add_argument("--samples", type=int,
                        help=f"candidates per iteration (demo {demo['samples']}, paper {paper['samples']})")
    parser.add_argument("--iterations", type=int,
                        help=f"iterations per plan (demo {demo['iterations']}, paper {paper['iterations']})")
    parser.add_argument("--elites", type=int, help=f"top-k elites (demo {demo['elites']}, paper {paper['elites']})")
    parser.add_argument("--horizon", type=int, help="planned action blocks (default 5)")
    parser.add_argument("--warm-iterations", type=int,
                        help=f"iterations once warm-started (demo {demo['warm_iterations']}, paper: --iterations)")
    parser.add_argument("--no-warm-start", action="store_true", help="start every plan from zeros")
    parser.add_argument("--deadline-ms", type=float, help="anytime: stop at this deadline with the best plan so far")
    parser.add_argument("--stop-std", type=float, help="stop early once every std is below this")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="rollout autocast")
    parser.add_argument("--cost-weights", type=float, nargs="+",
                        help="weight per horizon block (demo: 1 each; paper: the last block only)")
    parser.add_argument("--roadmap", help="goal distance along a roadmap (`lewm-ros roadmap`): FILE, bundle "
                        f"(BUNDLE/{ROADMAP_FILE}) or none (demo: the bundle's when present; paper: none)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="closed-loop planning in the MuJoCo reach scene, without ROS",
        description="Closed-loop latent MPC in MuJoCo, without ROS. Default planner: the demo's (--preset demo, "
        "about 1 s per episode on 2 CPU cores); the paper's CEM 300 x 30 is --preset paper (5-15 s). With "
        "--out, eval.json is rewritten after every episode (\"partial\": true until all are done); Ctrl-C and "
        "SIGTERM keep the episodes done and exit 130 and 143.",
    )  # fmt: skip
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle directory")
    parser.add_argument("--scene", default="reach2d", help="MJCF file or bundled scene name (default reach2d)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--budget", type=int, default=50, help="env steps per episode (default 50)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--goals", default="random", help="random | dataset:FILE.h5 (the paper's protocol)")
    parser.add_argument("--receding-horizon", type=int, help="blocks executed between plans (demo 1, paper 5)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--control-dt", type=float, help="seconds per control step (default: the bundle's "
                        f"training data, model.json; {DEFAULT_CONTROL_DT:g} when it records none); a value that "
                        "contradicts the bundle's is refused")
    parser.add_argument("--camera", help="MJCF camera to render (default: the scene's first)")
    parser.add_argument("--max-joint-speed", type=float, nargs="+", metavar="RAD_S",
                        help="one value or one per joint: the speed of a model action of 1.0 (default: the scene's)")
    parser.add_argument("--out", type=Path, help="directory for eval.json, eval.png, episodes.gif")
    parser.add_argument("--video-episodes", type=int, default=3, help="episodes in episodes.gif (0: none)")
    parser.add_argument("--threads", type=int, help="torch CPU threads, 0 = torch's default of one per core "
                        "(demo 1, as the demo's agent: faster when other work shares the CPU; paper 0)")
    parser.add_argument("--no-progress", action="store_true")
    add_planner_arguments(parser)
    parser.set_defaults(run=run_eval)


def _raise_stopped(signum: int, _frame: Any) -> None:
    raise StoppedBySignalError(signum)


def run_eval(args: argparse.Namespace) -> int:
    """`lewm-ros eval`: 0 done, 2 bad input, 130/143 stopped by SIGINT/SIGTERM (episodes done are kept)."""
    from lewm_ros.envs.reach_env import UnstableSimulationError
    from lewm_ros.model.bundle import BundleError

    if args.episodes < 1 or args.budget < 1 or (args.receding_horizon is not None and args.receding_horizon < 1):
        print("error: --episodes, --budget and --receding-horizon must be >= 1", file=sys.stderr)
        return 2
    if args.threads is not None and not 0 <= args.threads <= 1024:
        print("error: --threads must be in [0, 1024]", file=sys.stderr)
        return 2
    if not 0 <= args.seed < 2**63 or args.video_episodes < 0:
        print("error: --seed must be a non-negative 64-bit integer and --video-episodes >= 0", file=sys.stderr)
        return 2
    started = time.perf_counter()
    latest: list[EvalReport] = []

    def episode_done(report: EvalReport) -> None:
        latest[:] = [report]
        if args.out and len(report.episodes) < args.episodes:  # the last one is written with the plot below
            write_json(report, args.out)

    on_main_thread = _is_main_thread()  # signal handlers can only be installed there
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if on_main_thread else None
    try:
        report = evaluate(args, episode_done)
    except (BundleError, ValueError, FileNotFoundError, UnstableSimulationError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, StoppedBySignalError) as stop:
        signum = stop.signum if isinstance(stop, StoppedBySignalError) else signal.SIGINT
        return _stopped(args, latest[0] if latest else None, signum, started)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
    print(_summary_line(report, started))
    if args.out:
        write_outputs(report, args.out)
        print(f"wrote {args.out / 'eval.json'}, eval.png" + (", episodes.gif" if args.video_episodes else ""))
    return 0


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _summary_line(report: EvalReport, started: float) -> str:
    summary = report.summary()
    return (
        f"success {summary['success_rate']:.1%} over {summary['episodes']} episodes; mean final joint error "
        f"{summary['mean_final_error']:.3f} rad; plan p50 {summary['plan_ms_p50']:.0f} ms, "
        f"p95 {summary['plan_ms_p95']:.0f} ms ({summary['partial_plans']} partial); "
        f"{time.perf_counter() - started:.0f} s"
    )


def _stopped(args: argparse.Namespace, report: EvalReport | None, signum: int, started: float) -> int:
    """Keep what was done: the summary of the finished episodes and a partial eval.json; 128 + signal."""
    name = signal.Signals(signum).name
    signals = (signal.SIGINT, signal.SIGTERM) if _is_main_thread() else ()
    ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}  # a second Ctrl-C: the file stays whole
    try:
        done = 0 if report is None else len(report.episodes)
        print(f"eval: stopped by {name} after {done} of {args.episodes} episodes", file=sys.stderr)
        if report is not None and done:
            print(_summary_line(report, started))
        if args.out and report is not None:
            write_json(report, args.out, stopped_by=name)
            print(f"wrote {args.out / 'eval.json'} (partial: {done} of {args.episodes} episodes)", file=sys.stderr)
    finally:
        for sig, handler in ignored.items():
            signal.signal(sig, handler)
    return 128 + signum
