"""Latent MPC over LeWM rollouts: one sampling/rollout/cost core (core.py), update rules (strategies.py),
bundle loading helpers (loader.py). ROS-free, torch only."""
