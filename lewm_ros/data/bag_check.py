"""`lewm-ros bag-check DIR`: what a rosbag2 directory holds, what is readable, and what was lost.

It scans every storage file (MCAP record by record, sqlite3 by query), so it also works where metadata.yaml
is missing, partial or stale, as after a recorder killed with SIGKILL. Unless --dry-run, it then recovers:
finishes killed MCAP files (cuts the torn tail, appends index, summary and footer), rolls back an unfinished
sqlite3 transaction, and writes a valid metadata.yaml (version 8) from what it found. Exit code 0: nothing
lost; 1: something was lost (listed; the readable rest is recovered); 2: not a bag, or unreadable.

ROS-free: rosbags and the standard library only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lewm_ros.arguments import one_line


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bag-check", help="report what a rosbag2 directory holds and recover a killed recording",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("bag", type=Path, metavar="DIR", help="rosbag2 directory (MCAP or sqlite3)")
    parser.add_argument("--dry-run", action="store_true", help="report only: change no file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    parser.set_defaults(run=run_bag_check)


def run_bag_check(args: argparse.Namespace) -> int:
    """Check (and unless --dry-run recover) one bag; exit 0 intact, 1 something lost, 2 not a bag."""
    from lewm_ros.data.bag_errors import BagError
    from lewm_ros.data.bag_recovery import check_bag

    try:
        report = check_bag(args.bag, repair=not args.dry_run)
    except (BagError, OSError) as error:
        print(f"lewm-ros bag-check: error: {one_line(error)}", file=sys.stderr)
        return 2
    print(report.to_json() if args.json else "\n".join(report.lines()))
    if args.dry_run and not args.json and (report.metadata != "ok" or report.lost):
        print("dry run: nothing was changed; run without --dry-run to recover", file=sys.stderr)
    if not any(f.status != "unreadable" for f in report.files):
        return 2
    return 0 if report.intact else 1
