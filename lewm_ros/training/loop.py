"""The training engine behind `lewm-ros train` (lewm_ros/train.py holds the command line, settings.py the
settings it resolves to, prepare.py what is checked and built before the first step, timing.py the start-up
measurements): the steps, evaluations, checkpoints, signals and export of one run.

One process, or one per GPU under torchrun: DistributedSampler-dealt windows, DDP, the DDP-exact SIGReg,
rank-0 logging, checkpoints and export. On CUDA with several processes the projectors' BatchNorm becomes
SyncBatchNorm; torch has no SyncBatchNorm on the CPU, so CPU (gloo) ranks normalise over their local batch,
as plain DDP does.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import astuple, dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from lewm_ros.data.windows import EpisodeBlock
from lewm_ros.model.lewm import LeWM, count_parameters
from lewm_ros.model.precision import autocast, machine_description
from lewm_ros.model.sigreg import SIGReg
from lewm_ros.training.checkpoint import save_checkpoint
from lewm_ros.training.evaluate import evaluate_windows
from lewm_ros.training.export import write_run_bundle
from lewm_ros.training.monitor import MetricsLog, plot_curves
from lewm_ros.training.objective import Objective, prediction_loss, sigreg_loss
from lewm_ros.training.prepare import PreparedRun, prepare_run
from lewm_ros.training.settings import (
    BUDGET_RESERVE,
    EXIT_EXPORT_FAILED,
    EXIT_NONFINITE,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    Dist,
    learning_rate,
)
from lewm_ros.training.timing import measure_precision, measure_step_seconds


@dataclass
class StepFlags:
    """What the ranks share after each step, in one all_reduce (so summed over the ranks): the two losses
    for the log, and the ranks that found a non-finite loss, caught a signal, or are due a timed checkpoint."""

    pred: float
    sigreg: float
    nonfinite: float
    signalled: float
    save_due: float

    def all_reduce(self, ddp: Dist) -> StepFlags:
        """The sums over all ranks (this rank's values in a single process)."""
        values = torch.tensor(astuple(self), dtype=torch.float64)
        if ddp.active:
            dist.all_reduce(values)
        return StepFlags(*values.tolist())


def run_training(args: argparse.Namespace) -> int:
    """Checks everything that can be checked before any work or file is written, then trains."""
    run = prepare_run(args)
    options, ddp, device = run.options, run.ddp, run.device
    if ddp.active:
        # NCCL carries only CUDA tensors; the loop's small CPU collectives (stop/finite flags, RNG states for the
        # checkpoint, the step budget) go over gloo in the same process group.
        backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, init_method=options.dist_init, rank=ddp.rank, world_size=ddp.world)
    try:
        return _run(run)
    finally:
        if ddp.active and dist.is_initialized():
            dist.destroy_process_group()


