"""Hostile inputs to ReachEnv/ReachConfig, `lewm-ros collect`, every subcommand's argument parsing and
`import-reference`: each ends in a clear error (a named field, one stderr line, exit code 2), unstable
physics is an error instead of data, and nothing is written when a request is refused."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

from lewm_ros import cli
from lewm_ros.envs import collect as collect_module
from lewm_ros.envs.collect import CollectionSpec, RequestError, collect
from lewm_ros.envs.reach_env import MAX_IMAGE_SIDE, ReachConfig, ReachEnv, UnstableSimulationError
from lewm_ros.model.bundle import load_bundle
from lewm_ros.model.config import preset
from lewm_ros.model.lewm import LeWM

ROOT = Path(__file__).resolve().parents[1]
REACH2D = str(ROOT / "sim" / "reach2d.xml")
TINY = ReachConfig(image_size=16)


def arm_xml(*, timestep: float = 0.005, integrator: str = "implicitfast", kv: float = 2.0, stiffness: float = 0) -> str:
    """A planar two-joint arm with velocity servos; coarse timesteps, explicit integrators, stiff gains or
    stiff joint springs make it blow up."""
    return f"""
<mujoco model="hostile_arm">
  <compiler angle="radian"/>
  <option timestep="{timestep}" integrator="{integrator}"/>
  <visual><quality offsamples="0" shadowsize="0"/></visual>
  <default>
    <joint armature="0.002" damping="0.001" stiffness="{stiffness}" range="-2.5 2.5"/>
    <geom contype="0" conaffinity="0" mass="0.02"/>
  </default>
  <worldbody>
    <geom type="plane" size="0.4 0.4 0.4" rgba="1 1 1 1"/>
    <camera name="overhead" pos="0 0 0.7" fovy="45"/>
    <body name="upper" pos="0 0 0.01"><joint name="j0" type="hinge" axis="0 0 1"/>
      <geom type="capsule" fromto="0 0 0 0.12 0 0" size="0.01" rgba="0.9 0.1 0.1 1"/>
      <body name="fore" pos="0.12 0 0"><joint name="j1" type="hinge" axis="0 0 1"/>
        <geom type="capsule" fromto="0 0 0 0.12 0 0" size="0.01" rgba="0.1 0.1 0.9 1"/>
      </body>
    </body>
  </worldbody>
  <actuator>
    <velocity joint="j0" kv="{kv}" ctrlrange="-1.5 1.5"/>
    <velocity joint="j1" kv="{kv}" ctrlrange="-1.5 1.5"/>
  </actuator>
</mujoco>
"""


# scenes that blow up: MuJoCo's own auto-reset (BADQACC), and a divergence it does not flag
UNSTABLE = {
    "euler-stiff-servo": (arm_xml(timestep=0.01, integrator="Euler", kv=1e4), r"silently reset.*EULER.*implicitfast"),
    "rk4-stiff-servo": (arm_xml(timestep=0.01, integrator="RK4", kv=1e4), r"MuJoCo warned.*RK4"),
    "implicit-stiff-spring": (
        arm_xml(timestep=0.01, stiffness=1e4),
        r"QACC.*timestep 0\.01 s is too large.*IMPLICITFAST.*lower <option timestep",
    ),
    "euler-slow-divergence": (arm_xml(timestep=0.01, integrator="Euler", kv=0.5), r"flung far outside.*range"),
}


def write(tmp_path: Path, xml: str, name: str = "arm.xml") -> str:
    path = tmp_path / name
    path.write_text(xml)
    return str(path)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """`lewm-ros ARGV` in process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_usage_error(code: int, err: str, prog: str | None = None) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and "usage:" not in err
    if prog is not None:
        assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


