"""`lewm-ros`: the umbrella command line.

Each subcommand lives next to the code it drives and registers itself through a `register(subparsers)` function
in its module. COMMANDS below names, for every subcommand, that module and its one-line help: `lewm-ros --help`
lists the table without importing any subcommand module, and `lewm-ros <command> ...` imports only the module
of <command>. So `--help` costs no torch, MuJoCo, rosbags, h5py or rclpy, and a machine without rosbags (a
training box, a Jetson) still runs `train` or `bench planner`. Adding a subcommand: one line in COMMANDS.

`lewm-ros bench X` is a group: any module listed under "bench" adds its `bench X` through
lewm_ros.arguments.bench_subparsers, and running any benchmark registers them all (the group's help lists them).

Bad arguments, for every subcommand, end as one stderr line `lewm-ros <command>: error: ...` and exit code 2
(lewm_ros/arguments.py: the parser class, the bounded number types, and UsageError, which `main` reports).
`--version` is answered before any parser is built (test/test_cli_startup.py holds both costs).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Iterable
from typing import NamedTuple

from lewm_ros import __version__
from lewm_ros.arguments import BENCH_DEST, BENCH_HELP, EXIT_USAGE, OneLineArgumentParser, UsageError, one_line

PROG = "lewm-ros"
_COMMAND_DEST = "_lewm_command"


class Command(NamedTuple):
    """Where a subcommand registers itself (every module of a group such as bench), and its `--help` line."""

    modules: tuple[str, ...]
    help: str


COMMANDS: dict[str, Command] = {  # in `lewm-ros --help` order; each help as its module's add_parser gives it
    "model-info": Command(("lewm_ros.model.cli",), "parameter counts and config of a preset or bundle"),
    "import-reference": Command(
        ("lewm_ros.model.cli",), "convert a reference stable-worldmodel LeWM state dict into a bundle"
    ),
    "collect": Command(
        ("lewm_ros.envs.collect",), "collect exploration episodes from a MuJoCo scene into an HDF5 episode file"
    ),
    "dataset-info": Command(("lewm_ros.data.cli",), "validate an HDF5 episode file and print a summary"),
    "train": Command(("lewm_ros.train",), "train LeWM on HDF5 episodes; writes a model bundle"),
    "export": Command(
        ("lewm_ros.train",), "bundle from a training run (--out), and/or add ONNX / torch.export encoder files"
    ),
    "eval": Command(("lewm_ros.evaluation.cli",), "closed-loop planning in the MuJoCo reach scene, without ROS"),
    "probe": Command(("lewm_ros.probe",), "linear-probe R^2 of joint positions from a bundle's latents"),
    "bench": Command(("lewm_ros.benchmarks.planner",), BENCH_HELP),
    "roadmap": Command(
        ("lewm_ros.planning.roadmap_build",), "build the latent roadmap that lets planners reach far goals"
    ),
    "sim-reach": Command(
        ("lewm_ros.ros.sim_reach",), "the reaching demo (MuJoCo sim + LeWM agent over ROS 2) in one process"
    ),
    "doctor": Command(("lewm_ros.doctor",), "check this machine for deployment: a PASS/WARN/FAIL table with fixes"),
    "bag-check": Command(
        ("lewm_ros.data.bag_check",), "report what a rosbag2 directory holds and recover a killed recording"
    ),
    "record": Command(
        ("lewm_ros.ros.bag_recorder",),
        "record topics into a rosbag2 directory (MCAP or sqlite3) with episode markers",
    ),
    "bag2dataset": Command(
        ("lewm_ros.data.bag2dataset",),
        "convert rosbag2 recordings (MCAP or sqlite3) into an HDF5 episode file for training",
    ),
}
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(m for command in COMMANDS.values() for m in command.modules))


def _not_registered(name: str) -> Callable[[argparse.Namespace], int]:
    """A listed-only command's `run`: reached only when a caller parses a command it did not register."""

    def run(_args: argparse.Namespace) -> int:
        raise UsageError(f"{name} was listed but not registered in this parser (build_parser({name!r}))")

    return run


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The `lewm-ros` parser with the modules of `commands` registered (None: every command's, which imports
    them all: for scripts and tests that parse several); the other commands are listed by name and help only."""
    chosen = set(COMMANDS) if commands is None else set(commands)
    wanted = {module for name in chosen for module in COMMANDS[name].modules}  # KeyError: not a command
    parser = OneLineArgumentParser(
        prog=PROG,
        description="LeWorldModel latent planning on ROS 2: models, data, simulation, deployment.",
    )
    parser.add_argument("--version", action="version", version=f"lewm-ros {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest=_COMMAND_DEST)
    registered: set[str] = set()
    for name, command in COMMANDS.items():  # table order, so the listing keeps it whatever is registered
        for module_name in command.modules:  # a module registers all its commands at its first one
            if module_name in wanted and module_name not in registered:
                registered.add(module_name)
                importlib.import_module(module_name).register(subparsers)
        if name not in subparsers.choices:
            stub = subparsers.add_parser(name, help=command.help, add_help=False)
            stub.set_defaults(run=_not_registered(name))
    return parser


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand `argv` runs (the first word that is not an option), or None for help or a word that is no
    command (argparse then reports it from the listing)."""
    for word in argv:
        if word in ("-h", "--help", "--"):  # argparse: help first; `--` is taken as the (unknown) command
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def command_prog(args: argparse.Namespace) -> str:
    """`lewm-ros <command> [<bench>]`: the prefix of the subcommand's error lines."""
    words = [PROG, getattr(args, _COMMAND_DEST, None), getattr(args, BENCH_DEST, None)]
    return " ".join(word for word in words if word)


def _exit_code(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # SystemExit("message") convention: print it, fail
    return 1


def asks_version(argv: list[str]) -> bool:
    """True when `--version` comes before the subcommand: it can be answered without building the parser."""
    for word in argv:
        if word == "--version":
            return True
        if word in ("-h", "--help", "--") or not word.startswith("-"):  # help first, as argparse does
            return False
    return False


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; returns the exit code (bad arguments: one stderr line, 2) instead of exiting."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if asks_version(argv):  # before building any parser
        print(f"{PROG} {__version__}")
        return 0
    command = chosen_command(argv)
    parser = build_parser(() if command is None else (command,))
    try:
        args, extras = parser.parse_known_args(argv)
        if extras:
            OneLineArgumentParser(prog=command_prog(args)).error(f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as stop:  # argparse: --help, --version or a parse error already reported
        return _exit_code(stop.code)
    run = getattr(args, "run", None)
    if run is None:
        parser.print_help()
        return 0
    try:
        return int(run(args) or 0)
    except UsageError as error:
        print(f"{command_prog(args)}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
