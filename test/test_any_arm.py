"""Any arm, really (issue 13): torque motors, continuous joints, gear, unstable scenes, all scene problems at once.

Every scene here is written in the test, as a user would write their own, except the bundled reacher_torque.
"""

from __future__ import annotations

import re
from pathlib import Path

import mujoco
import numpy as np
import pytest

from lewm_ros import cli
from lewm_ros.data.episode_reader import EpisodeReader
from lewm_ros.data.episode_validation import validate
from lewm_ros.envs.collect import CollectionSpec, collect
from lewm_ros.envs.policies import make_policy
from lewm_ros.envs.reach_env import ReachConfig, ReachEnv, SceneError, UnstableSimulationError, find_scene

TINY = ReachConfig(image_size=16)
REACHER = find_scene("reacher_torque")


def arm_xml(
    joints: list[str],
    actuators: list[str],
    *,
    option: str = 'timestep="0.005" integrator="implicitfast"',
    camera: bool = True,
    extra: str = "",
    default: str = "",
) -> str:
    """A planar chain: joint i is `<joint name="j{i}" {joints[i]}/>`; `actuators` are full actuator elements."""
    bodies, closing = "", ""
    for i, attributes in enumerate(joints):
        pos = "0 0 0.01" if i == 0 else "0.08 0 0"
        bodies += (
            f'<body name="link{i}" pos="{pos}"><joint name="j{i}" type="hinge" axis="0 0 1" {attributes}/>'
            f'<geom type="capsule" fromto="0 0 0 0.08 0 0" size="0.01" rgba="0.{i + 2} 0.2 0.8 1"/>'
        )
        closing += "</body>"
    cam = '<camera name="overhead" pos="0 0 0.7" fovy="45"/>' if camera else ""
    return f"""
<mujoco model="user_arm">
  <compiler angle="radian" autolimits="true"/>
  <option {option}/>
  <visual><quality offsamples="0" shadowsize="0"/></visual>
  {extra}
  <default><joint armature="0.01" damping="0.1"/><geom contype="0" conaffinity="0" mass="0.02"/>{default}</default>
  <worldbody>
    <geom type="plane" size="0.4 0.4 0.4" rgba="1 1 1 1"/>
    {cam}
    {bodies}{closing}
    <site name="anchor" pos="0 0 0.01"/>
  </worldbody>
  <actuator>{"".join(actuators)}</actuator>
</mujoco>
"""


def write(tmp_path: Path, xml: str, name: str = "arm.xml") -> Path:
    path = tmp_path / name
    path.write_text(xml)
    return path


# a 3-joint torque arm with a continuous base: a motor by ctrlrange, a geared motor by forcerange only, and a
# plain-torque <general>
TORQUE_ARM = arm_xml(
    ["", 'range="-2.5 2.5"', 'range="-2 2"'],
    [
        '<motor name="m0" joint="j0" ctrlrange="-0.3 0.3"/>',
        '<motor name="m1" joint="j1" gear="2" forcerange="-0.1 0.1"/>',
        '<general name="m2" joint="j2" gainprm="1" ctrlrange="-0.2 0.2"/>',
    ],
)


# ----------------------------------------------------------------------------- 1. torque actuators


