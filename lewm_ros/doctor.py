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
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lewm_ros.control.stats import percentile

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
DEVICES = ("auto", "cpu", "cuda")
CHOSEN_PRECISIONS = ("fp32", "bf16", "fp16")
GIB = 1 << 30
# A typical robot camera recorded raw: 640x480 rgb8 at 30 Hz (27.6 MB/s); compressed (JPEG) ~1/10 of that.
RAW_CAMERA_BYTES_PER_S = 640 * 480 * 3 * 30
DISCOVERY_RANGES = ("SYSTEM_DEFAULT", "LOCALHOST", "SUBNET", "OFF")
KNOWN_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp", "rmw_cyclonedds_cpp", "rmw_connextdds",
              "rmw_zenoh_cpp", "rmw_gurumdds_cpp")  # fmt: skip
# What the agent imports from ROS (lewm_ros/ros/agent_node.py): all of it must be importable on the robot.
ROS_FIX = (
    "source /opt/ros/humble/setup.bash (apt install ros-humble-ros-base) and the workspace's "
    "install/setup.bash; without a ROS install: pip install ros-jazzy-rclpy[fastrtps] and the ros-jazzy-*-msgs wheels"
)


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


def register(subparsers: argparse._SubParsersAction) -> None:
    from lewm_ros.cli import int_in

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
        context.values = _read_params(args.params)
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
            outcome = Check(name, FAIL, f"check crashed: {type(err).__name__}: {_one_line(err)}",
                            "report this line; the other checks still ran")  # fmt: skip
        results.extend(outcome if isinstance(outcome, list) else [outcome])
    return results


def print_table(checks: list[Check], context: Context) -> None:
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


def _one_line(text: object) -> str:
    return " ".join(str(text).split())[:300]


# ---- machine ----------------------------------------------------------------------------------------------


def check_python(context: Context) -> Check:
    version = platform.python_version()
    where = f"{platform.system()} {platform.machine()}"
    distro = os.environ.get("ROS_DISTRO", "").lower()
    expected = {"humble": (3, 10), "jazzy": (3, 12)}.get(distro)
    if expected is not None and sys.version_info[:2] != expected:
        return Check(
            "python", WARN, f"{version} on {where}: ROS 2 {distro} is built for {expected[0]}.{expected[1]}",
            "run the agent with the Python your ROS 2 was built for (rclpy is compiled per version)",
        )  # fmt: skip
    return Check("python", PASS, f"{version} on {where}")


def check_jetson(context: Context) -> Check:
    """L4T release: JetPack 6 is L4T R36 (Ubuntu 22.04), what docs/jetson.md covers."""
    release = Path("/etc/nv_tegra_release")
    if not release.is_file():
        return Check("jetson", SKIP, "not a Jetson (no /etc/nv_tegra_release)")
    first = release.read_text(errors="replace").splitlines()[0] if release.stat().st_size else ""
    text = _one_line(first)
    if first.startswith("# R36"):
        return Check("jetson", PASS, f"JetPack 6 ({text})")
    return Check("jetson", WARN, f"not JetPack 6: {text}", "docs/jetson.md is written for JetPack 6 (L4T R36)")


