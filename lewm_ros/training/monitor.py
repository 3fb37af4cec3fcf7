"""Watching a run: latent health (collapse), validation metrics, metrics.csv and curves.png.

A JEPA can minimise its prediction loss by mapping every frame to the same latent. SIGReg prevents it;
these numbers show whether it did. Thresholds: SIGReg drives latents towards N(0, I), so a healthy run has
per-dimension std near 1 and an effective rank near the latent dimension.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lewm_ros.model.sigreg import SIGReg

MIN_MEAN_STD = 0.1  # mean per-dimension std below this: the latents have shrunk towards a point
MIN_RANK_FRACTION = 0.05  # effective rank below this fraction of the latent dim: a few directions carry all
MIN_RANK = 1.5  # ... and below this at any latent dim: one line (rank 1) is a collapse even when dim <= 20
SURPRISE_PERCENTILES = (50.0, 90.0, 99.0, 99.9)
METRIC_FIELDS = (
    "step", "epoch", "kind", "loss", "pred", "sigreg", "lr", "samples_per_s", "mean_std", "eff_rank",
    "elapsed_s",
)  # fmt: skip


def effective_rank(latents: Tensor) -> float:
    """Participation ratio of the covariance spectrum, (sum l)^2 / sum l^2: D for isotropic latents, 1 for a
    line, 0 for a point."""
    z = latents.double()
    if len(z) < 2:
        return 0.0
    eigenvalues = torch.linalg.eigvalsh(torch.cov(z.T)).clamp(min=0)
    denominator = eigenvalues.square().sum()
    if denominator <= 0:
        return 0.0
    return float(eigenvalues.sum() ** 2 / denominator)


@dataclass(frozen=True)
class LatentHealth:
    mean_std: float
    min_std: float
    eff_rank: float
    sigreg: float
    latent_dim: int

    def collapse_warning(self) -> str | None:
        """A loud message with the numbers when the latents have collapsed, else None."""
        problems = []
        if not np.isfinite(self.mean_std) or self.mean_std < MIN_MEAN_STD:
            problems.append(f"mean per-dimension std {self.mean_std:.4g} < {MIN_MEAN_STD}")
        min_rank = max(MIN_RANK, MIN_RANK_FRACTION * self.latent_dim)
        if self.eff_rank < min_rank:
            problems.append(
                f"effective rank {self.eff_rank:.2f} < {min_rank:.3g} ({MIN_RANK_FRACTION:.0%} of latent dim "
                f"{self.latent_dim}, at least {MIN_RANK})"
            )
        if not problems:
            return None
        return (
            "WARNING: representation collapse: " + "; ".join(problems) + f" (SIGReg statistic {self.sigreg:.3g}). "
            "The encoder maps frames to (nearly) the same latent; raise --sigreg-weight, lower --lr, or check the data."
        )


def latent_health(latents: Tensor, sigreg: SIGReg, chunk: int = 256) -> LatentHealth:
    """Health of latents (N, D) of distinct frames; the SIGReg statistic is averaged over chunks of `chunk`
    (it scales with the sample count) with fixed directions, so epochs are comparable. Computed on the latents'
    device, wherever `sigreg` was moved."""
    z = latents.float()
    std = z.std(dim=0) if len(z) > 1 else z.new_zeros(z.shape[-1])
    usable = len(z) // chunk * chunk
    if usable == 0:
        chunk, usable = len(z), len(z)
    groups = z[:usable].reshape(-1, chunk, z.shape[-1])
    statistic = sigreg(groups, generator=torch.Generator(device=z.device).manual_seed(0), local=True)
    return LatentHealth(
        mean_std=float(std.mean()), min_std=float(std.min()), eff_rank=effective_rank(z), sigreg=float(statistic),
        latent_dim=int(z.shape[-1]),
    )  # fmt: skip


def surprise_percentiles(errors: np.ndarray) -> dict[str, float]:
    """{'p50': ..., 'p90': ..., 'p99': ..., 'p99.9': ...} of per-window one-step squared prediction errors."""
    errors = np.asarray(errors, np.float64)
    return {f"p{q:g}": float(np.percentile(errors, q)) for q in SURPRISE_PERCENTILES}


class MetricsLog:
    """metrics.csv: one row per logged training interval ("train") and per validation ("val")."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def truncate_after(self, step: int, keep_val: bool = True) -> None:
        """On resume: drop rows logged after the checkpoint we continue from (they will be redone), and with
        keep_val=False a validation row at its step too (the checkpoint preceded that evaluation)."""
        if not self.path.is_file():
            return
        rows = [
            r for r in self.rows()
            if int(r["step"]) < step or (int(r["step"]) == step and (keep_val or r["kind"] != "val"))
        ]  # fmt: skip
        self._write_all(rows)

    def append(self, row: dict[str, Any]) -> None:
        new = not self.path.is_file()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k, "")) for k in METRIC_FIELDS})

    def rows(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as handle:
            return list(csv.DictReader(handle))

    def _write_all(self, rows: list[dict[str, str]]) -> None:
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        tmp.replace(self.path)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def plot_curves(log: MetricsLog, out: Path) -> None:
    """curves.png: prediction loss (train and validation) and SIGReg over steps, plus latent health."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = log.rows()

    def series(kind: str, key: str) -> tuple[list[int], list[float]]:
        pairs = [(int(r["step"]), float(r[key])) for r in rows if r["kind"] == kind and r.get(key) not in ("", None)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for kind, style in (("train", "-"), ("val", "o-")):
        axes[0].plot(*series(kind, "pred"), style, label=f"{kind} prediction MSE")
        axes[1].plot(*series(kind, "sigreg"), style, label=f"{kind} SIGReg")
    axes[2].plot(*series("val", "mean_std"), "o-", label="val mean latent std")
    rank_steps, ranks = series("val", "eff_rank")
    twin = axes[2].twinx()
    twin.plot(rank_steps, ranks, "s--", color="tab:red", label="val effective rank")
    twin.set_ylabel("effective rank")
    for ax, title in zip(axes, ("prediction loss", "SIGReg", "latent health"), strict=True):
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.legend(loc="best")
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    fig.tight_layout()
    tmp = out.with_name(out.stem + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(out)
