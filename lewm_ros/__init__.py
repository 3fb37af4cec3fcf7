"""lewm_ros: LeWorldModel latent planning on ROS 2.

Everything outside `lewm_ros.ros` is ROS-free and importable without rclpy.
"""

__version__ = "0.1.0"
