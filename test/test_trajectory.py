"""The JointTrajectory -> command math, without ROS: joint order, velocities, differenced positions, efforts,
how long a point acts, and every refusal."""

from __future__ import annotations

import numpy as np
import pytest

from lewm_ros.data.trajectory import TrajectoryError, joint_order, point_effort, point_velocity

JOINTS = ("shoulder", "elbow", "wrist")


def test_joint_order_maps_any_permutation_onto_the_joints():
    np.testing.assert_array_equal(joint_order(["wrist", "shoulder", "elbow"], JOINTS), [2, 0, 1])
    np.testing.assert_array_equal(joint_order(list(JOINTS), JOINTS), [0, 1, 2])


@pytest.mark.parametrize(
    ("names", "match"),
    [
        (["shoulder", "elbow", "hand"], r"unknown joints \['hand'\]"),
        (["shoulder", "elbow"], "exactly once"),
        (["shoulder", "elbow", "elbow"], "exactly once"),
        ([], "exactly once"),
    ],
)
def test_joint_order_refuses_unknown_missing_and_repeated_joints(names, match):
    with pytest.raises(TrajectoryError, match=match):
        joint_order(names, JOINTS)


def velocity_of(**point):
    fields = {"positions": [], "velocities": [], "time_from_start_s": 0.0, "current": np.zeros(3),
              "min_duration_s": 0.05, **point}  # fmt: skip
    return point_velocity(np.array([2, 0, 1]), **fields)


def test_velocities_are_reordered_and_last_until_replaced_without_a_time_from_start():
    velocity, duration = velocity_of(velocities=[0.3, 0.1, 0.2])  # wrist, shoulder, elbow
    np.testing.assert_array_equal(velocity, [0.1, 0.2, 0.3])
    assert duration is None


def test_velocities_act_for_their_time_from_start_and_win_over_positions():
    velocity, duration = velocity_of(velocities=[0.3, 0.1, 0.2], positions=[9.0, 9.0, 9.0], time_from_start_s=0.25)
    np.testing.assert_array_equal(velocity, [0.1, 0.2, 0.3])
    assert duration == 0.25


def test_positions_are_differenced_from_the_current_position_over_the_time_from_start():
    current = np.array([0.0, 1.0, 1.0])
    velocity, duration = velocity_of(positions=[1.5, 0.5, 1.0], time_from_start_s=0.5, current=current)
    np.testing.assert_allclose(velocity, [1.0, 0.0, 1.0])  # (target - current) / 0.5, in the joints' order
    assert duration == 0.5


def test_a_position_point_acts_at_least_one_control_period():
    velocity, duration = velocity_of(positions=[0.1, 0.1, 0.1], time_from_start_s=0.0, min_duration_s=0.05)
    np.testing.assert_allclose(velocity, [2.0, 2.0, 2.0])
    assert duration == 0.05


@pytest.mark.parametrize(
    ("point", "match"),
    [
        ({"velocities": [0.1, 0.2]}, "2 velocities for 3 joints"),
        ({"positions": [0.1, 0.2]}, "2 positions and no velocities for 3 joints"),
        ({}, "0 positions and no velocities"),
    ],
)
def test_points_without_one_value_per_joint_are_refused(point, match):
    with pytest.raises(TrajectoryError, match=match):
        velocity_of(**point)


def test_an_all_torque_arm_takes_the_efforts_and_ignores_velocities():
    command, duration = point_effort(np.array([1, 0]), efforts=[2.0, -1.0], velocities=[], time_from_start_s=0.1,
                                     effort_joints=np.array([True, True]), joints=("a", "b"))  # fmt: skip
    np.testing.assert_array_equal(command, [-1.0, 2.0])
    assert duration == 0.1


def test_a_mixed_arm_takes_efforts_on_torque_joints_and_velocities_on_servo_joints():
    command, duration = point_effort(np.array([0, 1]), efforts=[2.0, 7.0], velocities=[5.0, 0.4], time_from_start_s=0.0,
                                     effort_joints=np.array([True, False]), joints=("a", "b"))  # fmt: skip
    np.testing.assert_array_equal(command, [2.0, 0.4])
    assert duration is None


def test_efforts_missing_or_servo_velocities_missing_are_refused():
    torque = {"effort_joints": np.array([True, False]), "joints": ("motor", "servo"), "time_from_start_s": 0.0}
    with pytest.raises(TrajectoryError, match=r"1 efforts for 2 joints; scene joints \['motor'\] take torques"):
        point_effort(np.array([0, 1]), efforts=[1.0], velocities=[0.0, 0.0], **torque)
    with pytest.raises(TrajectoryError, match="needs 2 velocities for the scene's servo joints"):
        point_effort(np.array([0, 1]), efforts=[1.0, 0.0], velocities=[], **torque)
