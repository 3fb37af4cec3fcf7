"""Checks of the bundle as the agent loads it: its files and weights on the device, and with --params its joints
and control rate against what it was trained on."""

from __future__ import annotations

from lewm_ros.doctor.report import FAIL, PASS, SKIP, WARN, Check, Context, one_line


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
        return [Check("bundle", FAIL, one_line(err), fix)]
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
