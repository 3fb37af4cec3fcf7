"""`lewm-ros dataset-info FILE`: validate an HDF5 episode file and print what it holds.

Whatever is wrong with the file ends as one line on stderr and exit code 2, never a traceback: the file
may come from anywhere.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lewm_ros.arguments import one_line

if TYPE_CHECKING:
    from lewm_ros.data.episode_reader import EpisodeReader

_SHOWN_ATTRIBUTES = ("source", "scene", "camera", "control_dt", "seed", "policy", "joint_names", "max_joint_speed")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dataset-info",
        help="validate an HDF5 episode file and print a summary",
        description="Validate an HDF5 episode file (structure, boundaries, actions, and every frame unless "
        "--quick) and print a summary. Exit code 2 and one line on stderr when the file is not valid.",
    )
    parser.add_argument("file", type=Path, help="HDF5 episode file")
    parser.add_argument("--quick", action="store_true", help="skip decompressing every frame")
    parser.add_argument("--attributes", action="store_true", help="also print all file attributes as JSON")
    parser.set_defaults(run=run_dataset_info)


def run_dataset_info(args: argparse.Namespace) -> int:
    """Validate, then describe; a bad file is reported in one line with exit code 2."""
    from lewm_ros.data.episode_format import DatasetError, attributes_json  # h5py: only when the command runs
    from lewm_ros.data.episode_reader import EpisodeReader
    from lewm_ros.data.episode_validation import validate

    try:
        summary = validate(args.file, check_pixels=not args.quick)
        with EpisodeReader(args.file, check=False) as reader:
            lines = describe(reader, summary.policies)
        if args.attributes:
            lines.append(attributes_json(summary.attributes))
    except (DatasetError, OSError) as error:  # OSError: the file vanished or became unreadable meanwhile
        print(f"lewm-ros dataset-info: invalid episode file: {one_line(error)}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    print(f"valid: {args.file} ({'structure only' if args.quick else 'all frames decoded'})")
    return 0


def describe(reader: EpisodeReader, policies: dict[str, int]) -> list[str]:
    """Human-readable summary lines of an open episode file."""
    attrs = reader.attributes
    lengths = reader.episode_lengths
    height, width, _ = reader.image_shape
    lines = [
        f"file:        {reader.path} ({reader.path.stat().st_size / 1e6:.1f} MB)",
        f"format:      {attrs['format']} v{attrs['format_version']}",
        f"episodes:    {reader.num_episodes}",
        f"frames:      {reader.num_frames}",
    ]
    if len(lengths):
        lines.append(f"length:      min {lengths.min()}, mean {lengths.mean():.1f}, max {lengths.max()} frames")
    lines.append(f"images:      {height}x{width} RGB uint8")
    lines.append(f"actions:     {reader.action_dim}-d, normalised to [-1, 1]")
    for name in _SHOWN_ATTRIBUTES:
        if name in attrs:
            lines.append(f"{name + ':':<12} {attrs[name]}")
    if policies:
        lines.append("episodes by policy: " + ", ".join(f"{k} {v}" for k, v in sorted(policies.items())))
    if reader.num_episodes:
        success = [bool(np.any(reader.read("success", i))) for i in range(reader.num_episodes)]
        lines.append(f"goal reached during episode: {np.mean(success):.1%}")
    return lines