# ============================================================================ 4. ReachConfig


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("image_size", 0, ValueError),
        ("image_size", -16, ValueError),
        ("image_size", MAX_IMAGE_SIDE + 1, ValueError),
        ("image_size", 100_000, ValueError),
        ("image_size", (16, 100_000), ValueError),
        ("image_size", (0, 16), ValueError),
        ("image_size", (16,), TypeError),
        ("image_size", (16, 16, 3), TypeError),
        ("image_size", 16.0, TypeError),
        ("image_size", "16", TypeError),
        ("image_size", True, TypeError),
        ("image_size", (16, True), TypeError),
        ("image_size", None, TypeError),
        ("control_dt", 0.0, ValueError),
        ("control_dt", -0.05, ValueError),
        ("control_dt", float("nan"), ValueError),
        ("control_dt", float("inf"), ValueError),
        ("control_dt", 3600.0, ValueError),
        ("control_dt", True, TypeError),
        ("control_dt", "0.05", TypeError),
        ("control_dt", None, TypeError),
        ("success_tolerance", 0.0, ValueError),
        ("success_tolerance", float("nan"), ValueError),
        ("success_tolerance", float("inf"), ValueError),
        ("limit_margin", -0.1, ValueError),
        ("limit_margin", 0.5, ValueError),
        ("limit_margin", float("nan"), ValueError),
        ("max_joint_speed", 0.0, ValueError),
        ("max_joint_speed", -1.0, ValueError),
        ("max_joint_speed", float("nan"), ValueError),
        ("max_joint_speed", (1.0, float("inf")), ValueError),
        ("max_joint_speed", (), TypeError),
        ("max_joint_speed", "fast", TypeError),
        ("max_joint_speed", True, TypeError),
        ("show_target", 1, TypeError),
        ("show_target", "yes", TypeError),
        ("fast_rendering", 0, TypeError),
        ("camera", 5, TypeError),
        ("camera", "", TypeError),
    ],
)
def test_reach_config_refuses_bad_fields_by_name(field, value, error):
    with pytest.raises(error, match=rf"ReachConfig\.{field}"):
        ReachConfig(**{field: value})


def test_reach_config_normalises_what_it_accepts():
    assert ReachConfig(image_size=[24, 40]).image_size == (24, 40)
    assert ReachConfig(image_size=np.int64(16)).image_shape == (16, 16)
    assert ReachConfig(max_joint_speed=[1, 2.5]).max_joint_speed == (1.0, 2.5)
    assert ReachConfig(control_dt=1).control_dt == 1


def test_renderer_failures_are_a_clear_runtime_error(monkeypatch):
    def broken(*args, **kwargs):
        raise mujoco.FatalError("Offscreen framebuffer is not complete, error 0x8cd6")

    monkeypatch.setattr(mujoco, "Renderer", broken)
    with pytest.raises(RuntimeError, match=r"cannot render 16x16 frames.*framebuffer") as caught:
        ReachEnv(REACH2D, TINY)
    assert not isinstance(caught.value, mujoco.FatalError)


# ============================================================================ 4. set_state bounds


@pytest.fixture(scope="module")
def env():
    with ReachEnv(REACH2D, TINY) as environment:
        yield environment


@pytest.mark.parametrize(
    ("qpos", "qvel", "match"),
    [
        ([3.5, 0.0], None, "limits"),
        ([0.0, -2.7], None, "limits"),
        ([2.9, 2.7], None, "limits"),
        ([1e6, 0.0], None, "limits"),
        ([-1e300, 0.0], None, "limits"),
        ([0.0, 0.0], [1e12, 0.0], "1e\\+10"),
        ([0.0, 0.0], [0.0, -1e300], "1e\\+10"),
    ],
)
def test_set_state_enforces_the_bounds_of_reset(env, qpos, qvel, match):
    env.reset(seed=1)
    env.step([0.5, -0.5])
    before = (env.qpos, env.qvel, env.time, env.data.ctrl.copy())
    with pytest.raises(ValueError, match=match):
        env.set_state(qpos, qvel)
    for old, new in zip(before, (env.qpos, env.qvel, env.time, env.data.ctrl), strict=True):
        np.testing.assert_array_equal(old, new)  # refused before touching the simulation
    if qvel is None:  # the same positions are refused by reset(start_qpos=...), with the same words
        with pytest.raises(ValueError, match=match):
            env.reset(start_qpos=qpos, goal_qpos=[0.5, 0.5])


