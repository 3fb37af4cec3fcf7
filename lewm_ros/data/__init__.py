"""Episode data: the HDF5 episode store shared by simulation, rosbag2 conversion and training (ROS-free)."""