def test_torque_arm_with_a_continuous_joint_works_unchanged(tmp_path):
    scene = write(tmp_path, TORQUE_ARM)
    with ReachEnv(scene, TINY) as env:
        assert env.command_interfaces == ("effort", "effort", "effort")
        np.testing.assert_array_equal(env.continuous, [True, False, False])
        # full effort in joint torque: ctrlrange, forcerange x gear (the force limit over gain 1), ctrlrange
        np.testing.assert_allclose(env.max_joint_effort, [0.3, 0.2, 0.2])
        np.testing.assert_allclose(env.action_scale, env.max_joint_effort)
        assert np.isnan(env.max_joint_speed).all()
        env.reset(seed=0)
        env.step([0.5, -1.0, 0.25])
        np.testing.assert_allclose(env.data.ctrl, [0.15, -0.1, 0.05])  # held for the whole control period
        mujoco.mj_fwdActuation(env.model, env.data)
        np.testing.assert_allclose(env.data.qfrc_actuator[env._dof_adr], [0.15, -0.2, 0.05])  # joint torques

    spec = CollectionSpec(scene=str(scene), episodes=2, steps=5, policy="mixed", seed=0, env=TINY)
    out = tmp_path / "torque.h5"
    report = collect(spec, out, workers=1)
    assert report.episodes_written == 2
    summary = validate(out)
    assert summary.num_episodes == 2
    attributes = summary.attributes
    assert list(attributes["command_interfaces"]) == ["effort"] * 3
    assert list(attributes["continuous_joints"]) == ["j0"]
    assert "effort" in attributes["action_space"]
    with EpisodeReader(out) as reader:
        actions = reader.read("action", 0)
    assert np.all(np.abs(actions[:-1]) <= 1)


def test_torque_goal_is_a_configuration_reached_and_held(tmp_path):
    """Under full effort the arm accelerates; under opposite effort it brakes; success is about the pose only."""
    with ReachEnv(write(tmp_path, TORQUE_ARM), TINY) as env:
        env.reset(start_qpos=[0.0, 0.0, 0.0], goal_qpos=[0.6, 0.0, 0.0])
        result = None
        for _ in range(60):  # a bang-bang controller with a velocity estimate: reach, brake, hold
            error, velocity = env._joint_error(env.qpos), env.qvel
            result = env.step(np.clip(8 * error - 0.8 * velocity, -1, 1))
        assert result is not None and result.success
        assert np.max(np.abs(result.observation.qvel)) < 0.05  # held, not passing through


def test_mixed_actuator_kinds_in_one_scene(tmp_path):
    xml = arm_xml(
        ['range="-2.5 2.5"', "", 'range="-2 2"'],
        [
            '<velocity joint="j0" kv="20" ctrlrange="-1.5 1.5"/>',  # stiff against the joint damping 0.1
            '<motor joint="j1" ctrlrange="-0.3 0.3"/>',
            '<position joint="j2" kp="20" kv="0.5"/>',
        ],
        extra='<custom><numeric name="max_joint_speed" data="1.5 9 1.0"/></custom>',
    )
    with ReachEnv(write(tmp_path, xml), TINY) as env:
        assert env.command_interfaces == ("velocity", "effort", "velocity")
        np.testing.assert_allclose(env.action_scale, [1.5, 0.3, 1.0])
        env.reset(start_qpos=[0.0, 0.0, 0.0], goal_qpos=[1.0, 1.0, 1.0])
        for _ in range(4):
            result = env.step([1.0, 1.0, 1.0])
        assert result.observation.qvel[0] == pytest.approx(1.5, rel=0.02)
        assert result.observation.qpos[2] == pytest.approx(4 * 0.05 * 1.0, abs=0.03)
        assert result.observation.qvel[1] > 0.5  # the motor pushed its joint


# ----------------------------------------------------------------------------- 2. continuous joints


def test_continuous_joint_success_and_error_are_wrapped(tmp_path):
    with ReachEnv(write(tmp_path, TORQUE_ARM), TINY) as env:
        env.reset(start_qpos=[0.0, 0.5, 0.5], goal_qpos=[np.pi - 0.01, 0.5, 0.5])
        result = env.set_state([-np.pi + 0.01 + 4 * np.pi, 0.5, 0.5])  # two turns on, 0.02 rad from the goal
        assert result.observation.qpos[0] == pytest.approx(3 * np.pi + 0.01)  # stored as is, not wrapped
        assert result.joint_error[0] == pytest.approx(-0.02)
        assert result.success
        far = env.set_state([0.0, 0.5, 0.5])
        assert not far.success and abs(far.joint_error[0]) <= np.pi
        for seed in range(10):  # starts and goals drawn on the whole circle
            start = env.reset(seed=seed).observation.qpos
            assert -np.pi <= start[0] < np.pi and -np.pi <= env.goal_qpos[0] < np.pi
        lower, upper = env.joint_limits
        assert lower[0] == -np.inf and upper[0] == np.inf and np.isfinite(lower[1:]).all()
        with pytest.raises(ValueError, match="continuous"):
            env.set_state([1e7, 0.0, 0.0])


