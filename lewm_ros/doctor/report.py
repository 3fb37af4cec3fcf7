"""The doctor's table: the four statuses, one `Check` line with its fix, the `Context` later checks read from
earlier ones, and the printed table with its verdict."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from lewm_ros import arguments
from lewm_ros.arguments import MESSAGE_LIMIT

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"


@dataclass
class Check:
    """One line of the table."""

    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass
class Context:
    """What later checks need from earlier ones (a failed early check leaves its part None)."""

    args: argparse.Namespace
    values: dict[str, Any] = field(default_factory=dict)  # agent parameters: --params, then the overrides
    settings: Any = None  # AgentSettings
    from_params: bool = False
    device: Any = None  # torch.device, None when the requested one is unusable
    precision: str = "fp32"
    bundle: Any = None
    encoder: Any = None
    encoder_precision: str = "fp32"
    encode_ms: float | None = None
    problems: list[str] = field(default_factory=list)


def print_table(checks: list[Check], context: Context) -> None:
    """The header line, one row per check (a fix under every WARN/FAIL row), and the counts with the verdict."""
    width = max(len(c.name) for c in checks)
    device = context.device.type if context.device is not None else (context.args.device or "?")
    print(f"lewm-ros doctor: device {device}, precision {context.precision}, "
          f"bundle {getattr(context.settings, 'bundle', '?')}")  # fmt: skip
    print(f"{'STATUS':<6}  {'CHECK':<{width}}  DETAIL")
    for c in checks:
        print(f"{c.status:<6}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status in (WARN, FAIL):
            print(f"{'':<6}  {'':<{width}}  fix: {c.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in (PASS, WARN, FAIL, SKIP)}
    verdict = "ready" if counts[FAIL] == 0 else "NOT ready"
    print(f"{counts[PASS]} pass, {counts[WARN]} warn, {counts[FAIL]} fail, {counts[SKIP]} skip: {verdict}")


def one_line(text: object) -> str:
    """An error as one table cell: line breaks collapsed, at most MESSAGE_LIMIT characters."""
    return arguments.one_line(text, MESSAGE_LIMIT)
