"""`lewm-ros eval`'s episodes: assemble the robot's controller from the bundle, build the scene as the bundle was
trained, draw the tasks and run them one after another through the closed loop."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lewm_ros.evaluation.closed_loop import ClosedLoop
from lewm_ros.evaluation.presets import (
    planner_config,
    preset_name,
    preset_value,
    receding_horizon,
    roadmap_file,
    scene_config,
)
from lewm_ros.evaluation.report import EvalReport
from lewm_ros.evaluation.tasks import dataset_tasks, random_tasks


def evaluate(args: argparse.Namespace, on_episode: Callable[[EvalReport], None] | None = None) -> EvalReport:
    """Run the episodes; `on_episode(report)` after each one (run_eval writes eval.json there).

    Torch runs on `--threads` threads (demo preset: 1, as the demo's agent) for the run only: two OpenMP
    threads on a 2-core machine with other work running turned 1 s episodes into 3-7 s ones.
    """
    import torch

    threads = int(preset_value(args, "threads"))
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
        tasks = random_tasks(env, args.episodes, args.seed)
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
