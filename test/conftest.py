"""Session-wide test environment: DDS on loopback, a random ROS domain, headless MuJoCo.

Set here (before any test imports rclpy) so a bare `pytest` run is as safe as `make test`.
"""

import os
import random

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_LOCALHOST_ONLY"] = "1"
os.environ.setdefault("MUJOCO_GL", "egl")
# onnxruntime >= 1.29 on Linux uploads telemetry (a DNS query to an outside host, seen with tcpdump): off.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
os.environ["ORT_TELEMETRY_DISABLED"] = "1"
# A fresh domain per session so two suites on one machine never see each other's topics.
# Fast DDS derives ports from the domain id; 1..100 keeps them inside the safe range on Linux.
os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))


@pytest.fixture
def ros_context():
    """A private rclpy context per test, shut down afterwards even when the test fails."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A randomly initialised bundle of the `tiny` preset (64 px, action dim 2): mechanics, not skill."""
    import torch

    from lewm_ros.model.bundle import save_bundle
    from lewm_ros.model.config import preset
    from lewm_ros.model.lewm import LeWM

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("bundle") / "tiny"
    save_bundle(LeWM(preset("tiny")).eval(), path)
    return path


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    """6 reach2d episodes of 60 steps (61 frames), 64 px, mixed exploration."""
    from lewm_ros.envs.collect import CollectionSpec, collect
    from lewm_ros.envs.reach_env import ReachConfig

    path = tmp_path_factory.mktemp("data") / "reach.h5"
    spec = CollectionSpec(scene="reach2d", episodes=6, steps=60, policy="mixed", seed=3, env=ReachConfig(image_size=64))
    collect(spec, path, mode="create", workers=1)
    return path
