"""Which poses of the arm penetrate something: the one collision check behind start and goal draws
(ReachEnv.reset) and teleport targets (the mujoco_sim node).

Only contacts that touch a geom moved by the actuated joints count: what the rest of the scene does to itself
does not depend on the arm's pose. Poses are checked on a scratch MjData, never the simulation's own.
"""

from __future__ import annotations

import numpy as np

from lewm_ros.envs.mujoco_setup import mujoco

PENETRATION_TOLERANCE = 1e-3  # metres: soft contacts let touching geoms overlap a little


def geoms_moved_by(model: mujoco.MjModel, joint_ids: np.ndarray) -> np.ndarray:
    """Geom mask of the bodies downstream of the given joints: the ones an arm pose moves."""
    moving_body = np.zeros(model.nbody, dtype=bool)
    moving_body[model.jnt_bodyid[joint_ids]] = True
    for body in range(1, model.nbody):  # parents come before children in MuJoCo's body order
        moving_body[body] |= moving_body[model.body_parentid[body]]
    return moving_body[model.geom_bodyid]


class PoseCollisions:
    """Penetrating contacts of the arm at a given pose, found by kinematics and collision detection alone."""

    def __init__(self, model: mujoco.MjModel, qpos_adr: np.ndarray, joint_ids: np.ndarray) -> None:
        self.model = model
        self.qpos_adr = np.asarray(qpos_adr)
        self.moving_geoms = geoms_moved_by(model, joint_ids)
        self._scratch = mujoco.MjData(model)

    def penetrations(self, configuration: np.ndarray, base_qpos: np.ndarray | None = None) -> int:
        """Contacts deeper than PENETRATION_TOLERANCE that touch the arm, with the actuated joints at
        `configuration` and every other joint at `base_qpos` (default: the model's rest pose qpos0)."""
        scratch = self._scratch
        scratch.qpos[:] = self.model.qpos0 if base_qpos is None else base_qpos
        scratch.qpos[self.qpos_adr] = configuration
        mujoco.mj_kinematics(self.model, scratch)
        mujoco.mj_collision(self.model, scratch)
        moving = self.moving_geoms
        return sum(
            1
            for contact in scratch.contact[: scratch.ncon]
            if contact.dist < -PENETRATION_TOLERANCE and (moving[contact.geom1] or moving[contact.geom2])
        )

    def collides(self, configuration: np.ndarray, base_qpos: np.ndarray | None = None) -> bool:
        """True when the arm at `configuration` penetrates anything (floor, pedestal, its own links)."""
        return self.penetrations(configuration, base_qpos) > 0