def test_continuous_joints_never_bounce_in_exploration():
    policy = make_policy("smooth", np.array([-np.inf, -1.0]), np.array([np.inf, 1.0]))
    policy.reset(np.random.default_rng(0))
    actions = np.array([policy.act(np.array([50.0, 0.0])) for _ in range(200)])
    assert np.isfinite(actions).all()
    assert (actions[:, 0] > 0).any() and (actions[:, 0] < 0).any()  # free, not forced back from +50 rad


# ----------------------------------------------------------------------------- 3. gear honoured


@pytest.mark.parametrize("where", ["actuator", "default"])
def test_velocity_servo_gear_is_honoured(tmp_path, where):
    gear = 'gear="2.5"'
    xml = arm_xml(
        ['range="-2.5 2.5"', 'range="-2.5 2.5"'],
        [
            f'<velocity joint="j0" kv="2" ctrlrange="-3 3" {gear if where == "actuator" else ""}/>',
            f'<intvelocity joint="j1" kp="60" kv="2" actrange="-6 6" ctrlrange="-3 3" '
            f'{gear if where == "actuator" else ""}/>',
        ],
        default=f"<general {gear}/>" if where == "default" else "",
    )
    with ReachEnv(write(tmp_path, xml), TINY) as env:
        np.testing.assert_allclose(env.max_joint_speed, [1.2, 1.2])  # ctrlrange 3 / gear 2.5
        env.reset(start_qpos=[0.0, 0.0], goal_qpos=[1.0, 1.0])
        for _ in range(6):
            before = env.qpos
            result = env.step([0.5, -0.5])
        commanded = result.applied_action * env.max_joint_speed  # what the recorded action claims
        np.testing.assert_allclose(result.observation.qvel, commanded, rtol=0.03)
        np.testing.assert_allclose(result.observation.qpos - before, env.control_dt * commanded, rtol=0.03)


def test_position_servo_gear_is_honoured(tmp_path):
    xml = arm_xml(['range="-2.5 2.5"'], ['<position joint="j0" kp="20" kv="0.5" gear="3"/>'],
                  extra='<custom><numeric name="max_joint_speed" data="1"/></custom>')  # fmt: skip
    with ReachEnv(write(tmp_path, xml), TINY) as env:
        env.reset(start_qpos=[0.2], goal_qpos=[1.0])
        for _ in range(20):
            result = env.step([0.0])
        assert result.observation.qpos[0] == pytest.approx(0.2, abs=0.01)  # holds where it was set, not 0.2 / 3
        for _ in range(10):
            result = env.step([1.0])
        assert result.observation.qpos[0] == pytest.approx(0.2 + 10 * 0.05, abs=0.05)


def test_speed_override_opens_the_ctrlrange_so_actions_stay_true(tmp_path):
    xml = arm_xml(['range="-2.5 2.5"'], ['<velocity joint="j0" kv="2" ctrlrange="-1 1" gear="2"/>'])
    with ReachEnv(write(tmp_path, xml), ReachConfig(image_size=16, max_joint_speed=1.5)) as env:
        env.reset(start_qpos=[-2.0], goal_qpos=[1.0])
        for _ in range(4):
            result = env.step([1.0])
        assert result.observation.qvel[0] == pytest.approx(1.5, rel=0.02)


