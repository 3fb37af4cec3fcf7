"""GPU paths on this machine: encode latency and plan time per preset x precision x CUDA graphs on/off.

The agent's own path: a bundle saved from the preset (random weights: speed does not depend on them), its
TorchScript encoder cast like the agent casts it (lewm_ros.model.precision.cast_encoder), and LatentPlanner over
the eager model with the paper's CEM (samples x iterations, horizon 5, three context frames), cold plans,
warm-up first (compilation and CUDA-graph recording are not timed). On a CPU, fp16 and reduce-overhead fall
back to fp32 / eager and the row says so.

    .venv/bin/python bench/gpu_paths.py [--device cuda] [--presets paper reach64-small] [--samples 300]
                                        [--iterations 5] [--plans 10] [--precisions fp32 fp16]
                                        [--compile "" reduce-overhead]

Prints one JSON line per row, then a markdown table and the machine (never pass/fail thresholds).

Second section (`--sections device-cem`, on by default): the sync-free device CEM (PlannerConfig.graph) against
the generic loop, per-plan ms for the paper's CEM 300 x 30 (paper preset), reach64-small 300 x 30 and the demo's
settings (config/sim_reach.yaml: CEM 64 x 6 cold / 2 warm, top 8, uniform cost weights; reach64-small), cold and
warm plans, TF32 off and on for fp32 matmuls (CUDA only), and the seconds spent capturing CUDA graphs (every
context length, in warm-up). On a CPU the "graph" rows run the same device path eagerly (no capture).

    .venv/bin/python bench/gpu_paths.py --device cuda --sections device-cem
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from lewm_ros.model import LeWM, preset
from lewm_ros.model.bundle import load_bundle, save_bundle
from lewm_ros.model.precision import cast_encoder, machine_description, resolve_device
from lewm_ros.planning.core import LatentPlanner, PlannerConfig


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentiles(times: list[float]) -> tuple[float, float]:
    return float(np.percentile(times, 50)), float(np.percentile(times, 95))


def encode_ms(bundle, device: torch.device, precision: str, runs: int = 100) -> tuple[float, float, str]:
    """p50, p95 ms of one frame through the TorchScript encoder, and the precision it really ran at."""
    encoder, effective = cast_encoder(bundle.load_torchscript("encoder", device), device, precision)
    size = bundle.image_size
    images = torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8, device=device)
    times = []
    with torch.inference_mode():
        for i in range(runs + 10):
            sync(device)
            started = time.perf_counter()
            encoder(images)
            sync(device)
            if i >= 10:
                times.append(1000 * (time.perf_counter() - started))
    return (*percentiles(times), effective)


def plan_ms(bundle, device: torch.device, precision: str, compile_mode: str, args) -> dict:
    config = PlannerConfig(
        planner="cem", samples=args.samples, iterations=args.iterations, elites=min(30, args.samples),
        horizon=5, warm_start=False, precision=precision, compile=compile_mode or None, seed=0,
    )  # fmt: skip
    planner, (context, past, goal), warmup_s = warmed_planner(bundle, config, device)
    times = []
    for _ in range(args.plans):
        planner.reset(0)
        sync(device)
        started = time.perf_counter()
        planner.plan(context, past, goal)
        sync(device)
        times.append(1000 * (time.perf_counter() - started))
    p50, p95 = percentiles(times)
    return {
        "plan_p50_ms": p50, "plan_p95_ms": p95, "ms_per_iteration": p50 / args.iterations,
        "planner_precision": planner.config.precision, "compile_ran": planner.compile_mode or "eager",
        "warmup_s": warmup_s, "fallbacks": planner.notes,
    }  # fmt: skip


def warmed_planner(bundle, config: PlannerConfig, device: torch.device) -> tuple:
    """A planner over the bundle, one fixed random problem (context, past blocks, goal), and the warm-up seconds
    (compilation or CUDA-graph capture included)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fallbacks are reported in the row (planner.notes)
        planner = LatentPlanner.from_bundle(bundle, config, device)
    dim, fs, action_dim = bundle.config.latent_dim, bundle.config.action.frameskip, bundle.config.action.action_dim
    generator = torch.Generator().manual_seed(0)
    context = torch.randn(3, dim, generator=generator)
    past = 0.3 * torch.randn(2, fs, action_dim, generator=generator)
    goal = torch.randn(dim, generator=generator)
    started = time.perf_counter()
    planner.warmup(context[:1], None, goal)
    return planner, (context, past, goal), time.perf_counter() - started


DEVICE_CEM_SETTINGS = {  # name: (preset, PlannerConfig fields)
    "paper CEM 300x30": ("paper", {"samples": 300, "iterations": 30, "elites": 30}),
    "reach64-small CEM 300x30": ("reach64-small", {"samples": 300, "iterations": 30, "elites": 30}),
    "demo CEM 64x6/2": ("reach64-small", {"samples": 64, "iterations": 6, "warm_iterations": 2, "elites": 8,
                                           "cost_weights": (1.0,) * 5}),
}  # fmt: skip


