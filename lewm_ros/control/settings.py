"""The agent's parameters: one table that the ROS node declares (with descriptors), the YAML documents and the
tests check, and the validated settings object built from it.

`live` parameters may change while the node runs (they only tune alarms and debug output); everything else is
read-only after start-up, because changing a bundle, topic, joint order or control rate under a moving arm is
unsafe: reconfigure means restarting the node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from lewm_ros.control.assemble import ControllerSpec
from lewm_ros.control.command import SAFE_ACTIONS
from lewm_ros.control.rules import Limits
from lewm_ros.data.frames import IMAGE_POLICIES
from lewm_ros.planning.core import PLANNERS, PlannerConfig, PlanningError

COMMAND_TYPES = ("float64_multi_array", "joint_trajectory")
COMMAND_INTERFACES = ("velocity", "effort", "position")
SURPRISE_ACTIONS = ("warn", "hold")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16", "fp16", "auto")
COMPILE = ("", "default", "reduce-overhead")
COST_WEIGHTINGS = ("final", "uniform")


@dataclass(frozen=True)
class Param:
    name: str
    default: Any  # None: required, no default (declared by type)
    kind: type  # bool, int, float, str, or list (of str / float, see `items`)
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    live: bool = False
    items: type = str


PARAMETERS: tuple[Param, ...] = (
    Param("bundle", "reach2d", str, "model bundle: a directory, or the name of a bundle shipped in "
          "share/lewm_ros/models"),
    Param("device", "auto", str, "where the encoder and planner run: auto (cuda if present), cpu, cuda",
          choices=DEVICES),
    Param("precision", "fp32", str, "planner rollout precision (auto measures fp32 vs bf16 once at configure)",
          choices=PRECISIONS),
    Param("compile", "", str, "torch.compile the planner rollout: empty = eager; default = inductor (CPU or GPU, "
          "minutes of compiling at configure); reduce-overhead = CUDA graphs (CUDA only). A mode the device cannot "
          "run falls back to eager with a warning", choices=COMPILE),
    Param("image_topic", "/camera/image_raw", str, "camera topic (sensor_msgs/Image)"),
    Param("compressed", False, bool, "subscribe to <image_topic>/compressed (sensor_msgs/CompressedImage) instead"),
    Param("image_policy", "crop", str, "fit frames to the model: crop (centre square, resize), resize (stretch), "
          "exact (drop frames of another size)", choices=IMAGE_POLICIES),
    Param("goal_topic", "/goal/image_raw", str, "goal images (sensor_msgs/Image, transient-local: a late agent still "
          "gets the last goal); resized to the model by image_policy"),
    Param("goal_image_path", "", str, "optional image file used as the goal at configure (PNG/JPEG)"),
    Param("joint_states_topic", "/joint_states", str, "measured joint positions (hold commands, trajectory output)"),
    Param("command_topic", "/velocity_controller/commands", str, "where commands go"),
    Param("command_type", "float64_multi_array", str, "float64_multi_array (ros2_control forward command "
          "controller) or joint_trajectory (joint_trajectory_controller)", choices=COMMAND_TYPES),
    Param("command_interface", "velocity", str, "velocity: commands are joint speeds (action x action_scale, rad/s); "
          "effort: commands are torques (action x action_scale, N m; torque-trained bundles); position: commands "
          "are targets integrated from the planned speeds", choices=COMMAND_INTERFACES),
    Param("joint_names", None, list, "commanded joints, in the bundle's action order (required)"),
    Param("control_rate_hz", 20.0, float, "commands per second; should equal 1/control_dt of the training data",
          low=0.5, high=1000.0),
    Param("planner", "mppi", str, "latent planner", choices=PLANNERS),
    Param("samples", 100, int, "candidate sequences per iteration", low=1, high=100000),
    Param("iterations", 10, int, "iterations of a cold plan", low=1, high=1000),
    Param("warm_iterations", 3, int, "iterations of a warm-started plan (0: same as iterations)", low=0, high=1000),
    Param("elites", 10, int, "top-k candidates refitted per iteration", low=1, high=100000),
    Param("horizon", 5, int, "planned action blocks", low=1, high=64),
    Param("receding_horizon", 1, int, "blocks executed before replanning (1..horizon)", low=1, high=64),
    Param("warm_start", True, bool, "start each plan from the previous one, shifted"),
    Param("cost_weighting", "final", str, "final: the distance of the last planned block's latent to the goal (the "
          "paper's); uniform: every planned block's distance counts, which rewards getting there early when "
          "replanning every block", choices=COST_WEIGHTINGS),
    Param("roadmap", "", str, "measure goal distance along a roadmap of recorded latents (`lewm-ros roadmap`), "
          "which still points the way when the goal is far: empty = off; bundle = the bundle's roadmap.npz; or a "
          "file path. Built for the bundle's weights (checked)"),
    Param("deadline_ms", 30.0, float, "planning time budget; the best plan so far is used when it runs out "
          "(0: none)", low=0.0, high=60000.0),
    Param("graph", False, bool, "planner cem only: the sync-free device search (one CUDA graph per chunk of "
          "iterations on a GPU, captured at configure; eager on the CPU). Its sample count is fixed "
          "(adaptive_samples does not apply); with a roadmap the generic planning loop runs instead"),
    Param("adaptive_samples", True, bool, "size each plan's samples (between 2 x elites and samples) to the time "
          "per candidate measured at configure and on every plan, so the warm iterations fit deadline_ms on this "
          "machine under its current load; false: always `samples` (not for planner grad)"),
    Param("plan_overrun_ms", 100.0, float, "a plan slower than this is discarded and the safe command sent; the "
          "search's warm start is kept, so the next plan starts where this one got to",
          low=1.0, high=60000.0),
    Param("seed", 0, int, "planner random seed", low=0, high=2**31 - 1),
    Param("action_scale", [2.0], list, "joint speed (rad/s; N m for effort) of a model action of 1.0, one value or "
          "one per joint",
          items=float),
    Param("max_command", [2.0], list, "absolute limit on the command (rad/s; N m for effort), one value or one per "
          "joint",
          items=float),
    Param("safe_action", "zeros", str, "zeros (velocity interfaces) or hold (last measured position; position and "
          "trajectory interfaces). Never zero position.", choices=SAFE_ACTIONS),
    Param("frame_timeout_ms", 300.0, float, "no valid frame for this long (steady clock) -> safe command",
          low=1.0, high=60000.0),
    Param("max_frame_age_ms", 0.0, float, "drop frames whose header stamp is older than this on the node clock "
          "(0: do not check stamps)", low=0.0, high=60000.0),
    Param("frame_sync_ms", 0.0, float, "at each block start wait up to this long for a frame stamped at or after "
          "the tick's clock time (use with a simulator's /clock; 0: take the newest frame at once)",
          low=0.0, high=1000.0),
    Param("invalid_frame_burst", 5, int, "this many invalid frames in a row -> safe command until a valid one",
          low=1, high=10000),
    Param("trajectory_duration_ms", 100.0, float, "time_from_start of joint_trajectory points: the arm stops at "
          "the end of the last trajectory if the agent dies", low=1.0, high=10000.0),
    Param("surprise_factor", 3.0, float, "alarm threshold = bundle's p99.9 surprise x this", low=0.0, high=1e6,
          live=True),
    Param("surprise_threshold", 0.0, float, "explicit alarm threshold (0: use the bundle calibration)", low=0.0,
          high=1e12, live=True),
    Param("surprise_patience", 1, int, "consecutive surprising blocks before the alarm (a teleport surprises "
          "one block)", low=1, high=1000, live=True),
    Param("surprise_action", "warn", str, "warn (diagnostics only) or hold (safe command until re-enabled)",
          choices=SURPRISE_ACTIONS, live=True),
    Param("debug_image_rate_hz", 2.0, float, "~/debug_image publications per second (0: off)", low=0.0, high=60.0,
          live=True),
    Param("diagnostics_rate_hz", 1.0, float, "/diagnostics publications per second", low=0.1, high=50.0),
    Param("torch_threads", 0, int, "CPU threads for torch (0: torch's default, one per core). Set 1 when the "
          "agent shares a small CPU with other busy processes or threads (a simulator's renderer): oversubscribed "
          "OpenMP threads spin and can make a 20 ms plan take seconds", low=0, high=256),
    Param("warmup", True, bool, "one untimed plan at configure, so the first real plan is not slow"),
)  # fmt: skip

PARAMETER_NAMES = tuple(p.name for p in PARAMETERS)


class SettingsError(ValueError):
    """A parameter value the agent cannot run with; the message names the parameter."""


@dataclass(frozen=True)
class AgentSettings:
    bundle: str
    device: str
    precision: str
    compile: str
    image_topic: str
    compressed: bool
    image_policy: str
    goal_topic: str
    goal_image_path: str
    joint_states_topic: str
    command_topic: str
    command_type: str
    command_interface: str
    joint_names: tuple[str, ...]
    control_rate_hz: float
    planner: str
    samples: int
    iterations: int
    warm_iterations: int
    elites: int
    horizon: int
    receding_horizon: int
    warm_start: bool
    cost_weighting: str
    roadmap: str
    deadline_ms: float
    graph: bool
    adaptive_samples: bool
    plan_overrun_ms: float
    seed: int
    action_scale: tuple[float, ...]
    max_command: tuple[float, ...]
    safe_action: str
    frame_timeout_ms: float
    max_frame_age_ms: float
    frame_sync_ms: float
    invalid_frame_burst: int
    trajectory_duration_ms: float
    surprise_factor: float
    surprise_threshold: float
    surprise_patience: int
    surprise_action: str
    debug_image_rate_hz: float
    diagnostics_rate_hz: float
    torch_threads: int
    warmup: bool

    @property
    def control_period(self) -> float:
        return 1.0 / self.control_rate_hz

    def controller_spec(self) -> ControllerSpec:
        """What lewm_ros.control.assemble builds from these settings."""
        return ControllerSpec(
            bundle=self.bundle, planner=self.planner_config(), device=self.device, precision=self.precision,
            receding_horizon=self.receding_horizon, roadmap=self.roadmap, warmup=self.warmup,
            torch_threads=self.torch_threads,
        )  # fmt: skip

    def limits(self) -> Limits:
        """The thresholds of the stop rules (lewm_ros.control.rules)."""
        return Limits(
            frame_timeout_ms=self.frame_timeout_ms, invalid_frame_burst=self.invalid_frame_burst,
            plan_overrun_ms=self.plan_overrun_ms, surprise_hold=self.surprise_action == "hold",
            needs_measured_position=self.safe_action == "hold",
        )  # fmt: skip

    def planner_config(self) -> PlannerConfig:
        return PlannerConfig(
            planner=self.planner, samples=self.samples, iterations=self.iterations,
            warm_iterations=self.warm_iterations or None, elites=min(self.elites, self.samples), horizon=self.horizon,
            warm_start=self.warm_start, deadline_ms=self.deadline_ms or None,
            adaptive_samples=self.adaptive_samples and self.planner != "grad" and not self.graph,
            graph=self.graph,
            precision="fp32" if self.precision == "auto" else self.precision, seed=self.seed,
            compile=self.compile or None,
            cost_weights=(1.0,) * self.horizon if self.cost_weighting == "uniform" else None,
        )  # fmt: skip


def check_value(param: Param, value: Any) -> Any:
    """The value converted to the parameter's type, or SettingsError naming the parameter."""
    name = param.name
    if value is None:
        raise SettingsError(f"parameter {name} is required ({param.description})")
    if param.kind is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"parameter {name} must be true or false, got {value!r}")
        return value
    if param.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SettingsError(f"parameter {name} must be an integer, got {value!r}")
    elif param.kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise SettingsError(f"parameter {name} must be a finite number, got {value!r}")
        value = float(value)
    elif param.kind is str:
        if not isinstance(value, str):
            raise SettingsError(f"parameter {name} must be a string, got {value!r}")
        if param.choices and value not in param.choices:
            raise SettingsError(f"parameter {name} must be one of {', '.join(param.choices)}, got {value!r}")
        return value
    elif param.kind is list:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            raise SettingsError(f"parameter {name} must be a list, got {value!r}")
        items = list(value)
        if param.items is float:
            if not items or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in items
            ):
                raise SettingsError(f"parameter {name} must be a non-empty list of finite numbers > 0, got {items!r}")
            return tuple(float(v) for v in items)
        if not items or not all(isinstance(v, str) and v for v in items) or len(set(items)) != len(items):
            raise SettingsError(f"parameter {name} must be a non-empty list of distinct names, got {items!r}")
        return tuple(items)
    if (param.low is not None and value < param.low) or (param.high is not None and value > param.high):
        raise SettingsError(f"parameter {name} must be in [{param.low:g}, {param.high:g}], got {value!r}")
    return value


