"""Model speed on this machine: encoder latency, rollout throughput, training-step cost.

Prints figures and ratios measured in the same run (fp32 vs bf16 autocast, shared-prefix rollout vs
full-window recompute, TorchScript vs eager), never pass/fail thresholds.

    .venv/bin/python bench/model_speed.py [--presets paper reach64] [--samples 300] [--horizon 5]
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import torch

from lewm_ros.model import LeWM, preset
from lewm_ros.model.bundle import PixelEncoder
from lewm_ros.model.sigreg import SIGReg


def timed(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def bench_preset(name: str, samples: int, horizon: int) -> None:
    cfg = preset(name)
    torch.manual_seed(0)
    model = LeWM(cfg).eval()
    with torch.no_grad():  # trained-like modulation so the benchmark runs realistic values
        for block in model.dynamics.predictor.blocks:
            block.modulation.weight.normal_(0, 0.05)
    size, dim, block_dim = cfg.encoder.image_size, cfg.latent_dim, cfg.action.block_dim
    frame = torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8)
    ctx = torch.randn(1, cfg.predictor.history, dim)
    past = torch.randn(1, cfg.predictor.history - 1, block_dim)
    cand = torch.randn(1, samples, horizon, block_dim)
    scripted_encoder = torch.jit.script(PixelEncoder(model))
    scripted_dynamics = torch.jit.script(model.dynamics)

    rows = []
    with torch.no_grad():
        for bf16 in (False, True):
            tag = "bf16" if bf16 else "fp32"
            with autocast(bf16):
                enc = timed(lambda: model.encode(frame), repeats=20)
                enc_ts = timed(lambda: scripted_encoder(frame), repeats=20)
                fast = timed(lambda: model.rollout(ctx, past, cand), repeats=5)
                slow = timed(lambda: model.rollout_recompute(ctx, past, cand), repeats=5)
                fast_ts = timed(lambda: scripted_dynamics.rollout(ctx, past, cand), repeats=5)
            rows.append((tag, enc, enc_ts, fast, slow, fast_ts))
    print(f"\n== preset {name}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
          f"{size}x{size}, rollout {samples} candidates x {horizon} blocks ==")
    print(f"{'dtype':<6}{'encode ms':>11}{'enc TS ms':>11}{'rollout ms':>12}{'recompute ms':>14}"
          f"{'roll TS ms':>12}{'preds/s':>10}{'prefix speedup':>16}")
    for tag, enc, enc_ts, fast, slow, fast_ts in rows:
        preds = samples * horizon / fast
        print(f"{tag:<6}{enc * 1e3:>11.2f}{enc_ts * 1e3:>11.2f}{fast * 1e3:>12.1f}{slow * 1e3:>14.1f}"
              f"{fast_ts * 1e3:>12.1f}{preds:>10.0f}{slow / fast:>15.2f}x")
    fp32, bf16 = rows
    print(f"bf16/fp32 speed ratio: encode {fp32[1] / bf16[1]:.2f}x, rollout {fp32[3] / bf16[3]:.2f}x")

    model.train()
    sigreg = SIGReg()
    batch = 32 if name == "paper" else 64
    frames = torch.randint(0, 256, (batch, 4, size, size, 3), dtype=torch.uint8)
    actions = torch.randn(batch, 4, block_dim)
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-5)

    def train_step(bf16: bool) -> None:
        with autocast(bf16):
            z = model.encode(frames)
            pred = model.predict(z[:, :3], model.embed_actions(actions[:, :3]))
            loss = (pred - z[:, 1:]).square().mean() + 0.1 * sigreg(z.transpose(0, 1))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    step32 = timed(lambda: train_step(False), repeats=3, warmup=1)
    step16 = timed(lambda: train_step(True), repeats=3, warmup=1)
    print(f"train step (batch {batch} x 4 frames): fp32 {step32 * 1e3:.0f} ms, bf16 {step16 * 1e3:.0f} ms "
          f"({step32 / step16:.2f}x); {batch / step16:.0f} windows/s bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["reach64", "paper"])
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--horizon", type=int, default=5)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.presets:
        bench_preset(name, args.samples, args.horizon)


if __name__ == "__main__":
    main()
