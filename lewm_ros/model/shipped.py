"""Bundles by name: `reach2d` means the demo bundle shipped in models/ (source tree) or share/lewm_ros/models
(an installed package), so launch files and YAML can name a bundle without knowing the install prefix."""

from __future__ import annotations

import os
import sys
from pathlib import Path

SOURCE_MODELS = Path(__file__).resolve().parents[2] / "models"


def shipped_model_dirs() -> list[Path]:
    """Where shipped bundles may live: the source tree, then share/lewm_ros/models of each install prefix."""
    prefixes = [sys.prefix, *filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep))]
    return [SOURCE_MODELS, *(Path(prefix) / "share" / "lewm_ros" / "models" for prefix in prefixes)]


def find_bundle(name_or_path: str | Path) -> Path:
    """An existing bundle directory: the path as given, or a shipped bundle of that name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if len(path.parts) == 1:
        for folder in shipped_model_dirs():
            if (folder / path.name).is_dir():
                return folder / path.name
    raise FileNotFoundError(
        f"bundle not found: {str(name_or_path)!r} is neither a directory nor a shipped bundle "
        f"(looked in {', '.join(str(d) for d in shipped_model_dirs())})"
    )
