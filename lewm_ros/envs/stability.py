"""Unstable physics is an error, never data: the one check ReachEnv runs after every physics call.

MuJoCo flags NaN or huge values (and then silently resets the simulation to the model's rest pose), the state
can go non-finite, a joint can be flung more than its own range width outside its limits, and contacts or
constraints can overflow their memory. Any of these yields one report naming the likely cause and its fix.
"""

from __future__ import annotations

import numpy as np

from lewm_ros.envs.arm_scene import ArmScene
from lewm_ros.envs.mujoco_setup import mujoco

# MuJoCo warnings that mean the physics is wrong: it reset the data after a divergence, or ran out of
# room for contacts/constraints and dropped some
_BADQPOS = int(mujoco.mjtWarning.mjWARN_BADQPOS)  # its info is a qpos address, the others' a dof
_DIVERGENCE_WARNINGS = (_BADQPOS, int(mujoco.mjtWarning.mjWARN_BADQVEL), int(mujoco.mjtWarning.mjWARN_BADQACC))
_CAPACITY_WARNINGS = (int(mujoco.mjtWarning.mjWARN_CONTACTFULL), int(mujoco.mjtWarning.mjWARN_CNSTRFULL))
HUGE = float(mujoco.mjMAXVAL)  # MuJoCo's own "huge value" threshold (1e10)
_EXPLICIT_INTEGRATORS = (int(mujoco.mjtIntegrator.mjINT_EULER), int(mujoco.mjtIntegrator.mjINT_RK4))


class UnstableSimulationError(RuntimeError):
    """The physics diverged: frames and joint states since the last good step are not data."""


def forget_warnings(data: mujoco.MjData) -> None:
    """Zero the watched warning counters, so any count seen after a physics call is new."""
    for warning in (*_DIVERGENCE_WARNINGS, *_CAPACITY_WARNINGS):
        data.warning[warning].number = 0


def instability(arm: ArmScene, data: mujoco.MjData, during: str, expected_time: float | None) -> str | None:
    """The one instability check, after every physics call: MuJoCo's warnings, a silent reset (time
    jumped back), non-finite or huge state, joints flung far outside their limits."""
    m, d = arm.model, data
    problems = [
        f"MuJoCo warned '{mujoco.mju_warningText(w, int(d.warning[w].lastinfo))}'"
        + (f" (joint {_dof_joint_name(m, int(d.warning[w].lastinfo))})" if w != _BADQPOS else "")
        for w in _DIVERGENCE_WARNINGS
        if d.warning[w].number > 0
    ]
    timestep = float(m.opt.timestep)
    if expected_time is not None and abs(d.time - expected_time) > 0.5 * timestep:
        problems.append(
            f"MuJoCo silently reset the simulation (time {d.time:.4f} s instead of {expected_time:.4f} s)"
        )
    state = np.concatenate([d.qpos, d.qvel, d.qacc])
    if not np.all(np.isfinite(state)) or np.max(np.abs(state), initial=0.0) > HUGE:
        problems.append("the state holds NaN, inf or values above 1e10")
    span = arm.joint_upper - arm.joint_lower
    qpos = d.qpos[arm.qpos_adr]
    flung = ((qpos < arm.joint_lower - span) | (qpos > arm.joint_upper + span)) & ~arm.continuous
    if flung.any():
        joints = ", ".join(
            f"{name}={value:.4g} (range {low:.4g}..{high:.4g})"
            for name, value, low, high, bad in zip(
                arm.joint_names, qpos, arm.joint_lower, arm.joint_upper, flung, strict=True
            )
            if bad
        )
        problems.append(f"joints flung far outside their limits: {joints}")
    capacity = [mujoco.mju_warningText(w, int(d.warning[w].lastinfo)) for w in _CAPACITY_WARNINGS
                if d.warning[w].number > 0]
    if not problems and not capacity:
        return None
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
    return f"unstable simulation in {arm.scene_path} during {during}: {'; '.join(problems)}; {'; '.join(causes)}"


def _dof_joint_name(model: mujoco.MjModel, dof: int) -> str:
    if not 0 <= dof < model.nv:
        return f"dof #{dof}"
    joint = int(model.dof_jntid[dof])
    return mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, joint) or f"#{joint}"
