"""The LeWM agent alone, for a real arm: the camera driver and ros2_control run separately (their own launch
files), this file starts `lewm_agent` with config/jetson_arm.yaml and brings it to `active`.

    ros2 launch lewm_ros arm.launch.py [bundle:=/path/to/bundle] [device:=cuda] [params_file:=my_arm.yaml]
                                       [record:=true] [bag:=DIR] [record_topics:="[/image_raw, ...]"]

`bundle` and `device` left empty keep the values of the parameter file; given, they override it (so a copy of
jetson_arm.yaml passed as params_file is never silently overruled by a launch default). The agent is a lifecycle
node: configure at start-up (load the bundle, warm the planner up: seconds on a Jetson, minutes with compile),
then activate once it reaches `inactive`; a failed configure leaves it unconfigured and says why in its log.
`record:=true` also starts our bag recorder (rosbag2, MCAP, version 8 metadata that Humble reads) on
`record_topics` into `bag:=DIR` (default rosbag2_<date-time> in the working directory); frame episodes for
retraining with `ros2 service call /bag_recorder/mark_episode std_srvs/srv/SetBool "{data: true}"` (false to
stop). See docs/jetson.md and docs/recording.md.
Works with Humble and Jazzy launch_ros (no `autostart` attribute, which Humble lacks).
"""

from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.launch_context import LaunchContext
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

from launch import LaunchDescription

# A YAML list (launch_ros parses a substituted parameter as YAML): what retraining needs (camera, commands, joint
# states, goal) and what explains a run afterwards (surprise, plan cost, plan source, diagnostics).
RECORD_TOPICS = (
    "[/image_raw, /joint_trajectory_controller/joint_trajectory, /joint_states, /goal/image_raw, "
    "/lewm_agent/surprise, /lewm_agent/plan_cost, /lewm_agent/plan_source, /diagnostics]"
)
ARGUMENTS = {
    "bundle": ("", "model bundle directory or shipped name; empty: the parameter file's"),
    "device": ("", "agent device: auto, cpu or cuda; empty: the parameter file's"),
    "params_file": ("", "agent parameter YAML (lewm_agent: ros__parameters:); empty: share/lewm_ros/config/"
                    "jetson_arm.yaml"),
    "record": ("false", "true: also run the bag recorder (rosbag2, MCAP) on record_topics"),
    "bag": ("", "record:=true: bag directory to create (default rosbag2_<date-time> in the working directory)"),
    "record_topics": (RECORD_TOPICS, "YAML list of topics for record:=true; record <camera>/compressed instead "
                      "of the raw image to keep bags small"),
}  # fmt: skip
OVERRIDABLE = ("bundle", "device")  # launch arguments that, when not empty, override the parameter file


def _agent(context: LaunchContext) -> list:
    """The agent and its configure/activate events, built once the arguments are known."""
    params_file = LaunchConfiguration("params_file").perform(context) or PathJoinSubstitution(
        [FindPackageShare("lewm_ros"), "config", "jetson_arm.yaml"]
    )
    overrides = {name: LaunchConfiguration(name).perform(context) for name in OVERRIDABLE}
    overrides = {name: value for name, value in overrides.items() if value}
    agent = LifecycleNode(
        package="lewm_ros", executable="lewm_agent", name="lewm_agent", namespace="", output="screen",
        parameters=[params_file, overrides],
    )  # fmt: skip
    configure = EmitEvent(event=ChangeState(
        lifecycle_node_matcher=matches_action(agent), transition_id=Transition.TRANSITION_CONFIGURE))  # fmt: skip
    activate = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=agent, goal_state="inactive",
        entities=[EmitEvent(event=ChangeState(
            lifecycle_node_matcher=matches_action(agent), transition_id=Transition.TRANSITION_ACTIVATE))],
    ))  # fmt: skip
    return [agent, activate, configure]


def generate_launch_description() -> LaunchDescription:
    arguments = [DeclareLaunchArgument(name, default_value=default, description=text)
                 for name, (default, text) in ARGUMENTS.items()]  # fmt: skip
    recorder = Node(
        package="lewm_ros", executable="bag_recorder", name="bag_recorder", output="screen",
        parameters=[{"output": ParameterValue(LaunchConfiguration("bag"), value_type=str),
                     "topics": LaunchConfiguration("record_topics"),
                     "sensor_data_topics": ["/image_raw", "/image_raw/compressed"], "use_sim_time": False}],
        condition=IfCondition(LaunchConfiguration("record")),
    )  # fmt: skip
    return LaunchDescription([*arguments, recorder, OpaqueFunction(function=_agent)])
