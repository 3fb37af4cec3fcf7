"""What defines a training run and what it runs on: settings, run options, exit codes, the process topology.

Why here and not in the command line (lewm_ros/train.py): the engine (loop.py) needs all of these, and the
library must not import its command line; train.py imports this module, never the reverse. Torch-free, so the
command line can build its parser without importing torch.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_EPOCHS = 10
DEFAULT_PRESET = "reach64-small"  # the CPU preset, chosen by closed-loop success (docs/training.md)
DEFAULT_LR = {"paper": 5e-5}  # the paper's; the small CPU presets learn faster at 1e-3 (bench/reach64_sizing.py)
FALLBACK_LR = 1e-3
# lambda: the paper's 0.1 for its preset; 1.0 for the small CPU presets, where 0.1 left the elbow out of the latents
# in a 20-minute run (probe R^2 -0.1 vs 0.54) and closed-loop success at 27% vs 66% (docs/training.md)
DEFAULT_SIGREG_WEIGHT = {"paper": 0.1}
FALLBACK_SIGREG_WEIGHT = 1.0
BUDGET_RESERVE = 0.85  # --minutes: the share of the budget planned for training steps (rest: evals, export)
COMPARED_SETTINGS = (
    "data", "preset", "init", "batch_size", "lr", "weight_decay", "sigreg_weight", "sigreg_directions",
    "warmup_fraction", "grad_clip", "epochs", "minutes", "seed", "val_fraction", "precision", "world_size",
)  # fmt: skip
EXIT_BAD_INPUT, EXIT_NONFINITE, EXIT_EXPORT_FAILED, EXIT_SIGINT, EXIT_SIGTERM = 2, 3, 4, 130, 143


class TrainError(RuntimeError):
    """A problem found before training starts (bad flags, data, run directory); exit code 2."""


@dataclass(frozen=True)
class RunOptions:
    """Flags that shape how a run goes rather than what it learns (not compared on --resume); their defaults
    live in one place, the parser (train.add_arguments)."""

    out: Path
    resume: bool
    device: str  # auto | cpu | cuda
    threads: int | None
    workers: int
    max_ram_gb: float
    max_val_windows: int
    checkpoint_minutes: float
    log_every: int
    stop_after: int | None
    dist_init: str
    no_progress: bool

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The options from `lewm-ros train`'s parsed flags (train.add_arguments)."""
        return cls(**{name: getattr(args, name) for name in cls.__dataclass_fields__})

    def check(self) -> None:
        """TrainError naming every out-of-range option."""
        problems = []
        if self.log_every < 1:
            problems.append(f"--log-every must be >= 1, got {self.log_every}")
        if self.max_val_windows < 1:
            problems.append(f"--max-val-windows must be >= 1, got {self.max_val_windows}")
        if not self.max_ram_gb > 0:
            problems.append(f"--max-ram-gb must be positive, got {self.max_ram_gb}")
        if not self.checkpoint_minutes >= 0:
            problems.append(f"--checkpoint-minutes must be >= 0, got {self.checkpoint_minutes}")
        if self.workers < 0:
            problems.append(f"--workers must be >= 0, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"--threads must be >= 1, got {self.threads}")
        if self.stop_after is not None and self.stop_after < 1:
            problems.append(f"--stop-after must be >= 1, got {self.stop_after}")
        if problems:
            raise TrainError("; ".join(problems))

    @property
    def max_ram_bytes(self) -> int:
        return int(self.max_ram_gb * 2**30)


@dataclass
class Settings:
    """Everything that defines a run; compared on --resume."""

    data: list[str]
    preset: str | None
    init: str | None
    batch_size: int
    lr: float
    weight_decay: float
    sigreg_weight: float
    sigreg_directions: int
    warmup_fraction: float
    grad_clip: float
    epochs: int | None
    minutes: float | None
    seed: int
    val_fraction: float
    precision: str
    world_size: int
    extra: dict[str, Any] = field(default_factory=dict)

    def compared(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COMPARED_SETTINGS}


def resolve_settings(args: argparse.Namespace, world: int, saved: dict[str, Any] | None) -> Settings:
    """Flags -> Settings; on resume, flags not given come from the checkpoint and given ones must agree."""
    given = {
        "data": [str(p.resolve()) for p in args.data] if args.data else None,
        "preset": args.preset, "init": str(args.init.resolve()) if args.init else None,
        "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
        "sigreg_weight": args.sigreg_weight, "sigreg_directions": args.sigreg_directions,
        "warmup_fraction": args.warmup_fraction, "grad_clip": args.grad_clip, "epochs": args.epochs,
        "minutes": args.minutes, "seed": args.seed, "val_fraction": args.val_fraction, "precision": args.precision,
        "world_size": world,
    }  # fmt: skip
    if saved is not None:
        differences = [
            f"{name}: checkpoint {saved.get(name)!r}, now {value!r}"
            for name, value in given.items()
            if value is not None and value != saved.get(name) and not (name == "epochs" and saved.get("minutes"))
        ]
        if args.epochs is not None and saved.get("minutes") is not None:
            differences.append(f"budget: checkpoint --minutes {saved['minutes']}, now --epochs {args.epochs}")
        if args.minutes is not None and saved.get("epochs") is not None:
            differences.append(f"budget: checkpoint --epochs {saved['epochs']}, now --minutes {args.minutes}")
        if differences:
            raise TrainError("--resume with settings that differ from the run's: " + "; ".join(differences))
        return Settings(**{name: saved[name] for name in COMPARED_SETTINGS})
    if not given["data"]:
        raise TrainError("--data FILE.h5 is required (repeat it for several files)")
    preset = given["preset"]
    if preset is None and given["init"] is None:
        preset = DEFAULT_PRESET
    epochs = given["epochs"]
    if epochs is None and given["minutes"] is None:
        epochs = DEFAULT_EPOCHS
    settings = Settings(
        data=given["data"], preset=preset, init=given["init"],
        batch_size=_default(given["batch_size"], 64),
        lr=_default(given["lr"], DEFAULT_LR.get(preset or "", FALLBACK_LR)),
        weight_decay=_default(given["weight_decay"], 1e-3),
        sigreg_weight=_default(given["sigreg_weight"], DEFAULT_SIGREG_WEIGHT.get(preset or "", FALLBACK_SIGREG_WEIGHT)),
        sigreg_directions=_default(given["sigreg_directions"], 1024),
        warmup_fraction=_default(given["warmup_fraction"], 0.05),
        grad_clip=_default(given["grad_clip"], 1.0), epochs=epochs, minutes=given["minutes"],
        seed=_default(given["seed"], 0), val_fraction=_default(given["val_fraction"], 0.1),
        precision=_default(given["precision"], "auto"), world_size=world,
    )  # fmt: skip
    _check_values(settings)
    return settings


def _default(value: Any, fallback: Any) -> Any:
    return fallback if value is None else value


def _check_values(s: Settings) -> None:
    problems = []
    if s.batch_size < 2 or s.batch_size % s.world_size:
        problems.append(f"--batch-size {s.batch_size} must be >= 2 and divisible by the {s.world_size} processes")
    elif s.batch_size // s.world_size < 2:
        problems.append("each process needs at least 2 windows per step (BatchNorm, SIGReg)")
    if not (s.lr > 0 and math.isfinite(s.lr)):
        problems.append(f"--lr must be positive, got {s.lr}")
    if s.epochs is not None and s.epochs < 1:
        problems.append(f"--epochs must be >= 1, got {s.epochs}")
    if s.minutes is not None and not (s.minutes > 0 and math.isfinite(s.minutes)):
        problems.append(f"--minutes must be positive and finite, got {s.minutes}")
    if not 0 <= s.val_fraction < 1:
        problems.append(f"--val-fraction must be in [0, 1), got {s.val_fraction}")
    finite = all(math.isfinite(v) for v in (s.sigreg_weight, s.weight_decay, s.grad_clip))
    if not finite or s.sigreg_weight < 0 or s.weight_decay < 0 or s.grad_clip <= 0 or s.sigreg_directions < 1:
        problems.append("--sigreg-weight and --weight-decay must be >= 0, --grad-clip and --sigreg-directions > 0")
    if not 0 <= s.seed < 2**63:
        problems.append(f"--seed must be a non-negative 64-bit integer, got {s.seed}")
    if not 0 <= s.warmup_fraction < 1:
        problems.append(f"--warmup-fraction must be in [0, 1), got {s.warmup_fraction}")
    if problems:
        raise TrainError("; ".join(problems))


def learning_rate(step: int, total: int, base: float, warmup_fraction: float) -> float:
    """Linear warm-up over the first warmup_fraction of the steps, then cosine down to 1% of base."""
    warmup = max(1, round(warmup_fraction * total))
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def dist_from_env() -> Dist:
    env = os.environ
    return Dist(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))