def check_torch(context: Context) -> Check:
    import torch

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    detail = f"torch {torch.__version__} ({build}), {torch.get_num_threads()} CPU threads"
    return Check("torch", PASS, detail)  # a CPU-only build asked for CUDA is the cuda line's FAIL


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
        failure = Check("settings", FAIL, f"{source}: {_one_line(err)}",
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


def _read_params(path: Path) -> dict[str, Any]:
    import yaml

    from lewm_ros.cli import UsageError

    try:
        document = yaml.safe_load(path.read_text())
        params = document["lewm_agent"]["ros__parameters"]
    except OSError as err:
        raise UsageError(f"--params {path}: {err.strerror or err}") from None
    except (yaml.YAMLError, KeyError, TypeError) as err:
        raise UsageError(f"--params {path}: not an agent parameter file (lewm_agent: ros__parameters:): "
                         f"{_one_line(err)}") from None  # fmt: skip
    if not isinstance(params, dict):
        raise UsageError(f"--params {path}: lewm_agent.ros__parameters is not a mapping")
    return dict(params)


def check_cuda(context: Context) -> Check:
    import torch

    from lewm_ros.model.precision import resolve_device

    requested = context.args.device
    available = torch.cuda.is_available()
    try:
        context.device = resolve_device(requested)
    except ValueError:
        context.device = None
    if available:
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        detail = (f"{props.name}, sm_{props.major}{props.minor}, {props.total_memory / GIB:.1f} GiB, "
                  f"{torch.cuda.device_count()} device(s), CUDA {torch.version.cuda}")  # fmt: skip
        if requested == "cpu":
            return Check("cuda", WARN, f"{detail}; not used (--device cpu)", "use --device cuda (or auto)")
        if props.major < 7:
            return Check("cuda", WARN, detail, "pre-Volta GPU: fp16 is slow and bf16 missing; expect CPU-like speed")
        return Check("cuda", PASS, detail)
    why = "torch sees no CUDA device" + ("" if torch.version.cuda else " (CPU-only torch build)")
    if requested == "cuda":
        return Check("cuda", FAIL, why,
                     "install a CUDA build of torch (Jetson: NVIDIA's PyTorch wheel for JetPack 6, docs/jetson.md); "
                     "check nvidia-smi (desktop) or tegrastats (Jetson) and that this user is in the video group; "
                     "or measure the CPU with --device cpu")  # fmt: skip
    if requested == "auto":
        return Check("cuda", WARN, f"{why}: the agent will run on the CPU",
                     "fine for simulation; the arm needs a GPU (docs/jetson.md)")  # fmt: skip
    return Check("cuda", SKIP, f"{why}; not requested (--device cpu)")


def check_precision(context: Context) -> Check:
    import torch

    from lewm_ros.model.precision import cpu_flags, precision_fallback

    device, precision = context.device, context.precision
    if device is None:
        return Check("precision", SKIP, f"{precision}: no usable device (see cuda)")
    effective, why = precision_fallback(device, precision)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        detail = f"{precision} on cuda; bf16 {'supported' if bf16 else 'not supported'}, fp16 supported"
        if why:
            return Check("precision", WARN, f"{detail}; {why}", "use --precision fp16 (precision: fp16 in the YAML)")
        return Check("precision", PASS, detail)
    flags = cpu_flags()
    native_bf16 = any(f in flags for f in ("avx512_bf16", "amx_bf16"))
    isa = ", ".join(flags) or "unknown ISA"
    if why:
        return Check("precision", WARN, f"{precision} on cpu: {why}", f"precision: {effective} on the CPU")
    if precision == "bf16" and not native_bf16:
        return Check("precision", WARN, f"bf16 on cpu without native bf16 ({isa}): emulated, several times slower",
                     "precision: fp32 (or auto, which measures)")  # fmt: skip
    return Check("precision", PASS, f"{precision} on cpu ({isa})")


# ---- bundle and latency -----------------------------------------------------------------------------------


def check_bundle(context: Context) -> list[Check]:
    import torch

    from lewm_ros.model.bundle import load_bundle
    from lewm_ros.model.shipped import find_bundle

    name = context.settings.bundle if context.settings is not None else (context.args.bundle or "reach2d")
    fix = ("give --bundle a bundle directory (model.json, weights.pt, encoder.ts, predictor.ts): train and "
           "`lewm-ros export RUN --out BUNDLE` on the workstation, then copy it over (docs/jetson.md)")  # fmt: skip
    try:
        path = find_bundle(name)
        bundle = load_bundle(path, device=context.device or torch.device("cpu"))
    except Exception as err:  # FileNotFoundError, BundleError, torch errors: all one line with the fix
        return [Check("bundle", FAIL, _one_line(err), fix)]
    context.bundle = bundle
    cfg = bundle.config
    params = sum(p.numel() for p in bundle.model.parameters())
    checks = [
        Check(
            "bundle",
            PASS,
            f"{name} -> {path}: {params / 1e6:.2f}M parameters, {bundle.image_size} px, "
            f"{cfg.action.action_dim} joints x frameskip {cfg.action.frameskip}, latent {cfg.latent_dim}",
        )
    ]
    checks.append(_check_joints(context))
    return checks


def _check_joints(context: Context) -> Check:
    bundle, s = context.bundle, context.settings
    if not context.from_params or s is None:
        return Check("joints", SKIP, "no --params: joint names and control rate not checked")
    dim = bundle.config.action.action_dim
    if len(s.joint_names) != dim:
        return Check("joints", FAIL, f"joint_names has {len(s.joint_names)} joints {list(s.joint_names)}, the bundle "
                     f"commands {dim}", "list the bundle's joints, in its action order, in joint_names")  # fmt: skip
    trained_dt = ((bundle.meta.get("training") or {}).get("data") or {}).get("control_dt")
    if isinstance(trained_dt, (int, float)) and abs(trained_dt * s.control_rate_hz - 1.0) > 0.01:
        return Check("joints", WARN, f"{list(s.joint_names)}; control_rate_hz {s.control_rate_hz:g} differs from "
                     f"the training data's {1.0 / trained_dt:g} Hz",
                     "set control_rate_hz to the rate the training data was recorded at")  # fmt: skip
    return Check("joints", PASS, f"{list(s.joint_names)} at {s.control_rate_hz:g} Hz")


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_encoder(context: Context) -> list[Check]:
    import torch

    from lewm_ros.model.precision import cast_encoder

    if context.bundle is None or context.device is None:
        return [Check("encoder", SKIP, "needs a loaded bundle and a usable device"),
                Check("encode latency", SKIP, "needs the encoder")]  # fmt: skip
    device, bundle = context.device, context.bundle
    try:
        fp32 = bundle.load_torchscript("encoder", device)
        # A second copy to cast: TorchScript's .to() converts in place. Like the agent: fp32 on the CPU.
        encoder, precision = cast_encoder(bundle.load_torchscript("encoder", device), device, context.precision)
    except Exception as err:  # BundleError; a TorchScript archive from a newer torch than this one
        return [Check("encoder", FAIL, _one_line(err), "re-save the bundle's TorchScript files with this machine's "
                      "torch (docs/jetson.md, 'Copying the bundle back')"),
                Check("encode latency", SKIP, "needs the encoder")]  # fmt: skip
    context.encoder_precision = precision
    size = bundle.image_size
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (1, size, size, 3), dtype=torch.uint8, generator=generator).to(device)
    with torch.inference_mode():
        latent = encoder(images).float()
        reference = fp32(images).float()
    dim = bundle.config.latent_dim
    if tuple(latent.shape) != (1, dim) or not bool(torch.isfinite(latent).all()):
        return [Check("encoder", FAIL, f"encoder.ts on {device.type} at {precision}: output {tuple(latent.shape)}, "
                      f"finite {bool(torch.isfinite(latent).all())}; expected finite (1, {dim})",
                      "re-export the bundle (lewm-ros export RUN --out BUNDLE) or use --precision fp32"),
                Check("encode latency", SKIP, "needs a working encoder")]  # fmt: skip
    error = float((latent - reference).norm() / reference.norm().clamp_min(1e-12))
    detail = f"encoder.ts on {device.type} at {precision}: latent (1, {dim}) finite"
    status, fix = PASS, ""
    if precision != "fp32":
        detail += f", relative error vs fp32 {100 * error:.2f}%"
        if error > 0.05:
            status, fix = WARN, "reduced precision changes the latents noticeably: compare success, or use fp32"
    checks = [Check("encoder", status, detail, fix)]
    context.encoder = encoder
    times = []
    with torch.inference_mode():
        for i in range(55):
            _sync(device)
            started = time.perf_counter()
            encoder(images)
            _sync(device)
            if i >= 5:  # the first calls include TorchScript's profiling runs
                times.append(1000 * (time.perf_counter() - started))
    p50, p95 = percentile(times, 50), percentile(times, 95)
    context.encode_ms = p50
    period_ms = 1000.0 / context.settings.control_rate_hz
    detail = f"p50 {p50:.2f} ms, p95 {p95:.2f} ms (one {size}x{size} frame, {len(times)} runs)"
    if p50 > period_ms / 2:  # the median: a short run's p95 is mostly other processes' noise
        checks.append(Check("encode latency", WARN, f"{detail}: over half the {period_ms:.0f} ms control period",
                            "use the GPU, fp16, or the TensorRT engine (docs/jetson.md)"))  # fmt: skip
    else:
        checks.append(Check("encode latency", PASS, detail))
    return checks


