"""The collision check and the task draws shared by ReachEnv and the mujoco_sim node, without ROS: which
poses penetrate, which geoms move with the arm, start/goal draws, teleport targets."""

from __future__ import annotations

import numpy as np
import pytest

from lewm_ros.envs.collision import PoseCollisions, geoms_moved_by
from lewm_ros.envs.mujoco_setup import mujoco
from lewm_ros.envs.task_sampling import (
    SAMPLING_TRIES,
    TELEPORT_CANDIDATES,
    draw_configuration,
    far_configuration,
    wrap_angle,
)

# One hinge swings a 0.2 m link in the plane; a post at (0, 0.2) stands in the way of its tip around +90 degrees.
SCENE = """
<mujoco>
  <compiler angle="radian"/>
  <worldbody>
    <geom name="floor" type="plane" size="1 1 0.1"/>
    <geom name="post" type="box" pos="0 0.2 0.05" size="0.06 0.03 0.05"/>
    <body name="link" pos="0 0 0.05">
      <joint name="swing" type="hinge" axis="0 0 1" range="-3 3"/>
      <geom name="rod" type="capsule" fromto="0 0 0 0.2 0 0" size="0.01"/>
      <body name="tip" pos="0.2 0 0">
        <geom name="ball" type="sphere" size="0.01"/>
      </body>
    </body>
  </worldbody>
</mujoco>
"""


@pytest.fixture(scope="module")
def model():
    return mujoco.MjModel.from_xml_string(SCENE)


def collisions(model):
    joint = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, "swing")
    return PoseCollisions(model, np.array([model.jnt_qposadr[joint]]), np.array([joint]))


def test_geoms_downstream_of_the_actuated_joints_move():
    model = mujoco.MjModel.from_xml_string(SCENE)
    moved = geoms_moved_by(model, np.array([0]))
    names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) for g in range(model.ngeom)]
    assert dict(zip(names, moved.tolist(), strict=True)) == {"floor": False, "post": False, "rod": True, "ball": True}


def test_a_pose_through_the_post_penetrates_and_a_clear_one_does_not(model):
    check = collisions(model)
    assert check.collides(np.array([np.pi / 2]))
    assert check.penetrations(np.array([np.pi / 2])) >= 1
    assert not check.collides(np.array([0.0]))
    assert check.penetrations(np.array([-np.pi / 2])) == 0


def test_the_check_leaves_the_simulation_data_alone(model):
    data = mujoco.MjData(model)
    data.qpos[:] = 0.3
    collisions(model).collides(np.array([np.pi / 2]), base_qpos=data.qpos)
    np.testing.assert_array_equal(data.qpos, [0.3])
    assert data.ncon == 0


def test_draws_stay_inside_the_margins_and_clear_of_collisions():
    rng = np.random.default_rng(0)
    lower, upper, continuous = np.array([-1.0, -2.0]), np.array([1.0, 2.0]), np.array([False, False])

    def blocked(q):
        return q[0] > 0  # half of the space collides

    draws = np.array([draw_configuration(rng, lower, upper, continuous, blocked, limit_margin=0.1)
                      for _ in range(200)])  # fmt: skip
    assert np.all(draws >= lower + 0.1 * (upper - lower)) and np.all(draws <= upper - 0.1 * (upper - lower))
    assert np.all(draws[:, 0] <= 0)


def test_a_goal_is_drawn_away_from_the_start_on_the_circle_of_a_continuous_joint():
    rng = np.random.default_rng(1)
    lower, upper, continuous = np.array([-np.pi]), np.array([np.pi]), np.array([True])
    start = np.array([np.pi - 0.01])
    for _ in range(100):
        goal = draw_configuration(rng, lower, upper, continuous, lambda q: False, limit_margin=0.4,
                                  away_from=start, min_distance=1.0)  # fmt: skip
        assert abs(wrap_angle(goal - start)[0]) > 1.0  # -pi + 0.01 would be 0.02 rad away, not 2pi


def test_draws_are_reproducible_from_the_generator_seed():
    args = (np.array([-1.0]), np.array([1.0]), np.array([False]), lambda q: False)
    first = draw_configuration(np.random.default_rng(7), *args, limit_margin=0.05)
    assert draw_configuration(np.random.default_rng(7), *args, limit_margin=0.05) == first


def test_no_usable_draw_says_how_often_each_condition_failed():
    rng = np.random.default_rng(2)
    lower, upper, continuous = np.array([0.0]), np.array([0.1]), np.array([False])
    with pytest.raises(RuntimeError) as error:
        draw_configuration(rng, lower, upper, continuous, lambda q: True, limit_margin=0.0, away_from=np.array([0.05]),
                           min_distance=0.04, scene="tiny.xml")  # fmt: skip
    message = str(error.value)
    assert f"in {SAMPLING_TRIES} draws inside the joint limits of tiny.xml" in message
    too_close = int(message.split(": ")[1].split(" too close")[0])
    assert 0 < too_close < SAMPLING_TRIES and f"{SAMPLING_TRIES - too_close} in collision" in message


def test_a_teleport_goes_to_the_farthest_candidate_that_penetrates_no_more_than_now(model):
    check = collisions(model)
    lower, upper, current = np.array([-2.0]), np.array([2.0]), np.array([-1.5])
    rng = np.random.default_rng(3)
    candidates = np.random.default_rng(3).uniform(lower + 0.2, upper - 0.2, size=(TELEPORT_CANDIDATES, 1))
    farthest = max(candidates, key=lambda c: abs(c[0] - current[0]))
    assert check.collides(farthest)  # the post blocks the farthest draw: the teleport must skip it
    free = [c for c in candidates if not check.collides(c)]
    expected = max(free, key=lambda c: abs(c[0] - current[0]))
    target = far_configuration(rng, lower, upper, current, check.penetrations)
    np.testing.assert_array_equal(target, expected)


def test_a_teleport_with_every_candidate_in_collision_is_refused():
    with pytest.raises(RuntimeError, match=f"none of {TELEPORT_CANDIDATES} random configurations"):
        far_configuration(np.random.default_rng(0), np.array([0.0]), np.array([1.0]), np.array([0.5]),
                          lambda q: 0 if q[0] == 0.5 else 1)  # fmt: skip
