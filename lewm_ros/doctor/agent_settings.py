"""The agent settings doctor measures with: --params read as the agent reads its YAML, the command-line
overrides on top, and the settings check (invalid settings are a FAIL line; the measurements then use defaults)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lewm_ros.doctor.report import FAIL, PASS, Check, Context, one_line


def check_settings(context: Context) -> Check:
    """The agent settings every measurement uses: defaults, or --params, with the command-line overrides. Invalid
    ones are a FAIL line (the agent would refuse to configure) and the measurements use the defaults."""
    import torch

    from lewm_ros.control.settings import SettingsError, build_settings

    args = context.args
    values = dict(context.values)
    values.setdefault("joint_names", ["placeholder"])  # checked against the bundle only with --params
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if values.get("precision") == "auto":  # the agent's auto: bf16/fp16 on CUDA, a measurement on the CPU
        values["precision"] = ("bf16" if cuda and torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    values.setdefault("precision", "fp16" if cuda else "fp32")
    source = str(args.params) if context.from_params else "agent defaults"
    failure = None
    try:
        context.settings = build_settings(values)
    except SettingsError as err:
        failure = Check("settings", FAIL, f"{source}: {one_line(err)}",
                        "fix the parameter named (config/lewm_agent.yaml documents each); the agent would refuse "
                        "to configure. Measuring with the defaults")  # fmt: skip
        keep = {k: values[k] for k in ("bundle", "joint_names") if k in values}
        keep["precision"] = "fp16" if cuda else "fp32"
        context.settings = build_settings(keep)
    context.precision = context.settings.precision
    if failure is not None:
        return failure
    s = context.settings
    detail = (f"{source}: {s.planner} {s.samples} samples x {s.iterations} iterations ({s.warm_iterations} warm), "
              f"horizon {s.horizon}, deadline {s.deadline_ms:g} ms, overrun {s.plan_overrun_ms:g} ms, "
              f"{s.control_rate_hz:g} Hz")  # fmt: skip
    return Check("settings", PASS, detail)


def read_params(path: Path) -> dict[str, Any]:
    import yaml

    from lewm_ros.arguments import UsageError

    try:
        document = yaml.safe_load(path.read_text())
        params = document["lewm_agent"]["ros__parameters"]
    except OSError as err:
        raise UsageError(f"--params {path}: {err.strerror or err}") from None
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise UsageError(f"--params {path}: not an agent parameter file (lewm_agent: ros__parameters:): "
                         f"{one_line(err)}") from None  # fmt: skip
    if not isinstance(params, dict):
        raise UsageError(f"--params {path}: lewm_agent.ros__parameters is not a mapping")
    return dict(params)
