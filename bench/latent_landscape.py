"""How far can the goal cost see? Squared latent distance and roadmap distance against joint distance.

Renders random reach2d configurations, encodes them with a bundle, and for a set of them taken as goals prints
the mean cost per joint-distance bin, plain (||z - g||^2) and along the bundle's roadmap, plus how often each
orders a random pair of configurations the same way as their joint distance does (0.5 = chance):

    MUJOCO_GL=egl .venv/bin/python bench/latent_landscape.py --bundle models/reach2d [--configs 600 --goals 40]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from lewm_ros.envs.reach_env import ReachConfig, ReachEnv
from lewm_ros.model.bundle import load_bundle
from lewm_ros.model.precision import machine_description
from lewm_ros.planning.roadmap import ROADMAP_FILE, Roadmap, weights_fingerprint

BINS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.8, 1.2, 1.6, 2.2, 3.0, 6.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--roadmap", type=Path, help=f"default BUNDLE/{ROADMAP_FILE}")
    parser.add_argument("--scene", default="reach2d")
    parser.add_argument("--configs", type=int, default=600)
    parser.add_argument("--goals", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    machine = machine_description()
    print(f"machine: {machine['cpu_model']} ISA {machine['cpu_isa']}")
    bundle = load_bundle(args.bundle)
    roadmap = Roadmap.load(args.roadmap or args.bundle / ROADMAP_FILE, bundle.config.latent_dim,
                           weights_fingerprint(args.bundle))  # fmt: skip
    env = ReachEnv(args.scene, ReachConfig(image_size=bundle.image_size))
    low, high = env.joint_limits
    rng = np.random.default_rng(args.seed)
    configs = low + (high - low) * rng.uniform(0.03, 0.97, size=(args.configs, env.action_dim))
    frames = []
    for q in configs:
        env.set_state(q)
        frames.append(env.render())
    env.close()
    with torch.no_grad():
        latents = torch.cat([bundle.model.encode(torch.from_numpy(np.stack(frames[i : i + 100])))
                             for i in range(0, len(frames), 100)])  # fmt: skip
    joint, plain, along, agree_plain, agree_along = [], [], [], [], []
    for g in range(min(args.goals, args.configs)):
        d_joint = np.abs(configs - configs[g]).max(1)
        d_plain = (latents - latents[g]).square().sum(1).numpy()
        d_along = roadmap.cost(latents, latents[g]).numpy()
        i, j = rng.integers(args.configs, size=(2, 5000))
        differ = d_joint[i] != d_joint[j]
        closer = (d_joint[i] < d_joint[j])[differ]
        agree_plain.append(np.mean(closer == (d_plain[i] < d_plain[j])[differ]))
        agree_along.append(np.mean(closer == (d_along[i] < d_along[j])[differ]))
        joint.append(d_joint)
        plain.append(d_plain)
        along.append(d_along)
    joint_all, plain_all, along_all = np.concatenate(joint), np.concatenate(plain), np.concatenate(along)
    print("\n| max joint distance (rad) | pairs | plain cost, mean | roadmap cost, mean |")
    print("|---|---|---|---|")
    for lo, hi in itertools.pairwise(BINS):
        inside = (joint_all >= lo) & (joint_all < hi) & (joint_all > 0)
        if inside.any():
            print(f"| {lo:.2f}-{hi:.2f} | {inside.sum()} | {plain_all[inside].mean():.0f} | "
                  f"{along_all[inside].mean():.0f} |")  # fmt: skip
    print(f"\npair order agreeing with joint distance: plain {np.mean(agree_plain):.1%}, "
          f"roadmap {np.mean(agree_along):.1%} (chance 50%)")  # fmt: skip


if __name__ == "__main__":
    main()
