"""A reach task over any MJCF arm: normalised joint commands in, camera frames out.

The environment reads everything it needs from the scene (actuated joints, their limits, maximum
speeds and efforts, cameras), so a user's own arm works as long as it follows a few conventions:

- every actuator drives one hinge or slide joint (joint transmission) and is either a servo MuJoCo can
  express: a `<velocity>` actuator (ctrl = gear x joint speed), an `<intvelocity>` actuator (the same,
  integrated into a position target by the actuator itself) or a `<position>` actuator (ctrl = gear x joint
  position; the environment integrates the commanded speed into the target each physics substep); or a
  torque actuator: a `<motor>`, or a `<general>` with a fixed gain and no bias or dynamics;
- hinges may be continuous (no range): starts and goals are drawn on the circle, errors are wrapped;
  slides and the other hinges are limited (starts and goals are drawn inside the ranges);
- a servo joint's maximum speed is its velocity actuator's `ctrlrange` / gear, or a custom numeric
  `max_joint_speed` (one value or one per actuator), or a config override; a torque joint's full effort
  is its motor's `ctrlrange` (or `forcerange` / gain) times gear and gain, in N m (N for slides);
- optional goal marker: a mocap body `target` whose geoms sit in geom group 5, moved to the
  `end_effector` site of the goal configuration. Group 5 is rendered only with `show_target=True`.
A scene that breaks any of these is refused with one SceneError listing every problem and its fix.

Control model, chosen because it maps one-to-one onto ros2_control: an action is a vector of per-joint
commands in [-1, 1], times `action_scale` (the maximum speed of a servo joint, the full effort of a torque
joint) and held for `control_dt` seconds (`control_dt / timestep` physics substeps). On a real arm the same
vector times the same scales is what a `velocity_controllers/JointGroupVelocityController` (speeds) or an
`effort_controllers/JointGroupEffortController` (torques) receives every `control_dt`. Like ros2_control's
joint limiters, a speed command that would carry a joint past its limit within the control period is reduced
so the joint stops at the limit instead of pushing into it; a torque joint meets MuJoCo's limit constraint.

Unstable physics is an error, never data: when MuJoCo flags NaN/huge values (and silently resets the
simulation to the model's rest pose), or the state goes non-finite, or a joint is flung more than its own
range width outside its limits, `step`/`reset`/`set_state` raise `UnstableSimulationError` naming the
likely cause (a timestep too large for the scene's gains with its integrator). The environment then
needs `reset()` (or `set_state`) before it steps again.

Reading the scene and its conventions lives in arm_scene.py, the collision check in collision.py, start and
goal draws in task_sampling.py. Importing this module sets MuJoCo up (mujoco_setup.py): an offscreen GL
backend on a headless machine, and no MUJOCO_LOG.TXT in the current directory unless `LEWM_MUJOCO_LOG` asks.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lewm_ros.arguments import one_line
from lewm_ros.envs.arm_scene import TARGET_GEOM_GROUP, ArmScene, find_scene
from lewm_ros.envs.arm_scene import SceneError as SceneError  # re-exported: callers catch it from here
from lewm_ros.envs.collision import PoseCollisions
from lewm_ros.envs.mujoco_setup import mujoco
from lewm_ros.envs.stability import HUGE, forget_warnings, instability
from lewm_ros.envs.stability import UnstableSimulationError as UnstableSimulationError  # re-exported
from lewm_ros.envs.task_sampling import draw_configuration, wrap_angle

MAX_IMAGE_SIDE = 4096  # pixels per side: within every OpenGL's renderbuffer limit, 48 MiB per RGB frame
MAX_CONTROL_DT = 10.0  # seconds one action may be held
# soft joint limits let a simulated arm end a few mrad past its range (2.6 mrad measured on arm3d), so a
# recorded position stays usable as a start or goal within this much (rad or m, at most 1% of the range)
LIMIT_TOLERANCE = 0.01
MAX_CONTINUOUS_ANGLE = 1e6  # rad a continuous joint may be wound to in reset/set_state (stored qpos is unwrapped)

SeedLike = int | np.random.SeedSequence | None
Vector = Sequence[float] | np.ndarray


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _checked_number(name: str, value: object, low: float, high: float, *, low_open: bool, high_open: bool) -> float:
    """ReachConfig field check: a real number (not a bool), finite, inside the interval."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if not _is_real(value):
        raise TypeError(f"ReachConfig.{name} must be a number in {interval}, got {type(value).__name__} {value!r}")
    number = float(value)  # type: ignore[arg-type]
    below = number <= low if low_open else number < low
    above = number >= high if high_open else number > high
    if not np.isfinite(number) or below or above:
        raise ValueError(f"ReachConfig.{name} must be a finite number in {interval}, got {value!r}")
    return number