def test_set_state_accepts_the_limits_and_the_overshoot_of_soft_limits(env):
    env.reset(seed=2)
    result = env.set_state(env.joint_upper, [0.5, -0.5])
    np.testing.assert_array_equal(result.observation.qpos, env.joint_upper)
    recorded = env.joint_lower - 0.004  # a few mrad past the range: what the simulated arm itself reaches
    np.testing.assert_array_equal(env.set_state(recorded).observation.qpos, recorded)
    env.reset(start_qpos=recorded, goal_qpos=[0.0, 0.0])


# ============================================================================ 4. instability


@pytest.mark.parametrize("case", sorted(UNSTABLE))
def test_unstable_physics_is_an_error_naming_the_cause(tmp_path, case):
    xml, cause = UNSTABLE[case]
    with ReachEnv(write(tmp_path, xml), TINY) as environment:
        environment.reset(start_qpos=[0.5, -0.5], goal_qpos=[1.0, 1.0])
        with pytest.raises(UnstableSimulationError, match=cause) as caught:
            for _ in range(20):
                environment.step([1.0, -1.0])
        message = str(caught.value)
        assert "unstable simulation" in message and "timestep" in message and "integrator" in message
        # the broken state is never handed out as an observation: stepping on needs a reset first
        with pytest.raises(UnstableSimulationError, match=r"reset\(\)"):
            environment.step([0.0, 0.0])
        result = environment.reset(start_qpos=[0.5, -0.5], goal_qpos=[1.0, 1.0])
        np.testing.assert_allclose(result.observation.qpos, [0.5, -0.5])


def test_the_same_arm_with_a_sound_timestep_and_integrator_is_stable(tmp_path):
    with ReachEnv(write(tmp_path, arm_xml(timestep=0.01, kv=1e4)), TINY) as environment:
        environment.reset(seed=0)
        for _ in range(20):
            result = environment.step([1.0, -1.0])
        assert np.all(np.abs(result.observation.qpos) <= 2.5 + 1e-3)


def test_mujoco_auto_reset_is_caught_even_after_a_recovered_warning(tmp_path):
    """A second blow-up after set_state (MuJoCo's counters would already read 1) is still caught."""
    xml, _ = UNSTABLE["euler-stiff-servo"]
    with ReachEnv(write(tmp_path, xml), TINY) as environment:
        environment.reset(start_qpos=[0.5, -0.5], goal_qpos=[1.0, 1.0])
        with pytest.raises(UnstableSimulationError):
            environment.step([1.0, -1.0])
        environment.set_state([0.3, 0.3])
        with pytest.raises(UnstableSimulationError, match="silently reset"):
            environment.step([1.0, -1.0])


# ============================================================================ 4. collect never writes unstable episodes


def unstable_spec(scene: str, **changes) -> CollectionSpec:
    settings = {"scene": scene, "episodes": 2, "steps": 6, "policy": "random", "seed": 0, "env": TINY}
    settings.update(changes)
    return CollectionSpec(**settings)


@pytest.mark.parametrize("workers", [1, 2])
def test_collect_stops_on_unstable_physics_and_writes_nothing(tmp_path, workers):
    scene = write(tmp_path, UNSTABLE["euler-stiff-servo"][0])
    out = tmp_path / "d.h5"
    with pytest.raises(UnstableSimulationError, match=r"episode 0: unstable simulation"):
        collect(unstable_spec(scene), out, workers=workers)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arm.xml"]


