"""`lewm-ros bench planner`: time latent planning (ours, and the reference CEM on the same weights), print a
short summary and then one JSON line (the last line of stdout; `--json` prints only the JSON line).

What is timed: `LatentPlanner.plan(context_latents, past_blocks, goal_latent)` from random latents, i.e. the
planning only (sampling, rollouts, costs, updates), never image encoding. Each side gets one untimed warm-up
plan first; the figure is the median over `--repeats` plans, each starting cold (no warm start).

The reference and how it is timed: benchmarks/reference.py; FLOPs and the peak they are compared with:
benchmarks/flops.py; the problem both sides solve: benchmarks/problem.py.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from lewm_ros.benchmarks.flops import FLOPS_METHOD, flop_counter, fraction_of_peak, peak_fp32_gflops
from lewm_ros.benchmarks.problem import Problem, make_problem
from lewm_ros.benchmarks.reference import ADALN_STD, build_reference_model, load_reference, time_reference

PLANNER_CHOICES = ("cem", "icem", "mppi", "grad")
PRESET_CHOICES = ("paper", "reach64", "reach64-small", "tiny")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `lewm-ros bench planner` to the `bench` group."""
    from lewm_ros.arguments import add_json_flag, bench_subparsers

    parser = bench_subparsers(subparsers).add_parser(
        "planner", help="time latent planning (ours vs the reference CEM on the same weights); summary + JSON",
        description="Time LatentPlanner.plan from random latents (median over repeats after a warm-up plan), "
        "count its FLOPs, and time the reference stable-worldmodel CEMSolver on the same weights when it is "
        "importable. Prints a short summary, then one JSON line (the last line of stdout; --json: only it).",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=PRESET_CHOICES, help="model sizes, random weights (default paper)")
    source.add_argument("--bundle", type=Path, help="model bundle directory (its weights and action statistics)")
    parser.add_argument("--planner", choices=PLANNER_CHOICES, default="cem", help="update rule (default cem)")
    parser.add_argument("--samples", type=int, default=300, help="candidates per iteration (default 300)")
    parser.add_argument("--iterations", type=int, default=30, help="iterations per plan (default 30)")
    parser.add_argument("--elites", type=int, default=30, help="top-k elites (default 30)")
    parser.add_argument("--horizon", type=int, default=5, help="planned action blocks (default 5)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                        help="rollout autocast; auto = measured (default fp32); the reference runs under the same")
    parser.add_argument("--compile", nargs="?", const="default", metavar="MODE",
                        help="torch.compile our rollout (MODE default 'default'); the reference is never compiled")
    parser.add_argument("--repeats", type=int, default=3, help="timed plans per side; the median is reported")
    parser.add_argument("--history-frames", type=int, metavar="TC",
                        help="context frames planned from, 1..history (default: history, the full context)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--threads", type=int, help="torch intra-op threads for both sides (default: torch's)")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference stable-worldmodel CEM")
    parser.add_argument("--reference-only-iterations", type=int, metavar="K",
                        help="time the reference over K iterations and scale its ms per plan by iterations/K "
                        "(its CEM does the same work every iteration); saves minutes at the paper's sizes")
    add_json_flag(parser)
    parser.set_defaults(run=run_planner_bench)


def run_planner_bench(args: argparse.Namespace) -> int:
    """The summary and the JSON line; 2 on a bad setting or bundle."""
    from lewm_ros.model.bundle import BundleError

    try:
        report = planner_bench(args)
    except (ValueError, BundleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.json:
        print(bench_summary(report))
    print(json.dumps(report))
    return 0


def bench_summary(report: dict[str, Any]) -> str:
    """The figures a person looks for, aligned, before the JSON line that holds everything."""
    from lewm_ros.arguments import aligned

    s, model, ours, ref = report["settings"], report["model"], report["ours"], report["reference"]

    def side(r: dict[str, Any]) -> str:
        peak = r.get("fraction_of_peak")
        share = f" = {peak:.1%} of peak" if isinstance(peak, (int, float)) and math.isfinite(peak) else ""
        return (f"{r['ms_per_plan']:,.1f} ms per plan ({r['ms_per_iteration']:,.2f} ms per iteration), "
                f"{r['rollouts_per_s']:,.0f} rollouts/s, {r['gflops_achieved']:,.1f} GFLOP/s{share}")  # fmt: skip

    rows = [
        ("bench planner", f"{s['planner']} {s['samples']} samples x {s['iterations']} iterations, top {s['elites']}, "
                          f"horizon {s['horizon']}, {s['precision']}, {s['device']}, torch threads {s['threads']}"),
        ("model", f"{model['source']}, {model['parameters']:,} parameters"),
        ("ours", side(ours)),
    ]  # fmt: skip
    if ref is None:
        rows.append(("reference", f"not timed: {report['reference_reason']}"))
    else:
        rows.append(("reference", side(ref)))
        rows.append(("reference/ours", f"{report['reference_over_ours']:.2f}x (time per plan)"))
    return aligned(rows)


# ---- the bench ----------------------------------------------------------------------------------------


def planner_bench(args: argparse.Namespace) -> dict[str, Any]:
    """The report (see the module docstring), with torch's thread count restored afterwards."""
    import torch

    _check_args(args)
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return _planner_bench(args)
    finally:
        torch.set_num_threads(threads)  # in-process callers (tests) get their setting back


def _planner_bench(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from lewm_ros.model.precision import machine_description, resolve_device
    from lewm_ros.planning.core import LatentPlanner, PlannerConfig

    device = resolve_device(args.device)
    config = PlannerConfig(
        planner=args.planner, samples=args.samples, iterations=args.iterations, elites=args.elites,
        horizon=args.horizon, seed=args.seed, compile=args.compile,
    )  # fmt: skip
    config.check()
    torch.manual_seed(args.seed)
    model, cfg, action_mean, action_std, source, reference = _build_models(args, device)
    history = cfg.predictor.history
    n_ctx = history if args.history_frames is None else args.history_frames
    if not 1 <= n_ctx <= history:
        raise ValueError(f"--history-frames must be in 1..{history} (the model's history), got {n_ctx}")
    problem = make_problem(cfg, n_ctx, action_mean, action_std, args.seed, device)

    def make_planner(conf: PlannerConfig, dynamics: Any = model) -> LatentPlanner:
        return LatentPlanner(
            dynamics, action_mean, action_std, cfg.action.frameskip, history, cfg.latent_dim, conf, device=device
        )

    precision, precision_ms = _bench_precision(args.precision, device, config, make_planner, problem)
    config = replace(config, precision=precision)
    _log(f"bench planner: {source}, {args.planner} {args.samples}x{args.iterations}, horizon {args.horizon}, "
         f"Tc {n_ctx}, {precision}" + (f", compile {args.compile}" if args.compile else ""))

    ours = _time_ours(make_planner(config), problem, args.repeats, args.seed)
    # FLOPs and candidates of an untimed, uncompiled plan: one iteration scaled up (cem, mppi and grad repeat the
    # same work every iteration), or the whole plan for icem (its sample count shrinks from one to the next)
    counted = args.iterations if args.planner == "icem" else 1
    counting = _CountingDynamics(model)
    with flop_counter() as counter:
        make_planner(replace(config, compile=None, iterations=counted), counting).plan(
            problem.context, problem.past_raw, problem.goal
        )
    scale = ours["iterations"] / counted
    ours_flops = counter.get_total_flops() * scale
    candidates = round(counting.candidates * scale)
    peak = peak_fp32_gflops(device, torch.get_num_threads())
    seconds = ours["ms_per_plan"] / 1000.0
    ours.update(
        flops_counted_iterations=counted,
        candidate_rollouts_per_plan=candidates,
        rollouts_per_s=candidates / seconds,
        gflop_per_plan=ours_flops / 1e9,
        gflop_per_iteration=ours_flops / 1e9 / ours["iterations"],
        gflops_achieved=ours_flops / 1e9 / seconds,
    )
    ours["fraction_of_peak"] = fraction_of_peak(ours["gflops_achieved"], peak)

    reference_report: dict[str, Any] | None = None
    reason: str | None = reference.get("reason")
    if reason is None:
        reference_report = time_reference(reference, model, cfg, problem, args, device, precision, peak)
    report: dict[str, Any] = {
        "bench": "planner",
        "model": {
            "source": source, "parameters": sum(p.numel() for p in model.parameters()),
            "latent_dim": cfg.latent_dim, "history": history, "frameskip": cfg.action.frameskip,
            "action_dim": cfg.action.action_dim,
        },
        "settings": {
            "planner": args.planner, "samples": args.samples, "iterations": args.iterations, "elites": args.elites,
            "horizon": args.horizon, "history_frames": n_ctx, "precision_requested": args.precision,
            "precision": precision, "precision_ms": precision_ms, "compile": args.compile, "repeats": args.repeats,
            "seed": args.seed, "device": str(device), "threads": torch.get_num_threads(),
            "reference_only_iterations": args.reference_only_iterations,
        },
        "timed": "LatentPlanner.plan(context latents, executed blocks, goal latent): planning only, no encoding; "
        "median over repeats of cold plans after one warm-up plan",
        "ours": ours,
        "flops_method": FLOPS_METHOD,
        "peak": peak,
        "machine": machine_description(device),
        "reference": reference_report,
        "reference_reason": reason,
        "reference_over_ours": (
            reference_report["ms_per_plan"] / ours["ms_per_plan"] if reference_report is not None else None
        ),
    }  # fmt: skip
    return report


def _check_args(args: argparse.Namespace) -> None:
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    k = args.reference_only_iterations
    if k is not None and not 1 <= k <= args.iterations:
        raise ValueError(f"--reference-only-iterations must be in 1..--iterations={args.iterations}, got {k}")


def _build_models(args: argparse.Namespace, device: Any) -> tuple[Any, Any, Any, Any, str, dict[str, Any]]:
    """Our model, its config and action statistics, a description, and the reference (or why there is none)."""
    import numpy as np
    import torch

    from lewm_ros.model.config import preset
    from lewm_ros.model.lewm import LeWM
    from lewm_ros.model.reference_import import import_reference

    reference: dict[str, Any] = {}
    if args.bundle is not None:
        from lewm_ros.model.bundle import load_bundle

        bundle = load_bundle(args.bundle)
        cfg, model, source = bundle.config, bundle.model, f"bundle {args.bundle}"
        action_mean, action_std = bundle.action_mean, bundle.action_std
    else:
        name = args.preset or "paper"
        cfg, source, model = preset(name), f"preset {name} (random weights)", None
        action_mean = np.zeros(cfg.action.action_dim, np.float32)
        action_std = np.ones_like(action_mean)
    if args.no_reference:
        reference["reason"] = "--no-reference"
    else:
        try:
            loaded = load_reference()
            reference.update(loaded)
            reference["model"] = build_reference_model(loaded, cfg, args.seed)
        except ImportError as err:
            reference = {"reason": f"reference not importable: {err}"}
    if model is None:
        if "model" in reference:
            ref_model = reference["model"]
            model = import_reference(
                ref_model.state_dict(), history=cfg.predictor.history, encoder_heads=cfg.encoder.heads,
                predictor_heads=cfg.predictor.heads, frameskip=cfg.action.frameskip,
            )  # fmt: skip
            reference["same_weights"] = True
        else:
            model = LeWM(cfg)
            with torch.no_grad():
                for name_, param in model.named_parameters():
                    if "modulation" in name_:
                        param.normal_(0.0, ADALN_STD)
    elif "model" in reference:
        reference["same_weights"] = False
    model = model.to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    if "model" in reference:
        reference["model"] = reference["model"].to(device).eval()
        for param in reference["model"].parameters():
            param.requires_grad_(False)
    return model, cfg, action_mean, action_std, source, reference


def _bench_precision(requested: str, device: Any, config: Any, make_planner: Any, problem: Problem) -> tuple[str, dict]:
    from lewm_ros.model.precision import choose_precision

    planners = {}

    def workload(precision: str) -> None:  # a short plan, uncompiled
        if precision not in planners:
            planners[precision] = make_planner(replace(config, precision=precision, iterations=2, compile=None))
        planners[precision].reset(config.seed)
        planners[precision].plan(problem.context, problem.past_raw, problem.goal)

    return choose_precision(device, requested, workload)


def _time_ours(planner: Any, problem: Problem, repeats: int, seed: int) -> dict[str, Any]:
    planner.warmup(problem.context, problem.past_raw, problem.goal)
    times, iterations, cost = [], 0, math.inf
    for _ in range(repeats):
        planner.reset(seed)
        result = planner.plan(problem.context, problem.past_raw, problem.goal)
        times.append(result.time_ms)
        iterations, cost = result.iterations, result.cost
    median = statistics.median(times)
    return {
        "ms_per_plan": median, "ms_per_plan_all": times, "iterations": iterations,
        "ms_per_iteration": median / max(iterations, 1), "plan_cost": cost,
    }  # fmt: skip


class _CountingDynamics:
    """Passes rollouts through to the model and counts the candidate sequences rolled out."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.candidates = 0

    def rollout(self, context: Any, past_actions: Any, candidates: Any) -> Any:
        self.candidates += int(candidates.shape[0] * candidates.shape[1])
        return self.model.rollout(context, past_actions, candidates)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
