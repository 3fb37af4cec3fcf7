"""`lewm-ros roadmap --bundle B --data FILE.h5`: encode recorded frames with the bundle and save their roadmap
(lewm_ros.planning.roadmap) next to the bundle, where `lewm-ros eval --roadmap` and the agent find it.

Every `stride`-th frame of every episode becomes a node (one per action block with stride = frameskip): the
graph needs the recorded configurations covered densely, not every frame.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lewm_ros.arguments import add_json_flag, aligned, float_in, int_in, one_line

if TYPE_CHECKING:
    from lewm_ros.planning.roadmap import Roadmap, RoadmapConfig

ROADMAP_FILE = "roadmap.npz"  # lewm_ros.planning.roadmap.ROADMAP_FILE; not imported at the top: it imports torch,
# and `lewm-ros --help` imports every subcommand's module


def encode_frames(bundle: object, data: list[Path], stride: int, device: str = "cpu",
                  batch: int = 256) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Latents (N, D) of every `stride`-th frame of every episode of the files, and each one's episode number."""
    import torch

    from lewm_ros.data.episodes import EpisodeReader
    from lewm_ros.data.windows import inspect_files
    from lewm_ros.planning.roadmap import RoadmapError

    info = inspect_files(data)
    size = bundle.image_size  # type: ignore[attr-defined]
    if info.image_shape[:2] != (size, size):
        height, width = info.image_shape[:2]
        raise RoadmapError(f"data frames are {height}x{width}, the bundle encodes {size}x{size}")
    model = bundle.model.eval()  # type: ignore[attr-defined]
    latents: list[np.ndarray] = []
    sequence: list[np.ndarray] = []
    for file_number, path in enumerate(info.files):
        with EpisodeReader(path, check=False) as reader:
            for ref in (e for e in info.episodes if e.file == file_number):
                frames = list(range(0, ref.length, stride))
                sequence.append(np.full(len(frames), len(sequence)))
                for start in range(0, len(frames), batch):
                    pixels = reader.pixels(ref.index, frames[start : start + batch])
                    with torch.no_grad():
                        z = model.encode(torch.from_numpy(pixels).to(device))
                    latents.append(z.float().cpu().numpy())
    return np.concatenate(latents), np.concatenate(sequence)


def build_from_files(bundle_path: Path, data: list[Path], stride: int, config: RoadmapConfig,
                     device: str = "cpu") -> Roadmap:  # fmt: skip
    from lewm_ros.model.bundle import load_bundle
    from lewm_ros.planning.roadmap import Roadmap, weights_fingerprint

    bundle = load_bundle(bundle_path, device=device)
    latents, sequences = encode_frames(bundle, data, stride, device)
    meta = {
        "weights_sha256": weights_fingerprint(bundle_path), "bundle": str(bundle_path),
        "data": [str(p) for p in data], "stride": stride, "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }  # fmt: skip
    return Roadmap.build(latents, config, meta, sequences)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("roadmap", help="build the latent roadmap that lets planners reach far goals")
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle directory")
    parser.add_argument("--data", type=Path, action="append", required=True, help="HDF5 episode file(s)")
    parser.add_argument("--out", type=Path, help=f"output file (default BUNDLE/{ROADMAP_FILE})")
    parser.add_argument("--stride", type=int_in(1, 10_000), default=5, help="every n-th frame is a node (default 5)")
    parser.add_argument("--neighbours", type=int_in(1, 256), default=10, help="k of the kNN graph (default 10)")
    parser.add_argument("--edge-quantile", type=float_in(0.0, 1.0, low_open=True), default=0.3,
                        help="drop kNN edges longer than this quantile (default 0.3)")  # fmt: skip
    parser.add_argument("--attach", type=int_in(1, 256), default=5, help="nodes a latent joins through (default 5)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu", help="encode on (default cpu)")
    add_json_flag(parser)
    parser.set_defaults(run=run_roadmap)


def roadmap_summary(summary: dict, args: argparse.Namespace) -> str:
    """What was built, in a few lines a person reads before the JSON line."""
    parts = summary["components"]
    files = len(args.data)
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(args.stride % 10 if args.stride % 100 not in (11, 12, 13) else 0, "th")
    frames = "every frame" if args.stride == 1 else f"every {args.stride}{suffix} frame"
    return aligned([
        ("roadmap", f"{summary['file']} ({summary['bytes'] / 2**20:.1f} MiB) in {summary['seconds']:.1f} s"),
        ("nodes", f"{summary['nodes']:,} latents of {summary['latent_dim']} dims: {frames} of "
                  f"{files} file{'s' if files != 1 else ''}"),
        ("edges", f"{summary['edges']:,}, {parts} connected part{'s' if parts != 1 else ''}"),
        ("radii", f"link {summary['link_radius']:.3g}, goal {summary['goal_radius']:.3g} (latent distance)"),
    ])  # fmt: skip


def run_roadmap(args: argparse.Namespace) -> int:
    from lewm_ros.data.episodes import DatasetError
    from lewm_ros.model.bundle import BundleError
    from lewm_ros.model.precision import resolve_device
    from lewm_ros.planning.roadmap import RoadmapConfig

    started = time.perf_counter()
    config = RoadmapConfig(args.neighbours, args.edge_quantile, args.attach)
    out = args.out or args.bundle / ROADMAP_FILE
    if not out.parent.is_dir():  # before minutes of encoding, not after
        print(f"error: {out.parent} is not a directory", file=sys.stderr)
        return 2
    try:
        device = str(resolve_device(args.device))
        roadmap = build_from_files(args.bundle, args.data, args.stride, config, device)
        roadmap.save(out)
    except (BundleError, DatasetError, ValueError, OSError) as err:  # RoadmapError is a ValueError
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    summary = {**roadmap.describe(), "file": str(out), "bytes": out.stat().st_size,
               "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    if not args.json:
        print(roadmap_summary(summary, args))
    print(json.dumps(summary))
    if roadmap.components > 1:
        print(f"note: the graph has {roadmap.components} separate parts; goals in a small one are reached through "
              "their nearest node only (record more, or use a smaller --stride)", file=sys.stderr)  # fmt: skip
    return 0
