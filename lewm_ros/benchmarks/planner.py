"""`lewm-ros bench planner`: time latent planning (ours, and the reference CEM on the same weights), print a
short summary and then one JSON line (the last line of stdout; `--json` prints only the JSON line).

What is timed: `LatentPlanner.plan(context_latents, past_blocks, goal_latent)` from random latents, i.e. the
planning only (sampling, rollouts, costs, updates), never image encoding. Each side gets one untimed warm-up
plan first; the figure is the median over `--repeats` plans, each starting cold (no warm start).

The reference (stable-worldmodel 0.1.1, a test-only dependency) is timed the way its own WorldModelPolicy
calls it: `CEMSolver.configure(...)` then `CEMSolver.solve(info_dict, init_action)`, whose iterations call
`LeWM.get_cost` -> `LeWM.rollout` + `LeWM.criterion`. Its `get_cost`/`rollout` encode the goal and the
context frames on their first call and cache the results in the info dict ('goal_emb', 'emb') for the
remaining iterations; we put the same latents ours plans from into those keys before `solve`, so no image is
encoded on either side ('pixels' and 'goal' are placeholders: only the context length, pixels.size(2), is
read). Its candidate sequences cover the Tc-1 executed blocks plus the horizon (its rollout pairs one block
with every context frame, and CEM samples all of them), so both sides predict `horizon` latents per candidate
through the same history windows; the executed blocks seed the reference's initial mean (`init_action`).

Weights: with `--preset`, a reference LeWM (HF ViTModel encoder, the reference's predictor/embedder/MLPs) is
built at the preset's sizes with random weights (AdaLN modulation drawn N(0, 0.02) instead of zeros) and
converted with `import_reference`, so both sides run identical weights; a short rollout on the bench inputs
checks that (`rollout_max_abs_diff`). With `--bundle`, ours runs the bundle's weights and the reference random
weights at the bundle's sizes (the work per plan does not depend on the values).

FLOPs: counted with torch.utils.flop_counter.FlopCounterMode (matmuls, linears, convolutions and attention,
plus our registration of the CPU attention kernels the counter lacks; element-wise ops, norms, softmax and
sampling are not counted), over one untimed 1-iteration plan/solve x iterations (CEM, MPPI and the gradient
planner, backward passes included, do the same work every iteration); for iCEM over one whole plan, since its
sample count shrinks from iteration to iteration.

Peak: CPUs torch computes on x "cpu MHz" from /proc/cpuinfo x fp32 FLOP/cycle/core from the ISA flags
(AVX-512: 64 = 2 FMA units x 16 lanes x 2; AVX2+FMA: 32; AVX: 16; SSE2: 8; ARM ASIMD: 16). A rough ceiling:
it ignores turbo and AVX clock offsets and counts SMT siblings as cores.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import io
import json
import math
import os
import statistics
import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

PLANNER_CHOICES = ("cem", "icem", "mppi", "grad")
PRESET_CHOICES = ("paper", "reach64", "reach64-small", "tiny")
ADALN_STD = 0.02
FLOPS_METHOD = (
    "torch.utils.flop_counter.FlopCounterMode: matmul/linear/conv/attention FLOPs (2 per multiply-add; "
    "attention counted without its causal mask, CPU attention kernels registered here); element-wise ops, "
    "norms, softmax and sampling not counted. Ours: one untimed 1-iteration plan x iterations (icem: one whole "
    "plan, its sample count shrinks); reference: one 1-iteration solve x iterations."
)
PEAK_ASSUMPTION = (
    "peak fp32 = cores x GHz x FLOP/cycle/core; cores = min(CPUs available, torch threads); GHz = the highest "
    "'cpu MHz' in /proc/cpuinfo; FLOP/cycle from ISA flags (AVX-512F: 64 = 2 FMA units x 16 lanes x 2; "
    "AVX2+FMA: 32; AVX: 16; SSE2: 8; ASIMD: 16). Ignores turbo/AVX clock offsets; SMT siblings count as cores."
)
_REF_PREFIX = "_lewm_bench_reference"


def register(subparsers: argparse._SubParsersAction) -> None:
    from lewm_ros.cli import add_json_flag, bench_subparsers

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
    from lewm_ros.cli import aligned

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


@dataclass
class _Problem:
    """One planning problem, the same for both sides: latents, executed blocks, goal."""

    context: Any  # (Tc, D) latents
    past_raw: Any  # (Tc-1, frameskip, action_dim) raw units
    past_norm: Any  # (Tc-1, A) normalised units (what the model sees)
    goal: Any  # (D,)


def planner_bench(args: argparse.Namespace) -> dict[str, Any]:
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
    problem = _make_problem(cfg, n_ctx, action_mean, action_std, args.seed, device)

    def make_planner(conf: PlannerConfig, dynamics: Any = model) -> LatentPlanner:
        return LatentPlanner(
            dynamics, action_mean, action_std, cfg.action.frameskip, history, cfg.latent_dim, conf, device=device
        )

    precision, precision_ms = _pick_precision(args.precision, device, config, make_planner, problem)
    config = replace(config, precision=precision)
    _log(f"bench planner: {source}, {args.planner} {args.samples}x{args.iterations}, horizon {args.horizon}, "
         f"Tc {n_ctx}, {precision}" + (f", compile {args.compile}" if args.compile else ""))

    ours = _time_ours(make_planner(config), problem, args.repeats, args.seed)
    # FLOPs and candidates of an untimed, uncompiled plan: one iteration scaled up (cem, mppi and grad repeat the
    # same work every iteration), or the whole plan for icem (its sample count shrinks from one to the next)
    counted = args.iterations if args.planner == "icem" else 1
    counting = _CountingDynamics(model)
    with _flop_counter() as counter:
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
    ours["fraction_of_peak"] = _fraction(ours["gflops_achieved"], peak)

    reference_report: dict[str, Any] | None = None
    reason: str | None = reference.get("reason")
    if reason is None:
        reference_report = _time_reference(reference, model, cfg, problem, args, device, precision, peak)
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


def _make_problem(cfg: Any, n_ctx: int, action_mean: Any, action_std: Any, seed: int, device: Any) -> _Problem:
    import numpy as np
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    fs, ad = cfg.action.frameskip, cfg.action.action_dim
    context = torch.randn(n_ctx, cfg.latent_dim, generator=gen)
    goal = torch.randn(cfg.latent_dim, generator=gen)
    noise = torch.randn(n_ctx - 1, fs, ad, generator=gen).numpy()
    past_raw = np.clip(action_mean + 0.5 * action_std * noise, -1.0, 1.0).astype(np.float32)  # inside the limits
    past_norm = torch.from_numpy(((past_raw - action_mean) / action_std).reshape(n_ctx - 1, fs * ad))
    return _Problem(context.to(device), past_raw, past_norm.float().to(device), goal.to(device))


def _pick_precision(requested: str, device: Any, config: Any, make_planner: Any, problem: _Problem) -> tuple[str, dict]:
    from lewm_ros.model.precision import choose_precision

    planners = {}

    def workload(precision: str) -> None:  # a short plan, uncompiled
        if precision not in planners:
            planners[precision] = make_planner(replace(config, precision=precision, iterations=2, compile=None))
        planners[precision].reset(config.seed)
        planners[precision].plan(problem.context, problem.past_raw, problem.goal)

    return choose_precision(device, requested, workload)


def _time_ours(planner: Any, problem: _Problem, repeats: int, seed: int) -> dict[str, Any]:
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


def _flop_counter() -> Any:
    """FlopCounterMode that also counts the CPU attention kernels (absent from its registry in torch 2.x)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def forward(query, key, value, *_args, out_shape=None, **_kwargs):
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *_args, out_shape=None, **_kwargs):
        return sdpa_backward_flop_count(grad_out, query, key, value)

    mapping = {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            mapping[op] = formula
    return FlopCounterMode(display=False, custom_mapping=mapping)


def peak_fp32_gflops(device: Any, threads: int) -> dict[str, Any]:
    """A rough fp32 peak of the CPU (see PEAK_ASSUMPTION); None figures where it cannot be estimated."""
    flags: set[str] = set()
    mhz: list[float] = []
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif key == "cpu MHz":
                    try:
                        mhz.append(float(value))
                    except ValueError:
                        pass
    except OSError:
        pass
    if "avx512f" in flags:
        per_cycle, isa = 64, "avx512f"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, isa = 32, "avx2+fma"
    elif "avx" in flags:
        per_cycle, isa = 16, "avx"
    elif "sse2" in flags:
        per_cycle, isa = 8, "sse2"
    elif "asimd" in flags:
        per_cycle, isa = 16, "asimd"
    else:
        per_cycle, isa = None, None
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    cores = min(available, threads)
    ghz = max(mhz) / 1000.0 if mhz else None
    peak = cores * ghz * per_cycle if (ghz and per_cycle) else None
    info = {
        "fp32_gflops": peak, "cores": cores, "ghz": ghz, "flop_per_cycle": per_cycle, "isa": isa,
        "assumption": PEAK_ASSUMPTION,
    }  # fmt: skip
    if getattr(device, "type", "cpu") != "cpu":
        info["note"] = "CPU peak; the planner ran on " + str(device)
    return info


def _fraction(gflops: float, peak: dict[str, Any]) -> float | None:
    return gflops / peak["fp32_gflops"] if peak.get("fp32_gflops") else None


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---- the reference (stable-worldmodel 0.1.1, test-only; loaded module by module) -----------------------


@contextmanager
def _temporary_modules(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    """Make absolute imports of these names resolve to the given modules while loading, then forget them."""
    added = [name for name in modules if name not in sys.modules]
    for name in added:
        sys.modules[name] = modules[name]
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _package(name: str, folder: Path, run_init: bool) -> types.ModuleType:
    """A package named `name` over `folder`, its __init__ executed or not (then only a namespace)."""
    if name in sys.modules:
        return sys.modules[name]
    if run_init:
        spec = importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        if spec is None:
            raise ImportError(f"cannot load {folder}")
    else:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    try:
        if run_init and spec.loader is not None:
            spec.loader.exec_module(package)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return package


def _module_from_file(name: str, path: Path) -> types.ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_reference() -> dict[str, Any]:
    """The reference's LeWM (wm/lewm), its CEMSolver (solver/cem.py) and gymnasium's Box, loaded file by file.

    The stable_worldmodel package __init__ pulls in environments, datasets and more (lancedb, torchvision, ...),
    so neither it nor solver/__init__ is executed: wm/lewm is loaded as a private package, and solver/cem.py
    with its two absolute imports (stable_worldmodel.solver.utils, stable_worldmodel.protocols) pointed at
    privately loaded copies of those files while it loads. Raises ImportError with the reason when anything
    (stable-worldmodel, einops, gymnasium, loguru) is missing.
    """
    spec = importlib.util.find_spec("stable_worldmodel")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("stable-worldmodel is not installed (make test installs it --no-deps)")
    root = Path(next(iter(spec.submodule_search_locations)))
    with redirect_stdout(sys.stderr):  # gymnasium may print notices; stdout carries the JSON line
        import gymnasium.spaces

        lewm = _package(f"{_REF_PREFIX}_lewm", root / "wm" / "lewm", run_init=True)
        module = importlib.import_module(f"{_REF_PREFIX}_lewm.module")
        solver_name = f"{_REF_PREFIX}_solver"
        cem_name = f"{solver_name}.cem"
        if cem_name not in sys.modules:
            _package(solver_name, root / "solver", run_init=False)
            protocols = _module_from_file(f"{_REF_PREFIX}_protocols", root / "protocols.py")
            with _temporary_modules({"stable_worldmodel.protocols": protocols}):
                utils = importlib.import_module(f"{solver_name}.utils")
            with _temporary_modules({"stable_worldmodel.solver.utils": utils}):
                importlib.import_module(cem_name)
        cem = sys.modules[cem_name]
    try:
        from importlib.metadata import version

        ref_version = version("stable-worldmodel")
    except Exception:
        ref_version = "unknown"
    return {
        "LeWM": lewm.LeWM, "module": module, "CEMSolver": cem.CEMSolver, "Box": gymnasium.spaces.Box,
        "version": ref_version,
    }  # fmt: skip


def build_reference_model(reference: dict[str, Any], cfg: Any, seed: int) -> Any:
    """A reference LeWM at `cfg`'s sizes with random weights (AdaLN modulation N(0, 0.02), not zeros)."""
    import torch

    try:
        from transformers import ViTConfig, ViTModel
    except ImportError as err:
        raise ImportError(f"transformers (the reference's ViT encoder) is not installed: {err}") from err

    torch.manual_seed(seed)
    enc, pred, act, module = cfg.encoder, cfg.predictor, cfg.action, reference["module"]
    encoder = ViTModel(
        ViTConfig(
            image_size=enc.image_size, patch_size=enc.patch_size, hidden_size=enc.width,
            num_hidden_layers=enc.layers, num_attention_heads=enc.heads, intermediate_size=enc.mlp_dim,
            layer_norm_eps=enc.norm_eps,
        ),
        add_pooling_layer=False,
    )  # fmt: skip
    predictor = module.Predictor(
        num_frames=pred.history, depth=pred.layers, heads=pred.heads, mlp_dim=pred.mlp_dim,
        input_dim=cfg.latent_dim, hidden_dim=cfg.latent_dim, dim_head=pred.dim_head, dropout=pred.dropout,
    )  # fmt: skip
    action_encoder = module.Embedder(
        input_dim=act.block_dim, smoothed_dim=act.smoothed_dim, emb_dim=cfg.latent_dim, mlp_scale=act.mlp_scale
    )
    projector = module.MLP(enc.width, cfg.projector_hidden, cfg.latent_dim, norm_fn=torch.nn.BatchNorm1d)
    pred_proj = module.MLP(cfg.latent_dim, cfg.projector_hidden, cfg.latent_dim, norm_fn=torch.nn.BatchNorm1d)
    model = reference["LeWM"](encoder, predictor, action_encoder, projector, pred_proj)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "adaLN" in name:
                param.normal_(0.0, ADALN_STD)
    return model.eval()


@dataclass(frozen=True)
class _ReferencePlanConfig:
    """The fields of stable_worldmodel.policy.PlanConfig (policy.py imports torchvision); CEMSolver reads
    `horizon` and `action_block`."""

    horizon: int
    receding_horizon: int
    history_len: int = 1
    action_block: int = 1
    warm_start: bool = True


def _time_reference(
    reference: dict[str, Any], ours: Any, cfg: Any, problem: _Problem, args: argparse.Namespace, device: Any,
    precision: str, peak: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    import numpy as np
    import torch

    from lewm_ros.model.precision import autocast

    ref_model = reference["model"]
    n_ctx, dim = problem.context.shape
    block = cfg.action.block_dim
    horizon = args.horizon + n_ctx - 1  # executed blocks (one per older context frame) + the planned blocks
    plan_config = _ReferencePlanConfig(
        horizon=horizon, receding_horizon=1, history_len=n_ctx, action_block=cfg.action.frameskip
    )
    space = reference["Box"](low=-np.inf, high=np.inf, shape=(1, cfg.action.action_dim), dtype=np.float32)
    info = {
        "pixels": torch.zeros(1, n_ctx, 1),  # placeholder: with 'emb' present only its size(2) is read
        "emb": problem.context.unsqueeze(0),  # (1, Tc, D): what rollout caches after encoding the context
        "goal": torch.zeros(1, 1),  # placeholder: get_cost asserts the key
        "goal_emb": problem.goal.reshape(1, 1, dim),  # what get_cost caches after encoding the goal
    }  # fmt: skip
    init_action = problem.past_norm.unsqueeze(0) if n_ctx > 1 else None

    def solver(steps: int) -> Any:
        cem = reference["CEMSolver"](
            ref_model, batch_size=1, num_samples=args.samples, var_scale=1.0, n_steps=steps, topk=args.elites,
            device=device, seed=args.seed,
        )  # fmt: skip
        cem.configure(action_space=space, n_envs=1, config=plan_config)
        return cem

    def solve(cem: Any) -> tuple[float, dict]:
        printed = io.StringIO()  # solve() prints its time; stdout carries the JSON line
        with redirect_stdout(printed), autocast(device, precision):
            started = time.perf_counter()
            out = cem.solve(dict(info), init_action=None if init_action is None else init_action.clone())
            elapsed = 1000 * (time.perf_counter() - started)
        return elapsed, out

    # same weights? the reference's rollout and ours on the bench's inputs, 4 candidates
    check = None
    if reference.get("same_weights"):
        gen = torch.Generator().manual_seed(args.seed + 2)
        cand = torch.randn(1, 4, args.horizon, block, generator=gen).to(device)
        with torch.no_grad():
            mine = ours.rollout(problem.context[None], problem.past_norm[None], cand)
            seq = torch.cat([problem.past_norm[None, None].expand(1, 4, n_ctx - 1, block), cand], dim=2)
            ref_info = {"pixels": torch.zeros(1, 4, n_ctx, 1, device=device),
                        "emb": problem.context[None, None].expand(1, 4, n_ctx, dim)}
            theirs = ref_model.rollout(ref_info, seq)["predicted_emb"][:, :, n_ctx:]
        check = float((mine - theirs).abs().max())

    steps = args.reference_only_iterations or args.iterations
    _log(f"bench planner: reference CEMSolver, {args.samples} samples x {steps} iterations x {args.repeats} ...")
    solve(solver(1))  # warm-up: one 1-iteration solve at the same shapes
    timed = solver(steps)
    times, costs = [], None
    for _ in range(args.repeats):
        elapsed, out = solve(timed)
        times.append(elapsed)
        costs = out.get("costs")
    with _flop_counter() as counter:
        solve(solver(1))
    flops = int(counter.get_total_flops()) * args.iterations
    measured = statistics.median(times)
    ms_per_plan = measured * args.iterations / steps
    seconds = ms_per_plan / 1000.0
    result: dict[str, Any] = {
        "ms_per_plan": ms_per_plan,
        "ms_per_plan_measured": times,
        "iterations_timed": steps,
        "scaled": steps != args.iterations,
        "ms_per_iteration": measured / steps,
        "rollouts_per_s": args.samples * args.iterations / seconds,
        "candidate_rollouts_per_plan": args.samples * args.iterations,
        "gflop_per_plan": flops / 1e9,
        "gflop_per_iteration": flops / 1e9 / args.iterations,
        "gflops_achieved": flops / 1e9 / seconds,
        "fraction_of_peak": _fraction(flops / 1e9 / seconds, peak),
        "elite_mean_cost": costs[0] if costs else None,
        "version": reference.get("version"),
        "solver": "stable_worldmodel.solver.cem.CEMSolver (var_scale 1, topk = elites), cost "
        "stable_worldmodel.wm.lewm.LeWM.get_cost (rollout + criterion: final-latent squared distance)",
        "timed": "CEMSolver.solve(info_dict, init_action) wall time; 'emb'/'goal_emb' pre-filled with the same "
        "latents ours plans from (no encoding inside solve); one untimed 1-iteration warm-up solve",
        "sampled_blocks": horizon,
        "precision": precision,
        "weights": (
            "identical to ours (ours = import_reference(reference state dict))" if reference.get("same_weights")
            else "random at the bundle's sizes (ours: the bundle's weights)"
        ),
        "rollout_max_abs_diff": check,
        "notes": [
            f"the reference samples all {horizon} blocks (its rollout pairs a block with each of the {n_ctx} "
            f"context frames), the {n_ctx - 1} executed ones only seeding its initial mean; both sides predict "
            f"{args.horizon} latents per candidate through the same history windows",
            "no std floor and no clamping to action limits in the reference; ours floors std at 0.05 and clamps",
        ],
    }  # fmt: skip
    if result["scaled"]:
        result["notes"].append(
            f"ms_per_plan = median measured ms over {steps} iterations x {args.iterations}/{steps} "
            "(CEM repeats identical work every iteration)"
        )
    return result
