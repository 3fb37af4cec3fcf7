"""The retraining loop at small scale, end to end, with real components: `lewm-ros sim-reach --record` runs the demo
graph (mujoco_sim + lewm_agent on the shipped reach2d bundle) over DDS with the bag recorder beside it (a real MCAP
rosbag2 on simulated time, "start N"/"stop N" markers around each episode); `lewm-ros bag2dataset` turns the bag
into an episode file; `lewm-ros train --init models/reach2d` fine-tunes for a few steps and exports a bundle; a
fresh lewm_agent configures with that bundle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rclpy.parameter import Parameter

from lewm_ros.cli import main
from lewm_ros.data.episode_reader import EpisodeReader
from lewm_ros.ros.agent_node import LewmAgent

pytestmark = pytest.mark.timeout(180)

ROOT = Path(__file__).resolve().parents[1]
EPISODE_TOPIC = "/bag_recorder/episode"
EPISODES, EPISODE_SIM_S = 4, 2.5
MIN_ROWS = 16  # (history + 1) x frameskip: one training window of the shipped bundle
MAX_SPEED = 2.0  # reach2d's velocity servos: ctrlrange +-2 rad/s; the demo agent's action_scale


def test_record_convert_finetune_and_deploy(tmp_path, ros_context, capsys):
    bag, data, run = tmp_path / "bag", tmp_path / "reach_bag.h5", tmp_path / "run"
    assert main(["sim-reach", "--episodes", str(EPISODES), "--episode-seconds", str(EPISODE_SIM_S), "--no-video",
                 "--record", str(bag), "--out", str(tmp_path / "demo")]) == 0  # fmt: skip
    assert f"({EPISODES} episodes, 0 dropped)" in capsys.readouterr().out

    # bag -> dataset: episodes from the markers, rows one control period apart, commands by zero-order hold
    assert main(["bag2dataset", str(bag), "--image-topic", "/camera/image_raw",
                 "--action-topic", "/velocity_controller/commands", "--joint-topic", "/joint_states",
                 "--joint-names", "shoulder,elbow", "--image-size", "64", "--control-dt", "0.05",
                 "--max-joint-speed", str(MAX_SPEED), "--min-frames", str(MIN_ROWS), "--out", str(data),
                 "--no-progress"]) == 0  # fmt: skip
    report = capsys.readouterr().out
    print(report)  # shown with -s, and on failure
    assert f"split on episode markers ({EPISODE_TOPIC}); frames placed by header stamps" in report, report
    # the sim stamps frames and joint states with sim time: no frame is lost to timing; frames between episodes go,
    # and episodes that reached the goal in fewer than MIN_ROWS rows
    assert "between control steps" not in report and "no joint state" not in report, report
    with EpisodeReader(data) as reader:
        assert reader.num_episodes >= 2, report  # a training and a validation episode
        assert reader.image_shape == (64, 64, 3) and reader.action_dim == 2
        assert min(reader.episode_lengths) >= MIN_ROWS
        aligned, shifted = [], []
        for e in range(reader.num_episodes):
            action, qvel = reader.actions(e)[:-1].astype(np.float64), reader.read("qvel", e)
            # reach2d's servos track the command within a step: qvel at frame k+1 is row k's action x max speed,
            # which checks the alignment rule on real data; the command one row earlier fits worse
            aligned.append(np.abs(qvel[1:] - action * MAX_SPEED)[1:])
            shifted.append(np.abs(qvel[2:] - action[:-1] * MAX_SPEED))
        aligned_error, shifted_error = np.median(np.concatenate(aligned)), np.median(np.concatenate(shifted))
        assert aligned_error < 0.05 and aligned_error < shifted_error / 2, (aligned_error, shifted_error)

    # dataset -> fine-tuned bundle (a few steps: the point is the loop, not the model)
    assert main(["train", "--init", str(ROOT / "models" / "reach2d"), "--data", str(data), "--out", str(run),
                 "--epochs", "1", "--batch-size", "8", "--max-val-windows", "16", "--no-progress",
                 "--device", "cpu"]) == 0  # fmt: skip
    bundle = run / "bundle"
    assert (bundle / "model.json").is_file()

    # bundle -> agent: a fresh lewm_agent configures with it (loads it, checks the joints, warms up its planner)
    agent = LewmAgent(context=ros_context, parameter_overrides=[
        Parameter("bundle", value=str(bundle)), Parameter("joint_names", value=["shoulder", "elbow"]),
        Parameter("device", value="cpu"),
    ])  # fmt: skip
    try:
        assert str(agent.trigger_configure()) == "TransitionCallbackReturnType.SUCCESS"
        assert Path(agent.bundle_path).resolve() == bundle.resolve()
    finally:
        agent.destroy_node()
