"""A reach task over any MJCF arm: normalised joint-velocity commands in, camera frames out.

The environment reads everything it needs from the scene (actuated joints, their limits, maximum
speeds, cameras), so a user's own arm works as long as it follows a few conventions:

- every actuator drives one hinge or slide joint and is a servo MuJoCo can express: a `<velocity>`
  actuator (ctrl = joint speed), an `<intvelocity>` actuator (ctrl = joint speed, integrated into a
  position target by the actuator itself) or a `<position>` actuator (ctrl = joint position; the
  environment integrates the commanded speed into the position target each physics substep);
- actuated joints are limited (start and goal configurations are drawn inside the ranges);
- the maximum joint speed is the velocity actuator's symmetric `ctrlrange`, or a custom numeric
  `max_joint_speed` (one value or one per actuator), or a config override;
- optional goal marker: a mocap body `target` whose geoms sit in geom group 5, moved to the
  `end_effector` site of the goal configuration. Group 5 is rendered only with `show_target=True`.

Control model, chosen because it maps one-to-one onto ros2_control: an action is a vector of
per-joint velocity commands in [-1, 1], scaled by the joint's maximum speed and held for
`control_dt` seconds (`control_dt / timestep` physics substeps). On a real arm the same vector, times the
same maximum speeds, is what a `velocity_controllers/JointGroupVelocityController` (or a
`forward_command_controller` on velocity interfaces) receives every `control_dt`. Like ros2_control's
joint limiters, a command that would carry a joint past its limit within the control period is reduced
so the joint stops at the limit instead of pushing into it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Offscreen rendering needs an OpenGL platform chosen before mujoco is imported: EGL (headless) unless the
# user picked one or has a display.
if "DISPLAY" not in os.environ:
    os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco
import numpy as np

TARGET_BODY = "target"
TARGET_GEOM_GROUP = 5
END_EFFECTOR_SITE = "end_effector"
MAX_SPEED_NUMERIC = "max_joint_speed"
BUNDLED_SCENES = Path(__file__).resolve().parents[2] / "sim"

SeedLike = int | np.random.SeedSequence | None
Vector = Sequence[float] | np.ndarray
_CONTACT_TOLERANCE = 1e-3  # metres of penetration tolerated when checking sampled configurations
_SAMPLING_TRIES = 200
_ONE_DOF_JOINTS = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))


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
    qpos: np.ndarray  # (A,) float64 joint positions, actuator order
    qvel: np.ndarray  # (A,) float64 joint velocities


@dataclass(frozen=True)
class StepResult:
    """One transition's outcome; `applied_action` is None after reset or set_state."""

    observation: Observation
    success: bool  # every joint within success_tolerance of the goal
    joint_error: np.ndarray  # goal - qpos, per joint
    applied_action: np.ndarray | None = None  # the normalised command actually applied (after clipping)

    @property
    def max_joint_error(self) -> float:
        return float(np.max(np.abs(self.joint_error)))


def bundled_scene_dirs() -> list[Path]:
    """Where the package's sim/ folder lives: the source tree, or share/lewm_ros/sim of an install."""
    prefixes = [sys.prefix, *filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep))]
    return [BUNDLED_SCENES, *(Path(prefix) / "share" / "lewm_ros" / "sim" for prefix in prefixes)]


