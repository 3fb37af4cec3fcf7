"""Bag recorder throughput: 224x224 rgb8 camera frames at the demo's rate (20 Hz) and faster, over real DDS.

For each rate, a fresh recorder process (`python -m lewm_ros.ros.bag_recorder`, as deployed) records
/camera/image_raw (sensor-data QoS, as mujoco_sim publishes it) while this process publishes frames at that
rate for --seconds; then the recorder is stopped with SIGINT and its JSON summary read back. Prints, per rate:
frames published, received by the recorder, written to the bag, dropped by its queue (writer too slow), lost
on the way (published - received: best-effort DDS, executor too slow), payload MB/s, bag size on disk and the
recorder's CPU time per second of recording.

Frames are a smooth synthetic scene with a moving disc (compressible like rendered frames); --pattern noise
sends incompressible random pixels, the worst case for zstd.

    python bench/recorder_throughput.py [--rates 20 60 120] [--seconds 10] [--storage mcap|sqlite3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))

import rclpy  # after the DDS environment above
from rclpy.context import Context
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

ROOT = Path(__file__).resolve().parents[1]
SIDE = 224
TOPIC = "/camera/image_raw"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def frames(pattern: str, count: int = 64) -> list[bytes]:
    """`count` distinct 224x224 rgb8 frames: a gradient scene with a disc moving across it, or noise."""
    rng = np.random.default_rng(0)
    if pattern == "noise":
        return [rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8).tobytes() for _ in range(count)]
    ys, xs = np.mgrid[0:SIDE, 0:SIDE]
    base = np.stack([xs * 255 // SIDE, ys * 255 // SIDE, np.full_like(xs, 90)], axis=-1).astype(np.uint8)
    out = []
    for i in range(count):
        frame = base.copy()
        cx, cy = SIDE / 2 + 70 * np.cos(i / 10), SIDE / 2 + 70 * np.sin(i / 10)
        frame[(xs - cx) ** 2 + (ys - cy) ** 2 < 20**2] = (230, 40, 40)
        out.append(frame.tobytes())
    return out


def run_rate(node: Node, publisher, payloads: list[bytes], rate: float, seconds: float, args, workdir: Path) -> dict:
    bag, summary_path = workdir / f"bag_{rate:g}hz", workdir / f"summary_{rate:g}hz.json"
    command = [sys.executable, "-m", "lewm_ros.ros.bag_recorder", "-o", str(bag), "--topics", TOPIC,
               "--storage", args.storage, "--compression", args.compression,
               "--summary", str(summary_path)]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while publisher.get_subscription_count() == 0:
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise RuntimeError(f"the recorder never subscribed: {process.stderr.read()[-2000:]}")
        time.sleep(0.05)
    time.sleep(0.5)  # discovery settles both ways
    msg = Image(height=SIDE, width=SIDE, encoding="rgb8", step=3 * SIDE, is_bigendian=0)
    msg.header.frame_id = "camera"
    period, published = 1.0 / rate, 0
    started = time.perf_counter()
    next_time = started
    while next_time - started < seconds:
        now = time.perf_counter()
        if now < next_time:
            time.sleep(next_time - now)
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.data = payloads[published % len(payloads)]
        publisher.publish(msg)
        published += 1
        next_time += period
    elapsed = time.perf_counter() - started
    time.sleep(1.0)  # let the last frames arrive
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if process.returncode != 0 or not summary_path.exists():
        raise RuntimeError(f"recorder exited with {process.returncode}: {err[-2000:]}")
    summary = json.loads(summary_path.read_text())
    topic = next(t for t in summary["topics"] if t["name"] == TOPIC)
    size = sum(f.stat().st_size for f in bag.iterdir())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "rate_hz": rate, "achieved_hz": round(published / elapsed, 1), "published": published,
        "received": topic["received"], "written": topic["written"], "dropped_queue": topic["dropped"],
        "lost_in_transport": published - topic["received"],
        "payload_mb_s": round(topic["bytes"] / 1e6 / elapsed, 2), "bag_mb": round(size / 1e6, 1),
        "recorder_cpu_s_per_s": round(cpu / summary["seconds"], 2),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", type=float, nargs="+", default=[20.0, 60.0, 120.0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    parser.add_argument("--compression", choices=("zstd", "none"), default="zstd")
    parser.add_argument("--pattern", choices=("scene", "noise"), default="scene")
    args = parser.parse_args()
    print(f"cpu: {cpu_model()} ({os.cpu_count()} cores); python {platform.python_version()}; "
          f"storage {args.storage}, compression {args.compression}, frames {SIDE}x{SIDE} rgb8 "
          f"({SIDE * SIDE * 3 / 1e3:.0f} kB), pattern {args.pattern}", flush=True)  # fmt: skip
    payloads = frames(args.pattern)
    context = Context()
    rclpy.init(context=context)
    node = Node("recorder_bench", context=context)
    publisher = node.create_publisher(Image, TOPIC, qos_profile_sensor_data)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="recorder-bench-") as workdir:
            for rate in args.rates:
                rows.append(run_rate(node, publisher, payloads, rate, args.seconds, args, Path(workdir)))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        node.destroy_node()
        context.try_shutdown()
    header = ("rate Hz", "achieved", "published", "received", "written", "dropped", "lost DDS", "MB/s", "bag MB",
              "CPU s/s")  # fmt: skip
    keys = ("rate_hz", "achieved_hz", "published", "received", "written", "dropped_queue", "lost_in_transport",
            "payload_mb_s", "bag_mb", "recorder_cpu_s_per_s")  # fmt: skip
    print(" | ".join(f"{h:>9}" for h in header))
    for row in rows:
        print(" | ".join(f"{row[k]:>9}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
