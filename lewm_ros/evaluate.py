"""`lewm-ros eval`: closed-loop latent MPC in the MuJoCo reach environment, without ROS.

Each episode: encode the newest frame, plan `horizon` action blocks towards the goal image's latent,
execute the first `receding_horizon` blocks (frameskip env steps each), replan from the newest frame, until
the budget of env steps is spent. Success = every joint within the tolerance of the goal at any step
(the paper's Reacher criterion).

Goals: `random` uses ReachEnv's start/goal draws (seeded per episode). `dataset:FILE.h5` is the paper's
protocol: start from a frame of an episode of FILE, goal = the frame 25 env steps later in the same episode
(its pixels are the goal image, its joint state the target); pairs whose start already meets the goal are
skipped, since they would count as successes without planning.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GOAL_OFFSET_STEPS = 25  # the paper: goal = the state 25 env steps after the start


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
    """Runs episodes of latent MPC with one planner and one environment."""

    def __init__(self, bundle: Any, planner: Any, env: Any, budget: int, receding_horizon: int, device: Any) -> None:
        import torch

        self.torch = torch
        self.bundle, self.planner, self.env = bundle, planner, env
        self.budget, self.receding = budget, receding_horizon
        self.device = device
        self.frameskip = bundle.config.action.frameskip
        self.history = bundle.config.predictor.history

    def encode(self, pixels: np.ndarray) -> Any:
        torch = self.torch
        with torch.no_grad():
            return self.bundle.model.encode(torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device)[None])[0]

    def run(self, task: Task, seed: int, record: list | None = None) -> EpisodeOutcome:
        env, planner = self.env, self.planner
        result = env.reset(start_qpos=task.start_qpos, goal_qpos=task.goal_qpos)
        if task.start_qvel is not None:
            result = env.set_state(task.start_qpos, task.start_qvel)
        goal_pixels = task.goal_pixels if task.goal_pixels is not None else env.goal_image()
        goal = self.encode(goal_pixels)
        planner.reset(seed)
        latents = [self.encode(result.observation.pixels)]
        executed: list[np.ndarray] = []  # raw blocks (frameskip, action_dim) between consecutive latents
        errors = [result.max_joint_error]
        success_step = 0 if result.success else None
        plan_ms: list[float] = []
        costs: list[float] = []
        partial = 0
        steps = 0
        while steps < self.budget:
            context = self.torch.stack(latents[-self.history :])
            past = np.stack(executed[-(len(context) - 1) :]) if len(context) > 1 else None
            plan = planner.plan(context, past, goal)
            plan_ms.append(plan.time_ms)
            costs.append(plan.cost)
            partial += int(plan.partial)
            blocks = 0
            for block in plan.plan[: self.receding]:
                for action in block:
                    if steps >= self.budget:
                        break
                    result = env.step(action)
                    steps += 1
                    errors.append(result.max_joint_error)
                    if result.success and success_step is None:
                        success_step = steps
                    if record is not None:
                        record.append((result.observation.pixels, goal_pixels, plan.cost, steps))
                if steps % self.frameskip == 0:
                    latents.append(self.encode(result.observation.pixels))
                    executed.append(block)
                    blocks += 1
                if steps >= self.budget:
                    break
            planner.advance(blocks)
        return EpisodeOutcome(
            success=success_step is not None, steps_to_success=success_step, final_error=errors[-1],
            min_error=float(min(errors)), plan_ms=plan_ms, plan_costs=costs, errors=errors, partial_plans=partial,
        )  # fmt: skip


def evaluate(args: argparse.Namespace) -> EvalReport:
    from tqdm import tqdm

    from lewm_ros.envs.reach_env import ReachConfig, ReachEnv
    from lewm_ros.model.bundle import load_bundle
    from lewm_ros.model.precision import machine_description, resolve_device
    from lewm_ros.planning.core import LatentPlanner

    device = resolve_device(args.device)
    bundle = load_bundle(args.bundle, device=device)
    config = planner_config(args)
    planner = LatentPlanner.from_bundle(bundle, config, device)
    if args.roadmap is not None:
        from lewm_ros.planning.roadmap import Roadmap, weights_fingerprint

        planner.set_roadmap(Roadmap.load(args.roadmap, bundle.config.latent_dim, weights_fingerprint(args.bundle)))
    env = ReachEnv(args.scene, ReachConfig(image_size=bundle.image_size))
    if env.action_dim != bundle.config.action.action_dim:
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
        raise ValueError(f"--goals must be random or dataset:FILE.h5, got {args.goals!r}")
    loop = ClosedLoop(bundle, planner, env, args.budget, args.receding_horizon, device)
    report = EvalReport(settings={
        "bundle": str(args.bundle), "scene": str(args.scene), "goals": args.goals, "episodes": args.episodes,
        "budget": args.budget, "seed": args.seed, "receding_horizon": args.receding_horizon, "device": str(device),
        "planner": asdict(config), "roadmap": None if args.roadmap is None else str(args.roadmap),
    })  # fmt: skip
    first = tasks[0]
    warm_ctx = loop.encode(env.reset(start_qpos=first.start_qpos, goal_qpos=first.goal_qpos).observation.pixels)
    warm_goal = loop.encode(env.goal_image())
    if args.precision in (None, "auto"):  # measured on this device, never assumed
        chosen, timings = planner.choose_precision(warm_ctx[None], None, warm_goal)
        report.settings["precision_choice"] = {"chosen": chosen, "ms_per_iteration": timings}
        if chosen != planner.config.precision:
            planner = planner.with_config(precision=chosen)
            loop.planner = planner
            report.settings["planner"] = asdict(planner.config)
    report.settings["machine"] = machine_description(device)
    planner.warmup(warm_ctx[None], None, warm_goal)
    recorded: list[list] = []
    bar = tqdm(tasks, desc="eval", unit="episode", disable=args.no_progress, file=sys.stderr)
    for index, task in enumerate(bar):
        record: list | None = [] if index < args.video_episodes else None
        outcome = loop.run(task, args.seed * 100_003 + index, record)
        report.episodes.append(outcome)
        if record is not None:
            recorded.append(record)
        bar.set_postfix(success=f"{np.mean([e.success for e in report.episodes]):.2f}")
    env.close()
    report.recorded = recorded  # type: ignore[attr-defined]
    return report


def planner_config(args: argparse.Namespace) -> Any:
    from lewm_ros.planning.core import PlannerConfig

    defaults = PlannerConfig()
    values = {
        "planner": args.planner, "samples": args.samples, "iterations": args.iterations, "elites": args.elites,
        "horizon": args.horizon, "warm_iterations": args.warm_iterations, "deadline_ms": args.deadline_ms,
        "stop_std": args.stop_std, "precision": args.precision, "seed": args.seed, "warm_start": not args.no_warm_start,
        "cost_weights": tuple(args.cost_weights) if args.cost_weights else None,
    }  # fmt: skip
    values = {k: (getattr(defaults, k) if v is None else v) for k, v in values.items()}
    if values["precision"] == "auto":
        values["precision"] = "fp32"  # until `evaluate` has measured the alternatives on the device
    config = PlannerConfig(**values)
    config.check()
    return config


def write_outputs(report: EvalReport, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "summary": report.summary(),
        "settings": report.settings,
        "episodes": [asdict(e) for e in report.episodes],
    }
    (out / "eval.json").write_text(json.dumps(payload, indent=1) + "\n")
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
    parser.add_argument("--planner", choices=("cem", "icem", "mppi", "grad"), help="update rule (default cem)")
    parser.add_argument("--samples", type=int, help="candidates per iteration (default 300)")
    parser.add_argument("--iterations", type=int, help="iterations per plan (default 30)")
    parser.add_argument("--elites", type=int, help="top-k elites (default 30)")
    parser.add_argument("--horizon", type=int, help="planned action blocks (default 5)")
    parser.add_argument("--warm-iterations", type=int, help="iterations once warm-started (default: --iterations)")
    parser.add_argument("--no-warm-start", action="store_true", help="start every plan from zeros")
    parser.add_argument("--deadline-ms", type=float, help="anytime: stop at this deadline with the best plan so far")
    parser.add_argument("--stop-std", type=float, help="stop early once every std is below this")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="rollout autocast")
    parser.add_argument("--cost-weights", type=float, nargs="+", help="weight per horizon block (default: last only)")
    parser.add_argument("--roadmap", type=Path, help="goal distance along this roadmap file (`lewm-ros roadmap`)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="closed-loop planning in the MuJoCo reach scene, without ROS")
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle directory")
    parser.add_argument("--scene", default="reach2d", help="MJCF file or bundled scene name (default reach2d)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--budget", type=int, default=50, help="env steps per episode (default 50)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--goals", default="random", help="random | dataset:FILE.h5 (the paper's protocol)")
    parser.add_argument("--receding-horizon", type=int, default=5, help="blocks executed between plans (default 5)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--out", type=Path, help="directory for eval.json, eval.png, episodes.gif")
    parser.add_argument("--video-episodes", type=int, default=3, help="episodes in episodes.gif (0: none)")
    parser.add_argument("--no-progress", action="store_true")
    add_planner_arguments(parser)
    parser.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from lewm_ros.envs.reach_env import UnstableSimulationError
    from lewm_ros.model.bundle import BundleError

    if args.episodes < 1 or args.budget < 1 or args.receding_horizon < 1:
        print("error: --episodes, --budget and --receding-horizon must be >= 1", file=sys.stderr)
        return 2
    if not 0 <= args.seed < 2**63 or args.video_episodes < 0:
        print("error: --seed must be a non-negative 64-bit integer and --video-episodes >= 0", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        report = evaluate(args)
    except (BundleError, ValueError, FileNotFoundError, UnstableSimulationError) as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    summary = report.summary()
    print(
        f"success {summary['success_rate']:.1%} over {summary['episodes']} episodes; mean final joint error "
        f"{summary['mean_final_error']:.3f} rad; plan p50 {summary['plan_ms_p50']:.0f} ms, "
        f"p95 {summary['plan_ms_p95']:.0f} ms ({summary['partial_plans']} partial); "
        f"{time.perf_counter() - started:.0f} s"
    )
    if args.out:
        write_outputs(report, args.out)
        print(f"wrote {args.out / 'eval.json'}, eval.png" + (", episodes.gif" if args.video_episodes else ""))
    return 0
