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
    "lewm_ros.evaluate",
)


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
