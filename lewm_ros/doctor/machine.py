"""Checks of this computer: Python against the ROS 2 distro, the Jetson release, the torch build, the CUDA device,
the chosen precision on the device, TensorRT's trtexec, and free disk for bags."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from pathlib import Path

from lewm_ros.doctor.report import FAIL, PASS, SKIP, WARN, Check, Context, one_line

GIB = 1 << 30
# A typical robot camera recorded raw: 640x480 rgb8 at 30 Hz (27.6 MB/s); compressed (JPEG) ~1/10 of that.
RAW_CAMERA_BYTES_PER_S = 640 * 480 * 3 * 30


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
    text = one_line(first)
    if first.startswith("# R36"):
        return Check("jetson", PASS, f"JetPack 6 ({text})")
    return Check("jetson", WARN, f"not JetPack 6: {text}", "docs/jetson.md is written for JetPack 6 (L4T R36)")


def check_torch(context: Context) -> Check:
    import torch

    build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
    detail = f"torch {torch.__version__} ({build}), {torch.get_num_threads()} CPU threads"
    return Check("torch", PASS, detail)  # a CPU-only build asked for CUDA is the cuda line's FAIL


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


def check_tensorrt(context: Context) -> Check:
    """Optional: an fp16 TensorRT engine of the encoder (the agent itself runs the TorchScript encoder)."""
    found = shutil.which("trtexec") or next(
        (str(p) for p in (Path("/usr/src/tensorrt/bin/trtexec"),) if p.is_file()), None
    )  # fmt: skip
    if found is None:
        return Check("tensorrt", SKIP, "trtexec not found: optional (JetPack installs it in /usr/src/tensorrt/bin)")
    return Check("tensorrt", PASS, f"{found}: build an encoder engine with python -m lewm_ros.model.tensorrt BUNDLE")


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
