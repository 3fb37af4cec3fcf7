"""Start-up measurements of a training run, on a copy of the model with the RNG state saved and restored (so
training is unaffected): the precision to train in when --precision is auto, and the seconds per optimiser step
that turn --minutes into a step count."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from lewm_ros.model.precision import autocast, check_precision, choose_precision
from lewm_ros.training.objective import prediction_loss, sigreg_loss
from lewm_ros.training.settings import Dist, Settings, TrainError


def _train_step_workload(objective, sigreg, frames, blocks, device, precision, settings) -> None:
    with autocast(device, precision):
        z, pred = objective(frames, blocks)
    loss = prediction_loss(z, pred) + settings.sigreg_weight * sigreg_loss(sigreg, z)
    loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _sample_batch(stream, device):
    frames, blocks = stream.first_batch()
    return torch.from_numpy(frames).to(device), torch.from_numpy(blocks).to(device)


def measure_precision(
    settings: Settings, objective: torch.nn.Module, sigreg: torch.nn.Module, stream: Any, device: torch.device,
    ddp: Dist, log: Callable[..., None] = print,
) -> tuple[str, dict[str, float]]:
    """The precision to train in and the ms per step measured for each (none when --precision is given).

    Measured on a copy of the model with the RNG state saved and restored, so training is unaffected;
    a progress line per measured step through `log` (minutes on a loaded CPU must not look like a hang)."""
    if settings.precision != "auto":
        try:
            check_precision(device, settings.precision)
        except ValueError as err:
            raise TrainError(str(err)) from err
        return settings.precision, {}
    rng = _rng_state(device)
    probe = copy.deepcopy(objective)
    frames, blocks = _sample_batch(stream, device)

    def workload(precision: str) -> None:
        probe.zero_grad(set_to_none=True)
        _train_step_workload(probe, sigreg, frames, blocks, device, precision, settings)

    chosen, timings = choose_precision(device, "auto", workload, repeats=2,
                                       progress=lambda line: log(f"start-up: {line}", flush=True))  # fmt: skip
    _set_rng_state(device, rng)
    if ddp.active:
        shared = [chosen]
        dist.broadcast_object_list(shared, src=0)
        chosen = shared[0]
    return chosen, timings


def measure_step_seconds(
    objective: torch.nn.Module, sigreg: torch.nn.Module, stream: Any, device: torch.device, precision: str,
    settings: Settings, log: Callable[..., None] = print,
) -> float:
    """Median time of a full optimiser step on a copy (RNG restored): turns --minutes into a step count;
    a progress line per step through `log`."""
    rng = _rng_state(device)
    probe = copy.deepcopy(objective)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=0.0)
    frames, blocks = _sample_batch(stream, device)
    times = []
    for _ in range(4):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        _train_step_workload(probe, sigreg, frames, blocks, device, precision, settings)
        optimizer.step()
        times.append(time.perf_counter() - started)
        log(f"start-up: timing a training step for --minutes: {len(times)}/4, {times[-1]:.1f} s", flush=True)
    _set_rng_state(device, rng)
    return float(sorted(times[1:])[len(times[1:]) // 2])


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    """CPU and (on CUDA) device RNG states: dropout and SIGReg directions draw from the device's generator."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(device: torch.device, state: tuple[Tensor, Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)
