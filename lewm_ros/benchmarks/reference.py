"""The reference planner for `lewm-ros bench planner`: stable-worldmodel 0.1.1's CEM (a test-only dependency),
loaded file by file, built at our model's sizes, and timed on the same problem as ours.

It is timed the way its own WorldModelPolicy calls it: `CEMSolver.configure(...)` then
`CEMSolver.solve(info_dict, init_action)`, whose iterations call `LeWM.get_cost` -> `LeWM.rollout` +
`LeWM.criterion`. Its `get_cost`/`rollout` encode the goal and the context frames on their first call and cache
the results in the info dict ('goal_emb', 'emb') for the remaining iterations; we put the same latents ours plans
from into those keys before `solve`, so no image is encoded on either side ('pixels' and 'goal' are
placeholders: only the context length, pixels.size(2), is read). Its candidate sequences cover the Tc-1 executed
blocks plus the horizon (its rollout pairs one block with every context frame, and CEM samples all of them), so
both sides predict `horizon` latents per candidate through the same history windows; the executed blocks seed
the reference's initial mean (`init_action`).

Weights: with `--preset`, a reference LeWM (HF ViTModel encoder, the reference's predictor/embedder/MLPs) is
built at the preset's sizes with random weights (AdaLN modulation drawn N(0, 0.02) instead of zeros) and
converted with `import_reference`, so both sides run identical weights; a short rollout on the bench inputs
checks that (`rollout_max_abs_diff`). With `--bundle`, ours runs the bundle's weights and the reference random
weights at the bundle's sizes (the work per plan does not depend on the values).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import importlib.util
import io
import statistics
import sys
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lewm_ros.benchmarks.flops import flop_counter, fraction_of_peak
from lewm_ros.benchmarks.problem import Problem

ADALN_STD = 0.02  # the std AdaLN modulation weights are drawn with (zeros would make the blocks identities)
_REF_PREFIX = "_lewm_bench_reference"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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


def time_reference(
    reference: dict[str, Any], ours: Any, cfg: Any, problem: Problem, args: argparse.Namespace, device: Any,
    precision: str, peak: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The reference's ms per plan, FLOPs and notes on `problem` (its rollout checked against ours when
    both run the same weights)."""
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
    with flop_counter() as counter:
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
        "fraction_of_peak": fraction_of_peak(flops / 1e9 / seconds, peak),
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
