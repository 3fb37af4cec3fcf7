"""The reaching demo: MuJoCo simulator + LeWM agent, parameters from config/sim_reach.yaml.

    ros2 launch lewm_ros sim_reach.launch.py [scene:=reach2d] [bundle:=reach2d] [device:=auto]
                                             [headless:=true] [record:=false] [bag:=DIR]

The agent is a lifecycle node: this file configures it at start-up and activates it once it reaches
`inactive` (a failed configure leaves it unconfigured and says why in its log). `headless:=false` also opens
rqt_image_view on /lewm_agent/debug_image (camera beside goal, cost and surprise); the simulator itself always
renders offscreen. `record:=true` also starts the bag recorder (camera, commands, joint states, goal image,
surprise, plan source, stamped with simulated time) into `bag:=DIR` (default rosbag2_<date-time> in the working
directory); frame episodes with `ros2 service call /bag_recorder/mark_episode std_srvs/srv/SetBool "{data: true}"`
(false to stop). MCAP on Humble needs ros-humble-rosbag2-storage-mcap to play the bag back.
Works with Humble and Jazzy launch_ros (no `autostart` attribute, which Humble lacks).
Without ROS installed, `lewm-ros sim-reach` runs the same graph from the same YAML in one process.
"""

from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition, UnlessCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription

ARGUMENTS = {
    "scene": ("reach2d", "MJCF scene: a bundled name (reach2d, arm3d) or a path"),
    "bundle": ("reach2d", "model bundle: a shipped name or a directory"),
    "device": ("auto", "agent device: auto, cpu or cuda"),
    "headless": ("true", "false: also open rqt_image_view on /lewm_agent/debug_image"),
    "record": ("false", "true: also run the bag recorder (rosbag2, MCAP) on the demo's topics"),
    "bag": ("", "record:=true: bag directory to create (default rosbag2_<date-time> in the working directory)"),
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
    recorder = Node(
        package="lewm_ros", executable="bag_recorder", name="bag_recorder", output="screen",
        parameters=[{"output": ParameterValue(LaunchConfiguration("bag"), value_type=str), "use_sim_time": True}],
        condition=IfCondition(LaunchConfiguration("record")),
    )  # fmt: skip
    return LaunchDescription([*arguments, recorder, sim, agent, activate, configure, viewer])
