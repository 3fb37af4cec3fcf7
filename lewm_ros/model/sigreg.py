"""SIGReg: keeps latents isotropic Gaussian so the JEPA cannot collapse (LeJEPA arXiv 2511.08544).

Embeddings are projected onto random unit directions; along each direction the empirical characteristic
function is compared with the standard normal one on a quadrature grid (the Epps–Pulley statistic,
scaled by the batch size N), then averaged over directions and time steps.

Multi-GPU: the statistic needs batch means of cos/sin over the *global* batch. Averaging per-rank
statistics (what the single-GPU reference does under DDP) measures a different, noisier quantity. Here
the sums are all-reduced, so every rank sees the loss of the concatenated batch, and the gradient that
flows into the local embeddings is scaled by the world size because DDP then averages parameter
gradients across ranks: after that averaging they equal the single-process gradient.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


class SIGReg(nn.Module):
    def __init__(self, num_directions: int = 1024, knots: int = 17, t_max: float = 3.0) -> None:
        super().__init__()
        if knots < 2:
            raise ValueError("SIGReg needs at least 2 quadrature knots")
        self.num_directions = num_directions
        self.knots = knots
        self.t_max = float(t_max)

    def grid(self, device: torch.device | str) -> tuple[Tensor, Tensor, Tensor]:
        """Quadrature knots t, the normal characteristic function exp(-t^2/2) there, and the trapezoid weights
        times that window, made on `device` at every call. Not buffers: a buffer lives wherever the module was
        last moved, and the statistic is asked for on the device of its input (training on the GPU, the
        collapse monitor on latents gathered on the CPU: issue 19's crash was a cuda buffer meeting CPU
        latents). Three tiny kernels per call, nothing next to the projection."""
        t = torch.linspace(0.0, self.t_max, self.knots, device=device)
        step = self.t_max / (self.knots - 1)
        trapezoid = torch.full((self.knots,), 2.0 * step, device=device)  # the grid covers [0, t_max]; even
        trapezoid[0] = step
        trapezoid[-1] = step
        gaussian_cf = torch.exp(-0.5 * t.square())
        return t, gaussian_cf, trapezoid * gaussian_cf

    def directions(
        self, dim: int, device: torch.device, generator: torch.Generator | None = None, local: bool = False
    ) -> Tensor:
        """Fresh random unit directions (dim, M); identical on every rank when distributed (broadcast)."""
        gen_device = generator.device if generator is not None else device
        directions = torch.randn(dim, self.num_directions, generator=generator, device=gen_device).to(device)
        directions = directions / directions.norm(dim=0, keepdim=True)
        if _distributed() and not local:
            dist.broadcast(directions, src=0)
        return directions

    def forward(self, embeddings: Tensor, generator: torch.Generator | None = None, local: bool = False) -> Tensor:
        """embeddings (N, D) or (T, N, D): N samples per time step -> scalar statistic.

        `local=True` measures this process's embeddings alone, with no collective: for monitoring done
        by one rank while the others wait."""
        if embeddings.dim() == 2:
            embeddings = embeddings.unsqueeze(0)
        if embeddings.dim() != 3:
            raise ValueError(f"SIGReg expects (N, D) or (T, N, D), got {tuple(embeddings.shape)}")
        x = embeddings.float()  # cos/sin sums are unstable in bf16
        directions = self.directions(x.shape[-1], x.device, generator, local)
        t, gaussian_cf, weights = self.grid(x.device)
        phase = (x @ directions).unsqueeze(-1) * t  # (T, N, M, K)
        cos_sum = phase.cos().sum(dim=1)  # (T, M, K)
        sin_sum = phase.sin().sum(dim=1)
        count = torch.full((), float(x.shape[1]), device=x.device)  # a fill: torch.tensor() would copy and sync
        if _distributed() and not local:
            cos_sum, sin_sum, count = _global_sums(cos_sum, sin_sum, count)
        cos_mean = cos_sum / count
        sin_mean = sin_sum / count
        error = (cos_mean - gaussian_cf).square() + sin_mean.square()
        return (error @ weights).mean() * count


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _global_sums(cos_sum: Tensor, sin_sum: Tensor, count: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Values of the global sums; gradient of world_size x the local sums (see module docstring)."""
    world = dist.get_world_size()
    packed = torch.stack([cos_sum.detach(), sin_sum.detach()])
    dist.all_reduce(packed)
    total = count.clone()
    dist.all_reduce(total)

    def spread(local: Tensor, global_value: Tensor) -> Tensor:
        return global_value + world * (local - local.detach())

    return spread(cos_sum, packed[0]), spread(sin_sum, packed[1]), total
