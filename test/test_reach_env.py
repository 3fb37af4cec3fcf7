"""ReachEnv on real MuJoCo physics and real EGL rendering: the bundled scenes and scenes written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lewm_ros.envs.reach_env import ReachConfig, ReachEnv, find_scene

SIM = Path(__file__).resolve().parents[1] / "sim"
REACH2D = SIM / "reach2d.xml"
ARM3D = SIM / "arm3d.xml"
SMALL = ReachConfig(image_size=32)


def planar_arm_xml(
    links: int = 3,
    *,
    camera: bool = True,
    actuator: str = "velocity",
    extra: str = "",
    limited: bool = True,
) -> str:
    """A planar arm with `links` hinge joints, written from scratch (not one of the bundled scenes)."""
    length = 0.24 / links
    limit = ' range="-2.5 2.5"' if limited else ' limited="false"'
    bodies, closing = "", ""
    colours = ["0.9 0.1 0.1 1", "0.1 0.8 0.1 1", "0.1 0.1 0.9 1", "0.9 0.9 0.1 1"]
    for i in range(links):
        pos = "0 0 0.01" if i == 0 else f"{length} 0 0"
        bodies += (
            f'<body name="link{i}" pos="{pos}"><joint name="j{i}" type="hinge" axis="0 0 1"{limit}/>'
            f'<geom type="capsule" fromto="0 0 0 {length} 0 0" size="0.01" rgba="{colours[i % 4]}"/>'
        )
        closing += "</body>"
    if actuator == "velocity":
        actuators = "".join(f'<velocity joint="j{i}" kv="2" ctrlrange="-1.5 1.5"/>' for i in range(links))
    elif actuator == "position":
        actuators = "".join(f'<position joint="j{i}" kp="20" kv="0.5"/>' for i in range(links))
    elif actuator == "intvelocity":
        actuators = "".join(
            f'<intvelocity joint="j{i}" kp="20" kv="0.5" actrange="-2.5 2.5" ctrlrange="-1.5 1.5"/>'
            for i in range(links)
        )
    elif actuator == "motor":
        actuators = "".join(f'<motor joint="j{i}" ctrlrange="-1 1"/>' for i in range(links))
    else:
        actuators = ""
    cam = '<camera name="overhead" pos="0 0 0.7" fovy="45"/>' if camera else ""
    return f"""
<mujoco model="test_arm">
  <compiler angle="radian"/>
  <option timestep="0.005" integrator="implicitfast"/>
  <visual><quality offsamples="0" shadowsize="0"/></visual>
  {extra}
  <default><joint armature="0.002" damping="0.001"/><geom contype="0" conaffinity="0" mass="0.02"/></default>
  <worldbody>
    <geom type="plane" size="0.4 0.4 0.4" rgba="1 1 1 1"/>
    {cam}
    {bodies}{closing}
  </worldbody>
  <actuator>{actuators}</actuator>