def _run(run: PreparedRun) -> int:
    """The steps, evaluations, checkpoints and export of a prepared run; returns the process exit code."""
    options, settings, ddp, device, cfg, info, spec = (
        run.options, run.settings, run.ddp, run.device, run.cfg, run.info, run.spec,
    )  # fmt: skip
    train_eps, val_eps, stream, batches_per_epoch = run.train_eps, run.val_eps, run.stream, run.batches_per_epoch
    action_mean, action_std, saved_state = run.action_mean, run.action_std, run.saved_state
    out = options.out
    log = print if ddp.main else (lambda *a, **k: None)

    torch.manual_seed(settings.seed)
    model = LeWM(cfg).to(device)
    if run.init_bundle is not None:
        model.load_state_dict(run.init_bundle.model.state_dict())
    if saved_state is not None:
        model.load_state_dict(saved_state["model"])
    model.train()
    objective = Objective(model)
    sigreg = SIGReg(num_directions=settings.sigreg_directions).to(device)

    # ---- validation windows (rank 0 evaluates; fixed subset, so epochs compare)
    val_block = None
    val_windows = None
    if ddp.main and val_eps:
        val_block = EpisodeBlock(info, _fit_budget(val_eps, info, options.max_ram_bytes), spec, action_mean,
                                 action_std)  # fmt: skip
        rng = np.random.default_rng(settings.seed + 1)
        # a seeded random subset in random order: each SIGReg chunk mixes episodes, as a training batch does
        val_windows = rng.choice(len(val_block), min(options.max_val_windows, len(val_block)), replace=False)

    # ---- precision: measured once on a fresh run (on a copy, RNG untouched), kept on resume
    if saved_state is not None:
        precision, timings = saved_state["precision"], {}
    else:
        precision, timings = measure_precision(settings, objective, sigreg, stream, device, ddp, log)
    if ddp.active and device.type == "cuda":
        objective = torch.nn.SyncBatchNorm.convert_sync_batchnorm(objective)
    wrapped = (
        torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None
        ) if ddp.active else objective
    )  # fmt: skip

    decay = [p for n, p in objective.named_parameters() if p.dim() >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in objective.named_parameters() if p.dim() < 2 or "pos_embed" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    # ---- step budget
    if saved_state is not None:
        total_steps = int(saved_state["total_steps"])
        step, epoch = int(saved_state["step"]), int(saved_state["epoch"])
        batch_in_epoch = int(saved_state["batch_in_epoch"])
        elapsed_before = float(saved_state["elapsed_s"])
        optimizer.load_state_dict(saved_state["optimizer"])
        if saved_state.get("scaler"):
            scaler.load_state_dict(saved_state["scaler"])
        torch.set_rng_state(saved_state["rng"][ddp.rank])
        if device.type == "cuda" and saved_state.get("cuda_rng"):
            torch.cuda.set_rng_state(saved_state["cuda_rng"][ddp.rank], device)
        last_eval = saved_state.get("last_eval", {})
    else:
        step = epoch = batch_in_epoch = 0
        elapsed_before = 0.0
        last_eval = {}
        if settings.epochs is not None:
            total_steps = settings.epochs * batches_per_epoch
        else:
            step_s = measure_step_seconds(objective, sigreg, stream, device, precision, settings, log)
            total_steps = max(1, int(settings.minutes * 60 * BUDGET_RESERVE / step_s))
            if ddp.active:
                shared = torch.tensor([total_steps], dtype=torch.float64)
                dist.broadcast(shared, src=0)
                total_steps = int(shared.item())
            log(f"budget {settings.minutes:g} min: measured {step_s * 1000:.0f} ms/step -> {total_steps} steps "
                f"({total_steps / batches_per_epoch:.1f} epochs)")  # fmt: skip

    machine = machine_description(device)
    data_summary = {
        "files": [
            {"file": f, "episodes": sum(1 for e in info.episodes if e.file == i),
             "frames": sum(e.length for e in info.episodes if e.file == i)}
            for i, f in enumerate(settings.data)
        ],
        "train_episodes": len(train_eps), "val_episodes": len(val_eps),
        "train_frames": sum(e.length for e in train_eps), "val_frames": sum(e.length for e in val_eps),
        "train_windows": run.train_windows, "image_shape": list(info.image_shape), "control_dt": info.control_dt,
    }  # fmt: skip
    metrics = MetricsLog(out / "metrics.csv")
    if ddp.main:
        if saved_state is not None:
            # a checkpoint at an epoch's end precedes that epoch's evaluation, which is redone
            metrics.truncate_after(step, keep_val=batch_in_epoch < batches_per_epoch)
        run_info = {
            "settings": settings.compared(), "model_config": cfg.to_dict(), "parameters": count_parameters(model),
            "device": str(device), "precision": precision, "precision_ms_per_step": timings, "machine": machine,
            "tf32": device.type == "cuda",
            "data": data_summary, "data_in_memory": stream.in_memory, "data_ram_bytes": stream.resident_bytes,
            "shards": len(stream.shards), "total_steps": total_steps, "batches_per_epoch": batches_per_epoch,
            "action_normalization": {"mean": np.asarray(action_mean).tolist(), "std": np.asarray(action_std).tolist()},
        }  # fmt: skip
        (out / "run.json").write_text(json.dumps(run_info, indent=2) + "\n")
        where = "in RAM" if stream.in_memory else f"in {len(stream.shards)} shards read one at a time"
        log(f"data: {info.frames} frames in {len(info.episodes)} episodes from {len(settings.data)} file(s); "
            f"train {len(train_eps)} episodes ({run.train_windows} windows), val {len(val_eps)} episodes; "
            f"pixels {where} ({stream.resident_bytes / 2**20:.1f} MiB resident)")  # fmt: skip
        log(f"model: {count_parameters(model) / 1e6:.2f}M parameters ({settings.preset or 'from --init'}); "
            f"device {device} ({machine.get('gpu') or machine['cpu_model']}), precision {precision}"
            + (f" (measured ms/step {', '.join(f'{k} {v:.0f}' for k, v in timings.items())})" if timings else "")
            + f"; {ddp.world} process(es), batch {settings.batch_size}")  # fmt: skip
        if saved_state is not None:
            log(f"resumed at step {step} (epoch {epoch}, batch {batch_in_epoch} of {batches_per_epoch})")

    # ---- signals: finish the step, checkpoint, exit
    stop_signal: list[int] = []
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, lambda number, frame: stop_signal.append(number))

    def gather_rng() -> tuple[list, list]:
        state = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        if not ddp.active:
            return [state], ([cuda_state] if cuda_state is not None else [])
        states = [torch.empty_like(state) for _ in range(ddp.world)]
        dist.all_gather(states, state)
        cuda_states: list = []
        if cuda_state is not None:
            cuda_states = [torch.empty_like(cuda_state) for _ in range(ddp.world)]
            dist.all_gather(cuda_states, cuda_state.cpu())
        return states, cuda_states

    def checkpoint(epoch_now: int, batch_now: int) -> None:
        rng, cuda_rng = gather_rng()
        if ddp.main:
            save_checkpoint(out, {
                "settings": settings.compared(), "model_config": cfg.to_dict(), "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "rng": rng, "cuda_rng": cuda_rng, "step": step, "epoch": epoch_now, "batch_in_epoch": batch_now,
                "total_steps": total_steps, "elapsed_s": elapsed_before + (time.monotonic() - started),
                "precision": precision, "action_mean": np.asarray(action_mean).tolist(),
                "action_std": np.asarray(action_std).tolist(), "data_summary": data_summary, "last_eval": last_eval,
            })  # fmt: skip
        if ddp.active:
            dist.barrier()

    def run_eval(epoch_now: int) -> None:
        nonlocal last_eval
        if ddp.main and val_block is not None:
            result = evaluate_windows(model, val_block, val_windows, sigreg, device, precision, stream.batch_size)
            last_eval = result
            metrics.append({
                "step": step, "epoch": epoch_now, "kind": "val",
                "loss": result["pred"] + settings.sigreg_weight * result["sigreg"],
                "pred": result["pred"], "sigreg": result["sigreg"], "lr": optimizer.param_groups[0]["lr"],
                "mean_std": result["health"]["mean_std"], "eff_rank": result["health"]["eff_rank"],
                "elapsed_s": elapsed_before + time.monotonic() - started,
            })  # fmt: skip
            tqdm.write(
                f"epoch {epoch_now}: val prediction {result['pred']:.4g}  SIGReg {result['sigreg']:.4g}  "
                f"latent std {result['health']['mean_std']:.3f}  effective rank {result['health']['eff_rank']:.1f}"
                f"/{cfg.latent_dim}  surprise p50/p99 {result['surprise']['p50']:.3g}/{result['surprise']['p99']:.3g}"
            )  # fmt: skip
            if result["collapse_warning"]:
                tqdm.write(result["collapse_warning"], file=sys.stderr)
            plot_curves(metrics, out / "curves.png")
        model.train()
        if ddp.active:
            dist.barrier()

    started = time.monotonic()
    last_checkpoint = time.monotonic()
    deadline = settings.minutes * 60 if settings.minutes else None
    bar = tqdm(total=total_steps, initial=step, disable=not ddp.main or options.no_progress, unit="step",
               dynamic_ncols=True, file=sys.stderr)  # fmt: skip
    window_sums = np.zeros(3)  # pred, sigreg, steps since the last log row
    window_started = time.monotonic()
    exit_code = 0
    reason = "finished"
    try:
        # also entered when resuming from a checkpoint taken at an epoch's last step (periodic, --stop-after
        # or a signal) before that epoch's evaluation: the evaluation and its checkpoint still have to run
        while (step < total_steps or batch_in_epoch >= batches_per_epoch) and reason == "finished":
            for frames, blocks in stream.epoch(epoch, skip=batch_in_epoch, workers=options.workers):
                lr = learning_rate(step, total_steps, settings.lr, settings.warmup_fraction)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                frames_t = torch.from_numpy(frames).to(device, non_blocking=True)
                blocks_t = torch.from_numpy(blocks).to(device, non_blocking=True)
                with autocast(device, precision):
                    z, pred = wrapped(frames_t, blocks_t)
                pred_loss = prediction_loss(z, pred)
                sig_loss = sigreg_loss(sigreg, z)
                loss = pred_loss + settings.sigreg_weight * sig_loss
                finite = bool(torch.isfinite(loss))
                if ddp.active:  # every rank must agree before backward: DDP's gradient all-reduce needs all of them
                    bad = torch.tensor([0.0 if finite else 1.0], dtype=torch.float64)
                    dist.all_reduce(bad)
                    finite = bad.item() == 0
                optimizer.zero_grad(set_to_none=True)
                if finite:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_(objective.parameters(), settings.grad_clip)
                    finite = bool(torch.isfinite(grad_norm)) or scaler.is_enabled()
                save_due = ddp.main and (time.monotonic() - last_checkpoint) >= options.checkpoint_minutes * 60
                shared = StepFlags(
                    pred=pred_loss.item() if finite else 0.0, sigreg=sig_loss.item() if finite else 0.0,
                    nonfinite=float(not finite), signalled=float(bool(stop_signal)), save_due=float(save_due),
                ).all_reduce(ddp)  # fmt: skip
                if shared.nonfinite > 0:
                    reason = "nonfinite"
                    kept = (
                        f"The last good checkpoint ({out / 'checkpoint.pt'}) is kept (--resume retries from it "
                        "with the same settings)" if (out / "checkpoint.pt").is_file() else "No checkpoint was written"
                    )  # fmt: skip
                    log(
                        f"\nerror: non-finite loss or gradient at step {step} (prediction {pred_loss.item():.4g}, "
                        f"SIGReg {sig_loss.item():.4g}); stopped without saving this step. {kept}; to lower --lr "
                        "or use --precision fp32, start a new run.",
                        file=sys.stderr,
                    )
                    exit_code = EXIT_NONFINITE
                    break
                scaler.step(optimizer)
                scaler.update()
                step += 1
                batch_in_epoch += 1
                window_sums += [shared.pred / ddp.world, shared.sigreg / ddp.world, 1]
                if ddp.main:
                    bar.update(1)
                if step % options.log_every == 0 or step == total_steps:
                    seconds = time.monotonic() - window_started
                    sps = window_sums[2] * settings.batch_size / max(seconds, 1e-9)
                    pred_avg, sig_avg = window_sums[0] / window_sums[2], window_sums[1] / window_sums[2]
                    bar.set_postfix(pred=f"{pred_avg:.4g}", sigreg=f"{sig_avg:.3g}", sps=f"{sps:.0f}", refresh=False)
                    if ddp.main:
                        metrics.append({
                            "step": step, "epoch": epoch, "kind": "train", "pred": pred_avg, "sigreg": sig_avg,
                            "loss": pred_avg + settings.sigreg_weight * sig_avg, "lr": lr, "samples_per_s": sps,
                            "elapsed_s": elapsed_before + time.monotonic() - started,
                        })  # fmt: skip
                    window_sums[:] = 0
                    window_started = time.monotonic()
                over_time = deadline is not None and elapsed_before + time.monotonic() - started >= deadline
                stop_now = shared.signalled > 0 or (options.stop_after is not None and step >= options.stop_after)
                if stop_now or shared.save_due > 0:
                    checkpoint(epoch, batch_in_epoch)
                    last_checkpoint = time.monotonic()
                if stop_now:
                    reason = "signal" if shared.signalled > 0 else "stop-after"
                    break
                if step >= total_steps or over_time:
                    if over_time and step < total_steps:
                        log(f"\nnote: the --minutes budget ran out at step {step} of {total_steps}")
                        total_steps = step
                    break
            if reason != "finished":
                break
            if batch_in_epoch >= batches_per_epoch or step >= total_steps:
                run_eval(epoch)
                if batch_in_epoch >= batches_per_epoch:
                    epoch, batch_in_epoch = epoch + 1, 0
                checkpoint(epoch, batch_in_epoch)
                last_checkpoint = time.monotonic()
    finally:
        bar.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    if reason == "signal":
        name = "SIGINT" if stop_signal[0] == signal.SIGINT else "SIGTERM"
        log(f"\n{name}: checkpoint saved at step {step}; continue with: lewm-ros train --out {out} --resume",
            file=sys.stderr)  # fmt: skip
        return EXIT_SIGINT if stop_signal[0] == signal.SIGINT else EXIT_SIGTERM
    if reason == "stop-after":
        log(f"stopped at step {step} (--stop-after); continue with: lewm-ros train --out {out} --resume")
        return 0
    if reason == "nonfinite":
        return exit_code
    if ddp.main:
        try:
            bundle_dir = write_run_bundle(out / "bundle", model, action_mean, action_std, data_summary, last_eval, {
                "steps": step, "epochs": step / batches_per_epoch, "precision": precision, "device": str(device),
                "machine": machine, "world_size": ddp.world, "seconds": elapsed_before + time.monotonic() - started,
                "settings": settings.compared(),
            })  # fmt: skip
        except Exception as err:  # the trained weights are safe in the checkpoint: say how to export them
            print(f"error: writing the bundle failed ({type(err).__name__}: {err}); the final checkpoint is saved: "
                  f"run `lewm-ros export {out} --out {out / 'bundle'}`", file=sys.stderr)  # fmt: skip
            if ddp.active:
                dist.barrier()
            return EXIT_EXPORT_FAILED
        seconds = elapsed_before + time.monotonic() - started
        log(f"done: {step} steps in {seconds / 60:.1f} min ({step * settings.batch_size / max(seconds, 1e-9):.0f} "
            f"windows/s overall); bundle written to {bundle_dir}")  # fmt: skip
    if ddp.active:
        dist.barrier()
    return 0


def _fit_budget(episodes: list, info: Any, budget: int) -> list:
    kept, used = [], 0
    for ref in episodes:
        size = ref.length * info.frame_bytes()
        if kept and used + size > budget:
            break
        kept.append(ref)
        used += size
    return kept
