"""`lewm-ros doctor`: is this machine ready to run the agent? One line per check, PASS / WARN / FAIL / SKIP,
and a fix under every line that is not a pass.

    lewm-ros doctor [--bundle B] [--device auto|cpu|cuda] [--precision fp32|bf16|fp16] [--params YAML]

It measures rather than trusts: the bundle is loaded the way the agent loads it, its TorchScript encoder runs on
the device at the chosen precision (compared with fp32 on a GPU), and encode and plan latency are timed there
with the agent's planner settings (the defaults, or those of `--params config/jetson_arm.yaml`), then set
against the agent's deadline, overrun limit and control period. Then what a ROS deployment needs around it:
rclpy and the message packages, the DDS environment, MuJoCo's GL backend (simulation only), and disk space
for bags. Exit code 0 when nothing FAILs, 1 otherwise; a broken check is a FAIL line, never a traceback.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from lewm_ros.doctor.agent_settings import check_settings, read_params
from lewm_ros.doctor.bundle import check_bundle
from lewm_ros.doctor.environment import check_discovery, check_domain, check_mujoco, check_rclpy, check_rmw
from lewm_ros.doctor.machine import (
    check_cuda,
    check_disk,
    check_jetson,
    check_precision,
    check_python,
    check_tensorrt,
    check_torch,
)
from lewm_ros.doctor.measurements import check_encoder, check_plan
from lewm_ros.doctor.report import FAIL, PASS, SKIP, WARN, Check, Context, one_line, print_table

__all__ = ["CHECKS", "FAIL", "PASS", "SKIP", "WARN", "Check", "Context", "register", "run", "run_checks"]

DEVICES = ("auto", "cpu", "cuda")
CHOSEN_PRECISIONS = ("fp32", "bf16", "fp16")


def register(subparsers: argparse._SubParsersAction) -> None:
    from lewm_ros.arguments import int_in

    parser = subparsers.add_parser(
        "doctor", help="check this machine for deployment: a PASS/WARN/FAIL table with fixes",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--bundle", help="bundle directory or shipped name (default: --params' bundle, or reach2d)")
    parser.add_argument("--device", choices=DEVICES, help="where the agent will run (default: --params' device, "
                        "or auto)")  # fmt: skip
    parser.add_argument("--precision", choices=CHOSEN_PRECISIONS,
                        help="encoder and planner precision (default: --params' precision; else fp16 on CUDA, "
                        "the Jetson setting, and fp32 on the CPU)")  # fmt: skip
    parser.add_argument(
        "--compile",
        choices=("", "default", "reduce-overhead"),
        help="planner torch.compile mode to measure (default: --params' compile, else eager)",
    )
    parser.add_argument("--params", type=Path,
                        help="agent parameter YAML (lewm_agent: ros__parameters:), e.g. config/jetson_arm.yaml: "
                        "measure at its planner settings and check its joints against the bundle")  # fmt: skip
    parser.add_argument("--plans", type=int_in(2, 1000), default=12, help="timed plans (default 12)")
    parser.add_argument(
        "--record-dir",
        type=Path,
        default=Path("."),
        help="where bags will be written, for the free-disk check (default: here)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run every check, print the table, return 0 when nothing failed (an unreadable --params: exit 2)."""
    context = Context(args)
    if args.params is not None:
        context.values = read_params(args.params)
        context.from_params = True
    for name in ("bundle", "device", "precision", "compile"):
        if getattr(args, name) is not None:
            context.values[name] = getattr(args, name)
    device = context.values.get("device", "auto")
    args.device = device if device in DEVICES else "auto"  # a bad value is reported by the settings check
    checks = run_checks(context)
    print_table(checks, context)
    return 1 if any(c.status == FAIL for c in checks) else 0


CheckFn = Callable[[Context], "Check | list[Check]"]


def run_checks(context: Context) -> list[Check]:
    """Every check in order; an exception inside one becomes its FAIL line."""
    results: list[Check] = []
    for name, check in CHECKS:
        try:
            outcome = check(context)
        except Exception as err:  # a doctor must finish its table whatever breaks
            outcome = Check(name, FAIL, f"check crashed: {type(err).__name__}: {one_line(err)}",
                            "report this line; the other checks still ran")  # fmt: skip
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


CHECKS: tuple[tuple[str, CheckFn], ...] = (
    ("python", check_python),
    ("jetson", check_jetson),
    ("torch", check_torch),
    ("settings", check_settings),
    ("cuda", check_cuda),
    ("precision", check_precision),
    ("bundle", check_bundle),
    ("encoder", check_encoder),
    ("plan latency", check_plan),
    ("tensorrt", check_tensorrt),
    ("rclpy", check_rclpy),
    ("ROS_DOMAIN_ID", check_domain),
    ("discovery", check_discovery),
    ("RMW", check_rmw),
    ("MUJOCO_GL", check_mujoco),
    ("disk", check_disk),
)