def check_plan(context: Context) -> Check:
    import torch

    from lewm_ros.control.assemble import assemble

    if context.bundle is None or context.encoder is None:
        return Check("plan latency", SKIP, "needs a loaded bundle and a working encoder")
    s, device, bundle = context.settings, context.device, context.bundle
    # The controller the agent would build (same assembly, warm-up included), planning full searches: the
    # deadline and the sample budget are judged afterwards from the measured iteration time.
    spec = replace(s.controller_spec(), planner=replace(s.planner_config(), deadline_ms=None), roadmap="",
                   device=str(device))  # fmt: skip
    threads = torch.get_num_threads()
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fallbacks are reported in the line below, from planner.notes
            planner = assemble(spec).planner
        history = bundle.config.predictor.history
        size = bundle.image_size
        generator = torch.Generator().manual_seed(1)
        frames = torch.randint(0, 256, (history + 1, size, size, 3), dtype=torch.uint8, generator=generator)
        with torch.inference_mode():
            latents = context.encoder(frames.to(device)).float()
        context_latents, goal = latents[:history].clone(), latents[history].clone()
        past = torch.zeros(history - 1, bundle.config.action.frameskip, bundle.config.action.action_dim)
        warm, per_iteration = [], []
        for i in range(context.args.plans + 1):
            _sync(device)
            started = time.perf_counter()
            result = planner.plan(context_latents, past, goal)
            _sync(device)
            elapsed = 1000 * (time.perf_counter() - started)
            planner.advance(s.receding_horizon)
            if i > 0:  # plan 0 is cold (no warm start yet)
                warm.append(elapsed)
                per_iteration.append(elapsed / max(result.iterations, 1))
    finally:
        torch.set_num_threads(threads)
    return _judge_plan(context, planner, warm, per_iteration, result.iterations)