def device_cem_row(bundle, device: torch.device, name: str, fields: dict, graph: bool, tf32: bool, plans: int) -> dict:
    """Per-plan ms of one setting, cold (reset before each plan) and warm (advance(1) between plans)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    config = PlannerConfig(planner="cem", horizon=5, seed=0, graph=graph, **fields)
    planner, (context, past, goal), warmup_s = warmed_planner(bundle, config, device)
    timings: dict[str, list[float]] = {"cold": [], "warm": []}
    costs = []
    for kind in ("cold", "warm"):
        planner.reset(0)
        for i in range(plans + (1 if kind == "warm" else 0)):
            if kind == "cold":
                planner.reset(0)
            else:
                planner.advance(1)
            sync(device)
            t0 = time.perf_counter()
            result = planner.plan(context, past, goal)
            sync(device)
            if kind == "cold" or i > 0:  # the first warm-series plan is cold
                timings[kind].append(1000 * (time.perf_counter() - t0))
            costs.append(result.cost)
    capture = planner.device_cem.capture_s if planner.device_cem is not None else 0.0
    return {
        "setting": name, "device": device.type, "path": ("graph" if device.type == "cuda" else "device-eager")
        if graph else "loop", "tf32": tf32 if device.type == "cuda" else None,
        "cold_p50_ms": percentiles(timings["cold"])[0], "warm_p50_ms": percentiles(timings["warm"])[0],
        "warmup_s": warmup_s, "capture_s": capture, "first_cost": costs[0], "fallbacks": planner.notes,
    }  # fmt: skip


def device_cem_section(device: torch.device, folder: str, plans: int, names: list[str]) -> None:
    rows = []
    bundles: dict[str, object] = {}
    tf32_modes = (False, True) if device.type == "cuda" else (False,)
    for name in names:
        preset_name, fields = DEVICE_CEM_SETTINGS[name]
        if preset_name not in bundles:
            torch.manual_seed(0)
            bundles[preset_name] = load_bundle(save_bundle(LeWM(preset(preset_name)), Path(folder) / preset_name),
                                               device=device)  # fmt: skip
        for tf32 in tf32_modes:
            for graph in (False, True):
                row = device_cem_row(bundles[preset_name], device, name, fields, graph, tf32, plans)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| setting | path | TF32 | cold plan p50 ms | warm plan p50 ms | warm-up s | capture s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['setting']} | {r['path']}{' (fallback)' if r['fallbacks'] else ''} | {r['tf32']} | "
              f"{r['cold_p50_ms']:.2f} | {r['warm_p50_ms']:.2f} | {r['warmup_s']:.2f} | {r['capture_s']:.2f} |")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = True  # torch's default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--presets", nargs="+", default=["paper", "reach64-small"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "fp16"])
    parser.add_argument("--compile", nargs="+", default=["", "reduce-overhead"], help='"" = eager')
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--plans", type=int, default=10)
    parser.add_argument("--sections", nargs="+", choices=("paths", "device-cem"), default=["paths", "device-cem"])
    parser.add_argument("--cem-settings", nargs="+", choices=tuple(DEVICE_CEM_SETTINGS),
                        default=list(DEVICE_CEM_SETTINGS), help="device-cem section: which settings")
    args = parser.parse_args()
    device = resolve_device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        if "device-cem" in args.sections:
            device_cem_section(device, folder, args.plans, args.cem_settings)
        for name in args.presets if "paths" in args.sections else []:
            torch.manual_seed(0)
            path = save_bundle(LeWM(preset(name)), Path(folder) / name)
            bundle = load_bundle(path, device=device)
            for precision in args.precisions:
                enc50, enc95, enc_precision = encode_ms(bundle, device, precision)
                for compile_mode in args.compile:
                    timing = plan_ms(bundle, device, precision, compile_mode, args)
                    row = {"preset": name, "device": device.type, "precision": precision,
                           "compile": compile_mode or "eager", "encode_p50_ms": enc50, "encode_p95_ms": enc95,
                           "encoder_precision": enc_precision, "samples": args.samples,
                           "iterations": args.iterations, **timing}  # fmt: skip
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if not rows:
        print(f"\nmachine: {json.dumps(machine_description(device))}")
        return
    print("\n| preset | precision | compile | encode p50 / p95 ms | plan p50 / p95 ms | ms / iteration | ran as |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        ran = f"{r['planner_precision']}, {r['compile_ran']}" + (" (fallback)" if r["fallbacks"] else "")
        print(f"| {r['preset']} | {r['precision']} | {r['compile']} | {r['encode_p50_ms']:.2f} / "
              f"{r['encode_p95_ms']:.2f} | {r['plan_p50_ms']:.1f} / {r['plan_p95_ms']:.1f} | "
              f"{r['ms_per_iteration']:.1f} | {ran} |")  # fmt: skip
    print(f"\nCEM {args.samples} x {args.iterations}, horizon 5, 3 context frames; machine: "
          f"{json.dumps(machine_description(device))}")  # fmt: skip


if __name__ == "__main__":
    main()
