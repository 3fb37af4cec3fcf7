"""The thin ROS 2 edge: the only place that imports rclpy or message packages."""
