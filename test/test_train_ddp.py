"""Distributed training on the CPU: 2 real processes, gloo on loopback, a file rendezvous (never a TCP store).

(a) the real trainer under 2 ranks: both finish, rank 0 writes the run, the ranks' weights agree;
(b) loss and gradient parity of one DDP step with a single-process computation of the same global batch.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lewm_ros.data.windows import WindowSpec, WindowStream, inspect_files, split_episodes
from lewm_ros.envs.collect import CollectionSpec, collect
from lewm_ros.envs.reach_env import ReachConfig
from lewm_ros.model.bundle import load_bundle
from lewm_ros.model.config import preset
from lewm_ros.model.lewm import LeWM
from lewm_ros.model.sigreg import SIGReg
from lewm_ros.training.checkpoint import load_checkpoint
from lewm_ros.training.objective import Objective, prediction_loss, sigreg_loss

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2
PROCESS_TIMEOUT = 300  # generous per process; the whole file takes well under a minute


@pytest.fixture(scope="module")
def episodes(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ddp_data") / "reach.h5"
    spec = CollectionSpec(scene="reach2d", episodes=8, steps=30, policy="mixed", seed=11,
                          env=ReachConfig(image_size=64))  # fmt: skip
    collect(spec, path, mode="create", workers=1)
    return path


def dist_env(rank: int) -> dict[str, str]:
    """torchrun's variables, gloo pinned to loopback, one thread per process (2 processes on 2 cores)."""
    return {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(rank),
            "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}  # fmt: skip


def run_ranks(commands: list[list[str]]) -> list[str]:
    """Start one process per rank, wait for all; every rank must exit 0. Returns their outputs."""
    procs = [
        subprocess.Popen(
            command, env=dist_env(rank), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for rank, command in enumerate(commands)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=PROCESS_TIMEOUT)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, (proc, output) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"rank {rank} exited {proc.returncode}:\n{output}"
    return outputs


# ------------------------------------------------------------------------------------------- sharding


def test_ranks_get_disjoint_equal_shares_in_a_seeded_order(episodes):
    info = inspect_files([episodes])
    cfg = preset("tiny")
    spec = WindowSpec(cfg.predictor.history, cfg.action.frameskip)
    train_eps, _ = split_episodes(info, spec, 0.1, 0)
    zeros, ones = np.zeros(2, np.float32), np.ones(2, np.float32)

    def stream(rank: int, budget: int) -> WindowStream:
        return WindowStream(info, train_eps, spec, zeros, ones, batch_size=4, budget_bytes=budget, seed=0,
                            rank=rank, world=WORLD)  # fmt: skip

    frame = info.frame_bytes()
    for budget in (2**30, 3 * train_eps[0].length * frame):  # all in RAM; shards of 3 episodes
        ranks = [stream(rank, budget) for rank in range(WORLD)]
        assert len(ranks[0].shards) == (1 if budget == 2**30 else -(-len(train_eps) // 3))
        for epoch in (0, 1):
            plans = [r.batch_plan(epoch) for r in ranks]
            assert len(plans[0]) == len(plans[1]) == ranks[0].batches_per_epoch() > 0
            seen = [{(shard, int(w)) for shard, windows in plan for w in windows} for plan in plans]
            assert seen[0].isdisjoint(seen[1])
            assert len(seen[0]) == len(seen[1]) == 4 * len(plans[0])
            # the ranks visit the shards in the same order, so they load the same shard at the same time
            assert [shard for shard, _ in plans[0]] == [shard for shard, _ in plans[1]]
            assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(plans[0], ranks[0].batch_plan(epoch),
                                                                      strict=True))  # fmt: skip
        assert not all(np.array_equal(a, b) for (_, a), (_, b) in zip(ranks[0].batch_plan(0), ranks[0].batch_plan(1),
                                                                      strict=True))  # fmt: skip


# ------------------------------------------------------------------------------------------- (a) the trainer

# `python -m lewm_ros.train` via runpy, recording the training model so the ranks' final weights can be
# compared (only rank 0 writes files).
TRAINER = """
import runpy, sys
import torch
from lewm_ros.model import lewm

models = []
original = lewm.LeWM.__init__

def recording(self, cfg):
    original(self, cfg)
    models.append(self)

lewm.LeWM.__init__ = recording
dump = sys.argv.pop(1)
sys.argv[0] = "lewm_ros.train"
code = 0
try:
    runpy.run_module("lewm_ros.train", run_name="__main__", alter_sys=True)
except SystemExit as stop:
    code = stop.code
torch.save({name: p.detach().clone() for name, p in models[0].named_parameters()}, dump)
sys.exit(code)
"""


def test_trainer_on_two_processes(episodes, tmp_path):
    out = tmp_path / "run"
    args = ["--data", str(episodes), "--preset", "tiny", "--out", str(out), "--epochs", "1", "--batch-size", "8",
            "--sigreg-directions", "64", "--no-progress", "--threads", "1", "--device", "cpu",
            "--dist-init", f"file://{tmp_path / 'rendezvous'}"]  # fmt: skip
    dumps = [tmp_path / f"rank{rank}.pt" for rank in range(WORLD)]
    outputs = run_ranks([[sys.executable, "-c", TRAINER, str(dumps[rank]), *args] for rank in range(WORLD)])

    assert f"{WORLD} process(es)" in outputs[0] and "done:" in outputs[0]
    assert "done:" not in outputs[1] and "epoch 0" not in outputs[1]  # rank 1 neither logs nor evaluates

    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["world_size"] == WORLD
    assert run["precision"] in ("fp32", "bf16")  # auto: measured, rank 0's choice broadcast
    local_batch = 8 // WORLD
    assert run["batches_per_epoch"] == run["data"]["train_windows"] // WORLD // local_batch
    state = load_checkpoint(out)
    assert state["step"] == state["total_steps"] == run["batches_per_epoch"]
    assert len(state["rng"]) == WORLD  # every rank's RNG state, for an exact resume
    assert [r["kind"] for r in json_rows(out)].count("val") == 1
    bundle = load_bundle(out / "bundle")
    assert bundle.meta["training"]["world_size"] == WORLD

    ranks = [torch.load(dump, weights_only=True) for dump in dumps]
    torch.manual_seed(0)  # the trainer's init (--seed 0)
    initial = dict(LeWM(preset("tiny")).named_parameters())
    bundle_params = dict(bundle.model.named_parameters())
    assert set(ranks[0]) == set(ranks[1]) == set(bundle_params)
    for name, value in ranks[0].items():
        assert torch.equal(value, ranks[1][name]), f"ranks out of sync: {name}"
        assert torch.equal(value, bundle_params[name]), f"bundle is not rank 0's model: {name}"
    assert any(not torch.equal(ranks[0][n], initial[n]) for n in ranks[0]), "training changed nothing"


def json_rows(out: Path) -> list[dict[str, str]]:
    import csv

    with (out / "metrics.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


# ------------------------------------------------------------------------------------------- (b) parity

DIRECTIONS, SIGREG_SEED, WEIGHT = 64, 7, 0.1


def model() -> LeWM:
    """The same model on every rank and in the reference (its source is sent to the workers). The init is
    perturbed: at the AdaLN-zero init the predictor's blocks and the action embedder get exactly zero
    gradient, which would leave them untested."""
    torch.manual_seed(0)
    lewm = LeWM(preset("tiny"))
    with torch.no_grad():
        for parameter in lewm.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return lewm


GRAD_RTOL = 2e-5  # of each tensor's largest gradient: float32 noise is a few 1e-6 (summation order differs)

PARITY_WORKER = f"""
import os, sys
import torch
import torch.distributed as dist
from lewm_ros.model.config import preset
from lewm_ros.model.lewm import LeWM
from lewm_ros.model.sigreg import SIGReg
from lewm_ros.training.objective import Objective, prediction_loss, sigreg_loss

{inspect.getsource(model)}

rank, world, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + os.path.join(out_dir, "rendezvous"), rank=rank,
                        world_size=world)
try:
    batch = torch.load(os.path.join(out_dir, "batch.pt"))
    objective = Objective(model()).train()
    ddp = torch.nn.parallel.DistributedDataParallel(objective)
    frames, blocks = batch["frames"].chunk(world)[rank], batch["blocks"].chunk(world)[rank]
    z, pred = ddp(frames, blocks)
    pred_loss = prediction_loss(z, pred)
    torch.manual_seed({SIGREG_SEED} if rank == 0 else 1000 + rank)  # directions must come from rank 0
    sig_loss = sigreg_loss(SIGReg(num_directions={DIRECTIONS}), z)
    loss = pred_loss + {WEIGHT} * sig_loss
    loss.backward()
    grads = {{name: p.grad for name, p in objective.model.named_parameters()}}
    torch.save({{"loss": loss.detach(), "pred": pred_loss.detach(), "sigreg": sig_loss.detach(), "grads": grads}},
               os.path.join(out_dir, f"rank{{rank}}.pt"))
    dist.barrier()  # no rank tears gloo down while its peer still talks to it
finally:
    dist.destroy_process_group()
"""


def reference(frames: torch.Tensor, blocks: torch.Tensor, bn_per_half: bool) -> dict:
    """One process, the same global batch. Under CPU DDP each rank's BatchNorm normalises its own half
    (SyncBatchNorm needs CUDA), so the encoder/predictor run per half; SIGReg sees all latents at once."""
    objective = Objective(model()).train()
    if bn_per_half:
        halves = [objective(f, b) for f, b in zip(frames.chunk(WORLD), blocks.chunk(WORLD), strict=True)]
    else:
        z_all, pred_all = objective(frames, blocks)
        halves = list(zip(z_all.chunk(WORLD), pred_all.chunk(WORLD), strict=True))
    preds = [prediction_loss(z, p) for z, p in halves]
    torch.manual_seed(SIGREG_SEED)
    sig = sigreg_loss(SIGReg(num_directions=DIRECTIONS), torch.cat([z for z, _ in halves]))
    loss = sum(preds) / WORLD + WEIGHT * sig
    loss.backward()
    grads = {name: p.grad.clone() for name, p in objective.model.named_parameters()}
    return {"loss": loss.detach(), "preds": [p.detach() for p in preds], "sigreg": sig.detach(), "grads": grads}


def test_ddp_step_matches_single_process_on_the_global_batch(tmp_path):
    generator = torch.Generator().manual_seed(3)
    frames = torch.randint(0, 256, (8, 4, 64, 64, 3), dtype=torch.uint8, generator=generator)
    blocks = torch.randn(8, 3, 10, generator=generator)
    torch.save({"frames": frames, "blocks": blocks}, tmp_path / "batch.pt")
    run_ranks([[sys.executable, "-c", PARITY_WORKER, str(rank), str(WORLD), str(tmp_path)] for rank in range(WORLD)])
    ranks = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks' kernels (OMP_NUM_THREADS=1), so only the reduction order differs
    try:
        expected = reference(frames, blocks, bn_per_half=True)
        full_batch = reference(frames, blocks, bn_per_half=False)
    finally:
        torch.set_num_threads(threads)
    for rank, result in enumerate(ranks):
        torch.testing.assert_close(result["pred"], expected["preds"][rank], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(result["sigreg"], expected["sigreg"], rtol=1e-5, atol=1e-7)  # global statistic
    torch.testing.assert_close(sum(r["loss"] for r in ranks) / WORLD, expected["loss"], rtol=1e-5, atol=1e-7)
    assert set(ranks[0]["grads"]) == set(expected["grads"])
    largest = max(grad.abs().max().item() for grad in expected["grads"].values())
    for name, grad in expected["grads"].items():
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), f"DDP left {name} unsynchronised"
        error = relative_error(ranks[0]["grads"][name], grad, largest)
        assert error <= GRAD_RTOL, f"{name}: gradient differs by {error:.3g} of its scale"
    zero_at_init = ("dynamics.action_embedder.", "dynamics.predictor.blocks.")  # AdaLN-zero, before perturbing
    exercised = [n for n in expected["grads"] if n.startswith(zero_at_init)]
    assert exercised and all(expected["grads"][n].abs().max() > 1e-5 * largest for n in exercised)  # own scale

    # guard: the comparison tells the BatchNorm semantics apart (one forward over the global batch differs)
    differences = [relative_error(full_batch["grads"][n], g, largest) for n, g in expected["grads"].items()]
    assert max(differences) > 100 * GRAD_RTOL


def relative_error(actual: torch.Tensor, expected: torch.Tensor, largest: float) -> float:
    """Largest deviation relative to the tensor's largest gradient. A few gradients are zero in exact
    arithmetic (a bias right before a BatchNorm or LayerNorm: ~1e-7 of the model's largest, float32 noise
    only); those are measured against the model's largest gradient instead."""
    scale = expected.abs().max().item()
    return (actual - expected).abs().max().item() / (scale if scale > 1e-5 * largest else largest)