def test_collect_append_onto_a_good_file_leaves_it_byte_identical(tmp_path):
    good = write(tmp_path, arm_xml(timestep=0.01), "good.xml")
    bad = write(tmp_path, arm_xml(timestep=0.01, integrator="Euler", kv=0.5), "bad.xml")
    out = tmp_path / "d.h5"
    collect(unstable_spec(good, episodes=1), out)
    before = out.read_bytes()
    with pytest.raises(UnstableSimulationError, match="flung"):
        collect(unstable_spec(bad, steps=20), out, mode="append")
    assert out.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_collect_cli_reports_unstable_physics_in_one_line(tmp_path, capsys):
    scene = write(tmp_path, UNSTABLE["euler-stiff-servo"][0])
    out = tmp_path / "d.h5"
    code, _, err = run_cli(capsys, "collect", "--scene", scene, "--out", out, "--episodes", "2", "--steps", "4",
                           "--image-size", "16", "--progress", "none")  # fmt: skip
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1, err
    assert "unstable simulation" in lines[0] and "nothing written" in lines[0]
    assert not out.exists()


def test_eval_on_an_unstable_scene_is_one_error_line(tmp_path, capsys, tiny_bundle):
    scene = write(tmp_path, UNSTABLE["implicit-stiff-spring"][0])  # diverges even under zero commands
    code, _, err = run_cli(capsys, "eval", "--bundle", tiny_bundle, "--scene", scene, "--episodes", "1",
                           "--budget", "5", "--samples", "8", "--iterations", "1", "--elites", "2", "--no-progress",
                           "--precision", "fp32", "--video-episodes", "0")  # fmt: skip
    line = assert_one_line_usage_error(code, err)
    assert "unstable simulation" in line


# ============================================================================ 5. one line, exit 2, for every subcommand


def collect_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["collect", "--scene", REACH2D, "--out", str(tmp_path / "d.h5"), "--episodes", "1", "--steps", "1",
            "--image-size", "16", "--progress", "none", *extra]  # fmt: skip


COLLECT_BAD = {
    "steps-negative": ["--steps", "-1"],
    "steps-zero": ["--steps", "0"],
    "steps-text": ["--steps", "many"],
    "steps-float": ["--steps", "1e3"],
    "steps-nan": ["--steps", "nan"],
    "steps-huge": ["--steps", "100001"],
    "episodes-zero": ["--episodes", "0"],
    "episodes-negative": ["--episodes", "-5"],
    "episodes-huge": ["--episodes", "1000000000"],
    "episodes-inf": ["--episodes", "inf"],
    "image-zero": ["--image-size", "0"],
    "image-negative": ["--image-size", "-16"],
    "image-over-renderer": ["--image-size", str(MAX_IMAGE_SIDE + 1)],
    "image-huge-pair": ["--image-size", "100000x100000"],
    "image-half-pair": ["--image-size", "16x"],
    "image-zero-side": ["--image-size", "16x0"],
    "image-three-sides": ["--image-size", "16x16x16"],
    "image-text": ["--image-size", "big"],
    "image-nan": ["--image-size", "nan"],
    "workers-zero": ["--workers", "0"],
    "workers-negative": ["--workers", "-2"],
    "workers-over-cap": ["--workers", "65"],
    "workers-over-episodes": ["--workers", "2"],
    "workers-text": ["--workers", "all"],
    "control-dt-zero": ["--control-dt", "0"],
    "control-dt-negative": ["--control-dt", "-0.05"],
    "control-dt-nan": ["--control-dt", "nan"],
    "control-dt-inf": ["--control-dt", "inf"],
    "control-dt-hour": ["--control-dt", "3600"],
    "control-dt-text": ["--control-dt", "fast"],
    "speed-zero": ["--max-joint-speed", "0"],
    "speed-nan": ["--max-joint-speed", "nan"],
    "speed-negative": ["--max-joint-speed", "-2"],
    "seed-negative": ["--seed", "-1"],
    "seed-too-big": ["--seed", str(2**64)],
    "seed-text": ["--seed", "x"],
    "memory-per-episode": ["--steps", "10000", "--image-size", "4096"],
    "unknown-flag": ["--frobnicate"],
    "append-and-overwrite": ["--append", "--overwrite"],
    "bad-policy": ["--policy", "greedy"],
}


