"""`lewm-ros`: the umbrella command line.

Each subcommand lives next to the code it drives and registers itself through a
`register(subparsers)` function listed in COMMAND_MODULES, so adding one is a one-line change here.

Bad arguments, for every subcommand, end as one stderr line `lewm-ros <command>: error: ...` and exit
code 2: the parser class below replaces argparse's usage dump, the bounded number types reject
non-numbers, NaN, inf and out-of-range values while parsing, and a subcommand that finds a bad
combination of arguments later raises `UsageError`, which `main` reports the same way.

Start-up cost: `--version` is answered before any subcommand module is imported, and the modules keep
heavy imports (torch, rclpy) inside their functions, so `--help` and the parser cost about half a second
rather than torch's import (test/test_cli_startup.py holds both).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
from collections.abc import Callable
from typing import NoReturn

from lewm_ros import __version__

PROG = "lewm-ros"
EXIT_USAGE = 2
COMMAND_MODULES: tuple[str, ...] = (
    "lewm_ros.model.cli", "lewm_ros.envs.collect", "lewm_ros.data.cli", "lewm_ros.train",
    "lewm_ros.evaluate", "lewm_ros.probe", "lewm_ros.planning.bench", "lewm_ros.planning.roadmap_build",
    "lewm_ros.ros.sim_reach", "lewm_ros.doctor",
    "lewm_ros.data.bag_check", "lewm_ros.ros.bag_recorder",
    "lewm_ros.data.bag2dataset",
)
_COMMAND_DEST = "_lewm_command"
_BENCH_DEST = "_lewm_bench"


class UsageError(ValueError):
    """A bad argument (or combination) found after parsing; `main` prints it as one line and exits 2."""


def one_line(text: object) -> str:
    """`text` with its line breaks and runs of spaces collapsed: library messages often span lines."""
    return " ".join(str(text).split())


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse, but a parse error is one stderr line `prog: error: message` and exit code 2.

    The default prints the whole usage block first, which buries the error in scripts and logs.
    Subparsers inherit the class (argparse creates them with the parent's type).
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)}\n")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a base-10 integer in [low, high] (bounds in the error message)."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected an integer in [{low}, {high}], got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low}, {high}], got {value}")
        return value

    parse.__name__ = "int"
    return parse


def float_in(low: float, high: float, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (or (low, high] with low_open); NaN/inf refused."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text!r}")
        if value < low or value > high or (low_open and value == low):
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {value:g}")
        return value

    parse.__name__ = "float"
    return parse


def aligned(rows: list[tuple[str, str]]) -> str:
    """Label/value lines with the values in one column: the human summary a command prints before its JSON."""
    width = max((len(label) for label, _ in rows), default=0)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """`--json`: print only the JSON line (for scripts); by default a short summary comes first, the JSON last."""
    parser.add_argument("--json", action="store_true", help="print only the JSON line (default: a summary, then it)")


def bench_subparsers(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `lewm-ros bench` group's subparsers, created on first use, so any module can add `lewm-ros bench X`."""
    bench = subparsers.choices.get("bench")
    if bench is None:
        bench = subparsers.add_parser("bench", help="benchmarks: a summary, then one JSON line of timings and settings")
        bench.set_defaults(run=lambda _args: bench.print_help() or 0)
        bench._bench_subparsers = bench.add_subparsers(  # type: ignore[attr-defined]
            title="benchmarks", metavar="BENCH", dest=_BENCH_DEST
        )
    return bench._bench_subparsers  # type: ignore[attr-defined]


def build_parser() -> argparse.ArgumentParser:
    """The `lewm-ros` parser with every subcommand of COMMAND_MODULES registered."""
    parser = OneLineArgumentParser(
        prog=PROG,
        description="LeWorldModel latent planning on ROS 2: models, data, simulation, deployment.",
    )
    parser.add_argument("--version", action="version", version=f"lewm-ros {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest=_COMMAND_DEST)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def command_prog(args: argparse.Namespace) -> str:
    """`lewm-ros <command> [<bench>]`: the prefix of the subcommand's error lines."""
    words = [PROG, getattr(args, _COMMAND_DEST, None), getattr(args, _BENCH_DEST, None)]
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
    if asks_version(sys.argv[1:] if argv is None else argv):  # before importing every subcommand's module
        print(f"{PROG} {__version__}")
        return 0
    parser = build_parser()
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
