"""`lewm-ros eval` under its old module name: lewm_ros/cli.py's COMMAND_MODULES lists `lewm_ros.evaluate`. The
code lives in the lewm_ros/evaluation package; this file forwards its command-line entry points."""

from lewm_ros.evaluation.cli import register, run_eval

__all__ = ["register", "run_eval"]