def test_scene_speed_the_ctrlrange_cannot_reach_is_refused(tmp_path):
    xml = arm_xml(['range="-2.5 2.5"'], ['<velocity joint="j0" kv="2" ctrlrange="-1 1" gear="2"/>'],
                  extra='<custom><numeric name="max_joint_speed" data="1.5"/></custom>')  # fmt: skip
    with pytest.raises(SceneError, match=r"ctrlrange -1\.\.1 / gear 2 = 0\.5.*at most 0\.5"):
        ReachEnv(write(tmp_path, xml), TINY)


# ----------------------------------------------------------------------------- 4. stability


def test_blow_up_of_a_stiff_servo_under_explicit_euler_is_caught(tmp_path):
    xml = arm_xml(
        ['range="-2.5 2.5"', "", 'range="-2 2"'],
        [
            '<velocity joint="j0" kv="1e4" ctrlrange="-1.5 1.5"/>',
            '<motor joint="j1" ctrlrange="-0.3 0.3"/>',
            '<motor joint="j2" ctrlrange="-0.3 0.3"/>',
        ],
        option='timestep="0.01" integrator="Euler"',
    )
    with ReachEnv(write(tmp_path, xml), TINY) as env:
        env.reset(start_qpos=[0.5, 0.0, 0.0], goal_qpos=[1.0, 1.0, 1.0])
        with pytest.raises(UnstableSimulationError, match=r"EULER.*implicitfast"):
            for _ in range(20):
                env.step([1.0, 1.0, -1.0])