@pytest.mark.parametrize("case", sorted(COLLECT_BAD))
def test_collect_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, case):
    code, _, err = run_cli(capsys, *collect_args(tmp_path, *COLLECT_BAD[case]))
    assert_one_line_usage_error(code, err, "lewm-ros collect")
    assert not (tmp_path / "d.h5").exists() and list(tmp_path.iterdir()) == []


def test_collect_refuses_an_output_bigger_than_the_free_disk_space(tmp_path, capsys, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    seen = []

    def nearly_full(path):
        seen.append(Path(path))
        return usage(10**9, 10**9 - 100_000, 100_000)

    monkeypatch.setattr(collect_module.shutil, "disk_usage", nearly_full)
    target = tmp_path / "new" / "folder" / "d.h5"
    code, _, err = run_cli(capsys, "collect", "--scene", REACH2D, "--out", target, "--episodes", "20",
                           "--steps", "50", "--image-size", "16", "--progress", "none")  # fmt: skip
    line = assert_one_line_usage_error(code, err, "lewm-ros collect")
    assert "free" in line and "97.7 KiB" in line
    assert seen and seen[0] == tmp_path  # measured on the disk the output will be on
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RequestError, match="free"):
        collect(unstable_spec(REACH2D, episodes=20, steps=50), target)


def test_collect_accepts_the_caps_themselves(tmp_path, capsys):
    code, _, err = run_cli(capsys, *collect_args(tmp_path, "--episodes", "2", "--workers", "2",
                                                 "--control-dt", "10", "--max-joint-speed", "1000"))
    assert code == 0, err


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    from lewm_ros.model.bundle import save_bundle

    torch.manual_seed(0)
    return save_bundle(LeWM(preset("tiny")).eval(), tmp_path_factory.mktemp("bundle") / "tiny")


# (argv, prefix of the error line or None for a subcommand's own "error: ..." line, word the line must hold)
OTHER_BAD = {
    "no-such-command": (["frobnicate"], "lewm-ros", "invalid choice"),
    "top-level-flag": (["--frobnicate"], "lewm-ros", "--frobnicate"),
    "train-epochs-text": (["train", "--out", "{tmp}/run", "--epochs", "x"], "lewm-ros train", "--epochs"),
    "train-lr-text": (["train", "--out", "{tmp}/run", "--lr", "fast"], "lewm-ros train", "--lr"),
    "train-missing-out": (["train", "--epochs", "1"], "lewm-ros train", "--out"),
    "train-minutes-inf": (["train", "--data", "{tmp}/none.h5", "--out", "{tmp}/run", "--minutes", "inf"], None,
                          "--minutes"),
    "train-grad-clip-nan": (["train", "--data", "{tmp}/none.h5", "--out", "{tmp}/run", "--grad-clip", "nan"], None,
                            "--grad-clip"),
    "train-seed-negative": (["train", "--data", "{tmp}/none.h5", "--out", "{tmp}/run", "--seed", "-1"], None,
                            "--seed"),
    "eval-samples-nan": (["eval", "--bundle", "{bundle}", "--samples", "nan"], "lewm-ros eval", "--samples"),
    "eval-seed-negative": (["eval", "--bundle", "{bundle}", "--seed", "-1", "--episodes", "1"], None, "--seed"),
    "eval-video-negative": (["eval", "--bundle", "{bundle}", "--video-episodes", "-1", "--episodes", "1"], None,
                            "--video-episodes"),
    "probe-seed-negative": (["probe", "{bundle}", "--data", "{tmp}/none.h5", "--seed", "-1"], None, "--seed"),
    "probe-max-frames-text": (["probe", "{bundle}", "--data", "{tmp}/none.h5", "--max-frames", "x"],
                              "lewm-ros probe", "--max-frames"),
    "bench-samples-nan": (["bench", "planner", "--preset", "tiny", "--samples", "nan"], "lewm-ros bench planner",
                          "--samples"),
    "bench-unknown-flag": (["bench", "planner", "--turbo"], "lewm-ros bench planner", "--turbo"),
    "dataset-info-unknown-flag": (["dataset-info", "{tmp}/none.h5", "--deep"], "lewm-ros dataset-info", "--deep"),
    "model-info-missing-arg": (["model-info"], "lewm-ros model-info", "model"),
    "export-unknown-flag": (["export", "{bundle}", "--tflite"], "lewm-ros export", "--tflite"),
}


