"""MuJoCo reach simulation and offline dataset collection (ROS-free).

`ReachEnv` drives any MJCF arm with normalised joint-velocity commands and renders the frames LeWM
learns from; `collect` turns exploration policies into HDF5 episode files (`lewm_ros.data.episodes`).
"""
