"""ROS-free closed-loop control: latent MPC state, surprise monitoring, command shaping.

The agent node (lewm_ros/ros/agent_node.py) is a thin ROS edge over these pieces, so everything that decides
what the arm is commanded can be tested without DDS.
"""