@dataclass(frozen=True)
class ReachConfig:
    """Knobs of the reach task; everything else comes from the MJCF scene."""

    camera: str | None = None  # camera name; None = the scene's first camera
    image_size: int | tuple[int, int] = 64  # square side, or (height, width)
    control_dt: float = 0.05  # seconds one action is held (20 Hz); a multiple of the model timestep
    max_joint_speed: float | tuple[float, ...] | None = None  # rad/s (m/s for slides); None = scene
    success_tolerance: float = 0.05  # rad, per joint: the paper's Reacher criterion
    show_target: bool = False  # render the goal marker (geom group 5)
    limit_margin: float = 0.05  # fraction of each joint range kept free when sampling start and goal
    fast_rendering: bool = True  # force offsamples=0 and shadowsize=0 (CPU rendering speed)

    def __post_init__(self) -> None:
        """Refuse wrong types and absurd values here, naming the field, before any scene is loaded."""
        if self.camera is not None and not (isinstance(self.camera, str) and self.camera):
            raise TypeError(f"ReachConfig.camera must be a camera name or None, got {self.camera!r}")
        object.__setattr__(self, "image_size", self._checked_image_size(self.image_size))
        _checked_number("control_dt", self.control_dt, 0.0, MAX_CONTROL_DT, low_open=True, high_open=False)
        _checked_number("success_tolerance", self.success_tolerance, 0.0, np.inf, low_open=True, high_open=True)
        _checked_number("limit_margin", self.limit_margin, 0.0, 0.5, low_open=False, high_open=True)
        object.__setattr__(self, "max_joint_speed", self._checked_speeds(self.max_joint_speed))
        for name in ("show_target", "fast_rendering"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise TypeError(f"ReachConfig.{name} must be True or False, got {getattr(self, name)!r}")

    @staticmethod
    def _checked_image_size(size: object) -> int | tuple[int, int]:
        rule = f"a positive int or (height, width) ints, at most {MAX_IMAGE_SIDE} per side"
        if _is_int(size):
            sides = [size]
        elif isinstance(size, (tuple, list)) and len(size) == 2 and all(_is_int(v) for v in size):
            sides = list(size)
        else:
            raise TypeError(f"ReachConfig.image_size must be {rule}, got {size!r}")
        if not all(1 <= int(v) <= MAX_IMAGE_SIDE for v in sides):  # type: ignore[call-overload]
            raise ValueError(f"ReachConfig.image_size must be {rule}, got {size!r}")
        values = [int(v) for v in sides]  # type: ignore[call-overload]
        return values[0] if len(values) == 1 else (values[0], values[1])

    @staticmethod
    def _checked_speeds(speed: object) -> float | tuple[float, ...] | None:
        if speed is None:
            return None
        if isinstance(speed, (tuple, list, np.ndarray)) and np.ndim(speed) == 1 and len(speed) > 0:
            return tuple(
                _checked_number("max_joint_speed", v, 0.0, np.inf, low_open=True, high_open=True) for v in speed
            )
        return _checked_number("max_joint_speed", speed, 0.0, np.inf, low_open=True, high_open=True)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of rendered frames."""
        if isinstance(self.image_size, int):
            return (self.image_size, self.image_size)
        height, width = self.image_size
        return (int(height), int(width))


@dataclass(frozen=True)
class Observation:
    """What the robot sees and senses: an RGB frame and the actuated joints' state."""

    pixels: np.ndarray  # (H, W, 3) uint8 RGB
    qpos: np.ndarray  # (A,) float64 joint positions, actuator order; continuous joints as simulated, unwrapped
    qvel: np.ndarray  # (A,) float64 joint velocities


@dataclass(frozen=True)
class StepResult:
    """One transition's outcome; `applied_action` is None after reset or set_state."""

    observation: Observation
    success: bool  # every joint within success_tolerance of the goal (wrapped angles on continuous joints)
    joint_error: np.ndarray  # goal - qpos, per joint (wrapped to [-pi, pi) on continuous joints)
    applied_action: np.ndarray | None = None  # the normalised command actually applied (after clipping)

    @property
    def max_joint_error(self) -> float:
        return float(np.max(np.abs(self.joint_error)))


class ReachEnv:
    """Reach any goal joint configuration of an MJCF arm, seen through one of its cameras."""

    def __init__(self, scene: str | Path, config: ReachConfig | None = None) -> None:
        self.config = config or ReachConfig()
        self.scene_path = find_scene(scene)
        try:
            self.model = mujoco.MjModel.from_xml_path(str(self.scene_path))
        except ValueError as error:
            raise ValueError(f"cannot load MJCF scene {self.scene_path}: {error}") from error
        self.data = mujoco.MjData(self.model)
        self.arm = ArmScene(
            self.model,
            self.scene_path,
            camera=self.config.camera,
            control_dt=self.config.control_dt,
            max_joint_speed=self.config.max_joint_speed,
        )
        arm = self.arm  # the scene's facts, under the names ReachEnv has always offered
        self.actuator_names, self.joint_names = arm.actuator_names, arm.joint_names
        self.continuous, self.joint_lower, self.joint_upper = arm.continuous, arm.joint_lower, arm.joint_upper
        self.command_interfaces, self.action_scale = arm.command_interfaces, arm.action_scale
        self.max_joint_speed, self.max_joint_effort = arm.max_joint_speed, arm.max_joint_effort
        self.camera_name, self._camera_id, self.substeps = arm.camera_name, arm.camera_id, arm.substeps
        self._qpos_adr, self._dof_adr = arm.qpos_adr, arm.dof_adr
        self.collisions = PoseCollisions(self.model, arm.qpos_adr, arm.joint_ids)
        self._scratch = mujoco.MjData(self.model)  # goal rendering and the target marker
        self._renderer = self._make_renderer()
        self._scene_option = mujoco.MjvOption()
        self._scene_option.geomgroup[TARGET_GEOM_GROUP] = int(self.config.show_target)
        self._rng = np.random.default_rng()
        self._goal = self.joint_lower + 0.5 * (self.joint_upper - self.joint_lower)
        self._goal_image: np.ndarray | None = None
        self._position_target = np.zeros(self.action_dim)
        self.clipped_actions = 0  # step() calls whose action had a component outside [-1, 1]
        self.steps = 0  # step() calls since the last reset
        self._diverged: str | None = None  # the instability report until reset()/set_state()

    # ----------------------------------------------------------------- rendering

    def _make_renderer(self) -> mujoco.Renderer:
        height, width = self.config.image_shape
        visual = self.model.vis
        visual.global_.offwidth = max(int(visual.global_.offwidth), width)
        visual.global_.offheight = max(int(visual.global_.offheight), height)
        if self.config.fast_rendering:
            visual.quality.offsamples = 0
            visual.quality.shadowsize = 0
        try:
            return mujoco.Renderer(self.model, height, width)
        except (mujoco.FatalError, ValueError, RuntimeError) as error:  # GL limits, no GL platform
            buffer = f"{visual.global_.offheight}x{visual.global_.offwidth}"
            raise RuntimeError(
                f"cannot render {height}x{width} frames of {self.scene_path} (offscreen buffer {buffer}, "
                f"MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')}): {one_line(error)}"
            ) from error

    # ----------------------------------------------------------------- properties

    @property
    def action_dim(self) -> int:
        return self.model.nu

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*self.config.image_shape, 3)

    @property
    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) travel limits: -inf/inf on continuous joints (joint_lower/upper hold -pi/pi there,
        the interval starts and goals are drawn from)."""
        lower = np.where(self.continuous, -np.inf, self.joint_lower)
        return lower, np.where(self.continuous, np.inf, self.joint_upper)

    @property
    def control_dt(self) -> float:
        return self.substeps * float(self.model.opt.timestep)

    @property
    def goal_qpos(self) -> np.ndarray:
        return self._goal.copy()

    @property
    def qpos(self) -> np.ndarray:
        return self.data.qpos[self._qpos_adr].copy()

    @property
    def qvel(self) -> np.ndarray:
        return self.data.qvel[self._dof_adr].copy()

    @property
    def time(self) -> float:
        """Simulated seconds since the last reset."""
        return float(self.data.time)

    # ----------------------------------------------------------------- episode control

    def reset(
        self,
        seed: SeedLike = None,
        *,
        start_qpos: Vector | None = None,
        goal_qpos: Vector | None = None,
    ) -> StepResult:
        """Start an episode: a collision-free start and a distinct, reachable goal inside joint limits.

        A seed makes the draw reproducible; without one the environment's generator continues.
        Explicit start/goal configurations (e.g. from held-out episodes) replace the draws.
        """
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        start = self._checked_configuration(start_qpos, "start_qpos") if start_qpos is not None else None
        goal = self._checked_configuration(goal_qpos, "goal_qpos") if goal_qpos is not None else None
        if start is None:
            start = self._sample_configuration()
        if goal is None:
            goal = self._sample_configuration(away_from=start)
        mujoco.mj_resetData(self.model, self.data)  # also zeroes MuJoCo's warning counters
        self._goal = goal
        self._goal_image = None
        self._place_target_marker()
        self.steps = 0
        return self.set_state(start)

    def set_state(self, qpos: Vector, qvel: Vector | None = None) -> StepResult:
        """Teleport the actuated joints (velocities default to zero); the goal stays.

        qpos obeys the bounds of reset(start_qpos=...) (the joint limits, give or take LIMIT_TOLERANCE);
        qvel must be finite and below MuJoCo's 1e10. Also the way back from an UnstableSimulationError.
        """
        position = self._checked_configuration(qpos, "qpos")
        velocity = np.zeros(self.action_dim) if qvel is None else self._checked_vector(qvel, "qvel")
        if np.any(np.abs(velocity) > HUGE):
            raise ValueError(f"qvel must stay below {HUGE:.0e} in magnitude (MuJoCo resets beyond), got {velocity}")
        forget_warnings(self.data)
        self._diverged = None
        self.data.qpos[self._qpos_adr] = position
        self.data.qvel[self._dof_adr] = velocity
        self._position_target = position.copy()
        self._write_servo_targets(np.zeros(self.action_dim), np.zeros(self.action_dim))
        self._sync_integrated_targets(position)
        mujoco.mj_forward(self.model, self.data)
        self._check_stable("set_state", expected_time=None)
        return self._result(None)

    def step(self, action: Vector) -> StepResult:
        """Hold one normalised command (speeds or efforts) for control_dt; NaN/inf or a wrong shape changes nothing.

        Raises UnstableSimulationError when the physics diverged during the period (see the module notes).
        """
        if self._diverged is not None:
            raise UnstableSimulationError(f"{self._diverged} (call reset() or set_state() before stepping again)")
        command = self._checked_vector(action, "action")
        clipped = np.clip(command, -1.0, 1.0)
        if not np.array_equal(clipped, command):
            self.clipped_actions += 1
        speed = self._limited_speed(clipped * self.arm.speed_scale)  # zero on torque joints
        torque = clipped * self.arm.effort_ctrl  # zero on servo joints
        expected_time = self.data.time + self.substeps * float(self.model.opt.timestep)
        forget_warnings(self.data)
        if self.arm.position_servos.any():
            substep_dt = float(self.model.opt.timestep)
            lower, upper = self.joint_limits
            for _ in range(self.substeps):
                self._position_target = np.clip(self._position_target + speed * substep_dt, lower, upper)
                self._write_servo_targets(speed, torque)
                mujoco.mj_step(self.model, self.data)
        else:
            self._write_servo_targets(speed, torque)
            mujoco.mj_step(self.model, self.data, self.substeps)
        self.steps += 1
        self._check_stable(f"step {self.steps}", expected_time)
        return self._result(clipped)

    def goal_image(self) -> np.ndarray:
        """The arm at the goal configuration, rendered exactly like observations (same camera, options)."""
        if self._goal_image is None:
            scratch = self._scratch
            scratch.qpos[:] = self.data.qpos
            scratch.qpos[self._qpos_adr] = self._goal
            scratch.qvel[:] = 0
            scratch.mocap_pos[:] = self.data.mocap_pos
            scratch.mocap_quat[:] = self.data.mocap_quat
            mujoco.mj_forward(self.model, scratch)
            self._goal_image = self._render(scratch)
        return self._goal_image.copy()

    def render(self) -> np.ndarray:
        """The current frame from the configured camera."""
        return self._render(self.data)

    def close(self) -> None:
        renderer = getattr(self, "_renderer", None)
        if renderer is not None:
            renderer.close()
            self._renderer = None

    def __enter__(self) -> ReachEnv:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ----------------------------------------------------------------- stability

    def _check_stable(self, during: str, expected_time: float | None) -> None:
        """Raise UnstableSimulationError (and refuse to step until reset) when the physics went wrong."""
        report = instability(self.arm, self.data, during, expected_time)
        if report is not None:
            self._diverged = report
            raise UnstableSimulationError(report)

    # ----------------------------------------------------------------- internals

    def _checked_vector(self, values: Vector, what: str) -> np.ndarray:
        try:
            vector = np.array(values, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{what} must be {self.action_dim} numbers: {error}") from error
        if vector.shape != (self.action_dim,):
            raise ValueError(
                f"{what} must have shape ({self.action_dim},) for joints {list(self.joint_names)}, "
                f"got shape {vector.shape}"
            )
        if not np.all(np.isfinite(vector)):
            raise ValueError(f"{what} contains NaN or inf: {vector}")
        return vector

    def _checked_configuration(self, values: Vector, what: str) -> np.ndarray:
        """Finite, one value per joint, inside the limits give or take LIMIT_TOLERANCE (reset and set_state)."""
        configuration = self._checked_vector(values, what)
        slack = np.minimum(LIMIT_TOLERANCE, LIMIT_TOLERANCE * (self.joint_upper - self.joint_lower))
        outside = (configuration < self.joint_lower - slack) | (configuration > self.joint_upper + slack)
        outside &= ~self.continuous
        far = self.continuous & (np.abs(configuration) > MAX_CONTINUOUS_ANGLE)
        if far.any():
            names = [n for n, bad in zip(self.joint_names, far, strict=True) if bad]
            raise ValueError(
                f"{what} winds continuous joints {names} past {MAX_CONTINUOUS_ANGLE:g} rad: {configuration}"
            )
        if outside.any():
            names = [n for n, bad in zip(self.joint_names, outside, strict=True) if bad]
            raise ValueError(f"{what} is outside the joint limits of {names}: {configuration}")
        return configuration

    def _sample_configuration(self, away_from: np.ndarray | None = None) -> np.ndarray:
        return draw_configuration(
            self._rng,
            self.joint_lower,
            self.joint_upper,
            self.continuous,
            self.collisions.collides,
            limit_margin=self.config.limit_margin,
            away_from=away_from,
            min_distance=2 * self.config.success_tolerance,
            scene=self.scene_path,
        )

    def _place_target_marker(self) -> None:
        if self.arm.target_mocap < 0:
            return
        scratch = self._scratch
        scratch.qpos[:] = self.model.qpos0
        scratch.qpos[self._qpos_adr] = self._goal
        mujoco.mj_kinematics(self.model, scratch)
        self.data.mocap_pos[self.arm.target_mocap] = scratch.site_xpos[self.arm.end_effector_site]

    def _limited_speed(self, speed: np.ndarray) -> np.ndarray:
        """Reduce commands that would carry a limited joint past its limit within one control period."""
        position = self.data.qpos[self._qpos_adr]
        dt = self.control_dt
        lower, upper = self.joint_limits
        return np.clip(speed, np.minimum((lower - position) / dt, 0.0), np.maximum((upper - position) / dt, 0.0))

    def _write_servo_targets(self, speed: np.ndarray, torque: np.ndarray) -> None:
        """Joint-space commands to ctrl: servos see gear x (speed or position), motors their torque ctrl,
        so a joint moves at the commanded speed whatever the gear."""
        servo = self.arm.gear * np.where(self.arm.position_servos, self._position_target, speed)
        self.data.ctrl[:] = np.where(self.arm.effort, torque, servo)

    def _sync_integrated_targets(self, position: np.ndarray) -> None:
        """intvelocity servos keep their target (gear x position) in the actuator state: align it with qpos."""
        for a in np.flatnonzero(self.arm.integrating_servos):
            self.data.act[self.model.actuator_actadr[a]] = self.arm.gear[a] * position[a]

    def _joint_error(self, qpos: np.ndarray) -> np.ndarray:
        """goal - qpos, wrapped to [-pi, pi) on continuous joints (a full turn away is the same pose)."""
        error = self._goal - qpos
        return np.where(self.continuous, wrap_angle(error), error)

    def _render(self, data: mujoco.MjData) -> np.ndarray:
        if self._renderer is None:
            raise RuntimeError("ReachEnv is closed")
        self._renderer.update_scene(data, camera=self._camera_id, scene_option=self._scene_option)
        return self._renderer.render()

    def _result(self, applied: np.ndarray | None) -> StepResult:
        qpos = self.qpos
        error = self._joint_error(qpos)
        observation = Observation(pixels=self.render(), qpos=qpos, qvel=self.qvel)
        success = bool(np.all(np.abs(error) <= self.config.success_tolerance))
        return StepResult(observation=observation, success=success, joint_error=error, applied_action=applied)
