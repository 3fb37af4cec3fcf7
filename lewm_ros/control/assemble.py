"""From settings to a ready controller: the one place a bundle becomes an encoder, a planner and an MPC loop.

The agent's configure, `lewm-ros doctor` and the closed-loop evaluation all need the same chain: device ->
bundle -> the encoder as deployed (TorchScript, cast to the agent's precision) -> planner (precision chosen once,
by measurement when asked) -> roadmap -> warm-up (so the first real plan is not slow) -> LatentMPC. Built here,
once, so a fix lands once and the figures eval publishes are figures of the path the robot runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lewm_ros.control.mpc import LatentMPC
from lewm_ros.planning.core import PlannerConfig


class AssemblyError(ValueError):
    """A bundle, roadmap or setting the controller cannot be built from; the message names it."""


@dataclass(frozen=True)
class ControllerSpec:
    """What to build. The agent fills it from its ROS parameters, eval from its command line."""

    bundle: str  # a directory or the name of a shipped bundle
    planner: PlannerConfig
    device: str = "auto"
    precision: str = "fp32"  # auto: measured once here (fp32 vs bf16 on the CPU; bf16/fp16 on CUDA)
    receding_horizon: int = 1
    roadmap: str = ""  # "" off, "bundle" the bundle's roadmap.npz, or a file path
    warmup: bool = True
    torch_threads: int = 0  # > 0: process-wide thread count (the controller owns its process on a robot)


@dataclass
class Controller:
    """Everything a control loop needs, built and warmed up."""

    spec: ControllerSpec
    bundle: Any  # lewm_ros.model.bundle.Bundle
    bundle_path: Path
    device: Any  # torch.device
    encoder: Any  # TorchScript encoder as deployed: uint8 (B, H, W, 3) on the device -> (B, D)
    encoder_precision: str
    mpc: LatentMPC
    roadmap: Any = None
    notes: list[str] = field(default_factory=list)  # measurements and choices worth a log line
    fallbacks: list[str] = field(default_factory=list)  # what this device forced (precision, compile): warnings

    @property
    def planner(self) -> Any:
        return self.mpc.planner

    @property
    def precision(self) -> str:
        return self.planner.config.precision


def assemble(spec: ControllerSpec, log: Callable[[str], None] = lambda _text: None) -> Controller:
    """Build the controller `spec` describes; `log` gets progress lines (start-up measurements take seconds)."""
    import torch

    from lewm_ros.model.bundle import load_bundle
    from lewm_ros.model.precision import cast_encoder, resolve_device
    from lewm_ros.model.shipped import find_bundle
    from lewm_ros.planning.core import LatentPlanner

    device = resolve_device(spec.device)
    if spec.torch_threads > 0:
        torch.set_num_threads(spec.torch_threads)
    bundle_path = find_bundle(spec.bundle)
    bundle = load_bundle(bundle_path, device=device)
    notes: list[str] = []
    config = spec.planner
    dim = bundle.config.latent_dim
    probe = (torch.zeros(1, dim), None, torch.zeros(dim))
    if spec.precision == "auto":
        log("measuring planner precision (fp32 vs bf16) on this machine")
        chosen, timings = LatentPlanner.from_bundle(bundle, config, device).choose_precision(*probe)
        config = replace(config, precision=chosen)
        notes.append(f"precision auto -> {chosen} (ms per scoring pass: {timings})")
    planner = LatentPlanner.from_bundle(bundle, config, device)
    # The encoder follows the precision the planner settled on (measured when `auto`).
    encoder, encoder_precision = cast_encoder(bundle.load_torchscript("encoder", device), device,
                                              planner.config.precision)  # fmt: skip
    roadmap = load_roadmap(spec.roadmap, bundle_path, dim)
    planner.set_roadmap(roadmap)
    if roadmap is not None:
        notes.append(f"roadmap: {roadmap.describe()}")
    if spec.warmup:
        log("measuring the planner on this machine (warm-up plans)")
        planner.warmup(*probe)
        # TorchScript's profiling executor optimises (and on CPU may fuse) during the first calls, which can
        # take hundreds of ms each: pay that here, not in the first control steps.
        blank = torch.zeros(1, bundle.image_size, bundle.image_size, 3, dtype=torch.uint8, device=device)
        with torch.inference_mode():
            for _ in range(3):
                encoder(blank)
    if roadmap is not None:
        roadmap.off_map_goals = 0  # the warm-up's blank goal is not a goal anyone sent
    if planner.config.adaptive_samples and planner.config.deadline_ms:
        notes.append(f"planner sized to this machine: {planner.budget.describe()} for deadline_ms "
                     f"{planner.config.deadline_ms:g}; it keeps adapting on every plan")  # fmt: skip
    fallbacks = [f"planner: {note}" for note in planner.notes]
    mpc = LatentMPC(encoder, bundle.model, planner, spec.receding_horizon, device)
    return Controller(spec, bundle, bundle_path, device, encoder, encoder_precision, mpc, roadmap, notes, fallbacks)


def load_roadmap(setting: str, bundle_path: Path, latent_dim: int) -> Any:
    """The roadmap a setting names ("" none, "bundle", or a path), checked against the bundle's weights."""
    from lewm_ros.planning.roadmap import ROADMAP_FILE, Roadmap, weights_fingerprint

    if not setting:
        return None
    path = bundle_path / ROADMAP_FILE if setting == "bundle" else Path(setting).expanduser()
    try:
        return Roadmap.load(path, latent_dim, weights_fingerprint(bundle_path))
    except ValueError as err:  # RoadmapError: missing, corrupt, or built for other weights
        raise AssemblyError(f"roadmap: {err}") from err
