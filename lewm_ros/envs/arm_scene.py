"""Read an MJCF arm the way ReachEnv drives it: find the scene file, check its conventions, and read its
actuated joints, their limits, command kinds and scales, the camera and the goal marker.

The conventions themselves are listed in lewm_ros/envs/reach_env.py. Every broken one is collected with its
fix and reported in one SceneError, so a user repairs a scene in one round instead of one error at a time.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from lewm_ros.envs.mujoco_setup import mujoco

TARGET_BODY = "target"
TARGET_GEOM_GROUP = 5
END_EFFECTOR_SITE = "end_effector"
MAX_SPEED_NUMERIC = "max_joint_speed"
BUNDLED_SCENES = Path(__file__).resolve().parents[2] / "sim"

_ONE_DOF_JOINTS = (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE))
_SLIDE = int(mujoco.mjtJoint.mjJNT_SLIDE)
_JOINT_TRANSMISSIONS = (int(mujoco.mjtTrn.mjTRN_JOINT), int(mujoco.mjtTrn.mjTRN_JOINTINPARENT))


class SceneError(ValueError):
    """The scene breaks ReachEnv's conventions; the message lists every problem found, each with its fix."""


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


class ArmScene:
    """What ReachEnv needs from a loaded MJCF model, read once; raises SceneError listing every problem.

    Per actuator (actuator order): the joint it drives, its qpos/dof addresses and limits (-pi..pi on
    continuous hinges), its kind (velocity, intvelocity, position servo or torque), gear and the scale of a
    normalised command of 1. Reading may widen a servo's ctrlrange in `model`: a max_joint_speed override
    beyond it is the user's explicit wish, and MuJoCo would otherwise clamp the command.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        scene_path: Path,
        *,
        camera: str | None,
        control_dt: float,
        max_joint_speed: float | tuple[float, ...] | None,
    ) -> None:
        self.model = model
        self.scene_path = scene_path
        self._configured_speed = max_joint_speed
        problems: list[str] = []
        self._read_actuated_joints(problems)
        self.camera_name, self.camera_id = self._resolve_camera(camera, problems)
        self.substeps = self._resolve_substeps(control_dt, problems)
        if problems:
            listed = "; ".join(f"({i}) {problem}" for i, problem in enumerate(problems, 1))
            count = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
            raise SceneError(f"scene {scene_path} cannot be used ({count}): {listed}")
        self._read_target_marker()

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
        self.joint_ids = np.where(valid, joint_ids, 0)
        self.qpos_adr = m.jnt_qposadr[self.joint_ids].copy()
        self.dof_adr = m.jnt_dofadr[self.joint_ids].copy()
        self.continuous = valid & (m.jnt_limited[self.joint_ids] == 0)  # unlimited hinges: angles on the circle
        self.joint_lower = np.where(self.continuous, -np.pi, m.jnt_range[self.joint_ids, 0])
        self.joint_upper = np.where(self.continuous, np.pi, m.jnt_range[self.joint_ids, 1])
        self.servo_kinds = tuple(kinds)
        self.command_interfaces: tuple[str, ...] = tuple("effort" if k == "torque" else "velocity" for k in kinds)
        self.effort = np.array([k == "torque" for k in kinds], dtype=bool)
        self.position_servos = np.array([k == "position" for k in kinds], dtype=bool)
        self.integrating_servos = np.array([k == "intvelocity" for k in kinds], dtype=bool)
        self.gear = np.where(valid, m.actuator_gear[:, 0], 1.0) if n else np.zeros(0)
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
        self.effort_ctrl = np.zeros(n)  # ctrl of a normalised effort of 1 (sign folds in gear and gain)
        for a in np.flatnonzero(valid):
            kind = self.servo_kinds[a]
            if kind == "unknown":
                continue
            if kind == "torque":
                ctrl = self._max_torque_ctrl(a, problems)
                gain = float(m.actuator_gainprm[a, 0]) * float(self.gear[a])
                effort[a] = abs(gain) * ctrl
                self.effort_ctrl[a] = np.sign(gain) * ctrl
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
                reachable = min(-low, high) / abs(float(self.gear[a]))
                if speed[a] > reachable * (1 + 1e-9) and self._configured_speed is not None:
                    # the user's override wins over the scene: open the ctrlrange so MuJoCo does not clamp it
                    bound = speed[a] * abs(float(self.gear[a]))
                    m.actuator_ctrlrange[a] = (min(low, -bound), max(high, bound))
                elif speed[a] > reachable * (1 + 1e-9):
                    problems.append(
                        f"the maximum speed of {self.joint_names[a]!r} ({speed[a]:g}, from {source}) is more than "
                        f"actuator {self.actuator_names[a]!r} can be commanded (ctrlrange {low:g}..{high:g} / gear "
                        f"{float(self.gear[a]):g} = {reachable:g}), so recorded actions would overstate the "
                        f"speed; fix: a maximum speed of at most {reachable:g}, or a wider ctrlrange"
                    )
        self.max_joint_speed = speed
        self.max_joint_effort = effort
        self.speed_scale = np.nan_to_num(speed)
        # normalised action x action_scale = the command in the joint's own units (rad/s, m/s, N m or N)
        self.action_scale = np.where(self.effort, effort, speed)

    def _speed_override(self, problems: list[str]) -> tuple[np.ndarray | None, str]:
        """Per-joint speeds from the config or the scene's custom numeric (1 or nu values), if given."""
        m, n = self.model, self.model.nu
        override = self._configured_speed
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
        if self.servo_kinds[a] != "position" and m.actuator_ctrllimited[a]:
            low, high = m.actuator_ctrlrange[a]
            if low < 0 < high:
                return float(min(-low, high)) / abs(float(self.gear[a]))
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

    def _resolve_camera(self, wanted: str | None, problems: list[str]) -> tuple[str, int]:
        m = self.model
        if m.ncam == 0:
            problems.append(
                "it has no camera: ReachEnv renders observations from a <camera> in the MJCF "
                f"({self._describe_scene()}); fix: add a <camera> that sees the arm"
            )
            return "", -1
        names = [mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_CAMERA, c) or "" for c in range(m.ncam)]
        if wanted is None:
            return names[0] or "#0", 0
        if wanted not in names:
            problems.append(
                f"unknown camera {wanted!r}; fix: name one of its cameras: "
                f"{', '.join(n or '<unnamed>' for n in names)}"
            )
            return wanted, -1
        return wanted, names.index(wanted)

    def _resolve_substeps(self, wanted: float, problems: list[str]) -> int:
        timestep = float(self.model.opt.timestep)
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
        """The goal marker: a mocap body `target` and the `end_effector` site it is placed on (-1: none)."""
        m = self.model
        body = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, TARGET_BODY)
        site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, END_EFFECTOR_SITE)
        mocap = int(m.body_mocapid[body]) if body >= 0 else -1
        self.target_mocap = mocap if site >= 0 else -1
        self.end_effector_site = site
