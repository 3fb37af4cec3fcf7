"""Simulation speed on this CPU: rendering, physics, environment steps and dataset collection.

Prints one table. Rendered frames/s of the bundled scenes at 64x64 and 224x224, against MuJoCo's default
offscreen settings (4x multisampling, finer tessellation, 640x480 buffer) as a baseline measured in the same run;
physics steps/s; ReachEnv control steps/s (25 physics substeps + one 64x64 frame); and end-to-end
collection of 10,000 reach2d frames (100 episodes x 99 steps, 64x64, policy mixed) with 1 and 2 workers.

    MUJOCO_GL=egl python bench/sim_speed.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import mujoco
import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")

from lewm_ros.envs.collect import CollectionSpec, collect
from lewm_ros.envs.reach_env import ReachConfig, ReachEnv

SCENES = ("reach2d", "arm3d")


def render_fps(scene: str, size: int, frames: int) -> float:
    with ReachEnv(scene, ReachConfig(image_size=size)) as env:
        env.reset(seed=0)
        for _ in range(10):
            env.render()
        started = time.perf_counter()
        for _ in range(frames):
            env.render()
        return frames / (time.perf_counter() - started)


def default_quality_render_fps(scene: str, size: int, frames: int) -> float:
    """The same scene with MuJoCo's default offscreen settings: 4x multisampling, 4096 shadow map,
    28x16 tessellation and a 640x480 offscreen buffer."""
    with ReachEnv(scene, ReachConfig(image_size=size)) as env:
        env.reset(seed=0)
        model = env.model
        model.vis.quality.offsamples = 4
        model.vis.quality.shadowsize = 4096
        model.vis.quality.numslices = 28
        model.vis.quality.numstacks = 16
        model.vis.global_.offwidth, model.vis.global_.offheight = 640, 480
        with mujoco.Renderer(model, size, size) as renderer:
            for _ in range(3):
                renderer.update_scene(env.data, camera=env.camera_name)
                renderer.render()
            started = time.perf_counter()
            for _ in range(frames):
                renderer.update_scene(env.data, camera=env.camera_name)
                renderer.render()
            return frames / (time.perf_counter() - started)


def physics_steps_per_second(scene: str, steps: int) -> float:
    with ReachEnv(scene, ReachConfig(image_size=16)) as env:
        env.reset(seed=0)
        env.data.ctrl[:] = 0.5 * env.max_joint_speed
        started = time.perf_counter()
        mujoco.mj_step(env.model, env.data, steps)
        return steps / (time.perf_counter() - started)


def env_steps_per_second(scene: str, steps: int) -> float:
    with ReachEnv(scene, ReachConfig(image_size=64)) as env:
        env.reset(seed=0)
        actions = np.random.default_rng(0).uniform(-1, 1, (steps, env.action_dim))
        started = time.perf_counter()
        for action in actions:
            env.step(action)
        return steps / (time.perf_counter() - started)


def collection_frames_per_second(workers: int, episodes: int, steps: int) -> tuple[float, float]:
    spec = CollectionSpec(scene="reach2d", episodes=episodes, steps=steps, policy="mixed", seed=0,
                          env=ReachConfig(image_size=64))
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "reach2d.h5"
        started = time.perf_counter()
        report = collect(spec, out, workers=workers)
        elapsed = time.perf_counter() - started
    return report.frames_written / elapsed, elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames per measurement")
    args = parser.parse_args(argv)
    scale = 0.2 if args.quick else 1.0
    n = lambda count: max(10, int(count * scale))  # noqa: E731

    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"MUJOCO_GL={os.environ['MUJOCO_GL']}; mujoco {mujoco.__version__}")
    print(f"{'measurement':<52} {'value':>12}")
    for scene in SCENES:
        for size in (64, 224):
            fps = render_fps(scene, size, n(2000 if size == 64 else 1000))
            print(f"{f'{scene} render {size}x{size} (frames/s)':<52} {fps:>12,.0f}")
        baseline = default_quality_render_fps(scene, 64, n(100))
        fast = render_fps(scene, 64, n(1000))
        print(f"{f'{scene} render 64x64, default quality (frames/s)':<52} {baseline:>12,.0f}")
        print(f"{'  speed-up of the scene settings':<52} {fast / baseline:>11.1f}x")
    for scene in SCENES:
        print(f"{f'{scene} physics (mj_step/s)':<52} {physics_steps_per_second(scene, n(50_000)):>12,.0f}")
        print(f"{f'{scene} ReachEnv.step at 64x64 (steps/s)':<52} {env_steps_per_second(scene, n(1000)):>12,.0f}")
    episodes = max(2, int(100 * scale))
    frames = episodes * 100
    for workers in (1, 2):
        fps, elapsed = collection_frames_per_second(workers, episodes, 99)
        label = f"collect {frames:,} reach2d frames, {workers} worker(s) (frames/s)"
        print(f"{label:<52} {fps:>12,.0f}   ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
