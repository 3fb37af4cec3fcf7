"""The planner presets of `lewm-ros eval` and the flags resolved against them: PlannerConfig, the roadmap, the
receding horizon, and the scene settings the bundle was trained with.

Planner presets (`--preset`): `demo` (the default) is the real-time demo's agent (config/sim_reach.yaml):
CEM 64 samples, 6 iterations cold / 2 warm, top 8, horizon 5, replanning every block, every block's distance
counted, along the bundle's roadmap when it has one, one torch thread; about 1 s per episode on a 2-core CPU
with other work running. `paper` is the LeWM paper's CEM: 300 samples x 30 iterations, top 30, replanning every
5 blocks, final-latent cost, no roadmap, torch's threads; 5-15 s per episode on the same CPU, minutes when
other work oversubscribes its threads. Explicit flags override the preset's values.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

DEFAULT_CONTROL_DT = 0.05  # for bundles whose model.json records no training control period (ReachConfig's)
ROADMAP_FILE = "roadmap.npz"  # lewm_ros.planning.roadmap.ROADMAP_FILE (not imported here: it imports torch)


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


def preset_value(args: argparse.Namespace, key: str) -> Any:
    """The flag's value when given, else the preset's."""
    given = getattr(args, key, None)
    return PRESETS[preset_name(args)][key] if given is None else given


def receding_horizon(args: argparse.Namespace) -> int:
    """Blocks executed between plans: `--receding-horizon`, else the preset's."""
    return int(preset_value(args, "receding_horizon"))


def roadmap_file(args: argparse.Namespace) -> Path | None:
    """The roadmap to plan along: `--roadmap FILE|bundle|none`, else the preset's (`auto`: the bundle's
    roadmap.npz when it has one, so the demo preset also runs on bundles without a roadmap)."""
    value = preset_value(args, "roadmap")
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