@pytest.mark.parametrize("case", sorted(OTHER_BAD))
def test_other_subcommands_bad_arguments_are_one_line_and_exit_2(tmp_path, capsys, tiny_bundle, case):
    argv, prog, word = OTHER_BAD[case]
    argv = [a.format(tmp=tmp_path, bundle=tiny_bundle) for a in argv]
    code, _, err = run_cli(capsys, *argv)
    assert word in assert_one_line_usage_error(code, err, prog)
    assert not (tmp_path / "run").exists()


def test_help_and_version_still_exit_0(capsys):
    assert cli.main(["--version"]) == 0
    assert "lewm-ros" in capsys.readouterr().out
    assert cli.main(["collect", "--help"]) == 0
    assert "--image-size" in capsys.readouterr().out


# ============================================================================ 6. import-reference


def reference_checkpoint(frames: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the reference stable-worldmodel layout (HF-transformers 5.x ViT names), written from
    one of our tiny models; the position embedding covers `frames` frames (the test reference's 4)."""
    torch.manual_seed(seed)
    ours = LeWM(preset("tiny")).state_dict()
    blocks = {
        "encoder.blocks.": ("encoder.layers.", {"norm1": "layernorm_before", "norm2": "layernorm_after",
                                                "proj": "attention.o_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}),
        "dynamics.predictor.blocks.": ("predictor.transformer.layers.", {
            "attn.norm": "attn.norm", "attn.qkv": "attn.to_qkv", "attn.out": "attn.to_out.0", "mlp.norm": "mlp.net.0",
            "mlp.fc1": "mlp.net.1", "mlp.fc2": "mlp.net.4", "modulation": "adaLN_modulation.1"}),
    }  # fmt: skip
    modules = {
        "encoder.cls_token": "encoder.embeddings.cls_token",
        "encoder.pos_embed": "encoder.embeddings.position_embeddings",
        "encoder.patch_embed": "encoder.embeddings.patch_embeddings.projection",
        "encoder.norm": "encoder.layernorm",
        "projector.fc1": "projector.net.0", "projector.bn": "projector.net.1", "projector.fc2": "projector.net.3",
        "dynamics.pred_projector.fc1": "pred_proj.net.0", "dynamics.pred_projector.bn": "pred_proj.net.1",
        "dynamics.pred_projector.fc2": "pred_proj.net.3",
        "dynamics.action_embedder.smooth": "action_encoder.patch_embed",
        "dynamics.action_embedder.fc1": "action_encoder.embed.0",
        "dynamics.action_embedder.fc2": "action_encoder.embed.2",
        "dynamics.predictor.norm": "predictor.transformer.norm",
    }  # fmt: skip
    state: dict[str, torch.Tensor] = {}
    for key, value in ours.items():
        if key in ("encoder.cls_token", "encoder.pos_embed"):
            state[modules[key]] = value
        elif key == "dynamics.predictor.pos_embed":
            extra = torch.randn(1, frames - value.shape[1], value.shape[2]) if frames > value.shape[1] else None
            state["predictor.pos_embedding"] = value[:, :frames] if extra is None else torch.cat([value, extra], 1)
        elif ".qkv." in key and key.startswith("encoder."):
            index, param = key.split(".")[2], key.rsplit(".", 1)[1]
            for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3), strict=True):
                state[f"encoder.layers.{index}.attention.{name}.{param}"] = part
        elif any(key.startswith(prefix) for prefix in blocks):
            prefix = next(p for p in blocks if key.startswith(p))
            target, parts = blocks[prefix]
            index, rest = key[len(prefix):].split(".", 1)
            module, param = rest.rsplit(".", 1)
            state[f"{target}{index}.{parts[module]}.{param}"] = value
        else:
            module, param = key.rsplit(".", 1)
            state[f"{modules[module]}.{param}"] = value
    return state


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("reference") / "ref.pt"
    torch.save(reference_checkpoint(frames=4), path)
    return path


HEADS = ["--encoder-heads", "2", "--predictor-heads", "2"]


def test_import_reference_prints_the_inferred_config_and_keeps_every_position(checkpoint, tmp_path, capsys):
    out = tmp_path / "bundle"
    code, stdout, err = run_cli(capsys, "import-reference", checkpoint, "--out", out, *HEADS)
    assert code == 0, err
    for expected in ("image 64x64", "patch 16", "2 heads", "frameskip 5", "action_dim 2", "history 4"):
        assert expected in stdout, stdout
    assert load_bundle(out).config.predictor.history == 4


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--action-dim", "3"], r"frameskip 5 x action_dim 3 = 15.*10 wide.*frameskip 2 x action_dim 5"),
        (["--frameskip", "4"], r"not a multiple of frameskip 4"),
        (["--frameskip", "2", "--action-dim", "2"], r"= 4, but the checkpoint's action input is 10"),
        (["--history", "3"], r"--history 3 would drop 1 of the 4 frames.*--force"),
        (["--history", "5"], r"covers 4 frames, fewer than history 5"),
        (["--history", "0"], r"--history"),
        (["--frameskip", "0"], r"--frameskip"),
        (["--encoder-heads", "0"], r"--encoder-heads"),
        (["--encoder-heads", "3"], r"width 32 is not divisible by 3 heads"),
        (["--action-dim", "-2"], r"--action-dim"),
        (["--action-mean", "0", "0", "0"], r"--action-mean needs 2 values"),
        (["--action-std", "1", "0"], r"--action-std"),
        (["--action-std", "nan", "1"], r"--action-std"),
        (["--action-mean", "inf", "0"], r"--action-mean"),
    ],
)
def test_import_reference_refuses_inconsistent_settings_before_writing(checkpoint, tmp_path, capsys, extra, match):
    out = tmp_path / "bundle"
    code, _, err = run_cli(capsys, "import-reference", checkpoint, "--out", out, *HEADS, *extra)
    line = assert_one_line_usage_error(code, err, "lewm-ros import-reference")
    assert re.search(match, line), line
    assert not out.exists()