def build_settings(values: dict[str, Any]) -> AgentSettings:
    """Validate every parameter and the rules that tie them together."""
    by_name = {p.name: p for p in PARAMETERS}
    checked = {f.name: check_value(by_name[f.name], values.get(f.name, by_name[f.name].default))
               for f in fields(AgentSettings)}  # fmt: skip
    settings = AgentSettings(**checked)
    if settings.receding_horizon > settings.horizon:
        raise SettingsError(
            f"parameter receding_horizon ({settings.receding_horizon}) must not exceed horizon ({settings.horizon})"
        )
    if settings.planner != "grad" and settings.elites > settings.samples:
        raise SettingsError(f"parameter elites ({settings.elites}) must not exceed samples ({settings.samples})")
    needs_hold = settings.command_interface == "position" or settings.command_type == "joint_trajectory"
    if needs_hold and settings.safe_action != "hold":
        raise SettingsError(
            "parameter safe_action must be hold for position or joint_trajectory output: a zero there commands "
            "the zero pose, not a stop"
        )
    if not needs_hold and settings.safe_action != "zeros":
        raise SettingsError(
            "parameter safe_action must be zeros for velocity or effort commands on float64_multi_array (zero "
            "speed / zero torque)"
        )
    if settings.plan_overrun_ms <= settings.deadline_ms:
        raise SettingsError(
            f"parameter plan_overrun_ms ({settings.plan_overrun_ms:g}) must exceed deadline_ms "
            f"({settings.deadline_ms:g})"
        )
    try:
        settings.planner_config().check()
    except PlanningError as err:
        raise SettingsError(f"planner parameters: {err}") from err
    return settings


