"""SIGReg: separates Gaussian from collapsed latents, is differentiable, and is exact under DDP (gloo)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lewm_ros.model.sigreg import SIGReg

N, D = 512, 64


def stat(x: torch.Tensor, seed: int = 0) -> float:
    return SIGReg(num_directions=256)(x, torch.Generator().manual_seed(seed)).item()


def test_small_for_gaussian_large_for_collapsed_or_anisotropic():
    torch.manual_seed(0)
    gaussian = stat(torch.randn(N, D))
    collapsed = stat(torch.randn(N, 1).expand(N, D).contiguous())
    point = stat(torch.zeros(N, D) + 0.3)
    anisotropic = stat(torch.randn(N, D) * torch.linspace(0.05, 3.0, D))
    shifted = stat(torch.randn(N, D) + 1.0)
    assert gaussian < 3.0
    for bad in (collapsed, point, anisotropic, shifted):
        assert bad > 10 * gaussian


def test_time_axis_is_averaged_and_shapes_checked():
    x = torch.randn(3, N, D)
    value = stat(x)
    assert 0 < value < 3.0
    with pytest.raises(ValueError):
        SIGReg()(torch.randn(2, 3, 4, 5))


def test_gradient_descent_on_the_statistic_undoes_a_collapse():
    torch.manual_seed(1)
    x = (torch.randn(N, D) * 0.05).requires_grad_()
    sigreg = SIGReg(num_directions=128)
    start = sigreg(x).item()
    optimiser = torch.optim.Adam([x], lr=0.05)
    for _ in range(60):
        optimiser.zero_grad()
        loss = sigreg(x)
        loss.backward()
        assert torch.isfinite(x.grad).all()
        optimiser.step()
    assert sigreg(x.detach()).item() < 0.2 * start


DDP_WORKER = """
import os, sys
import torch
import torch.distributed as dist
from lewm_ros.model.sigreg import SIGReg

rank, world, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
dist.init_process_group("gloo", init_method="file://" + os.path.join(out_dir, "rendezvous"), rank=rank,
                        world_size=world)
try:
    torch.manual_seed(123)  # identical encoder init on every rank
    encoder = torch.nn.Linear({dim}, {dim})
    ddp = torch.nn.parallel.DistributedDataParallel(encoder)
    local = torch.load(os.path.join(out_dir, "data.pt")).chunk(world)[rank]
    generator = torch.Generator().manual_seed(7 if rank == 0 else 99)  # directions must come from rank 0
    loss = SIGReg(num_directions=128)(ddp(local), generator)
    loss.backward()
    torch.save({{"loss": loss.detach(), "grad_w": encoder.weight.grad, "grad_b": encoder.bias.grad}},
               os.path.join(out_dir, f"rank{{rank}}.pt"))
    dist.barrier()  # no rank tears gloo down while its peer still talks to it
finally:
    dist.destroy_process_group()
"""


def run_ddp(world: int, data: torch.Tensor, out_dir: Path) -> list[dict]:
    """Run SIGReg under DDP in `world` real processes (gloo on loopback); return each rank's results.

    A file rendezvous and gloo pinned to `lo`: with a TCP store, c10d reverse-resolves 127.0.0.1 through
    the machine's DNS server, i.e. sends packets off loopback (seen with tcpdump on eth0).
    """
    torch.save(data, out_dir / "data.pt")
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    script = DDP_WORKER.format(dim=D)
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(rank), str(world), str(out_dir)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(world)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    for rank, (proc, output) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"rank {rank} failed:\n{output}"
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(world)]


def test_ddp_sigreg_equals_single_process_on_concatenated_batch(tmp_path):
    torch.manual_seed(5)
    data = torch.randn(256, D) * torch.linspace(0.2, 2.0, D)  # non-Gaussian so gradients are large
    results = run_ddp(2, data, tmp_path)

    torch.manual_seed(123)
    encoder = torch.nn.Linear(D, D)
    loss = SIGReg(num_directions=128)(encoder(data), torch.Generator().manual_seed(7))
    loss.backward()
    for result in results:
        torch.testing.assert_close(result["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(result["grad_w"], encoder.weight.grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(result["grad_b"], encoder.bias.grad, rtol=1e-4, atol=1e-6)


def test_per_rank_statistic_differs_from_global_one():
    """Guards the test above: averaging per-rank statistics (the single-GPU reference under DDP) is wrong."""
    torch.manual_seed(5)
    data = torch.randn(256, D) * torch.linspace(0.2, 2.0, D)
    sigreg = SIGReg(num_directions=128)
    naive = sum(sigreg(half, torch.Generator().manual_seed(7)) for half in data.chunk(2)) / 2
    full = sigreg(data, torch.Generator().manual_seed(7))
    assert abs(naive.item() - full.item()) > 0.05 * full.item()