</mujoco>
"""


def write_scene(tmp_path: Path, xml: str, name: str = "arm.xml") -> Path:
    path = tmp_path / name
    path.write_text(xml)
    return path


@pytest.fixture
def env():
    with ReachEnv(REACH2D, SMALL) as environment:
        yield environment


def mid_range(env: ReachEnv) -> np.ndarray:
    return (env.joint_lower + env.joint_upper) / 2


# ----------------------------------------------------------------------------- reset / observations


def test_reset_draws_start_and_goal_inside_limits_and_apart(env):
    for seed in range(20):
        result = env.reset(seed=seed)
        start, goal = result.observation.qpos, env.goal_qpos
        for q in (start, goal):
            assert np.all(q >= env.joint_lower) and np.all(q <= env.joint_upper)
        assert np.max(np.abs(goal - start)) > env.config.success_tolerance
        assert not result.success
        np.testing.assert_allclose(result.joint_error, goal - start)


def test_observation_is_rgb_uint8_of_configured_size_with_joint_state(env):
    observation = env.reset(seed=0).observation
    assert observation.pixels.shape == (32, 32, 3) and observation.pixels.dtype == np.uint8
    assert observation.qpos.shape == (2,) and observation.qvel.shape == (2,)
    np.testing.assert_array_equal(observation.qvel, 0.0)
    # the arm is visible: the frame is not a flat background
    assert len(np.unique(observation.pixels.reshape(-1, 3), axis=0)) > 3


def test_non_square_image_size():
    with ReachEnv(REACH2D, ReachConfig(image_size=(24, 40))) as environment:
        assert environment.reset(seed=0).observation.pixels.shape == (24, 40, 3)
        assert environment.goal_image().shape == (24, 40, 3)


def test_reads_joints_speeds_and_camera_from_the_scene(env):
    assert env.joint_names == ("shoulder", "elbow")
    assert env.camera_name == "top"
    np.testing.assert_array_equal(env.max_joint_speed, [2.0, 2.0])  # the velocity actuators' ctrlrange
    np.testing.assert_array_equal(env.joint_lower, [-2.8, -2.6])
    assert env.substeps * env.model.opt.timestep == pytest.approx(env.config.control_dt)


def test_same_seed_same_episode_different_seed_different():
    actions = np.random.default_rng(7).uniform(-1, 1, size=(15, 2))
    runs = []
    for seed in (11, 11, 12):
        with ReachEnv(REACH2D, SMALL) as environment:
            frames = [environment.reset(seed=seed).observation.pixels]
            for action in actions:
                frames.append(environment.step(action).observation.pixels)
            runs.append((np.array(frames), environment.qpos, environment.goal_qpos))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    np.testing.assert_array_equal(runs[0][2], runs[1][2])
    assert not np.array_equal(runs[0][2], runs[2][2])


# ----------------------------------------------------------------------------- control


def test_full_speed_command_moves_the_joint_by_max_speed_times_control_dt(env):
    start = mid_range(env)
    env.reset(start_qpos=start, goal_qpos=start + 1.0)
    expected = env.max_joint_speed[0] * env.control_dt
    first = env.step([1.0, 0.0]).observation.qpos
    second = env.step([1.0, 0.0]).observation.qpos
    assert first[0] - start[0] == pytest.approx(expected, rel=0.08)  # servo lag on the first period
    assert second[0] - first[0] == pytest.approx(expected, rel=0.02)
    assert abs(second[1] - start[1]) < 0.01 * expected * 2
    env.step([-0.5, 0.0])
    third = env.step([-0.5, 0.0]).observation
    assert third.qvel[0] == pytest.approx(-0.5 * env.max_joint_speed[0], rel=0.02)


def test_joint_limits_are_respected_under_sustained_commands(env):
    env.reset(start_qpos=env.joint_upper - 0.3, goal_qpos=mid_range(env))
    for _ in range(40):
        qpos = env.step([1.0, 1.0]).observation.qpos
        assert np.all(qpos <= env.joint_upper + 1e-3)
    assert np.all(qpos > env.joint_upper - 0.02)  # it did get there
    for _ in range(40):
        qpos = env.step([-1.0, -1.0]).observation.qpos
    assert np.all(qpos >= env.joint_lower - 1e-3)


def test_out_of_range_actions_are_clipped_and_counted():
    results = []
    for action in ([2.0, -3.0], [1.0, -1.0]):
        with ReachEnv(REACH2D, SMALL) as environment:
            environment.reset(seed=5)
            result = environment.step(action)
            results.append((result, environment.clipped_actions))
    (clipped, clipped_count), (plain, plain_count) = results
    assert clipped_count == 1 and plain_count == 0
    np.testing.assert_array_equal(clipped.applied_action, [1.0, -1.0])
    np.testing.assert_array_equal(clipped.observation.qpos, plain.observation.qpos)


@pytest.mark.parametrize(
    "action",
    [[1.0], [0.1, 0.2, 0.3], [[0.1, 0.2]], [np.nan, 0.0], [0.0, np.inf], [-np.inf, 0.0], ["a", "b"], None],
    ids=["short", "long", "2d", "nan", "inf", "-inf", "text", "none"],
)
def test_bad_actions_raise_and_leave_the_state_unchanged(env, action):
    env.reset(seed=3)
    env.step([0.4, -0.7])  # moving, so an accidental step would show in qpos and qvel
    before = (env.qpos, env.qvel, env.time, env.steps, env.data.ctrl.copy())
    with pytest.raises(ValueError):
        env.step(action)
    after = (env.qpos, env.qvel, env.time, env.steps, env.data.ctrl.copy())
    for old, new in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)


# ----------------------------------------------------------------------------- success and goal image


def test_success_at_the_goal_and_goal_image_is_the_goal_frame(env):
    start_frame = env.reset(seed=4).observation.pixels
    goal_image = env.goal_image()
    assert not np.array_equal(start_frame, goal_image)
    at_goal = env.set_state(env.goal_qpos, np.zeros(2))
    assert at_goal.success
    assert at_goal.max_joint_error == 0.0
    np.testing.assert_array_equal(at_goal.observation.pixels, goal_image)


def test_success_tolerance_is_per_joint_0_05_rad(env):
    env.reset(seed=9)
    goal = env.goal_qpos
    assert env.set_state(goal + [0.045, -0.045]).success
    assert not env.set_state(goal + [0.055, 0.0]).success
    assert not env.set_state(goal + [0.0, -0.055]).success


def test_goal_is_reachable_by_a_simple_feedback_controller(env):
    result = env.reset(seed=21)
    for _ in range(200):
        if result.success:
            break
        result = env.step(np.clip(result.joint_error / (env.max_joint_speed * env.control_dt), -1, 1))
    assert result.success


def test_target_marker_is_hidden_by_default_and_shown_on_request():
    start = np.array([0.0, 0.0])
    frames = {}
    for show in (False, True):
        with ReachEnv(REACH2D, ReachConfig(image_size=48, show_target=show)) as environment:
            first = environment.reset(start_qpos=start, goal_qpos=[1.0, 1.0]).observation.pixels
            second = environment.reset(start_qpos=start, goal_qpos=[-1.5, 0.5]).observation.pixels
            frames[show] = (first, second)
    hidden_first, hidden_second = frames[False]
    np.testing.assert_array_equal(hidden_first, hidden_second)  # frames do not depend on the goal
    shown_first, shown_second = frames[True]
    assert not np.array_equal(shown_first, shown_second)  # the marker moved with the goal
    assert not np.array_equal(shown_first, hidden_first)


def test_set_state_rejects_wrong_shapes(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.set_state([0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        env.set_state([0.1, np.nan])


def test_reset_rejects_goals_outside_the_joint_limits(env):
    with pytest.raises(ValueError, match="limits"):
        env.reset(start_qpos=[0.0, 0.0], goal_qpos=[3.5, 0.0])


# ----------------------------------------------------------------------------- generality


def test_a_three_joint_arm_written_here_works_unchanged(tmp_path):
    scene = write_scene(tmp_path, planar_arm_xml(3))
    with ReachEnv(scene, SMALL) as environment:
        assert environment.action_dim == 3
        assert environment.joint_names == ("j0", "j1", "j2")
        assert environment.camera_name == "overhead"
        np.testing.assert_array_equal(environment.max_joint_speed, [1.5, 1.5, 1.5])
        result = environment.reset(seed=2)
        assert result.observation.pixels.shape == (32, 32, 3)
        assert result.observation.qpos.shape == (3,)
        before = result.observation.qpos
        after = environment.step([0.0, 0.0, 1.0]).observation.qpos
        assert after[2] - before[2] == pytest.approx(1.5 * environment.control_dt, rel=0.1)
        at_goal = environment.set_state(environment.goal_qpos)
        assert at_goal.success
        np.testing.assert_array_equal(at_goal.observation.pixels, environment.goal_image())


def test_position_servos_follow_integrated_velocity_commands(tmp_path):
    extra = '<custom><numeric name="max_joint_speed" data="1.0"/></custom>'
    scene = write_scene(tmp_path, planar_arm_xml(2, actuator="position", extra=extra))
    with ReachEnv(scene, SMALL) as environment:
        np.testing.assert_array_equal(environment.max_joint_speed, [1.0, 1.0])
        environment.reset(start_qpos=[0.0, 0.0], goal_qpos=[1.0, 1.0])
        for _ in range(10):
            qpos = environment.step([1.0, -0.5]).observation.qpos
        travelled = 10 * environment.control_dt
        np.testing.assert_allclose(qpos, [travelled, -0.5 * travelled], atol=0.05)


def test_intvelocity_servos_hold_teleported_poses_and_track_speed(tmp_path):
    scene = write_scene(tmp_path, planar_arm_xml(2, actuator="intvelocity"))
    with ReachEnv(scene, SMALL) as environment:
        np.testing.assert_array_equal(environment.max_joint_speed, [1.5, 1.5])
        environment.reset(start_qpos=[1.0, -1.0], goal_qpos=[0.0, 0.0])
        for _ in range(5):
            held = environment.step([0.0, 0.0]).observation.qpos
        np.testing.assert_allclose(held, [1.0, -1.0], atol=1e-3)  # the servo's target followed the teleport
        for _ in range(4):
            moved = environment.step([1.0, 0.0]).observation.qpos
        assert moved[0] - held[0] == pytest.approx(4 * 1.5 * environment.control_dt, abs=0.05)


def test_bundled_scenes_are_found_by_name():
    assert find_scene("reach2d") == REACH2D
    assert find_scene("arm3d.xml") == ARM3D
    with pytest.raises(FileNotFoundError, match="bundled scenes"):
        find_scene("reach9d")


def test_config_max_joint_speed_overrides_the_scene(tmp_path):
    scene = write_scene(tmp_path, planar_arm_xml(2))
    with ReachEnv(scene, ReachConfig(image_size=16, max_joint_speed=0.5)) as environment:
        np.testing.assert_array_equal(environment.max_joint_speed, [0.5, 0.5])
        environment.reset(start_qpos=[0.0, 0.0], goal_qpos=[1.0, 1.0])
        environment.step([1.0, 0.0])
        second = environment.step([1.0, 0.0]).observation.qvel
        assert second[0] == pytest.approx(0.5, rel=0.02)


def test_arm3d_holds_its_pose_and_reaches_in_3d():
    with ReachEnv(ARM3D, SMALL) as environment:
        assert environment.joint_names == ("base_yaw", "shoulder", "elbow", "wrist")
        assert environment.camera_name == "external"
        start = environment.reset(seed=1).observation.qpos
        for _ in range(10):
            qpos = environment.step(np.zeros(4)).observation.qpos
        np.testing.assert_allclose(qpos, start, atol=1e-3)  # gravity is compensated below the velocity loop
        moved = environment.step([0.0, 0.0, 0.0, 1.0]).observation.qpos
        assert moved[3] - qpos[3] > 0.8 * environment.max_joint_speed[3] * environment.control_dt
        assert environment.set_state(environment.goal_qpos).success


# ----------------------------------------------------------------------------- bad scenes and config


def test_missing_scene_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"not_there\.xml"):
        ReachEnv(tmp_path / "not_there.xml")


def test_unknown_camera_lists_the_cameras():
    with pytest.raises(ValueError, match=r"unknown camera 'wrist'.*top"):
        ReachEnv(REACH2D, ReachConfig(camera="wrist"))


def test_scene_without_camera_is_refused_naming_what_it_found(tmp_path):
    scene = write_scene(tmp_path, planar_arm_xml(2, camera=False))
    with pytest.raises(ValueError, match=r"no camera.*j0, j1.*0 camera\(s\)"):
        ReachEnv(scene)


def test_scene_without_actuators_is_refused_naming_what_it_found(tmp_path):
    scene = write_scene(tmp_path, planar_arm_xml(2, actuator="none"))
    with pytest.raises(ValueError, match=r"no actuated joint.*0 actuator\(s\).*j0, j1.*overhead"):
        ReachEnv(scene)


def test_torque_motors_are_effort_joints(tmp_path):  # issue 13: refused before; test/test_any_arm.py has more
    scene = write_scene(tmp_path, planar_arm_xml(2, actuator="motor"))
    with ReachEnv(scene, SMALL) as environment:
        assert environment.command_interfaces == ("effort", "effort")


def test_unlimited_hinges_are_continuous_joints(tmp_path):  # issue 13: refused before
    scene = write_scene(tmp_path, planar_arm_xml(2, limited=False))
    with ReachEnv(scene, SMALL) as environment:
        assert environment.continuous.all()


def test_malformed_mjcf_is_a_clear_error(tmp_path):
    scene = write_scene(tmp_path, "<mujoco><worldbody><body></mujoco>")
    with pytest.raises(ValueError, match="cannot load MJCF"):
        ReachEnv(scene)


def test_joint_ranges_too_small_for_distinct_goals_are_explained(tmp_path):
    scene = write_scene(tmp_path, planar_arm_xml(2).replace('<compiler angle="radian"/>', ""))  # degrees
    with ReachEnv(scene, SMALL) as environment, pytest.raises(RuntimeError, match="too close to the start"):
        environment.reset(seed=0)


def test_control_dt_must_be_a_multiple_of_the_timestep():
    with pytest.raises(ValueError, match="multiple"):
        ReachEnv(REACH2D, ReachConfig(control_dt=0.0513))
