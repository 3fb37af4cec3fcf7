"""Bundles from training runs: at the end of `lewm-ros train`, and from any checkpoint with
`lewm-ros export runs/NAME --out BUNDLE` (e.g. a run that was stopped, or a checkpoint copied off a GPU box)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from lewm_ros.model.bundle import save_bundle
from lewm_ros.model.config import LeWMConfig
from lewm_ros.model.lewm import LeWM
from lewm_ros.training.checkpoint import load_checkpoint

SURPRISE_METRIC = "squared L2 distance between the predicted and the encoded latent of the newest frame"


def write_run_bundle(
    bundle_dir: Path, model: LeWM, action_mean: Any, action_std: Any, data_summary: dict, last_eval: dict,
    training: dict,
) -> Path:  # fmt: skip
    """Weights + TorchScript + model.json with the training data, the validation loss and the surprise
    calibration (percentiles of the one-step latent prediction error on validation windows). Written
    next to the target and renamed into place, so a crash never leaves a half bundle at `bundle_dir`."""
    extra = {
        "training": {**training, "data": data_summary, "val_pred_loss": last_eval.get("pred"),
                     "val_sigreg": last_eval.get("sigreg"), "latent_health": last_eval.get("health")},
        "surprise": {"metric": SURPRISE_METRIC, "percentiles": last_eval.get("surprise"),
                     "windows": last_eval.get("windows")},
    }  # fmt: skip
    tmp = bundle_dir.with_name(bundle_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_bundle(model, tmp, np.asarray(action_mean), np.asarray(action_std), extra=extra)
    if bundle_dir.exists():
        shutil.rmtree(bundle_dir)
    tmp.replace(bundle_dir)
    return bundle_dir


def export_checkpoint(run_dir: Path, out: Path) -> Path:
    """A bundle from run_dir/checkpoint.pt (CheckpointError when there is none)."""
    state = load_checkpoint(run_dir)
    model = LeWM(LeWMConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    training = {"steps": state["step"], "epochs_completed": state["epoch"], "precision": state["precision"],
                "settings": state["settings"], "exported_from": str(run_dir)}  # fmt: skip
    return write_run_bundle(Path(out), model.eval(), state["action_mean"], state["action_std"],
                            state.get("data_summary", {}), state.get("last_eval", {}), training)  # fmt: skip
