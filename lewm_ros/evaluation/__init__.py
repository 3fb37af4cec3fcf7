"""`lewm-ros eval`: closed-loop latent MPC in the MuJoCo reach environment, without ROS.

It runs the controller the robot runs: the same assembly (control/assemble.py: the TorchScript encoder as
deployed, the planner with its measured precision, the roadmap, warm-up) and the same tick (control/loop.py:
observe at each block start, plan on the receding horizon, accept or reject the plan, shape and clamp the
command, record what was sent), one tick per env step in simulated time, until the budget of env steps is
spent. Success = every joint within the tolerance of the goal at any step (the paper's Reacher criterion).
The scene runs as the bundle was trained: its image size and control period (model.json).

Where things are: the flags and the signal-safe run in cli; presets and flag resolution in presets; the
start/goal pairs in tasks; one episode in closed_loop; the run over the episodes in driver; eval.json, the
plot and the gif in report.
"""
