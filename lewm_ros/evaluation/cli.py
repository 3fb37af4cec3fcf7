"""`lewm-ros eval`: its flags, and a run that keeps the episodes done when stopped.

Stopping: with `--out`, eval.json is rewritten (atomically) after every episode, marked `"partial": true`
until the last one, so even `kill -9` leaves the episodes done. Ctrl-C (SIGINT) and SIGTERM write it with
the episodes done so far and exit 130 and 143 (128 + the signal number, the shell convention).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from lewm_ros.arguments import one_line
from lewm_ros.evaluation.driver import evaluate
from lewm_ros.evaluation.presets import DEFAULT_CONTROL_DT, DEFAULT_PRESET, PRESETS, ROADMAP_FILE
from lewm_ros.evaluation.report import EvalReport, summary_line, write_json, write_outputs

EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143


class StoppedBySignalError(Exception):
    """Raised in the main thread by the SIGTERM handler so the episodes done so far are written."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def add_planner_arguments(parser: argparse.ArgumentParser) -> None:
    demo, paper = PRESETS["demo"], PRESETS["paper"]
    parser.add_argument("--preset", choices=tuple(PRESETS), default=DEFAULT_PRESET,
                        help="planner settings for the flags left unset: demo (default) = the ROS demo's agent, "
                        "CEM 64 samples x 6 iterations (2 warm), top 8, every block replanned and counted, along the "
                        "bundle's roadmap if it has one, 1 thread (~1 s per episode on 2 CPU cores); paper = the LeWM "
                        "paper's CEM 300 x 30, top 30, replanning every 5 blocks, final-latent cost (5-15 s)")
    parser.add_argument("--planner", choices=("cem", "icem", "mppi", "grad"), help="update rule (default cem)")
    parser.add_argument("--samples", type=int,
                        help=f"candidates per iteration (demo {demo['samples']}, paper {paper['samples']})")
    parser.add_argument("--iterations", type=int,
                        help=f"iterations per plan (demo {demo['iterations']}, paper {paper['iterations']})")
    parser.add_argument("--elites", type=int, help=f"top-k elites (demo {demo['elites']}, paper {paper['elites']})")
    parser.add_argument("--horizon", type=int, help="planned action blocks (default 5)")
    parser.add_argument("--warm-iterations", type=int,
                        help=f"iterations once warm-started (demo {demo['warm_iterations']}, paper: --iterations)")
    parser.add_argument("--no-warm-start", action="store_true", help="start every plan from zeros")
    parser.add_argument("--deadline-ms", type=float, help="anytime: stop at this deadline with the best plan so far")
    parser.add_argument("--stop-std", type=float, help="stop early once every std is below this")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), help="rollout autocast")
    parser.add_argument("--cost-weights", type=float, nargs="+",
                        help="weight per horizon block (demo: 1 each; paper: the last block only)")
    parser.add_argument("--roadmap", help="goal distance along a roadmap (`lewm-ros roadmap`): FILE, bundle "
                        f"(BUNDLE/{ROADMAP_FILE}) or none (demo: the bundle's when present; paper: none)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="closed-loop planning in the MuJoCo reach scene, without ROS",
        description="Closed-loop latent MPC in MuJoCo, without ROS. Default planner: the demo's (--preset demo, "
        "about 1 s per episode on 2 CPU cores); the paper's CEM 300 x 30 is --preset paper (5-15 s). With "
        "--out, eval.json is rewritten after every episode (\"partial\": true until all are done); Ctrl-C and "
        "SIGTERM keep the episodes done and exit 130 and 143.",
    )  # fmt: skip
    parser.add_argument("--bundle", type=Path, required=True, help="model bundle directory")
    parser.add_argument("--scene", default="reach2d", help="MJCF file or bundled scene name (default reach2d)")
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--budget", type=int, default=50, help="env steps per episode (default 50)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--goals", default="random", help="random | dataset:FILE.h5 (the paper's protocol)")
    parser.add_argument("--receding-horizon", type=int, help="blocks executed between plans (demo 1, paper 5)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--control-dt", type=float, help="seconds per control step (default: the bundle's "
                        f"training data, model.json; {DEFAULT_CONTROL_DT:g} when it records none); a value that "
                        "contradicts the bundle's is refused")
    parser.add_argument("--camera", help="MJCF camera to render (default: the scene's first)")
    parser.add_argument("--max-joint-speed", type=float, nargs="+", metavar="RAD_S",
                        help="one value or one per joint: the speed of a model action of 1.0 (default: the scene's)")
    parser.add_argument("--out", type=Path, help="directory for eval.json, eval.png, episodes.gif")
    parser.add_argument("--video-episodes", type=int, default=3, help="episodes in episodes.gif (0: none)")
    parser.add_argument("--threads", type=int, help="torch CPU threads, 0 = torch's default of one per core "
                        "(demo 1, as the demo's agent: faster when other work shares the CPU; paper 0)")
    parser.add_argument("--no-progress", action="store_true")
    add_planner_arguments(parser)
    parser.set_defaults(run=run_eval)


def _raise_stopped(signum: int, _frame: Any) -> None:
    raise StoppedBySignalError(signum)


def run_eval(args: argparse.Namespace) -> int:
    """`lewm-ros eval`: 0 done, 2 bad input, 130/143 stopped by SIGINT/SIGTERM (episodes done are kept)."""
    from lewm_ros.envs.reach_env import UnstableSimulationError
    from lewm_ros.model.bundle import BundleError

    if args.episodes < 1 or args.budget < 1 or (args.receding_horizon is not None and args.receding_horizon < 1):
        print("error: --episodes, --budget and --receding-horizon must be >= 1", file=sys.stderr)
        return 2
    if args.threads is not None and not 0 <= args.threads <= 1024:
        print("error: --threads must be in [0, 1024]", file=sys.stderr)
        return 2
    if not 0 <= args.seed < 2**63 or args.video_episodes < 0:
        print("error: --seed must be a non-negative 64-bit integer and --video-episodes >= 0", file=sys.stderr)
        return 2
    started = time.perf_counter()
    latest: list[EvalReport] = []

    def episode_done(report: EvalReport) -> None:
        latest[:] = [report]
        if args.out and len(report.episodes) < args.episodes:  # the last one is written with the plot below
            write_json(report, args.out)

    on_main_thread = _is_main_thread()  # signal handlers can only be installed there
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if on_main_thread else None
    try:
        report = evaluate(args, episode_done)
    except (BundleError, ValueError, FileNotFoundError, UnstableSimulationError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, StoppedBySignalError) as stop:
        signum = stop.signum if isinstance(stop, StoppedBySignalError) else signal.SIGINT
        return _stopped(args, latest[0] if latest else None, signum, started)
    finally:
        if on_main_thread:
            signal.signal(signal.SIGTERM, previous)
    print(summary_line(report, started))
    if args.out:
        write_outputs(report, args.out)
        print(f"wrote {args.out / 'eval.json'}, eval.png" + (", episodes.gif" if args.video_episodes else ""))
    return 0


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _stopped(args: argparse.Namespace, report: EvalReport | None, signum: int, started: float) -> int:
    """Keep what was done: the summary of the finished episodes and a partial eval.json; 128 + signal."""
    name = signal.Signals(signum).name
    signals = (signal.SIGINT, signal.SIGTERM) if _is_main_thread() else ()
    ignored = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}  # a second Ctrl-C: the file stays whole
    try:
        done = 0 if report is None else len(report.episodes)
        print(f"eval: stopped by {name} after {done} of {args.episodes} episodes", file=sys.stderr)
        if report is not None and done:
            print(summary_line(report, started))
        if args.out and report is not None:
            write_json(report, args.out, stopped_by=name)
            print(f"wrote {args.out / 'eval.json'} (partial: {done} of {args.episodes} episodes)", file=sys.stderr)
    finally:
        for sig, handler in ignored.items():
            signal.signal(sig, handler)
    return 128 + signum
