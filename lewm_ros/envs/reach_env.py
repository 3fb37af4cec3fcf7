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

MuJoCo appends its warnings to `MUJOCO_LOG.TXT` in the current directory by default; importing this
module turns that file off (console messages stay) unless the user already configured MuJoCo's log, or
names a log file in the `LEWM_MUJOCO_LOG` environment variable.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lewm_ros.envs.gl_backend import headless_gl_backend

# Offscreen rendering needs an OpenGL platform chosen before mujoco is imported. An explicit MUJOCO_GL always
# wins; with a display MuJoCo's default (GLFW) works; without one, EGL, then OSMesa.
if "DISPLAY" not in os.environ and "MUJOCO_GL" not in os.environ and (_backend := headless_gl_backend()):
    os.environ["MUJOCO_GL"] = _backend

import mujoco
import numpy as np

TARGET_BODY = "target"
TARGET_GEOM_GROUP = 5
END_EFFECTOR_SITE = "end_effector"
MAX_SPEED_NUMERIC = "max_joint_speed"
BUNDLED_SCENES = Path(__file__).resolve().parents[2] / "sim"

MAX_IMAGE_SIDE = 4096  # pixels per side: within every OpenGL's renderbuffer limit, 48 MiB per RGB frame
MAX_CONTROL_DT = 10.0  # seconds one action may be held
# soft joint limits let a simulated arm end a few mrad past its range (2.6 mrad measured on arm3d), so a
# recorded position stays usable as a start or goal within this much (rad or m, at most 1% of the range)
LIMIT_TOLERANCE = 0.01
MUJOCO_LOG_ENV = "LEWM_MUJOCO_LOG"
MAX_CONTINUOUS_ANGLE = 1e6  # rad a continuous joint may be wound to in reset/set_state (stored qpos is unwrapped)

SeedLike = int | np.random.SeedSequence | None
Vector = Sequence[float] | np.ndarray
_CONTACT_TOLERANCE = 1e-3  # metres of penetration tolerated when checking sampled configurations
_SAMPLING_TRIES = 200
_ONE_DOF_JOINTS = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
_SLIDE = int(mujoco.mjtJoint.mjJNT_SLIDE)
_JOINT_TRANSMISSIONS = (int(mujoco.mjtTrn.mjTRN_JOINT), int(mujoco.mjtTrn.mjTRN_JOINTINPARENT))
# MuJoCo warnings that mean the physics is wrong: it reset the data after a divergence, or ran out of
# room for contacts/constraints and dropped some
_BADQPOS = int(mujoco.mjtWarning.mjWARN_BADQPOS)  # its info is a qpos address, the others' a dof
_DIVERGENCE_WARNINGS = (_BADQPOS, int(mujoco.mjtWarning.mjWARN_BADQVEL), int(mujoco.mjtWarning.mjWARN_BADQACC))
_CAPACITY_WARNINGS = (int(mujoco.mjtWarning.mjWARN_CONTACTFULL), int(mujoco.mjtWarning.mjWARN_CNSTRFULL))
_HUGE = float(mujoco.mjMAXVAL)  # MuJoCo's own "huge value" threshold (1e10)
_EXPLICIT_INTEGRATORS = (int(mujoco.mjtIntegrator.mjINT_EULER), int(mujoco.mjtIntegrator.mjINT_RK4))


def _keep_mujoco_log_out_of_the_working_directory() -> None:
    """MuJoCo's default handler appends warnings to MUJOCO_LOG.TXT in the CWD (a stray file in checkouts
    and datasets); turn the file off, or point it at $LEWM_MUJOCO_LOG, unless the user configured it."""
    config_type = getattr(mujoco, "MjLogConfig", None)  # MuJoCo >= 3.4
    if config_type is None:
        return
    config = config_type.get()
    if not (config.logto_file and config.logfile == "MUJOCO_LOG.TXT"):
        return
    wanted = os.environ.get(MUJOCO_LOG_ENV)
    if wanted:
        config.logfile = str(Path(wanted).expanduser().resolve())
    else:
        config.logto_file = False
    config.set()


