"""What doctor measures on the device: the deployed TorchScript encoder (output, error against fp32, encode
latency) and the agent's planner (plan latency, judged against the deadline, the overrun limit and the control
period)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from lewm_ros.control.stats import percentile
from lewm_ros.doctor.report import FAIL, PASS, SKIP, WARN, Check, Context, one_line


def sync_device(device: Any) -> None:
    """Wait for the device's queued work, so that a timer around a call measures the call."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_encoder(context: Context) -> list[Check]:
    import torch

    from lewm_ros.model.precision import cast_encoder

    if context.bundle is None or context.device is None:
        return [Check("encoder", SKIP, "needs a loaded bundle and a usable device"),
                Check("encode latency", SKIP, "needs the encoder")]  # fmt: skip
    device, bundle = context.device, context.bundle
    try:
        fp32 = bundle.load_torchscript("encoder", device)
        # A second copy to cast: TorchScript's .to() converts in place. Like the agent: fp32 on the CPU.
        encoder, precision = cast_encoder(bundle.load_torchscript("encoder", device), device, context.precision)
    except Exception as err:  # BundleError; a TorchScript archive from a newer torch than this one
        return [Check("encoder", FAIL, one_line(err), "re-save the bundle's TorchScript files with this machine's "
                      "torch (docs/jetson.md, 'Copying the bundle back')"),
                Check("encode latency", SKIP, "needs the encoder")]  # fmt: skip
    context.encoder_precision = precision
    size = bundle.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8, generator=generator).to(device)
    with torch.inference_mode():
        latent = encoder(images).float()
        reference = fp32(images).float()
    dim = bundle.config.latent_dim
    if tuple(latent.shape) != (1, dim) or not bool(torch.isfinite(latent).all()):
        return [Check("encoder", FAIL, f"encoder.ts on {device.type} at {precision}: output {tuple(latent.shape)}, "
                      f"finite {bool(torch.isfinite(latent).all())}; expected finite (1, {dim})",
                      "re-export the bundle (lewm-ros export RUN --out BUNDLE) or use --precision fp32"),
                Check("encode latency", SKIP, "needs a working encoder")]  # fmt: skip
    error = float((latent - reference).norm() / reference.norm().clamp_min(1e-12))
    detail = f"encoder.ts on {device.type} at {precision}: latent (1, {dim}) finite"
    status, fix = PASS, ""
    if precision != "fp32":
        detail += f", relative error vs fp32 {100 * error:.2f}%"
        if error > 0.05:
            status, fix = WARN, "reduced precision changes the latents noticeably: compare success, or use fp32"
    checks = [Check("encoder", status, detail, fix)]
    context.encoder = encoder
    times = []
    with torch.inference_mode():
        for i in range(55):
            sync_device(device)
            started = time.perf_counter()
            encoder(images)
            sync_device(device)
            if i >= 5:  # the first calls include TorchScript's profiling runs
                times.append(1000 * (time.perf_counter() - started))
    p50, p95 = percentile(times, 50), percentile(times, 95)
    context.encode_ms = p50
    period_ms = 1000.0 / context.settings.control_rate_hz
    detail = f"p50 {p50:.2f} ms, p95 {p95:.2f} ms (one {size}x{size} frame, {len(times)} runs)"
    if p50 > period_ms / 2:  # the median: a short run's p95 is mostly other processes' noise
        checks.append(Check("encode latency", WARN, f"{detail}: over half the {period_ms:.0f} ms control period",
                            "use the GPU, fp16, or the TensorRT engine (docs/jetson.md)"))  # fmt: skip
    else:
        checks.append(Check("encode latency", PASS, detail))
    return checks


def check_plan(context: Context) -> Check:
    import torch

    from lewm_ros.control.assemble import assemble

    if context.bundle is None or context.encoder is None:
        return Check("plan latency", SKIP, "needs a loaded bundle and a working encoder")
    s, device, bundle = context.settings, context.device, context.bundle
    # The controller the agent would build (same assembly, warm-up included), planning full searches: the
    # deadline and the sample budget are judged afterwards from the measured iteration time.
    spec = replace(s.controller_spec(), planner=replace(s.planner_config(), deadline_ms=None), roadmap="",
                   device=str(device))  # fmt: skip
    threads = torch.get_num_threads()
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fallbacks are reported in the line below, from planner.notes
            planner = assemble(spec).planner
        history = bundle.config.predictor.history
        size = bundle.image_size
        generator = torch.Generator().manual_seed(1)
        frames = torch.randint(0, 256, (history + 1, size, size, 3), dtype=torch.uint8, generator=generator)
        with torch.inference_mode():
            latents = context.encoder(frames.to(device)).float()
        context_latents, goal = latents[:history].clone(), latents[history].clone()
        past = torch.zeros(history - 1, bundle.config.action.frameskip, bundle.config.action.action_dim)
        warm, per_iteration = [], []
        for i in range(context.args.plans + 1):
            sync_device(device)
            started = time.perf_counter()
            result = planner.plan(context_latents, past, goal)
            sync_device(device)
            elapsed = 1000 * (time.perf_counter() - started)
            planner.advance(s.receding_horizon)
            if i > 0:  # plan 0 is cold (no warm start yet)
                warm.append(elapsed)
                per_iteration.append(elapsed / max(result.iterations, 1))
    finally:
        torch.set_num_threads(threads)
    return judge_plan(context, planner, warm, per_iteration, result.iterations)