def test_torque_scene_blow_up_stops_collect_with_nothing_written(tmp_path):
    # continuous joint under a stiff spring and an explicit integrator: its angle is never "out of range",
    # yet the divergence is caught
    xml = arm_xml(["", 'stiffness="1e4" range="-2 2"'], ['<motor joint="j0" ctrlrange="-0.3 0.3"/>',
                                                         '<motor joint="j1" ctrlrange="-0.3 0.3"/>'],
                  option='timestep="0.01" integrator="Euler"')  # fmt: skip
    scene = write(tmp_path, xml)
    out = tmp_path / "d.h5"
    spec = CollectionSpec(scene=str(scene), episodes=2, steps=10, policy="random", seed=0, env=TINY)
    with pytest.raises(UnstableSimulationError, match="episode 0: unstable simulation"):
        collect(spec, out, workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arm.xml"]


# ----------------------------------------------------------------------------- 5. every problem at once


def test_three_problems_are_one_error_listing_all_with_fixes(tmp_path):
    xml = arm_xml(
        ['range="-2.5 2.5"', 'range="-2.5 2.5"', 'range="-2.5 2.5"'],
        [
            '<motor name="no_limits" joint="j0"/>',  # no ctrlrange, no forcerange
            '<motor name="shared_a" joint="j1" ctrlrange="-1 1"/><motor name="shared_b" joint="j1" ctrlrange="-1 1"/>',
            '<motor name="at_site" site="anchor" gear="0 0 0 0 0 1" ctrlrange="-1 1"/>',  # site transmission
        ],
        camera=False,
    )
    with pytest.raises(SceneError) as caught:
        ReachEnv(write(tmp_path, xml), ReachConfig(image_size=16, control_dt=0.0513))
    message = str(caught.value)
    assert "\n" not in message and "(5 problems)" in message
    for needle in (
        r"'no_limits' has no ctrlrange and no forcerange.*fix: add ctrlrange",
        r"joint 'j1' is driven by more than one actuator \('shared_a', 'shared_b'\).*fix: keep one",
        r"actuator 'at_site' has a site transmission.*not support.*fix:",
        r"no camera.*fix: add a <camera>",
        r"control_dt 0\.0513 s is not a whole multiple of the scene timestep 0\.005 s; fix: use control_dt "
        r"0\.05 or 0\.055 s",
    ):
        assert re.search(needle, message), (needle, message)


def test_tendon_transmission_is_refused_listing_the_actuator(tmp_path):
    xml = arm_xml(
        ['range="-2.5 2.5"', 'range="-2.5 2.5"'],
        ['<motor name="pull" tendon="coupled" ctrlrange="-1 1"/>', '<motor joint="j1" ctrlrange="-1 1"/>'],
        extra='<tendon><fixed name="coupled"><joint joint="j0" coef="1"/></fixed></tendon>',
    )
    with pytest.raises(SceneError, match=r"\(1 problem\).*actuator 'pull' has a tendon transmission"):
        ReachEnv(write(tmp_path, xml), TINY)


def test_cli_max_joint_speed_takes_one_value_per_joint(tmp_path, capsys):
    servos = ['<velocity joint="j0" kv="2" ctrlrange="-1.5 1.5"/>', '<velocity joint="j1" kv="2" ctrlrange="-2 2"/>']
    xml = arm_xml(['range="-2.5 2.5"', 'range="-2.5 2.5"'], servos)
    scene, out = write(tmp_path, xml), tmp_path / "d.h5"
    code = cli.main(["collect", "--scene", str(scene), "--out", str(out), "--episodes", "1", "--steps", "3",
                     "--image-size", "16", "--progress", "none", "--max-joint-speed", "1.0", "1.25"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    np.testing.assert_allclose(validate(out).attributes["max_joint_speed"], [1.0, 1.25])
    code = cli.main(["collect", "--scene", str(scene), "--out", str(tmp_path / "e.h5"), "--episodes", "1",
                     "--steps", "3", "--image-size", "16", "--max-joint-speed", "1", "1", "1"])  # fmt: skip
    assert code == 1 and "3 values for 2 actuated joints" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 6. the bundled torque reacher


def test_reacher_torque_scene_follows_the_paper_setting():
    with ReachEnv(REACHER, TINY) as env:
        model = env.model
        assert env.joint_names == ("shoulder", "elbow") and env.command_interfaces == ("effort", "effort")
        np.testing.assert_array_equal(env.continuous, [True, False])
        assert env.substeps * model.opt.timestep == pytest.approx(0.05)
        assert int(model.opt.integrator) == int(mujoco.mjtIntegrator.mjINT_IMPLICITFAST)
        assert model.vis.quality.offsamples == 0 and model.vis.quality.shadowsize == 0
        assert int(model.cam_mode[env._camera_id]) == int(mujoco.mjtCamLight.mjCAMLIGHT_FIXED)
        env.reset(seed=3)
        for _ in range(10):
            result = env.step([1.0, -1.0])
        assert 2.0 < result.observation.qvel[0] < 4.0  # a top speed of about 3 rad/s
        pixels = result.observation.pixels
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 3


def test_sim_node_takes_torques_in_newton_metres(ros_context):
    from rclpy.parameter import Parameter
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from lewm_ros.ros.mujoco_sim import MujocoSim

    params = [Parameter("scene", value="reacher_torque"), Parameter("image_size", value=16),
              Parameter("speed_factor", value=0.0)]  # fmt: skip
    sim = MujocoSim(context=ros_context, parameter_overrides=params)
    try:
        sim._on_command(Float64MultiArray(data=[0.15, -0.6]))  # N m: half effort, beyond full effort (clipped)
        np.testing.assert_allclose(sim._command.action, [0.5, -1.0])
        sim._on_command(Float64MultiArray(data=[float("nan"), 0.0]))
        assert sim.rejected_commands == 1 and "efforts" in sim.last_rejection
        point = JointTrajectoryPoint(effort=[-0.03, 0.06])  # joints by name, in any order
        sim._on_command(JointTrajectory(joint_names=["elbow", "shoulder"], points=[point]))
        np.testing.assert_allclose(sim._command.action, [0.2, -0.1])
        sim._on_command(JointTrajectory(joint_names=["elbow", "shoulder"],
                                        points=[JointTrajectoryPoint(velocities=[1.0, 1.0])]))  # fmt: skip
        assert sim.rejected_commands == 2 and "efforts" in sim.last_rejection
    finally:
        sim.destroy_node()
