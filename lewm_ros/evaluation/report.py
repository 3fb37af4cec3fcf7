"""What `lewm-ros eval` reports: the summary figures, the one-line summary, and the files under --out (eval.json
rewritten atomically after every episode, eval.png, episodes.gif)."""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lewm_ros.evaluation.closed_loop import EpisodeOutcome


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


def summary_line(report: EvalReport, started: float) -> str:
    summary = report.summary()
    return (
        f"success {summary['success_rate']:.1%} over {summary['episodes']} episodes; mean final joint error "
        f"{summary['mean_final_error']:.3f} rad; plan p50 {summary['plan_ms_p50']:.0f} ms, "
        f"p95 {summary['plan_ms_p95']:.0f} ms ({summary['partial_plans']} partial); "
        f"{time.perf_counter() - started:.0f} s"
    )


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
