"""`lewm-ros model-info`, `lewm-ros import-reference`: model subcommands.

`lewm-ros export` lives with the training command line (lewm_ros/train.py): it reads training checkpoints,
and the model package does not import the training package.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lewm_ros.arguments import float_in, int_in, one_line


def register(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser("model-info", help="parameter counts and config of a preset or bundle")
    info.add_argument("model", help="preset name (paper, reach64) or bundle directory")
    info.set_defaults(run=model_info)

    imp = subparsers.add_parser(
        "import-reference", help="convert a reference stable-worldmodel LeWM state dict into a bundle",
        description="Convert a reference LeWM state dict into a bundle; prints the config it inferred. Head "
        "counts and the frameskip x action_dim split are not in the weights: give them when they differ from "
        "the paper's.",
    )  # fmt: skip
    imp.add_argument("state_dict", type=Path, help="torch file holding the reference LeWM state dict")
    imp.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    imp.add_argument("--encoder-heads", type=int_in(1, 1024), default=3, help="ViT attention heads (paper: 3)")
    imp.add_argument("--predictor-heads", type=int_in(1, 1024), default=16,
                     help="predictor attention heads (paper: 16)")
    imp.add_argument("--frameskip", type=int_in(1, 1000), default=5, help="env steps per action block (paper: 5)")
    imp.add_argument("--action-dim", type=int_in(1, 1000),
                     help="action dimensions; frameskip x action_dim must equal the checkpoint's action input "
                     "width (default: that width / frameskip)")
    imp.add_argument("--history", type=int_in(1, 1000),
                     help="predictor context frames (default: every frame the checkpoint's position embedding "
                     "covers; fewer needs --force)")
    imp.add_argument("--force", action="store_true",
                     help="accept a --history shorter than the checkpoint's position embedding (drops positions)")
    imp.add_argument("--action-mean", type=float_in(-1e9, 1e9), nargs="+",
                     help="per-dimension action mean (default 0)")
    imp.add_argument("--action-std", type=float_in(0.0, 1e9, low_open=True), nargs="+",
                     help="per-dimension action std, positive (default 1)")
    imp.set_defaults(run=import_reference_cmd)


def parameter_counts(model) -> dict[str, int]:
    from lewm_ros.model.lewm import count_parameters

    dyn = model.dynamics
    return {
        "total": count_parameters(model),
        "encoder": count_parameters(model.encoder),
        "predictor": count_parameters(dyn.predictor),
        "projectors": count_parameters(model.projector) + count_parameters(dyn.pred_projector),
        "action_embedder": count_parameters(dyn.action_embedder),
    }


def _error_line(message: object) -> str:
    """One stderr line whatever the message holds (torch errors span many lines)."""
    return "error: " + one_line(message)


def model_info(args: argparse.Namespace) -> int:
    """Print a preset's or bundle's parameter counts and config; a bad bundle is one error line, exit 2."""
    from lewm_ros.model.bundle import BundleError, load_bundle
    from lewm_ros.model.config import PRESETS, preset
    from lewm_ros.model.lewm import LeWM

    if args.model in PRESETS:
        model, source = LeWM(preset(args.model)), f"preset {args.model}"
    else:
        try:
            model, source = load_bundle(args.model).model, f"bundle {args.model}"
        except BundleError as err:
            print(_error_line(err), file=sys.stderr)
            return 2
        except Exception as err:  # load_bundle promises BundleError; never show a user a traceback regardless
            print(_error_line(f"{args.model}: cannot load bundle: {type(err).__name__}: {err}"), file=sys.stderr)
            return 2
    counts = parameter_counts(model)
    print(f"LeWM from {source}")
    for name, count in counts.items():
        print(f"  {name:<16} {count:>12,d}  ({count / 1e6:.2f}M)")
    print("config:")
    print(json.dumps(model.cfg.to_dict(), indent=2))
    return 0


def import_reference_cmd(args: argparse.Namespace) -> int:
    """Import, print the inferred config, write the bundle; every refusal is one stderr line, exit 2.

    Refused before anything is written: a frameskip x action_dim split that is not the checkpoint's action
    input width, a --history that would drop position embeddings (without --force), action statistics
    whose length is not action_dim.
    """
    import torch

    from lewm_ros.model.bundle import save_bundle
    from lewm_ros.model.reference_import import (
        ReferenceImportError,
        import_reference,
        normalise_reference_state,
        reference_history,
    )

    def fail(message: object) -> int:
        print(f"lewm-ros import-reference: error: {one_line(message)}", file=sys.stderr)
        return 2

    if not args.state_dict.is_file():
        return fail(f"{args.state_dict}: no such file")
    try:
        state = torch.load(args.state_dict, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for bad files
        return fail(f"{args.state_dict}: cannot read a state dict: {err}")
    if not isinstance(state, dict):
        return fail(f"{args.state_dict}: expected a state dict, got {type(state).__name__}")
    try:
        state = normalise_reference_state(state)
        frames = reference_history(state)
        if args.history is not None and args.history < frames and not args.force:
            return fail(
                f"--history {args.history} would drop {frames - args.history} of the {frames} frames the "
                f"checkpoint's position embedding covers (the reference rolls out over all {frames}); leave "
                "--history out, or pass --force to truncate"
            )
        model = import_reference(
            state, history=args.history if args.history is not None else frames,
            encoder_heads=args.encoder_heads, predictor_heads=args.predictor_heads, frameskip=args.frameskip,
            action_dim=args.action_dim,
        )  # fmt: skip
        cfg = model.cfg
        dim = cfg.action.action_dim
        for name, values in (("--action-mean", args.action_mean), ("--action-std", args.action_std)):
            if values is not None and len(values) != dim:
                return fail(f"{name} needs {dim} values (action_dim), got {len(values)}")
    except (ReferenceImportError, ValueError) as err:
        return fail(err)
    enc, pred, act = cfg.encoder, cfg.predictor, cfg.action
    print(
        f"inferred config: image {enc.image_size}x{enc.image_size}, patch {enc.patch_size}, encoder {enc.layers} "
        f"layers x {enc.heads} heads (width {enc.width}), predictor {pred.layers} layers x {pred.heads} heads "
        f"x {pred.dim_head}, frameskip {act.frameskip} x action_dim {act.action_dim} (action input "
        f"{act.frameskip * act.action_dim}), history {pred.history} (checkpoint positions: {frames}), "
        f"latent {cfg.latent_dim}"
    )
    try:
        save_bundle(model, args.out, args.action_mean, args.action_std, extra={"source": str(args.state_dict)})
    except (OSError, ValueError) as err:
        return fail(err)
    counts = parameter_counts(model)
    print(f"wrote bundle {args.out} ({counts['total']:,d} parameters)")
    return 0
