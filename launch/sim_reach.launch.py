"""The reaching demo: MuJoCo simulator + LeWM agent, parameters from config/sim_reach.yaml.

    ros2 launch lewm_ros sim_reach.launch.py [scene:=reach2d] [bundle:=reach2d] [device:=auto]
                                             [headless:=true] [record:=false]

The agent is a lifecycle node: this file configures it at start-up and activates it once it reaches
`inactive` (a failed configure leaves it unconfigured and says why in its log). `headless:=false` also opens
rqt_image_view on /lewm_agent/debug_image (camera beside goal, cost and surprise); the simulator itself always
renders offscreen. `record:=true` is accepted now; the bag recorder node that honours it arrives with the
rosbag issue (#11), until then it only logs that nothing is recorded.
Works with Humble and Jazzy launch_ros (no `autostart` attribute, which Humble lacks).
Without ROS installed, `lewm-ros sim-reach` runs the same graph from the same YAML in one process.
"""

from launch.actions import DeclareLaunchArgument, EmitEvent, LogInfo, RegisterEventHandler
from launch.conditions import IfCondition, UnlessCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription

ARGUMENTS = {
    "scene": ("reach2d", "MJCF scene: a bundled name (reach2d, arm3d) or a path"),
    "bundle": ("reach2d", "model bundle: a shipped name or a directory"),
    "device": ("auto", "agent device: auto, cpu or cuda"),
    "headless": ("true", "false: also open rqt_image_view on /lewm_agent/debug_image"),
    "record": ("false", "true: record a rosbag (bag recorder arrives with issue #11; accepted now)"),
}


def generate_launch_description() -> LaunchDescription:
    config = PathJoinSubstitution([FindPackageShare("lewm_ros"), "config", "sim_reach.yaml"])
    arguments = [DeclareLaunchArgument(name, default_value=default, description=text)
                 for name, (default, text) in ARGUMENTS.items()]  # fmt: skip
    sim = Node(
        package="lewm_ros", executable="mujoco_sim", name="mujoco_sim", output="screen",
        parameters=[config, {"scene": LaunchConfiguration("scene")}],
    )  # fmt: skip
    agent = LifecycleNode(
        package="lewm_ros", executable="lewm_agent", name="lewm_agent", namespace="", output="screen",
        parameters=[config, {"bundle": LaunchConfiguration("bundle"), "device": LaunchConfiguration("device")}],
    )  # fmt: skip
    configure = EmitEvent(event=ChangeState(
        lifecycle_node_matcher=matches_action(agent), transition_id=Transition.TRANSITION_CONFIGURE))  # fmt: skip
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=agent, goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(
            lifecycle_node_matcher=matches_action(agent), transition_id=Transition.TRANSITION_ACTIVATE))],
    ))  # fmt: skip
    viewer = Node(
        package="rqt_image_view", executable="rqt_image_view", name="debug_view", arguments=["/lewm_agent/debug_image"],
        condition=UnlessCondition(LaunchConfiguration("headless")),
    )  # fmt: skip
    record_note = LogInfo(
        msg="record:=true: the bag recorder arrives with issue #11; nothing is recorded yet",
        condition=IfCondition(LaunchConfiguration("record")),
    )  # fmt: skip
    return LaunchDescription([*arguments, sim, agent, activate, configure, viewer, record_note])
