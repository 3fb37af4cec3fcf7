"""Device and precision choice, by measurement: machines differ, so never assume bf16 is faster.

bf16 autocast was 1.2-1.6x faster than fp32 on an Intel CPU with AMX and ~7x slower on an AVX2-only
AMD EPYC; on CUDA bf16 (or fp16 where bf16 is missing) is always the right call. `choose_precision` times
a caller-supplied workload under each candidate on the actual device and keeps the fastest.
"""

from __future__ import annotations

import os
import platform
import time
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

PRECISIONS = ("fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""torch.compile modes; reduce-overhead records CUDA graphs, which exist only on CUDA devices."""
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "asimd", "sve")


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU is an error, not a silent fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch sees no CUDA device (use --device cpu or auto)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {name!r}: use auto, cpu or cuda")
    return device


def autocast_dtype(precision: str) -> torch.dtype | None:
    """None for fp32 (no autocast), else the autocast dtype."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from auto, {', '.join(PRECISIONS)}")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    dtype = autocast_dtype(precision)
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_precision(device: torch.device, precision: str) -> None:
    autocast_dtype(precision)
    if device.type == "cpu" and precision == "fp16":
        raise ValueError("fp16 autocast is not supported on the CPU here; use bf16 or fp32 (or auto)")


def precision_fallback(device: torch.device, precision: str) -> tuple[str, str | None]:
    """The precision that works on `device` for a request, and why it differs (None when it does not).

    fp16 on the CPU becomes fp32: torch runs it but it is emulated (5.5x slower than fp32 on the AVX2 EPYC,
    reach2d MPPI 100x3), so a config written for a GPU (jetson_arm.yaml) stays usable on a laptop. bf16 on a
    GPU without bf16 (before Ampere: Jetson Xavier, Volta, Turing) becomes fp16.
    """
    autocast_dtype(precision)
    if device.type == "cpu" and precision == "fp16":
        return "fp32", "precision fp16 is emulated on the CPU (several times slower than fp32): using fp32"
    if device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
        return "fp16", "precision bf16 is not supported by this GPU (needs Ampere or newer): using fp16"
    return precision, None


def cast_encoder(encoder: Any, device: torch.device, precision: str) -> tuple[Any, str]:
    """The TorchScript encoder cast for `precision` on `device`, and the precision it runs at.

    Only CUDA gets a reduced-precision encoder (the in-graph input cast follows the weights' dtype, so uint8
    pixels go straight to fp16/bf16); on the CPU it stays fp32, where half precision is emulated and slow.
    "auto" (eval's default, the agent's option) is what `choose_precision` picks on CUDA without measuring, and
    fp32 on the CPU: the encoder is cast before the planner's precision is measured.
    """
    if precision == "auto":
        precision = "fp32" if device.type != "cuda" else "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    effective, _ = precision_fallback(device, precision)
    if device.type != "cuda" or effective == "fp32":
        return encoder, "fp32"
    return encoder.to(torch.float16 if effective == "fp16" else torch.bfloat16), effective


def enable_tf32(device: torch.device) -> bool:
    """TF32 for fp32 matmuls and convolutions on CUDA (Ampere and later); returns whether it is on.

    Why: fp32 training steps and fp32 plans on an Ampere+ GPU otherwise run matmuls on the slow IEEE fp32 path.
    TF32 keeps fp32's range and rounds the multiplicands to a 10-bit mantissa (sums stay fp32): ~1e-3 relative
    error per product, the same order as bf16 autocast's, which this model trains and plans with anyway. Only the
    fp32 path changes; bf16/fp16 autocast is unaffected. A no-op off CUDA."""
    if device.type != "cuda":
        return False
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return True


def has_triton() -> bool:
    """Whether torch's inductor can generate GPU kernels (Triton); NVIDIA's JetPack torch wheels lack it."""
    try:
        from torch.utils._triton import has_triton as torch_has_triton
    except ImportError:  # the private helper moved: assume present and let the runtime guard decide
        return True
    try:
        return bool(torch_has_triton())
    except Exception:  # a broken Triton install counts as none
        return False


def compile_fallback(mode: str | None, device: torch.device) -> tuple[str | None, str | None]:
    """The torch.compile mode that can work on `device` (None: eager) and, when it differs, why.

    reduce-overhead means CUDA graphs: on the CPU there is nothing to record, so the rollout runs eagerly
    (compile=default is the CPU option: ~1.12x after minutes of compiling). On CUDA, inductor needs Triton.
    """
    if not mode:
        return None, None
    if mode not in COMPILE_MODES:
        raise ValueError(f"unknown compile mode {mode!r}; choose from '', {', '.join(COMPILE_MODES)}")
    try:
        import torch._dynamo

        supported = torch._dynamo.is_dynamo_supported()
    except Exception:  # an import failure means no torch.compile either
        supported = False
    if not supported:
        return None, f"compile {mode}: torch.compile is not supported with this Python/torch build: eager rollout"
    if mode == "reduce-overhead" and device.type != "cuda":
        return None, (
            f"compile reduce-overhead records CUDA graphs, which need a CUDA device; the rollout runs eagerly on "
            f"{device.type} (compile default is the CPU option)"
        )
    if device.type == "cuda" and not has_triton():
        return None, (
            f"compile {mode} on CUDA needs Triton, which this torch build lacks (NVIDIA's JetPack wheels ship "
            "without it; the Jetson AI Lab index has one): eager rollout"
        )
    return mode, None


def warn_fallback(message: str) -> None:
    """One RuntimeWarning per fallback, so it reaches stderr and logs without stopping the caller."""
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def choose_precision(
    device: torch.device, requested: str, workload: Callable[[str], Any], repeats: int = 3,
    progress: Callable[[str], Any] | None = None,
) -> tuple[str, dict[str, float]]:
    """The precision to use and the ms per workload call measured for each candidate (empty if not measured).

    CUDA: bf16 where supported, else fp16 (no measurement needed). CPU: fp32 vs bf16, each timed
    `repeats` times after one warm-up call; bf16 is kept only when it is at least 10% faster.
    `progress(line)` after every call: on a loaded CPU a training step takes seconds, and the measurement
    minutes, which must not look like a hang.
    """  # fmt: skip
    if requested != "auto":
        check_precision(device, requested)
        return requested, {}
    if device.type == "cuda":
        return ("bf16" if torch.cuda.is_bf16_supported() else "fp16"), {}
    timings: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        started = time.perf_counter()
        workload(precision)
        if progress is not None:
            progress(f"measuring precision: {precision} warm-up call {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        for call in range(repeats):
            workload(precision)
            if progress is not None:
                progress(f"measuring precision: {precision} call {call + 1}/{repeats}, "
                         f"{(time.perf_counter() - started) / (call + 1):.1f} s each")  # fmt: skip
        timings[precision] = 1000 * (time.perf_counter() - started) / repeats
    chosen = "bf16" if timings["bf16"] < 0.9 * timings["fp32"] else "fp32"
    return chosen, timings


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    present = set(line.split(":", 1)[1].split())
                    return [f for f in ISA_FLAGS if f in present]
    except OSError:
        pass
    return []


def machine_description(device: torch.device | None = None) -> dict[str, Any]:
    """What a benchmark or a run directory should record next to its figures."""
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_isa": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        index = device.index if device is not None and device.type == "cuda" and device.index is not None else 0
        info["gpu"] = torch.cuda.get_device_name(index)
        info["cuda"] = torch.version.cuda
    return info
