"""A forwarding name only: lewm_ros/cli.py's COMMAND_MODULES still lists `lewm_ros.planning.bench`. The benchmark
lives in lewm_ros/benchmarks/; delete this file once the command line names lewm_ros.benchmarks.planner."""

from lewm_ros.benchmarks.planner import register

__all__ = ["register"]
