"""`lewm-ros`: the umbrella command line.

Each subcommand lives next to the code it drives and registers itself through a
`register(subparsers)` function listed in COMMAND_MODULES, so adding one is a one-line change here.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lewm_ros import __version__

COMMAND_MODULES: tuple[str, ...] = (
    "lewm_ros.model.cli", "lewm_ros.envs.collect", "lewm_ros.data.cli", "lewm_ros.train",
    "lewm_ros.evaluate", "lewm_ros.probe", "lewm_ros.planning.bench",
)


def bench_subparsers(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `lewm-ros bench` group's subparsers, created on first use, so any module can add `lewm-ros bench X`."""
    bench = subparsers.choices.get("bench")
    if bench is None:
        bench = subparsers.add_parser("bench", help="benchmarks: one JSON line of timings and settings each")
        bench.set_defaults(run=lambda _args: bench.print_help() or 0)
        bench._bench_subparsers = bench.add_subparsers(title="benchmarks", metavar="BENCH")  # type: ignore[attr-defined]
    return bench._bench_subparsers  # type: ignore[attr-defined]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lewm-ros",
        description="LeWorldModel latent planning on ROS 2: models, data, simulation, deployment.",
    )
    parser.add_argument("--version", action="version", version=f"lewm-ros {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 0
    return int(run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