def find_scene(scene: str | Path) -> Path:
    """An existing MJCF path: as given, or a scene bundled with lewm_ros (`reach2d` or `reach2d.xml`)."""
    path = Path(scene)
    if path.is_file():
        return path
    names = [path.name] if path.suffix else [path.name, f"{path.name}.xml"]
    folders = bundled_scene_dirs() if len(path.parts) == 1 else []
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    raise FileNotFoundError(
        f"scene file not found: {str(scene)!r} (neither a file nor one of the bundled scenes in {BUNDLED_SCENES})"
    )


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
        self._check_config()
        self._read_actuated_joints()
        self.max_joint_speed = self._resolve_max_speed()
        self.camera_name, self._camera_id = self._resolve_camera()
        self.substeps = self._resolve_substeps()
        self._read_target_marker()
        self._moving_geoms = self._geoms_moved_by_actuated_joints()
        self._scratch = mujoco.MjData(self.model)  # collision checks and goal rendering
        self._renderer = self._make_renderer()
        self._scene_option = mujoco.MjvOption()
        self._scene_option.geomgroup[TARGET_GEOM_GROUP] = int(self.config.show_target)
        self._rng = np.random.default_rng()
        self._goal = self.joint_lower + 0.5 * (self.joint_upper - self.joint_lower)
        self._goal_image: np.ndarray | None = None
        self._position_target = np.zeros(self.action_dim)
        self.clipped_actions = 0  # step() calls whose action had a component outside [-1, 1]
        self.steps = 0  # step() calls since the last reset

    # ----------------------------------------------------------------- reading the scene

    def _describe_scene(self) -> str:
        m = self.model
        joints = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j) or f"#{j}" for j in range(m.njnt)]
        cameras = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_CAMERA, c) or f"#{c}" for c in range(m.ncam)]
        return (
            f"found {m.nu} actuator(s), {m.njnt} joint(s) [{', '.join(joints) or 'none'}], "
            f"{m.ncam} camera(s) [{', '.join(cameras) or 'none'}]"
        )

    def _check_config(self) -> None:
        cfg = self.config
        height, width = cfg.image_shape
        if height < 1 or width < 1:
            raise ValueError(f"image size must be positive, got {cfg.image_size!r}")
        if not (np.isfinite(cfg.control_dt) and cfg.control_dt > 0):
            raise ValueError(f"control_dt must be a positive number of seconds, got {cfg.control_dt!r}")
        if not cfg.success_tolerance > 0:
            raise ValueError(f"success_tolerance must be positive, got {cfg.success_tolerance!r}")
        if not 0 <= cfg.limit_margin < 0.5:
            raise ValueError(f"limit_margin must be in [0, 0.5), got {cfg.limit_margin!r}")

    def _read_actuated_joints(self) -> None:
        m = self.model
        if m.nu == 0:
            raise ValueError(
                f"scene {self.scene_path} has no actuated joint: ReachEnv commands joints through "
                f"<velocity>, <intvelocity> or <position> actuators ({self._describe_scene()})"
            )
        names, joint_ids, kinds = [], [], []
        for a in range(m.nu):
            actuator = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_ACTUATOR, a) or f"#{a}"
            if int(m.actuator_trntype[a]) != int(mujoco.mjtTrn.mjTRN_JOINT):
                raise ValueError(f"actuator {actuator!r} in {self.scene_path} does not drive a joint")
            joint = int(m.actuator_trnid[a, 0])
            joint_name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, joint) or f"#{joint}"
            if int(m.jnt_type[joint]) not in _ONE_DOF_JOINTS:
                raise ValueError(f"actuator {actuator!r} drives {joint_name!r}, which is not a hinge or slide")
            if joint in joint_ids:
                raise ValueError(f"joint {joint_name!r} is driven by more than one actuator")
            if not m.jnt_limited[joint]:
                raise ValueError(
                    f"joint {joint_name!r} has no range: ReachEnv draws starts and goals inside joint "
                    "limits, so give it limited='true' range='lo hi'"
                )
            names.append(joint_name)
            joint_ids.append(joint)
            kinds.append(self._servo_kind(a, actuator))
        self.joint_names: tuple[str, ...] = tuple(names)
        self.actuator_names: tuple[str, ...] = tuple(
            mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_ACTUATOR, a) or f"#{a}" for a in range(m.nu)
        )
        self._joint_ids = np.array(joint_ids)
        self._qpos_adr = m.jnt_qposadr[self._joint_ids].copy()
        self._dof_adr = m.jnt_dofadr[self._joint_ids].copy()
        self.joint_lower = m.jnt_range[self._joint_ids, 0].copy()
        self.joint_upper = m.jnt_range[self._joint_ids, 1].copy()
        self._servo_kinds = tuple(kinds)
        self._position_servos = np.array([k == "position" for k in kinds])
        self._integrating_servos = np.array([k == "intvelocity" for k in kinds])

    def _servo_kind(self, a: int, actuator: str) -> str:
        """velocity (ctrl = speed), intvelocity (ctrl = speed, act = target) or position (ctrl = target)."""
        m = self.model
        affine = int(m.actuator_biastype[a]) == int(mujoco.mjtBias.mjBIAS_AFFINE)
        fixed_gain = int(m.actuator_gaintype[a]) == int(mujoco.mjtGain.mjGAIN_FIXED)
        dyn = int(m.actuator_dyntype[a])
        bias = m.actuator_biasprm[a]
        if affine and fixed_gain and bias[1] < 0:
            if dyn == int(mujoco.mjtDyn.mjDYN_INTEGRATOR):
                return "intvelocity"
            if dyn == int(mujoco.mjtDyn.mjDYN_NONE):
                return "position"
        if affine and fixed_gain and dyn == int(mujoco.mjtDyn.mjDYN_NONE) and bias[1] == 0 and bias[2] < 0:
            return "velocity"
        raise ValueError(
            f"actuator {actuator!r} in {self.scene_path} is not a velocity, intvelocity or position servo "
            "(torque motors need a velocity loop the scene does not provide)"
        )

    def _resolve_max_speed(self) -> np.ndarray:
        m, n = self.model, self.action_dim
        override = self.config.max_joint_speed
        if override is not None:
            values = np.atleast_1d(np.asarray(override, dtype=np.float64))
            if values.shape not in ((1,), (n,)):
                raise ValueError(f"max_joint_speed needs 1 or {n} values, got {values.shape[0]}")
            speed = np.broadcast_to(values, (n,)).copy()
            source = "config max_joint_speed"
        else:
            numeric = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_NUMERIC, MAX_SPEED_NUMERIC)
            if numeric >= 0:
                adr, size = m.numeric_adr[numeric], m.numeric_size[numeric]
                values = m.numeric_data[adr : adr + size]
                if size not in (1, n):
                    raise ValueError(f"custom numeric {MAX_SPEED_NUMERIC!r} needs 1 or {n} values, has {size}")
                speed = np.broadcast_to(values, (n,)).astype(np.float64)
                source = f"custom numeric {MAX_SPEED_NUMERIC!r}"
            else:
                speed = np.array([self._speed_from_ctrlrange(a) for a in range(n)])
                source = "actuator ctrlrange"
        if not (np.all(np.isfinite(speed)) and np.all(speed > 0)):
            raise ValueError(f"maximum joint speeds must be positive and finite, got {speed} from {source}")
        return speed

    def _speed_from_ctrlrange(self, a: int) -> float:
        m = self.model
        if self._servo_kinds[a] != "position" and m.actuator_ctrllimited[a]:
            low, high = m.actuator_ctrlrange[a]
            return float(min(-low, high))
        raise ValueError(
            f"cannot tell the maximum speed of actuator {self.actuator_names[a]!r}: give velocity actuators a "
            f"symmetric ctrlrange, add <custom><numeric name='{MAX_SPEED_NUMERIC}' data='...'/></custom> "
            "to the scene, or set max_joint_speed in the config"
        )

    def _resolve_camera(self) -> tuple[str, int]:
        m = self.model
        if m.ncam == 0:
            raise ValueError(
                f"scene {self.scene_path} has no camera: ReachEnv renders observations from a <camera> in "
                f"the MJCF ({self._describe_scene()})"
            )
        names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_CAMERA, c) or "" for c in range(m.ncam)]
        wanted = self.config.camera
        if wanted is None:
            return names[0] or "#0", 0
        if wanted not in names:
            raise ValueError(
                f"unknown camera {wanted!r} in {self.scene_path}; cameras: {', '.join(n or '<unnamed>' for n in names)}"
            )
        return wanted, names.index(wanted)

    def _resolve_substeps(self) -> int:
        timestep = float(self.model.opt.timestep)
        substeps = round(self.config.control_dt / timestep)
        if substeps < 1 or abs(substeps * timestep - self.config.control_dt) > 1e-9 + 1e-6 * timestep:
            raise ValueError(
                f"control_dt {self.config.control_dt} s is not a whole multiple of the scene timestep {timestep} s"
            )
        return substeps

    def _read_target_marker(self) -> None:
        m = self.model
        body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, TARGET_BODY)
        site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, END_EFFECTOR_SITE)
        mocap = int(m.body_mocapid[body]) if body >= 0 else -1
        self._target_mocap = mocap if site >= 0 else -1
        self._end_effector_site = site

    def _geoms_moved_by_actuated_joints(self) -> np.ndarray:
        """Geom mask of bodies downstream of an actuated joint: the ones sampled poses must keep clear."""
        m = self.model
        moving_body = np.zeros(m.nbody, dtype=bool)
        moving_body[m.jnt_bodyid[self._joint_ids]] = True
        for body in range(1, m.nbody):  # parents come before children in MuJoCo's body order
            moving_body[body] |= moving_body[m.body_parentid[body]]
        return moving_body[m.geom_bodyid]

    def _make_renderer(self) -> mujoco.Renderer:
        height, width = self.config.image_shape
        visual = self.model.vis
        visual.global_.offwidth = max(int(visual.global_.offwidth), width)
        visual.global_.offheight = max(int(visual.global_.offheight), height)
        if self.config.fast_rendering:
            visual.quality.offsamples = 0
            visual.quality.shadowsize = 0
        return mujoco.Renderer(self.model, height, width)

    # ----------------------------------------------------------------- properties

    @property
    def action_dim(self) -> int:
        return self.model.nu

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*self.config.image_shape, 3)

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
        mujoco.mj_resetData(self.model, self.data)
        self._goal = goal
        self._goal_image = None
        self._place_target_marker()
        self.steps = 0
        return self.set_state(start)

    def set_state(self, qpos: Vector, qvel: Vector | None = None) -> StepResult:
        """Teleport the actuated joints (velocities default to zero); the goal stays."""
        position = self._checked_vector(qpos, "qpos")
        velocity = np.zeros(self.action_dim) if qvel is None else self._checked_vector(qvel, "qvel")
        self.data.qpos[self._qpos_adr] = position
        self.data.qvel[self._dof_adr] = velocity
        self._position_target = position.copy()
        self._write_servo_targets(np.zeros(self.action_dim))
        self._sync_integrated_targets(position)
        mujoco.mj_forward(self.model, self.data)
        return self._result(None)

    def step(self, action: Vector) -> StepResult:
        """Hold one normalised velocity command for control_dt; NaN/inf or a wrong shape changes nothing."""
        command = self._checked_vector(action, "action")
        clipped = np.clip(command, -1.0, 1.0)
        if not np.array_equal(clipped, command):
            self.clipped_actions += 1
        speed = self._limited_speed(clipped * self.max_joint_speed)
        if self._position_servos.any():
            substep_dt = float(self.model.opt.timestep)
            for _ in range(self.substeps):
                self._position_target = np.clip(
                    self._position_target + speed * substep_dt, self.joint_lower, self.joint_upper
                )
                self._write_servo_targets(speed)
                mujoco.mj_step(self.model, self.data)
        else:
            self._write_servo_targets(speed)
            mujoco.mj_step(self.model, self.data, self.substeps)
        self.steps += 1
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
        configuration = self._checked_vector(values, what)
        outside = (configuration < self.joint_lower) | (configuration > self.joint_upper)
        if outside.any():
            names = [n for n, bad in zip(self.joint_names, outside, strict=True) if bad]
            raise ValueError(f"{what} is outside the joint limits of {names}: {configuration}")
        return configuration

    def _sample_configuration(self, away_from: np.ndarray | None = None) -> np.ndarray:
        span = self.joint_upper - self.joint_lower
        low = self.joint_lower + self.config.limit_margin * span
        high = self.joint_upper - self.config.limit_margin * span
        too_close = 0
        for _ in range(_SAMPLING_TRIES):
            candidate = self._rng.uniform(low, high)
            if away_from is not None and np.max(np.abs(candidate - away_from)) <= 2 * self.config.success_tolerance:
                too_close += 1
            elif not self._collides(candidate):
                return candidate
        raise RuntimeError(
            f"no usable configuration in {_SAMPLING_TRIES} draws inside the joint limits of {self.scene_path}: "
            f"{too_close} too close to the start (joint ranges {np.round(span, 4).tolist()}; "
            "MJCF angles are in degrees unless <compiler angle='radian'/>), "
            f"{_SAMPLING_TRIES - too_close} in collision (does the rest pose already touch other geoms?)"
        )

    def _collides(self, configuration: np.ndarray) -> bool:
        """True when a geom moved by the arm penetrates anything (floor, pedestal, its own links)."""
        scratch = self._scratch
        scratch.qpos[:] = self.model.qpos0
        scratch.qpos[self._qpos_adr] = configuration
        mujoco.mj_kinematics(self.model, scratch)
        mujoco.mj_collision(self.model, scratch)
        for contact in scratch.contact[: scratch.ncon]:
            if contact.dist < -_CONTACT_TOLERANCE and (
                self._moving_geoms[contact.geom1] or self._moving_geoms[contact.geom2]
            ):
                return True
        return False

    def _place_target_marker(self) -> None:
        if self._target_mocap < 0:
            return
        scratch = self._scratch
        scratch.qpos[:] = self.model.qpos0
        scratch.qpos[self._qpos_adr] = self._goal
        mujoco.mj_kinematics(self.model, scratch)
        self.data.mocap_pos[self._target_mocap] = scratch.site_xpos[self._end_effector_site]

    def _limited_speed(self, speed: np.ndarray) -> np.ndarray:
        """Reduce commands that would carry a joint past its limit within one control period."""
        position = self.data.qpos[self._qpos_adr]
        dt = self.control_dt
        return np.clip(speed, np.minimum((self.joint_lower - position) / dt, 0.0),
                       np.maximum((self.joint_upper - position) / dt, 0.0))

    def _write_servo_targets(self, speed: np.ndarray) -> None:
        self.data.ctrl[:] = np.where(self._position_servos, self._position_target, speed)

    def _sync_integrated_targets(self, position: np.ndarray) -> None:
        """intvelocity servos keep their position target in the actuator state: align it with qpos."""
        for a in np.flatnonzero(self._integrating_servos):
            self.data.act[self.model.actuator_actadr[a]] = position[a]

    def _render(self, data: mujoco.MjData) -> np.ndarray:
        if self._renderer is None:
            raise RuntimeError("ReachEnv is closed")
        self._renderer.update_scene(data, camera=self._camera_id, scene_option=self._scene_option)
        return self._renderer.render()

    def _result(self, applied: np.ndarray | None) -> StepResult:
        qpos = self.qpos
        error = self._goal - qpos
        observation = Observation(pixels=self.render(), qpos=qpos, qvel=self.qvel)
        success = bool(np.all(np.abs(error) <= self.config.success_tolerance))
        return StepResult(observation=observation, success=success, joint_error=error, applied_action=applied)
