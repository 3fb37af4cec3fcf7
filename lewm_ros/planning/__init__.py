"""Latent MPC over LeWM rollouts: one sampling/rollout/cost core (core.py), update rules (strategies.py),
settings and result types (config.py). ROS-free, torch only."""
