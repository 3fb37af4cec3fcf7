"""`lewm-ros probe BUNDLE --data FILE.h5`: how much of the arm's physical state a linear map can read off
the latents (the paper's "physical structure" check).

Frames of the episodes are encoded with the bundle's encoder; a ridge regression from latents to joint
positions is fitted on some episodes and scored (R^2 per joint) on the others, so the probe measures
generalisation to unseen episodes, not memorisation of frames.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def ridge_r2(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
             alpha: float = 1e-3) -> np.ndarray:  # fmt: skip
    """R^2 per target column of a ridge regression (standardised features, intercept) on held-out rows."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-8
    a = np.concatenate([(train_x - mean) / std, np.ones((len(train_x), 1))], axis=1).astype(np.float64)
    b = np.concatenate([(test_x - mean) / std, np.ones((len(test_x), 1))], axis=1).astype(np.float64)
    penalty = alpha * len(a) * np.eye(a.shape[1])
    penalty[-1, -1] = 0.0  # no shrinkage of the intercept
    weights = np.linalg.solve(a.T @ a + penalty, a.T @ train_y)
    residual = ((b @ weights - test_y) ** 2).sum(0)
    total = ((test_y - test_y.mean(0)) ** 2).sum(0)
    return 1.0 - residual / np.maximum(total, 1e-12)


def probe(bundle_path: Path, data: list[Path], held_out: float = 0.2, max_frames: int = 6000, seed: int = 0,
          device: str = "cpu") -> dict[str, Any]:  # fmt: skip
    import torch

    from lewm_ros.data.episode_reader import EpisodeReader
    from lewm_ros.data.windows import inspect_files
    from lewm_ros.model.bundle import load_bundle

    bundle = load_bundle(bundle_path, device=device)
    info = inspect_files(data)
    size = bundle.image_size
    if info.image_shape[:2] != (size, size):
        height, width = info.image_shape[:2]
        raise ValueError(f"data frames are {height}x{width}, the bundle encodes {size}x{size}")
    episodes = list(info.episodes)
    if len(episodes) < 2:
        raise ValueError(f"the probe needs at least 2 episodes (fit on some, score on others); found {len(episodes)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(episodes))
    n_test = min(len(episodes) - 1, max(1, round(held_out * len(episodes))))
    per_episode = max(1, max_frames // len(episodes))
    parts: dict[str, list[list[np.ndarray]]] = {"train": [[], []], "test": [[], []]}
    model = bundle.model.eval()
    for rank, index in enumerate(order):
        ref = episodes[index]
        split = "test" if rank < n_test else "train"
        frames = np.unique(np.linspace(0, ref.length - 1, min(per_episode, ref.length)).astype(int))
        with EpisodeReader(info.files[ref.file], check=False) as reader:
            pixels = reader.pixels(ref.index, frames)
            qpos = reader.read("qpos", ref.index, frames)
        with torch.no_grad():
            latents = model.encode(torch.from_numpy(pixels).to(device)).float().cpu().numpy()
        parts[split][0].append(latents)
        parts[split][1].append(qpos)
    train_x, train_y = (np.concatenate(v) for v in parts["train"])
    test_x, test_y = (np.concatenate(v) for v in parts["test"])
    r2 = ridge_r2(train_x, train_y, test_x, test_y)
    return {
        "r2_per_joint": r2.tolist(), "r2_mean": float(r2.mean()), "train_frames": len(train_x),
        "test_frames": len(test_x), "test_episodes": n_test, "train_episodes": len(episodes) - n_test,
    }  # fmt: skip


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("probe", help="linear-probe R^2 of joint positions from a bundle's latents")
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, action="append", required=True, help="HDF5 episode file(s)")
    parser.add_argument("--held-out", type=float, default=0.2, help="share of episodes scored (default 0.2)")
    parser.add_argument("--max-frames", type=int, default=6000, help="frames encoded in all (default 6000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.set_defaults(run=run_probe)


def run_probe(args: argparse.Namespace) -> int:
    from lewm_ros.data.episode_format import DatasetError
    from lewm_ros.model.bundle import BundleError
    from lewm_ros.model.precision import resolve_device

    if not 0 < args.held_out < 1 or args.max_frames < 2:
        print("error: --held-out must be in (0, 1) and --max-frames >= 2", file=sys.stderr)
        return 2
    if not 0 <= args.seed < 2**63:
        print(f"error: --seed must be a non-negative 64-bit integer, got {args.seed}", file=sys.stderr)
        return 2
    try:
        device = str(resolve_device(args.device))  # cuda without a GPU: a clear error, not an assert
        result = probe(args.bundle, args.data, args.held_out, args.max_frames, args.seed, device)
    except (BundleError, DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        joints = ", ".join(f"{v:.3f}" for v in result["r2_per_joint"])
        print(f"linear probe R^2 of joint positions on {result['test_episodes']} held-out episodes "
              f"({result['test_frames']} frames): mean {result['r2_mean']:.3f}; per joint {joints}")  # fmt: skip
    return 0
