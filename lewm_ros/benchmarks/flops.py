"""FLOPs and the CPU's peak for `lewm-ros bench planner`: what work a plan does and how close it runs to the
machine's ceiling.

FLOPs: counted with torch.utils.flop_counter.FlopCounterMode (matmuls, linears, convolutions and attention,
plus our registration of the CPU attention kernels the counter lacks; element-wise ops, norms, softmax and
sampling are not counted), over one untimed 1-iteration plan/solve x iterations (CEM, MPPI and the gradient
planner, backward passes included, do the same work every iteration); for iCEM over one whole plan, since its
sample count shrinks from iteration to iteration.

Peak: CPUs torch computes on x "cpu MHz" from /proc/cpuinfo x fp32 FLOP/cycle/core from the ISA flags
(AVX-512: 64 = 2 FMA units x 16 lanes x 2; AVX2+FMA: 32; AVX: 16; SSE2: 8; ARM ASIMD: 16). A rough ceiling:
it ignores turbo and AVX clock offsets and counts SMT siblings as cores.
"""

from __future__ import annotations

import os
from typing import Any

FLOPS_METHOD = (
    "torch.utils.flop_counter.FlopCounterMode: matmul/linear/conv/attention FLOPs (2 per multiply-add; "
    "attention counted without its causal mask, CPU attention kernels registered here); element-wise ops, "
    "norms, softmax and sampling not counted. Ours: one untimed 1-iteration plan x iterations (icem: one whole "
    "plan, its sample count shrinks); reference: one 1-iteration solve x iterations."
)
PEAK_ASSUMPTION = (
    "peak fp32 = cores x GHz x FLOP/cycle/core; cores = min(CPUs available, torch threads); GHz = the highest "
    "'cpu MHz' in /proc/cpuinfo; FLOP/cycle from ISA flags (AVX-512F: 64 = 2 FMA units x 16 lanes x 2; "
    "AVX2+FMA: 32; AVX: 16; SSE2: 8; ASIMD: 16). Ignores turbo/AVX clock offsets; SMT siblings count as cores."
)


def flop_counter() -> Any:
    """FlopCounterMode that also counts the CPU attention kernels (absent from its registry in torch 2.x)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def forward(query, key, value, *_args, out_shape=None, **_kwargs):
        return sdpa_flop_count(query, key, value)

    def backward(grad_out, query, key, value, *_args, out_shape=None, **_kwargs):
        return sdpa_backward_flop_count(grad_out, query, key, value)

    mapping = {}
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", forward),
                          ("_scaled_dot_product_flash_attention_for_cpu_backward", backward)):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            mapping[op] = formula
    return FlopCounterMode(display=False, custom_mapping=mapping)


def peak_fp32_gflops(device: Any, threads: int) -> dict[str, Any]:
    """A rough fp32 peak of the CPU (see PEAK_ASSUMPTION); None figures where it cannot be estimated."""
    flags: set[str] = set()
    mhz: list[float] = []
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("flags", "Features") and not flags:
                    flags = set(value.split())
                elif key == "cpu MHz":
                    try:
                        mhz.append(float(value))
                    except ValueError:
                        pass
    except OSError:
        pass
    if "avx512f" in flags:
        per_cycle, isa = 64, "avx512f"
    elif "avx2" in flags and "fma" in flags:
        per_cycle, isa = 32, "avx2+fma"
    elif "avx" in flags:
        per_cycle, isa = 16, "avx"
    elif "sse2" in flags:
        per_cycle, isa = 8, "sse2"
    elif "asimd" in flags:
        per_cycle, isa = 16, "asimd"
    else:
        per_cycle, isa = None, None
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:
        available = os.cpu_count() or 1
    cores = min(available, threads)
    ghz = max(mhz) / 1000.0 if mhz else None
    peak = cores * ghz * per_cycle if (ghz and per_cycle) else None
    info = {
        "fp32_gflops": peak, "cores": cores, "ghz": ghz, "flop_per_cycle": per_cycle, "isa": isa,
        "assumption": PEAK_ASSUMPTION,
    }  # fmt: skip
    if getattr(device, "type", "cpu") != "cpu":
        info["note"] = "CPU peak; the planner ran on " + str(device)
    return info


def fraction_of_peak(gflops: float, peak: dict[str, Any]) -> float | None:
    """Achieved over peak GFLOP/s; None where the peak could not be estimated."""
    return gflops / peak["fp32_gflops"] if peak.get("fp32_gflops") else None