def yaml_text() -> str:
    """config/lewm_agent.yaml: every parameter with its documentation and default (`python -m
    lewm_ros.control.settings > config/lewm_agent.yaml` regenerates it; a test keeps the file equal to this)."""
    import textwrap

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return f'"{value}"'
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(scalar(v) for v in value) + "]"
        return repr(value)

    lines = [
        "# lewm_agent parameters (lewm_ros/ros/agent_node.py), generated by `python -m lewm_ros.control.settings`.",
        "# `live` parameters can be changed with `ros2 param set` while the node runs; all others are read-only after",
        "# start-up (changing a bundle, topic, joint order or rate under a moving arm is unsafe: restart instead).",
        "# Run: ros2 run lewm_ros lewm_agent --autostart --ros-args --params-file config/lewm_agent.yaml",
        "lewm_agent:",
        "  ros__parameters:",
    ]
    for param in PARAMETERS:
        text = param.description + (f" ({' | '.join(param.choices)})" if param.choices else "")
        if param.low is not None:
            text += f"; range [{param.low:g}, {param.high:g}]"
        if param.live:
            text += "; live"
        if param.default is None:
            text += ". Required; the value below is the reach2d demo arm's"
        lines += ["    # " + line for line in textwrap.wrap(text, 110)]
        value = param.default if param.default is not None else ["shoulder", "elbow"]
        lines.append(f"    {param.name}: {scalar(value)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(yaml_text(), end="")
