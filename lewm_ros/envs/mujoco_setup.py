"""MuJoCo imported once the way this package needs it: an offscreen GL backend chosen first, its log file
kept out of the working directory.

MuJoCo reads MUJOCO_GL once, at its first import, so every module of ours that uses MuJoCo takes it from here
(`from lewm_ros.envs.mujoco_setup import mujoco`) and the choice cannot come too late. An explicit MUJOCO_GL
always wins; with a display MuJoCo's default (GLFW) works; without one, EGL, then OSMesa.

MuJoCo appends its warnings to `MUJOCO_LOG.TXT` in the current directory by default (a stray file in
checkouts and datasets); this module turns that file off (console messages stay) unless the user already
configured MuJoCo's log, or names a log file in the `LEWM_MUJOCO_LOG` environment variable.
"""

from __future__ import annotations

import os
from pathlib import Path

from lewm_ros.envs.gl_backend import headless_gl_backend

MUJOCO_LOG_ENV = "LEWM_MUJOCO_LOG"

if "DISPLAY" not in os.environ and "MUJOCO_GL" not in os.environ and (_backend := headless_gl_backend()):
    os.environ["MUJOCO_GL"] = _backend

import mujoco  # noqa: E402  (after MUJOCO_GL is settled, which is this module's job)

__all__ = ["MUJOCO_LOG_ENV", "mujoco"]


def _keep_mujoco_log_out_of_the_working_directory() -> None:
    """Turn MuJoCo's CWD log file off, or point it at $LEWM_MUJOCO_LOG, unless the user configured it."""
    config_type = getattr(mujoco, "MjLogConfig", None)  # MuJoCo >= 3.4
    if config_type is None:
        return
    config = config_type.get()
    if not (config.logto_file and config.logfile == "MUJOCO_LOG.TXT"):
        return
    wanted = os.environ.get(MUJOCO_LOG_ENV)
    if wanted:
        config.logfile = str(Path(wanted).expanduser().resolve())
    else:
        config.logto_file = False
    config.set()


_keep_mujoco_log_out_of_the_working_directory()