_keep_mujoco_log_out_of_the_working_directory()


class SceneError(ValueError):
    """The scene breaks ReachEnv's conventions; the message lists every problem found, each with its fix."""


class UnstableSimulationError(RuntimeError):
    """The physics diverged: frames and joint states since the last good step are not data."""


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


def wrap_angle(angle: np.ndarray | float) -> np.ndarray:
    """Angles mapped to [-pi, pi): how far apart two poses of a continuous joint really are."""
    return np.mod(np.asarray(angle, dtype=np.float64) + np.pi, 2 * np.pi) - np.pi


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
        problems: list[str] = []  # every broken convention, reported together with its fix
        self._read_actuated_joints(problems)
        self.camera_name, self._camera_id = self._resolve_camera(problems)
        self.substeps = self._resolve_substeps(problems)
        if problems:
            listed = "; ".join(f"({i}) {problem}" for i, problem in enumerate(problems, 1))
            count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
            raise SceneError(f"scene {self.scene_path} cannot be used ({count}): {listed}")
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
        self._diverged: str | None = None  # the instability report until reset()/set_state()

    # ----------------------------------------------------------------- reading the scene

    def _describe_scene(self) -> str:
        m = self.model
        joints = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_JOINT, j) or f"#{j}" for j in range(m.njnt)]
        cameras = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_CAMERA, c) or f"#{c}" for c in range(m.ncam)]
        return (
            f"found {m.nu} actuator(s), {m.njnt} joint(s) [{', '.join(joints) or 'none'}], "
            f"{m.ncam} camera(s) [{', '.join(cameras) or 'none'}]"
        )

    def _joint_name(self, joint: int) -> str:
        return mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_JOINT, joint) or f"#{joint}"

    def _read_actuated_joints(self, problems: list[str]) -> None:
        """Joints, limits, actuator kinds and scales; every convention broken goes to `problems` (with its
        fix) instead of stopping at the first, so a user fixes a scene in one round."""
        m = self.model
        n = m.nu
        self.actuator_names: tuple[str, ...] = tuple(
            mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_ACTUATOR, a) or f"#{a}" for a in range(n)
        )
        if n == 0:
            problems.append(
                "it has no actuated joint: ReachEnv commands joints through <velocity>, <intvelocity> or "
                f"<position> servos or <motor> torque actuators ({self._describe_scene()}); fix: add one "
                "actuator per joint in <actuator>"
            )
        joint_ids = np.full(n, -1)
        kinds = ["unknown"] * n
        drivers: dict[int, list[str]] = {}
        for a, actuator in enumerate(self.actuator_names):
            transmission = int(m.actuator_trntype[a])
            if transmission not in _JOINT_TRANSMISSIONS:
                kind = mujoco.mjtTrn(transmission).name.removeprefix("mjTRN_").lower()
                problems.append(
                    f"actuator {actuator!r} has a {kind} transmission, which ReachEnv does not support (it "
                    "commands joints one by one); fix: make it drive a hinge or slide with joint='...'"
                )
                continue
            joint = int(m.actuator_trnid[a, 0])
            joint_name = self._joint_name(joint)
            drivers.setdefault(joint, []).append(actuator)
            if int(m.jnt_type[joint]) not in _ONE_DOF_JOINTS:
                problems.append(
                    f"actuator {actuator!r} drives {joint_name!r}, which is not a hinge or slide; fix: actuate "
                    "hinge or slide joints only"
                )
                continue
            if int(m.jnt_type[joint]) == _SLIDE and not m.jnt_limited[joint]:
                problems.append(
                    f"slide joint {joint_name!r} has no range, so starts and goals cannot be drawn; fix: give it "
                    "range='lo hi' (only hinges may be continuous)"
                )
            joint_ids[a] = joint
            kinds[a] = self._actuator_kind(a, problems)
        for joint, names in drivers.items():
            if len(names) > 1:
                problems.append(
                    f"joint {self._joint_name(joint)!r} is driven by more than one actuator "
                    f"({', '.join(repr(name) for name in names)}); fix: keep one actuator per joint"
                )
        valid = joint_ids >= 0
        self.joint_names: tuple[str, ...] = tuple(
            self._joint_name(j) if j >= 0 else f"<{self.actuator_names[a]}>" for a, j in enumerate(joint_ids)
        )
        self._joint_ids = np.where(valid, joint_ids, 0)
        self._qpos_adr = m.jnt_qposadr[self._joint_ids].copy()
        self._dof_adr = m.jnt_dofadr[self._joint_ids].copy()
        self.continuous = valid & (m.jnt_limited[self._joint_ids] == 0)  # unlimited hinges: angles on the circle
        self.joint_lower = np.where(self.continuous, -np.pi, m.jnt_range[self._joint_ids, 0])
        self.joint_upper = np.where(self.continuous, np.pi, m.jnt_range[self._joint_ids, 1])
        self._servo_kinds = tuple(kinds)
        self.command_interfaces: tuple[str, ...] = tuple("effort" if k == "torque" else "velocity" for k in kinds)
        self._effort = np.array([k == "torque" for k in kinds], dtype=bool)
        self._position_servos = np.array([k == "position" for k in kinds], dtype=bool)
        self._integrating_servos = np.array([k == "intvelocity" for k in kinds], dtype=bool)
        self._gear = np.where(valid, m.actuator_gear[:, 0], 1.0) if n else np.zeros(0)
        self._resolve_scales(problems, valid)

    def _actuator_kind(self, a: int, problems: list[str]) -> str:
        """velocity (ctrl = speed), intvelocity (ctrl = speed, act = target), position (ctrl = target) or
        torque (ctrl = force: a <motor>, or a <general> with a fixed gain and no bias or dynamics)."""
        m = self.model
        affine = int(m.actuator_biastype[a]) == int(mujoco.mjtBias.mjBIAS_AFFINE)
        no_bias = int(m.actuator_biastype[a]) == int(mujoco.mjtBias.mjBIAS_NONE) or (
            affine and not np.any(m.actuator_biasprm[a, :3])
        )
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
        if no_bias and fixed_gain and dyn == int(mujoco.mjtDyn.mjDYN_NONE) and m.actuator_gainprm[a, 0] != 0:
            return "torque"
        problems.append(
            f"actuator {self.actuator_names[a]!r} is neither a velocity, intvelocity or position servo nor a plain "
            "torque actuator (it has dynamics, a non-fixed gain or a bias that is not a servo's); fix: use "
            "<velocity>, <intvelocity>, <position> or <motor>"
        )
        return "unknown"

    def _resolve_scales(self, problems: list[str], valid: np.ndarray) -> None:
        """max_joint_speed (servo joints; NaN on torque joints), max_joint_effort (torque joints; NaN on servo
        joints) and the ctrl each unit of normalised action stands for."""
        m, n = self.model, self.model.nu
        given, source = self._speed_override(problems)
        speed = np.full(n, np.nan)
        effort = np.full(n, np.nan)
        self._effort_ctrl = np.zeros(n)  # ctrl of a normalised effort of 1 (sign folds in gear and gain)
        for a in np.flatnonzero(valid):
            kind = self._servo_kinds[a]
            if kind == "unknown":
                continue
            if kind == "torque":
                ctrl = self._max_torque_ctrl(a, problems)
                gain = float(m.actuator_gainprm[a, 0]) * float(self._gear[a])
                effort[a] = abs(gain) * ctrl
                self._effort_ctrl[a] = np.sign(gain) * ctrl
                continue
            if given is not None:
                speed[a] = given[a]
            else:
                speed[a] = self._speed_from_ctrlrange(a, problems)
            if not (np.isfinite(speed[a]) and speed[a] > 0):
                if given is not None:  # a missing ctrlrange was reported by _speed_from_ctrlrange
                    problems.append(f"the maximum speed of {self.joint_names[a]!r} from {source} is {speed[a]:g}; "
                                    "fix: make it positive and finite")
                continue
            if kind in ("velocity", "intvelocity") and m.actuator_ctrllimited[a]:
                low, high = m.actuator_ctrlrange[a]
                reachable = min(-low, high) / abs(float(self._gear[a]))
                if speed[a] > reachable * (1 + 1e-9) and self.config.max_joint_speed is not None:
                    # the user's override wins over the scene: open the ctrlrange so MuJoCo does not clamp it
                    bound = speed[a] * abs(float(self._gear[a]))
                    m.actuator_ctrlrange[a] = (min(low, -bound), max(high, bound))
                elif speed[a] > reachable * (1 + 1e-9):
                    problems.append(
                        f"the maximum speed of {self.joint_names[a]!r} ({speed[a]:g}, from {source}) is more than "
                        f"actuator {self.actuator_names[a]!r} can be commanded (ctrlrange {low:g}..{high:g} / gear "
                        f"{float(self._gear[a]):g} = {reachable:g}), so recorded actions would overstate the "
                        f"speed; fix: a maximum speed of at most {reachable:g}, or a wider ctrlrange"
                    )
        self.max_joint_speed = speed
        self.max_joint_effort = effort
        self._speed_scale = np.nan_to_num(speed)
        # normalised action x action_scale = the command in the joint's own units (rad/s, m/s, N m or N)
        self.action_scale = np.where(self._effort, effort, speed)

    def _speed_override(self, problems: list[str]) -> tuple[np.ndarray | None, str]:
        """Per-joint speeds from the config or the scene's custom numeric (1 or nu values), if given."""
        m, n = self.model, self.model.nu
        override = self.config.max_joint_speed
        if n == 0:  # already reported: no actuator
            return None, "actuator ctrlrange"
        if override is not None:
            values = np.atleast_1d(np.asarray(override, dtype=np.float64))
            source = "config max_joint_speed"
        else:
            numeric = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_NUMERIC, MAX_SPEED_NUMERIC)
            if numeric < 0:
                return None, "actuator ctrlrange"
            adr, size = m.numeric_adr[numeric], m.numeric_size[numeric]
            values = np.array(m.numeric_data[adr : adr + size], dtype=np.float64)
            source = f"custom numeric {MAX_SPEED_NUMERIC!r}"
        if values.shape not in ((1,), (n,)):
            problems.append(
                f"{source} has {values.shape[0]} values for {n} actuated joints; fix: give 1 value, or one per "
                f"joint in actuator order {list(self.joint_names)}"
            )
            return None, source
        return np.broadcast_to(values, (n,)).copy(), source

    def _speed_from_ctrlrange(self, a: int, problems: list[str]) -> float:
        """A velocity servo's ctrlrange bounds gear x joint speed: the joint's maximum speed is ctrl / |gear|."""
        m = self.model
        if self._servo_kinds[a] != "position" and m.actuator_ctrllimited[a]:
            low, high = m.actuator_ctrlrange[a]
            if low < 0 < high:
                return float(min(-low, high)) / abs(float(self._gear[a]))
        problems.append(
            f"the maximum speed of actuator {self.actuator_names[a]!r} is unknown; fix: give velocity actuators a "
            f"ctrlrange around 0, add <custom><numeric name='{MAX_SPEED_NUMERIC}' data='...'/></custom> to the "
            "scene, or set max_joint_speed in the config (--max-joint-speed)"
        )
        return float("nan")

    def _max_torque_ctrl(self, a: int, problems: list[str]) -> float:
        """The ctrl of full effort: the ctrlrange bound, else the forcerange bound over the gain."""
        m = self.model
        if m.actuator_ctrllimited[a]:
            low, high = m.actuator_ctrlrange[a]
            if low < 0 < high:
                return float(min(-low, high))
            problems.append(
                f"torque actuator {self.actuator_names[a]!r} has ctrlrange {low:g}..{high:g}, which does not "
                "contain 0 (zero effort is the safe command); fix: a ctrlrange like '-T T'"
            )
            return float("nan")
        if m.actuator_forcelimited[a]:
            low, high = m.actuator_forcerange[a]
            if low < 0 < high:
                return float(min(-low, high)) / abs(float(m.actuator_gainprm[a, 0]))
        problems.append(
            f"torque actuator {self.actuator_names[a]!r} has no ctrlrange and no forcerange around 0, so full effort "
            "is unknown; fix: add ctrlrange='-T T' (T = its largest torque command) or forcerange='-F F'"
        )
        return float("nan")

    def _resolve_camera(self, problems: list[str]) -> tuple[str, int]:
        m = self.model
        if m.ncam == 0:
            problems.append(
                "it has no camera: ReachEnv renders observations from a <camera> in the MJCF "
                f"({self._describe_scene()}); fix: add a <camera> that sees the arm"
            )
            return "", -1
        names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_CAMERA, c) or "" for c in range(m.ncam)]
        wanted = self.config.camera
        if wanted is None:
            return names[0] or "#0", 0
        if wanted not in names:
            problems.append(
                f"unknown camera {wanted!r}; fix: name one of its cameras: "
                f"{', '.join(n or '<unnamed>' for n in names)}"
            )
            return wanted, -1
        return wanted, names.index(wanted)

    def _resolve_substeps(self, problems: list[str]) -> int:
        timestep = float(self.model.opt.timestep)
        wanted = self.config.control_dt
        substeps = round(wanted / timestep)
        if substeps >= 1 and abs(substeps * timestep - wanted) <= 1e-9 + 1e-6 * timestep:
            return substeps
        below = int(np.floor(wanted / timestep + 1e-9))
        nearest = [k * timestep for k in (below, below + 1) if k >= 1]
        problems.append(
            f"control_dt {wanted:g} s is not a whole multiple of the scene timestep {timestep:g} s; fix: use "
            f"control_dt {' or '.join(f'{value:.10g}' for value in nearest)} s (the nearest multiples), or a "
            "timestep that divides it"
        )
        return 1

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
        try:
            return mujoco.Renderer(self.model, height, width)
        except (mujoco.FatalError, ValueError, RuntimeError) as error:  # GL limits, no GL platform
            buffer = f"{visual.global_.offheight}x{visual.global_.offwidth}"
            raise RuntimeError(
                f"cannot render {height}x{width} frames of {self.scene_path} (offscreen buffer {buffer}, "
                f"MUJOCO_GL={os.environ.get('MUJOCO_GL', '<unset>')}): {' '.join(str(error).split())}"
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
        if np.any(np.abs(velocity) > _HUGE):
            raise ValueError(f"qvel must stay below {_HUGE:.0e} in magnitude (MuJoCo resets beyond), got {velocity}")
        self._forget_warnings()
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
        speed = self._limited_speed(clipped * self._speed_scale)  # zero on torque joints
        torque = clipped * self._effort_ctrl  # zero on servo joints
        expected_time = self.data.time + self.substeps * float(self.model.opt.timestep)
        self._forget_warnings()
        if self._position_servos.any():
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

    def _forget_warnings(self) -> None:
        """Zero the watched warning counters, so any count seen after a physics call is new."""
        for warning in (*_DIVERGENCE_WARNINGS, *_CAPACITY_WARNINGS):
            self.data.warning[warning].number = 0

    def _check_stable(self, during: str, expected_time: float | None) -> None:
        """The one instability check, after every physics call: MuJoCo's warnings, a silent reset (time
        jumped back), non-finite or huge state, joints flung far outside their limits."""
        m, d = self.model, self.data
        problems = [
            f"MuJoCo warned '{mujoco.mju_warningText(w, int(d.warning[w].lastinfo))}'"
            + (f" (joint {self._dof_joint_name(int(d.warning[w].lastinfo))})" if w != _BADQPOS else "")
            for w in _DIVERGENCE_WARNINGS
            if d.warning[w].number > 0
        ]
        timestep = float(m.opt.timestep)
        if expected_time is not None and abs(d.time - expected_time) > 0.5 * timestep:
            problems.append(
                f"MuJoCo silently reset the simulation (time {d.time:.4f} s instead of {expected_time:.4f} s)"
            )
        state = np.concatenate([d.qpos, d.qvel, d.qacc])
        if not np.all(np.isfinite(state)) or np.max(np.abs(state), initial=0.0) > _HUGE:
            problems.append("the state holds NaN, inf or values above 1e10")
        span = self.joint_upper - self.joint_lower
        qpos = d.qpos[self._qpos_adr]
        flung = ((qpos < self.joint_lower - span) | (qpos > self.joint_upper + span)) & ~self.continuous
        if flung.any():
            joints = ", ".join(
                f"{name}={value:.4g} (range {low:.4g}..{high:.4g})"
                for name, value, low, high, bad in zip(
                    self.joint_names, qpos, self.joint_lower, self.joint_upper, flung, strict=True
                )
                if bad
            )
            problems.append(f"joints flung far outside their limits: {joints}")
        capacity = [mujoco.mju_warningText(w, int(d.warning[w].lastinfo)) for w in _CAPACITY_WARNINGS
                    if d.warning[w].number > 0]
        if not problems and not capacity:
            return
        causes = []
        if problems:
            integrator = mujoco.mjtIntegrator(int(m.opt.integrator)).name.removeprefix("mjINT_")
            advice = (
                "switch to <option integrator=\"implicitfast\"/> (it treats servo gains and damping "
                "implicitly), or lower the timestep"
                if int(m.opt.integrator) in _EXPLICIT_INTEGRATORS
                else "lower <option timestep=...>"
            )
            causes.append(
                f"likely cause: the timestep {timestep:g} s is too large for the scene's stiffness and gains "
                f"(servo kv/kp, joint stiffness, small armature or mass) with the {integrator} integrator; "
                f"{advice}, or soften the gains"
            )
        if capacity:
            problems.extend(f"MuJoCo warned '{text}'" for text in capacity)
            causes.append("contacts or constraints were dropped: raise <size memory=...> in the MJCF")
        self._diverged = (
            f"unstable simulation in {self.scene_path} during {during}: {'; '.join(problems)}; {'; '.join(causes)}"
        )
        raise UnstableSimulationError(self._diverged)

    def _dof_joint_name(self, dof: int) -> str:
        if not 0 <= dof < self.model.nv:
            return f"dof #{dof}"
        joint = int(self.model.dof_jntid[dof])
        return mujoco.mj_id2name(self.model, mujoco.mjtObj.mjOBJ_JOINT, joint) or f"#{joint}"

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
        span = self.joint_upper - self.joint_lower
        margin = np.where(self.continuous, 0.0, self.config.limit_margin * span)  # the circle has no ends
        low, high = self.joint_lower + margin, self.joint_upper - margin
        too_close = 0
        for _ in range(_SAMPLING_TRIES):
            candidate = self._rng.uniform(low, high)
            apart = candidate - away_from if away_from is not None else None
            if apart is not None:
                apart = np.where(self.continuous, wrap_angle(apart), apart)
            if apart is not None and np.max(np.abs(apart)) <= 2 * self.config.success_tolerance:
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
        """Reduce commands that would carry a limited joint past its limit within one control period."""
        position = self.data.qpos[self._qpos_adr]
        dt = self.control_dt
        lower, upper = self.joint_limits
        return np.clip(speed, np.minimum((lower - position) / dt, 0.0), np.maximum((upper - position) / dt, 0.0))

    def _write_servo_targets(self, speed: np.ndarray, torque: np.ndarray) -> None:
        """Joint-space commands to ctrl: servos see gear x (speed or position), motors their torque ctrl,
        so a joint moves at the commanded speed whatever the gear."""
        servo = self._gear * np.where(self._position_servos, self._position_target, speed)
        self.data.ctrl[:] = np.where(self._effort, torque, servo)

    def _sync_integrated_targets(self, position: np.ndarray) -> None:
        """intvelocity servos keep their target (gear x position) in the actuator state: align it with qpos."""
        for a in np.flatnonzero(self._integrating_servos):
            self.data.act[self.model.actuator_actadr[a]] = self._gear[a] * position[a]

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
