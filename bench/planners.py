"""Planner x budget table on a trained bundle: closed-loop success (paper protocol and random goals) and
plan time, so users can pick a planner by their compute budget.

Every row runs `lewm-ros eval` (same code path) with the same episodes and seed. The paper's protocol needs
held-out episodes: collect them with another seed than the training data, e.g.

    lewm-ros collect --scene reach2d --out /tmp/heldout.h5 --episodes 60 --seed 1000
    MUJOCO_GL=egl .venv/bin/python bench/planners.py --bundle models/reach2d --heldout /tmp/heldout.h5 \
        [--episodes 50] [--rows cem300x30 icem100x10w3 ...] [--out bench_out/]

Prints one line per row as it finishes and a table at the end (markdown), plus the CPU model and ISA.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from lewm_ros.cli import build_parser
from lewm_ros.evaluation.driver import evaluate
from lewm_ros.model.precision import machine_description

# name -> eval flags on top of `--preset paper` (replanning every 5 blocks, final-latent cost, no roadmap, as the
# rows were measured); "w" = iterations once warm-started, "s" = stop when every std < 0.1
ROWS: dict[str, list[str]] = {
    "cem300x30": ["--planner", "cem", "--samples", "300", "--iterations", "30", "--elites", "30", "--no-warm-start"],
    "cem300x30w10": ["--planner", "cem", "--samples", "300", "--iterations", "30", "--elites", "30",
                     "--warm-iterations", "10"],
    "cem100x10": ["--planner", "cem", "--samples", "100", "--iterations", "10", "--elites", "10"],
    "icem100x10w3": ["--planner", "icem", "--samples", "100", "--iterations", "10", "--elites", "10",
                     "--warm-iterations", "3"],
    "icem64x10w3": ["--planner", "icem", "--samples", "64", "--iterations", "10", "--elites", "8",
                    "--warm-iterations", "3"],
    "icem64x6w2s": ["--planner", "icem", "--samples", "64", "--iterations", "6", "--elites", "8",
                    "--warm-iterations", "2", "--stop-std", "0.1"],
    "mppi100x10w3": ["--planner", "mppi", "--samples", "100", "--iterations", "10", "--elites", "20",
                     "--warm-iterations", "3"],
    "grad8x20w5": ["--planner", "grad", "--samples", "8", "--iterations", "20", "--warm-iterations", "5"],
    # replanning every block with every block's distance counted (what the agent can do), then also along the
    # bundle's roadmap (`lewm-ros roadmap`; {roadmap} = BUNDLE/roadmap.npz)
    "icem100x10w3r1u": ["--planner", "icem", "--samples", "100", "--iterations", "10", "--elites", "10",
                        "--warm-iterations", "3", "--receding-horizon", "1", "--cost-weights", "1", "1", "1", "1", "1"],
    "icem100x10w3r1u+rm": ["--planner", "icem", "--samples", "100", "--iterations", "10", "--elites", "10",
                           "--warm-iterations", "3", "--receding-horizon", "1", "--cost-weights", "1", "1", "1", "1",
                           "1", "--roadmap", "{roadmap}"],
    "mppi100x10w3r1u+rm": ["--planner", "mppi", "--samples", "100", "--iterations", "10", "--elites", "10",
                           "--warm-iterations", "3", "--receding-horizon", "1", "--cost-weights", "1", "1", "1", "1",
                           "1", "--roadmap", "{roadmap}"],
}  # fmt: skip


def run_row(bundle: Path, goals: str, flags: list[str], episodes: int, seed: int) -> dict:
    flags = [str(bundle / "roadmap.npz") if flag == "{roadmap}" else flag for flag in flags]
    args = build_parser().parse_args(
        ["eval", "--bundle", str(bundle), "--goals", goals, "--episodes", str(episodes), "--seed", str(seed),
         "--video-episodes", "0", "--no-progress", "--device", "cpu", "--preset", "paper", *flags]
    )  # fmt: skip
    started = time.perf_counter()
    summary = evaluate(args).summary()
    summary["wall_s"] = time.perf_counter() - started
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--heldout", type=Path, required=True, help="held-out episodes for the paper protocol")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--out", type=Path, help="write results.json here")
    args = parser.parse_args()
    machine = machine_description()
    print(f"machine: {machine['cpu_model']} ISA {machine['cpu_isa']} threads {machine['torch_threads']}")
    results = []
    for name in args.rows:
        row = {"row": name}
        for label, goals in (("paper", f"dataset:{args.heldout}"), ("random", "random")):
            row[label] = run_row(args.bundle, goals, ROWS[name], args.episodes, args.seed)
            s = row[label]
            print(f"{name:>14} {label:>6}: success {s['success_rate']:.0%}  plan p50 {s['plan_ms_p50']:.0f} ms  "
                  f"p95 {s['plan_ms_p95']:.0f} ms  ({s['wall_s']:.0f} s)", flush=True)  # fmt: skip
        results.append(row)
    print("\n| planner | success (paper) | success (random) | plan ms p50 | plan ms p95 |")
    print("|---|---|---|---|---|")
    for row in results:
        p, r = row["paper"], row["random"]
        both = [p["plan_ms_p50"], r["plan_ms_p50"]]
        p95 = max(p["plan_ms_p95"], r["plan_ms_p95"])
        print(f"| {row['row']} | {p['success_rate']:.0%} | {r['success_rate']:.0%} | {min(both):.0f}-{max(both):.0f} "
              f"| {p95:.0f} |")  # fmt: skip
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps({"machine": machine, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