def _judge_plan(context: Context, planner: Any, warm: list[float], per_iteration: list[float],
                iterations: int) -> Check:  # fmt: skip
    """Set the measured plan times against what the agent allows: deadline, overrun limit, control period."""
    s = context.settings
    p50, p95 = percentile(warm, 50), percentile(warm, 95)
    iteration_p50, iteration_p95 = percentile(per_iteration, 50), percentile(per_iteration, 95)
    encode = context.encode_ms or 0.0
    period = 1000.0 / s.control_rate_hz
    compiled = planner.compile_mode or "eager"
    detail = (f"warm {s.planner} {s.samples}x{iterations} at {planner.config.precision}, {compiled}: p50 {p50:.1f} ms, "
              f"p95 {p95:.1f} ms, {iteration_p50:.1f} ms per iteration, {len(warm)} plans")  # fmt: skip
    notes = "; ".join(planner.notes)
    if notes:
        detail += f"; fallback: {notes}"
    deadline = s.deadline_ms or None
    # With a deadline the planner stops before an iteration that would not fit: at most deadline + one iteration.
    # Judged on medians (what most control periods see); the p95 of a short run on a busy machine is mostly noise.
    typical = min(p50, deadline + iteration_p50) if deadline else p50
    worst = min(p95, deadline + iteration_p95) if deadline else p95
    smaller = "fewer samples or iterations, fp16 on the GPU, compile reduce-overhead (CUDA graphs)"
    adaptive = deadline and s.adaptive_samples and not s.graph and s.planner != "grad"
    if adaptive:
        from lewm_ros.planning.core import MIN_ADAPTIVE_SAMPLES

        # The agent sizes its samples to this machine (planning/budget.py): judge the plans it will really make.
        per_candidate = iteration_p50 / max(s.samples, 1)
        warm_iterations = s.warm_iterations or s.iterations
        floor = min(s.samples, max(2 * s.elites, MIN_ADAPTIVE_SAMPLES))
        chosen = max(floor, min(s.samples, int(deadline / warm_iterations / max(per_candidate, 1e-9))))
        iteration_p50, iteration_p95 = per_candidate * chosen, iteration_p95 / max(s.samples, 1) * chosen
        detail += f"; adaptive_samples: ~{chosen} of {s.samples} samples here"
        p50, p95 = max(min(p50, deadline), iteration_p50), max(min(p95, deadline), iteration_p95)
        if encode + iteration_p50 > s.plan_overrun_ms:
            return Check("plan latency", FAIL, f"{detail}: even {chosen} samples take {iteration_p50:.0f} ms per "
                         f"iteration: encode + one iteration exceed plan_overrun_ms {s.plan_overrun_ms:g}, so "
                         "every plan would be discarded", f"{smaller}, or fewer elites (the floor is 2 x elites)")
        if iteration_p50 > deadline:
            return Check("plan latency", WARN, f"{detail}: even {chosen} samples take {iteration_p50:.0f} ms per "
                         f"iteration, over deadline_ms {deadline:g}: every plan runs one short iteration",
                         f"{smaller}, or a larger deadline_ms")  # fmt: skip
    elif deadline and iteration_p50 > deadline:
        return Check("plan latency", FAIL, f"{detail}: not one iteration fits deadline_ms {deadline:g}, so plans "
                     "are mostly the warm-start mean", f"{smaller}, adaptive_samples, or a larger deadline_ms")
    if encode + typical > s.plan_overrun_ms:
        return Check("plan latency", FAIL, f"{detail}: encode + plan {encode + typical:.0f} ms > plan_overrun_ms "
                     f"{s.plan_overrun_ms:g}: the agent would discard plans and send the safe command",
                     f"{smaller}, or a deadline_ms")  # fmt: skip
    if encode + worst > s.plan_overrun_ms:
        return Check("plan latency", WARN, f"{detail}: at p95, encode + plan {encode + worst:.0f} ms > "
                     f"plan_overrun_ms {s.plan_overrun_ms:g}: some plans would be discarded (safe command)",
                     f"{smaller}; keep other processes off the agent's cores")  # fmt: skip
    if deadline and p50 > deadline:
        fit = max(1, int(deadline // max(iteration_p50, 1e-6)))
        return Check("plan latency", WARN, f"{detail}: deadline_ms {deadline:g} cuts warm plans to ~{fit} of "
                     f"{iterations} iterations", f"{smaller}, or accept shorter searches")  # fmt: skip
    if encode + typical > period:
        return Check("plan latency", WARN, f"{detail}: encode + plan {encode + typical:.0f} ms exceed the "
                     f"{period:.0f} ms control period: commands arrive late", smaller)  # fmt: skip
    if notes:
        return Check("plan latency", WARN, detail, "the requested precision/compile mode cannot run here: see above")
    return Check("plan latency", PASS, detail)


# ---- ROS and the environment --------------------------------------------------------------------------------


def check_tensorrt(context: Context) -> Check:
    """Optional: an fp16 TensorRT engine of the encoder (the agent itself runs the TorchScript encoder)."""
    found = shutil.which("trtexec") or next(
        (str(p) for p in (Path("/usr/src/tensorrt/bin/trtexec"),) if p.is_file()), None
    )  # fmt: skip
    if found is None:
        return Check("tensorrt", SKIP, "trtexec not found: optional (JetPack installs it in /usr/src/tensorrt/bin)")
    return Check("tensorrt", PASS, f"{found}: build an encoder engine with python -m lewm_ros.model.tensorrt BUNDLE")


def check_rclpy(context: Context) -> Check:
    from lewm_ros.ros.environment import missing_ros_modules

    missing = [f"{module} ({type(err).__name__}: {_one_line(err)[:80]})" for module, err in missing_ros_modules()]
    distro = os.environ.get("ROS_DISTRO", "")
    if missing:
        return Check("rclpy", FAIL, "cannot import " + "; ".join(missing), ROS_FIX)
    where = f"ROS_DISTRO {distro}" if distro else "ROS_DISTRO unset: pip wheels or an unsourced install"
    return Check("rclpy", PASS, f"rclpy and the agent's message packages import; {where}")


def check_domain(context: Context) -> Check:
    value = os.environ.get("ROS_DOMAIN_ID")
    fix = ("export ROS_DOMAIN_ID=<0..101, one per robot> on the robot and every machine that should talk to it "
           "(~/.bashrc)")  # fmt: skip
    if value is None or value.strip() == "":
        return Check("ROS_DOMAIN_ID", WARN, "unset (domain 0): every ROS 2 machine on this network shares it", fix)
    try:
        domain = int(value)
    except ValueError:
        return Check("ROS_DOMAIN_ID", FAIL, f"{value!r} is not an integer: nodes will fail to start", fix)
    if not 0 <= domain <= 232:
        return Check("ROS_DOMAIN_ID", FAIL, f"{domain} is outside 0..232: nodes will fail to start", fix)
    if domain > 101:
        return Check("ROS_DOMAIN_ID", WARN, f"{domain}: above 101 the DDS ports can collide with Linux's ephemeral "
                     "ports", fix)  # fmt: skip
    return Check("ROS_DOMAIN_ID", PASS, str(domain))


def check_discovery(context: Context) -> Check:
    """Humble reads ROS_LOCALHOST_ONLY; Jazzy reads ROS_AUTOMATIC_DISCOVERY_RANGE (ROS_LOCALHOST_ONLY deprecated)."""
    distro = os.environ.get("ROS_DISTRO", "").lower()
    localhost = os.environ.get("ROS_LOCALHOST_ONLY", "")
    scope = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "")
    shown = f"ROS_LOCALHOST_ONLY={localhost or '(unset)'}, ROS_AUTOMATIC_DISCOVERY_RANGE={scope or '(unset)'}"
    if scope and scope.upper() not in DISCOVERY_RANGES:
        return Check("discovery", FAIL, f"{shown}: unknown range {scope!r}",
                     f"ROS_AUTOMATIC_DISCOVERY_RANGE is one of {', '.join(DISCOVERY_RANGES)}")  # fmt: skip
    if scope.upper() == "OFF" and distro != "humble":
        return Check("discovery", FAIL, f"{shown}: discovery OFF, the agent will never see the camera or controller",
                     "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (all nodes on the robot) or SUBNET")  # fmt: skip
    if distro == "humble":
        if scope:
            return Check("discovery", WARN, f"{shown}: Humble ignores ROS_AUTOMATIC_DISCOVERY_RANGE",
                         "on Humble use ROS_LOCALHOST_ONLY=1 (robot-only graph) or leave it unset")  # fmt: skip
        meaning = "this machine only" if localhost == "1" else "the whole network"
    elif distro:
        if localhost and not scope:
            return Check("discovery", WARN, f"{shown}: ROS_LOCALHOST_ONLY is deprecated on {distro}",
                         "use ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST instead")  # fmt: skip
        meaning = "this machine only" if scope.upper() == "LOCALHOST" else "the network"
    else:
        meaning = "this machine only" if (localhost == "1" or scope.upper() == "LOCALHOST") else "the network"
    return Check("discovery", PASS, f"{shown}: nodes discovered on {meaning} (camera driver, controllers and "
                 "agent must share that scope; the laptop with rviz too)")  # fmt: skip


def check_rmw(context: Context) -> Check:
    value = os.environ.get("RMW_IMPLEMENTATION", "")
    fix = ("unset RMW_IMPLEMENTATION (Fast DDS), or install the one named (apt install ros-humble-rmw-cyclonedds-cpp) "
           "and use the same on every machine")  # fmt: skip
    if value and value not in KNOWN_RMWS:
        return Check("RMW", WARN, f"RMW_IMPLEMENTATION={value}: not a known RMW", fix)
    try:
        from lewm_ros.ros.environment import rmw_identifier

        loaded = rmw_identifier()
    except Exception as err:  # rclpy missing (reported above) or the named RMW not installed
        if value:
            return Check("RMW", FAIL, f"RMW_IMPLEMENTATION={value} cannot be loaded: {_one_line(err)[:120]}", fix)
        return Check("RMW", SKIP, "rclpy not importable (see rclpy)")
    return Check("RMW", PASS, f"{loaded}" + ("" if value else " (default; RMW_IMPLEMENTATION unset)"))


def check_mujoco(context: Context) -> Check:
    import importlib.util

    if importlib.util.find_spec("mujoco") is None:
        return Check("MUJOCO_GL", SKIP, "mujoco not installed: only the simulation needs it")
    value = os.environ.get("MUJOCO_GL", "")
    fix = "export MUJOCO_GL=egl (GPU or Mesa EGL, headless) or MUJOCO_GL=osmesa (software)"
    if not value:
        return Check("MUJOCO_GL", WARN, "unset: offscreen rendering tries a display (GLFW) and fails headless", fix)
    if value not in ("egl", "osmesa", "glfw"):
        return Check("MUJOCO_GL", FAIL, f"{value!r}: MuJoCo accepts egl, osmesa or glfw", fix)
    if value == "glfw":
        return Check("MUJOCO_GL", WARN, "glfw: needs a display", fix)
    return Check("MUJOCO_GL", PASS, f"{value} (simulation only)")


def check_disk(context: Context) -> Check:
    folder = context.args.record_dir.expanduser()
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    minutes = free / RAW_CAMERA_BYTES_PER_S / 60
    detail = (f"{free / GIB:.1f} GiB free at {folder}: ~{minutes:.0f} min of raw 640x480 rgb8 at 30 Hz "
              f"({RAW_CAMERA_BYTES_PER_S / 1e6:.1f} MB/s), ~10x more with compressed images")  # fmt: skip
    fix = ("free space, or record to a larger disk (ros2 bag record -s mcap -o /mnt/ssd/bag ...); record "
           "<camera>/compressed instead of raw images (docs/recording.md)")  # fmt: skip
    if free < GIB:
        return Check("disk", FAIL, detail, fix)
    if free < 10 * GIB:
        return Check("disk", WARN, detail, fix)
    return Check("disk", PASS, detail)


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
