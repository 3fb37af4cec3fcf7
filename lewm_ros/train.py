"""`lewm-ros train` / `python -m lewm_ros.train`: LeWM from HDF5 episodes to a model bundle; and
`lewm-ros export`: a bundle from a run's checkpoint, ONNX / torch.export encoder files.

One process, or one per GPU under torchrun (DDP, the DDP-exact SIGReg). The objective is the paper's:
teacher-forced next-latent MSE over windows of `history + 1` frames plus lambda x SIGReg of the window's
latents, end to end (no stop-gradient); AdamW, linear warm-up then cosine, gradient clipping.

The run directory holds run.json (settings, machine, precision choice, data), metrics.csv, curves.png,
checkpoint.pt (every epoch, every --checkpoint-minutes, on SIGINT/SIGTERM; atomic) and, at the end,
bundle/ (model.json + weights + TorchScript). `--resume` continues exactly where the checkpoint left off.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lewm_ros.training.settings import DEFAULT_EPOCHS, DEFAULT_PRESET, EXIT_BAD_INPUT, TrainError

# ------------------------------------------------------------------------------------------- arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", action="append", type=Path, help="HDF5 episode file (repeat for several)")
    parser.add_argument(
        "--preset", help=f"model preset (CPU: {DEFAULT_PRESET} or reach64, GPU: paper); default {DEFAULT_PRESET}"
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory (new or empty, or --resume)")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help=f"passes over the training windows (default {DEFAULT_EPOCHS})")
    budget.add_argument("--minutes", type=float, help="wall-clock budget; sets the step count from a measured step")
    parser.add_argument("--batch-size", type=int, help="windows per step, over all processes (default 64)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default 5e-5 for paper, 1e-3 otherwise)")
    parser.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 1e-3)")
    parser.add_argument("--sigreg-weight", type=float, help="lambda (default 0.1 for paper, 1.0 otherwise)")
    parser.add_argument("--sigreg-directions", type=int, help="SIGReg random directions per step (default 1024)")
    parser.add_argument("--warmup-fraction", type=float, help="share of steps in linear warm-up (default 0.05)")
    parser.add_argument("--grad-clip", type=float, help="gradient norm clip (default 1.0)")
    parser.add_argument("--val-fraction", type=float, help="share of episodes held out (default 0.1)")
    parser.add_argument("--seed", type=int, help="seed of init, split and data order (default 0)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                        help="autocast precision; auto (default) measures fp32 vs bf16 on the CPU, "
                             "bf16/fp16 on CUDA")  # fmt: skip
    parser.add_argument("--init", type=Path, help="bundle to fine-tune (same architecture and image size)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    parser.add_argument("--workers", type=int, default=1, help="threads assembling batches ahead (default 1)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--max-ram-gb", type=float, default=4.0,
                        help="load the data into RAM when it fits, else read it in shards of this size "
                             "(default 4)")  # fmt: skip
    parser.add_argument("--max-val-windows", type=int, default=2048, help="validation windows per evaluation")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0, help="also checkpoint this often")
    parser.add_argument("--log-every", type=int, default=10, help="steps between metrics.csv train rows")
    parser.add_argument("--stop-after", type=int, help="checkpoint and stop (resumable) once this step is reached")
    parser.add_argument("--dist-init", default="env://",
                        help="torch.distributed init method under torchrun (default env://; "
                             "file:///path works too)")  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def register(subparsers: argparse._SubParsersAction) -> None:
    """`lewm-ros train`, and `lewm-ros export`, which turns a run's checkpoint into a bundle."""
    parser = subparsers.add_parser("train", help="train LeWM on HDF5 episodes; writes a model bundle")
    add_arguments(parser)
    parser.set_defaults(run=run_cli)

    exp = subparsers.add_parser(
        "export", help="bundle from a training run (--out), and/or add ONNX / torch.export encoder files"
    )
    exp.add_argument("bundle", type=Path, help="bundle directory, or a training run directory with --out")
    exp.add_argument("--out", type=Path, help="write the run's checkpoint as a bundle here")
    exp.add_argument("--onnx", action="store_true", help="write encoder.onnx (opset 18)")
    exp.add_argument("--pt2", action="store_true", help="write encoder.pt2 (torch.export)")
    exp.set_defaults(run=export_cmd)


def run_cli(args: argparse.Namespace) -> int:
    try:
        return train(args)
    except TrainError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT


def train(args: argparse.Namespace) -> int:
    """Run (or resume) training; TrainError for problems found before any work is done."""
    from lewm_ros.training.loop import run_training  # lazy: torch only when a run starts, not for --help

    return run_training(args)


def export_cmd(args: argparse.Namespace) -> int:
    """A bundle from a run's checkpoint (--out) and/or ONNX / torch.export encoder files; errors exit 2."""
    # lazy, as in train(): torch is imported when an export runs, not when the parser is built
    from lewm_ros.model.bundle import BundleError, export_encoder_onnx, export_encoder_pt2, load_bundle

    target = args.bundle
    if args.out is not None:
        from lewm_ros.training.checkpoint import CheckpointError
        from lewm_ros.training.export import export_checkpoint

        try:
            target = export_checkpoint(args.bundle, args.out)
        except (CheckpointError, BundleError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote bundle {target} from {args.bundle}")
    elif not (args.onnx or args.pt2):
        print("error: choose --out (export a training run) and/or --onnx, --pt2", file=sys.stderr)
        return 2
    if not (args.onnx or args.pt2):
        return 0
    try:
        bundle = load_bundle(target)
    except BundleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.onnx:
        print(f"wrote {export_encoder_onnx(bundle)}")
    if args.pt2:
        print(f"wrote {export_encoder_pt2(bundle)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from lewm_ros.arguments import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m lewm_ros.train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_cli(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
