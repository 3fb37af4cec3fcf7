"""Command-line arguments and one-line errors: what every `lewm-ros` subcommand and the library share.

Why a module of its own: the subcommands live next to their code in the library, and the umbrella command line
(lewm_ros/cli.py) imports them; if they took these helpers from cli.py, the two would import each other. This
module imports nothing from lewm_ros, so any layer may use it.

Bad arguments end as one stderr line `lewm-ros <command>: error: ...` and exit code 2: OneLineArgumentParser
replaces argparse's usage dump, the bounded number types reject non-numbers, NaN, inf and out-of-range values
while parsing, and a bad combination found later raises UsageError, which the command line reports the same way.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import NoReturn

EXIT_USAGE = 2
MESSAGE_LIMIT = 300  # characters: the longest third-party error text we repeat in one line (torch's run long)
BENCH_DEST = "_lewm_bench"  # the namespace attribute naming the chosen `lewm-ros bench X`


class UsageError(ValueError):
    """A bad argument (or combination) found after parsing; the command line prints it as one line, exit 2."""


def one_line(text: object, limit: int | None = None) -> str:
    """`text` with line breaks and runs of spaces collapsed (library and torch messages span lines), cut to
    `limit` characters with "..." when given; an exception with no message gives its type's name."""
    line = " ".join(str(text).split())
    if not line and isinstance(text, BaseException):
        line = type(text).__name__
    if limit is not None and len(line) > limit:
        line = line[: max(limit - 3, 0)] + "..."
    return line


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


BENCH_HELP = "benchmarks: a summary, then one JSON line of timings and settings"


def bench_subparsers(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `lewm-ros bench` group's subparsers, created on first use, so any module can add `lewm-ros bench X`."""
    bench = subparsers.choices.get("bench")
    if bench is None:
        bench = subparsers.add_parser("bench", help=BENCH_HELP)
        bench.set_defaults(run=lambda _args: bench.print_help() or 0)
        bench._bench_subparsers = bench.add_subparsers(  # type: ignore[attr-defined]
            title="benchmarks", metavar="BENCH", dest=BENCH_DEST
        )
    return bench._bench_subparsers  # type: ignore[attr-defined]