def test_import_reference_with_force_truncates_and_a_matching_split_is_accepted(checkpoint, tmp_path, capsys):
    out = tmp_path / "bundle"
    args = ["import-reference", checkpoint, "--out", out, *HEADS, "--history", "3", "--force",
            "--frameskip", "2", "--action-dim", "5"]  # fmt: skip
    code, stdout, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "history 3 (checkpoint positions: 4)" in stdout and "frameskip 2 x action_dim 5" in stdout
    cfg = load_bundle(out).config
    assert (cfg.predictor.history, cfg.action.frameskip, cfg.action.action_dim) == (3, 2, 5)


@pytest.mark.parametrize(
    "content",
    [b"junk", "list", "non-tensor", "flat-pos-embedding"],
)
def test_import_reference_unreadable_checkpoints_are_one_line(tmp_path, capsys, content):
    path = tmp_path / "ref.pt"
    if content == "list":
        torch.save([torch.zeros(2)], path)
    elif content == "non-tensor":
        state = reference_checkpoint()
        state["encoder.layernorm.weight"] = [1.0, 2.0]
        torch.save(state, path)
    elif content == "flat-pos-embedding":
        state = reference_checkpoint()
        state["predictor.pos_embedding"] = torch.zeros(32)
        torch.save(state, path)
    else:
        path.write_bytes(content)
    code, _, err = run_cli(capsys, "import-reference", path, "--out", tmp_path / "bundle", *HEADS)
    assert_one_line_usage_error(code, err, "lewm-ros import-reference")
    assert not (tmp_path / "bundle").exists()