def judge_plan(context: Context, planner: Any, warm: list[float], per_iteration: list[float],
                iterations: int) -> Check:  # fmt: skip
    """Set the measured plan times against what the agent allows: deadline, overrun limit, control period."""
    s = context.settings
    p50, p95 = percentile(warm, 50), percentile(warm, 95)
    iteration_p50, iteration_p95 = percentile(per_iteration, 50), percentile(per_iteration, 95)
    encode = context.encode_ms or 0.0
    period = 1000.0 / s.control_rate_hz
    compiled = planner.compile_mode or "eager"
    detail = (f"warm {s.planner} {s.samples}x{iterations} at {planner.config.precision}, {compiled}: p50 {p50:.1f} ms, "
              f"p95 {p95:.1f} ms, {iteration_p50:.1f} ms per iteration, {len(warm)} plans")  # fmt: skip
    notes = "; ".join(planner.notes)
    if notes:
        detail += f"; fallback: {notes}"
    deadline = s.deadline_ms or None
    # With a deadline the planner stops before an iteration that would not fit: at most deadline + one iteration.
    # Judged on medians (what most control periods see); the p95 of a short run on a busy machine is mostly noise.
    typical = min(p50, deadline + iteration_p50) if deadline else p50
    worst = min(p95, deadline + iteration_p95) if deadline else p95
    smaller = "fewer samples or iterations, fp16 on the GPU, compile reduce-overhead (CUDA graphs)"
    adaptive = deadline and s.adaptive_samples and not s.graph and s.planner != "grad"
    if adaptive:
        from lewm_ros.planning.core import MIN_ADAPTIVE_SAMPLES

        # The agent sizes its samples to this machine (planning/budget.py): judge the plans it will really make.
        per_candidate = iteration_p50 / max(s.samples, 1)
        warm_iterations = s.warm_iterations or s.iterations
        floor = min(s.samples, max(2 * s.elites, MIN_ADAPTIVE_SAMPLES))
        chosen = max(floor, min(s.samples, int(deadline / warm_iterations / max(per_candidate, 1e-9))))
        iteration_p50, iteration_p95 = per_candidate * chosen, iteration_p95 / max(s.samples, 1) * chosen
        detail += f"; adaptive_samples: ~{chosen} of {s.samples} samples here"
        p50, p95 = max(min(p50, deadline), iteration_p50), max(min(p95, deadline), iteration_p95)
        if encode + iteration_p50 > s.plan_overrun_ms:
            return Check("plan latency", FAIL, f"{detail}: even {chosen} samples take {iteration_p50:.0f} ms per "
                         f"iteration: encode + one iteration exceed plan_overrun_ms {s.plan_overrun_ms:g}, so "
                         "every plan would be discarded", f"{smaller}, or fewer elites (the floor is 2 x elites)")
        if iteration_p50 > deadline:
            return Check("plan latency", WARN, f"{detail}: even {chosen} samples take {iteration_p50:.0f} ms per "
                         f"iteration, over deadline_ms {deadline:g}: every plan runs one short iteration",
                         f"{smaller}, or a larger deadline_ms")  # fmt: skip
    elif deadline and iteration_p50 > deadline:
        return Check("plan latency", FAIL, f"{detail}: not one iteration fits deadline_ms {deadline:g}, so plans "
                     "are mostly the warm-start mean", f"{smaller}, adaptive_samples, or a larger deadline_ms")
    if encode + typical > s.plan_overrun_ms:
        return Check("plan latency", FAIL, f"{detail}: encode + plan {encode + typical:.0f} ms > plan_overrun_ms "
                     f"{s.plan_overrun_ms:g}: the agent would discard plans and send the safe command",
                     f"{smaller}, or a deadline_ms")  # fmt: skip
    if encode + worst > s.plan_overrun_ms:
        return Check("plan latency", WARN, f"{detail}: at p95, encode + plan {encode + worst:.0f} ms > "
                     f"plan_overrun_ms {s.plan_overrun_ms:g}: some plans would be discarded (safe command)",
                     f"{smaller}; keep other processes off the agent's cores")  # fmt: skip
    if deadline and p50 > deadline:
        fit = max(1, int(deadline // max(iteration_p50, 1e-6)))
        return Check("plan latency", WARN, f"{detail}: deadline_ms {deadline:g} cuts warm plans to ~{fit} of "
                     f"{iterations} iterations", f"{smaller}, or accept shorter searches")  # fmt: skip
    if encode + typical > period:
        return Check("plan latency", WARN, f"{detail}: encode + plan {encode + typical:.0f} ms exceed the "
                     f"{period:.0f} ms control period: commands arrive late", smaller)  # fmt: skip
    if notes:
        return Check("plan latency", WARN, detail, "the requested precision/compile mode cannot run here: see above")
    return Check("plan latency", PASS, detail)
