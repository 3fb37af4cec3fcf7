"""`mujoco_sim`: a ReachEnv arm behind the same ROS interfaces a real camera-equipped arm offers.

It is the offline test bench for the agent, so it behaves like the hardware the agent will meet:
joint-velocity commands in (Float64MultiArray as a ros2_control forward controller takes them, or
JointTrajectory; joint torques in N m for the joints of a scene driven by torque motors, as an
effort_controllers/JointGroupEffortController takes them, each divided by the motor's full effort),
camera frames, joint states and `/clock` out, and a command watchdog on the steady
clock that stops the arm when commands stop (the ROS clock would freeze with the sim under
`use_sim_time`, which is exactly when a watchdog must still fire).

The node is ROS wiring only: task draws and the collision check come from lewm_ros.envs (the same ones
ReachEnv uses), the JointTrajectory conversion from lewm_ros.data.trajectory.

Threading: one physics thread (lewm_ros.envs.physics_thread) owns the ReachEnv from creation to close.
Services hand their work to that thread and wait for the answer; command callbacks only swap in a new action.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from lewm_ros.data.trajectory import TrajectoryError, joint_order, point_effort, point_velocity
from lewm_ros.envs.mujoco_setup import mujoco
from lewm_ros.envs.physics_thread import PhysicsThread
from lewm_ros.envs.reach_env import ReachConfig, ReachEnv, StepResult
from lewm_ros.envs.reachable_goals import reachable_goal
from lewm_ros.envs.task_sampling import far_configuration
from lewm_ros.ros.executor import ResponsiveExecutor
from lewm_ros.ros.image_codec import rgb_to_image

NODE_NAME = "mujoco_sim"
COMMAND_TYPES = ("float64_multi_array", "joint_trajectory")
CAMERA_FRAME = "camera"
IMAGE_TOPIC = "/camera/image_raw"
CAMERA_INFO_TOPIC = "/camera/camera_info"
GOAL_IMAGE_TOPIC = "/goal/image_raw"
JOINT_STATES_TOPIC = "/joint_states"
CLOCK_TOPIC = "/clock"
STARTUP_TIMEOUT_S = 60.0  # scene loading and GL context creation
SERVICE_TIMEOUT_S = 10.0
_LOG_THROTTLE_S = 2.0

# The goal image is latched: an agent that starts after the last reset still gets it.
GOAL_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# Best effort matches reliable and best-effort publishers alike. Commands are applied in order, so the newest
# wins; the queue only keeps a burst from being overwritten before each message is checked and counted.
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
# Reliable publishers serve both rclpy's best-effort /clock subscription and reliable listeners.
STATE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)


class SimConfigError(ValueError):
    """The node cannot start with these parameters; the message says which one and why."""


class CommandError(ValueError):
    """A command message the sim refuses (wrong length, unknown joints, NaN, ...)."""


@dataclass(frozen=True)
class _Command:
    """A checked command: normalised action in the scene's joint order, and how long it may act."""

    action: np.ndarray
    received: float  # time.monotonic() at arrival: the watchdog's reference
    expires_ns: int | None = None  # simulated time a trajectory point ends at; None = until replaced


def _describe(name: str, text: str, *, read_only: bool = False, **ranges: object) -> ParameterDescriptor:
    return ParameterDescriptor(name=name, description=text, read_only=read_only, **ranges)


def _float_range(low: float, high: float) -> list[FloatingPointRange]:
    return [FloatingPointRange(from_value=low, to_value=high, step=0.0)]


def _int_range(low: int, high: int) -> list[IntegerRange]:
    return [IntegerRange(from_value=low, to_value=high, step=1)]


def sim_time_msg(nanoseconds: int) -> Time:
    """builtin_interfaces/Time for a simulated time in integer nanoseconds."""
    seconds, rest = divmod(int(nanoseconds), 1_000_000_000)
    return Time(sec=seconds, nanosec=rest)


def camera_info_for(env: ReachEnv, frame_id: str = CAMERA_FRAME) -> CameraInfo:
    """Pinhole intrinsics of the env's MuJoCo camera: square pixels, vertical field of view `fovy`.

    The principal point is the image centre in ROS/OpenCV pixel-centre coordinates, (W-1)/2, (H-1)/2,
    because MuJoCo renders a symmetric frustum. Rendering is distortion-free (plumb_bob, all zeros).
    """
    height, width = env.config.image_shape
    focal = 0.5 * height / math.tan(math.radians(float(env.model.cam_fovy[env.arm.camera_id])) / 2.0)
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    info = CameraInfo()
    info.header.frame_id = frame_id
    info.height, info.width = height, width
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    info.k = [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


class MujocoSim(Node):
    """Simulated arm and camera for the LeWM agent; see the module docstring and config/sim_reach.yaml."""

    def __init__(self, node_name: str = NODE_NAME, **node_kwargs: object) -> None:
        """Start the sim; `node_kwargs` go to rclpy Node (context, parameter_overrides, cli_args, ...).

        Raises SimConfigError (a readable one-liner) when the scene or parameters cannot work.
        """
        super().__init__(node_name, **node_kwargs)
        self._physics: PhysicsThread | None = None
        try:
            self._declare_parameters()
            self._read_static_parameters()
            self._create_publishers()
            self._start_physics()
            self._create_command_interface()
        except BaseException:
            self.destroy_node()
            raise

    # ----------------------------------------------------------------- parameters

    def _declare_parameters(self) -> None:
        read_only = {"read_only": True}
        self.declare_parameter("scene", "reach2d", _describe(
            "scene", "MJCF scene: a bundled name (reach2d, arm3d) or a path to an .xml file", **read_only))
        self.declare_parameter("camera", "", _describe(
            "camera", "MuJoCo camera to render; empty = the scene's first camera", **read_only))
        self.declare_parameter("image_size", 64, _describe(
            "image_size", "side of the square camera image in pixels", integer_range=_int_range(8, 2048),
            **read_only))
        self.declare_parameter("control_dt", 0.05, _describe(
            "control_dt", "simulated seconds each command is held per physics step; a multiple of the scene "
            "timestep", floating_point_range=_float_range(0.001, 1.0), **read_only))
        self.declare_parameter("camera_rate_hz", 20.0, _describe(
            "camera_rate_hz", "camera frames per simulated second; at most one frame per control step",
            floating_point_range=_float_range(0.1, 1000.0)))
        self.declare_parameter("speed_factor", 1.0, _describe(
            "speed_factor", "simulated seconds per wall-clock second (1 = real time); 0 = as fast as possible",
            floating_point_range=_float_range(0.0, 1000.0)))
        self.declare_parameter("publish_clock", True, _describe(
            "publish_clock", "publish /clock with the simulated time and stamp messages with it", **read_only))
        self.declare_parameter("command_topic", "/velocity_controller/commands", _describe(
            "command_topic", "joint velocity command topic (the agent's output)", **read_only))
        self.declare_parameter("command_type", "float64_multi_array", _describe(
            "command_type", f"message type on command_topic: one of {', '.join(COMMAND_TYPES)}", **read_only))
        self.declare_parameter("joint_names", Parameter.Type.STRING_ARRAY, _describe(
            "joint_names", "order of the joints in Float64MultiArray commands; unset = the scene's actuated "
            "joints in actuator order", **read_only))
        self.declare_parameter("command_timeout_ms", 200, _describe(
            "command_timeout_ms", "zero velocity after this long (steady clock) without a valid command",
            integer_range=_int_range(1, 600_000)))
        self.declare_parameter("seed", 0, _describe(
            "seed", "seed of the start/goal draws of ~/reset and the ~/teleport draws",
            integer_range=_int_range(0, 2**31 - 1), **read_only))
        self.declare_parameter("goal_steps", 0, _describe(
            "goal_steps", "0: start and goal drawn independently; N > 0: the goal is where the data's exploration "
            "policy (mixed) takes the arm in N control steps from the start (the LeWM paper's protocol uses 25)",
            integer_range=_int_range(0, 10_000), **read_only))
        self.declare_parameter("show_target", False, _describe(
            "show_target", "render the goal marker in camera images (hidden in training data)", **read_only))

    def _read_static_parameters(self) -> None:
        get = self.get_parameter
        self.scene = str(get("scene").value)
        self.camera = str(get("camera").value) or None
        self.image_size = int(get("image_size").value)
        self.control_dt = float(get("control_dt").value)
        self.publish_clock = bool(get("publish_clock").value)
        self.command_topic = str(get("command_topic").value)
        self.command_type = str(get("command_type").value)
        self.seed = int(get("seed").value)
        self.show_target = bool(get("show_target").value)
        self.goal_steps = int(get("goal_steps").value)
        requested = self.get_parameter_or("joint_names", Parameter("joint_names", value=[])).value
        self._requested_joint_names = [str(name) for name in (requested or [])]
        if self.command_type not in COMMAND_TYPES:
            raise SimConfigError(
                f"parameter command_type is {self.command_type!r}; use one of {', '.join(COMMAND_TYPES)}"
            )
        if not self.command_topic.strip():
            raise SimConfigError("parameter command_topic is empty")

    # ----------------------------------------------------------------- ROS interfaces

    def _create_publishers(self) -> None:
        self._image_pub = self.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self._info_pub = self.create_publisher(CameraInfo, CAMERA_INFO_TOPIC, qos_profile_sensor_data)
        self._goal_pub = self.create_publisher(Image, GOAL_IMAGE_TOPIC, GOAL_QOS)
        self._joint_pub = self.create_publisher(JointState, JOINT_STATES_TOPIC, STATE_QOS)
        self._success_pub = self.create_publisher(Bool, "~/success", STATE_QOS)
        self._error_pub = self.create_publisher(Float64, "~/goal_error", STATE_QOS)
        self._clock_pub = self.create_publisher(Clock, CLOCK_TOPIC, STATE_QOS) if self.publish_clock else None

    def _create_command_interface(self) -> None:
        commands = MutuallyExclusiveCallbackGroup()
        services = MutuallyExclusiveCallbackGroup()  # they block while the physics thread works
        message_type = Float64MultiArray if self.command_type == "float64_multi_array" else JointTrajectory
        self._command_sub = self.create_subscription(
            message_type, self.command_topic, self._on_command, COMMAND_QOS, callback_group=commands
        )
        self._reset_srv = self.create_service(Trigger, "~/reset", self._on_reset, callback_group=services)
        self._teleport_srv = self.create_service(Trigger, "~/teleport", self._on_teleport, callback_group=services)
        self.get_logger().info(
            f"scene {self.scene} ({', '.join(self.joint_names)}), {self.image_size}px camera {self._camera_name}, "
            f"control_dt {self.control_dt} s; commands: {self.command_type} on {self.command_topic}"
        )

    # ----------------------------------------------------------------- physics thread: startup

    def _start_physics(self) -> None:
        self.halted = False
        self._lock = threading.Lock()  # command state shared with subscription callbacks
        self._command: _Command | None = None
        self.failure: str | None = None  # why the physics thread stopped, if it did
        self.accepted_commands = 0
        self.rejected_commands = 0
        self.last_rejection = ""
        self.episode = -1  # the startup draw is episode 0; each ~/reset starts the next
        self.teleports = 0
        self.steps = 0
        self.sim_time_ns = 0
        self._physics = PhysicsThread(
            f"{self.get_name()}_physics",
            open_env=self._open_and_start,
            tick=self._step,
            speed_factor=lambda: float(self.get_parameter("speed_factor").value),
            work={"reset": self._start_episode, "teleport": self._teleport},
            on_failure=self._physics_failed,
        )
        try:
            self._physics.start(STARTUP_TIMEOUT_S)
        except SimConfigError:
            raise
        except TimeoutError as error:
            raise SimConfigError(str(error)) from error
        except Exception as error:
            raise SimConfigError(f"cannot start scene {self.scene!r}: {error}") from error

    def _open_env(self) -> ReachEnv:
        config = ReachConfig(
            camera=self.camera,
            image_size=self.image_size,
            control_dt=self.control_dt,
            show_target=self.show_target,
        )
        try:
            return ReachEnv(self.scene, config)
        except (FileNotFoundError, ValueError) as error:
            raise SimConfigError(str(error)) from error
        except mujoco.FatalError as error:
            raise SimConfigError(
                f"MuJoCo cannot render ({error}); on a machine without a display set MUJOCO_GL=egl or osmesa"
            ) from error

    def _bind_joints(self, env: ReachEnv) -> None:
        """Map command order (parameter joint_names) onto the env's actuator order."""
        scene_joints = list(env.joint_names)
        names = self._requested_joint_names or scene_joints
        if len(set(names)) != len(names) or sorted(names) != sorted(scene_joints):
            raise SimConfigError(
                f"parameter joint_names {names} does not match the actuated joints of scene {self.scene!r}: "
                f"{scene_joints} (any order, each exactly once)"
            )
        self.joint_names: tuple[str, ...] = tuple(names)
        self.scene_joint_names: tuple[str, ...] = tuple(scene_joints)
        self._command_to_env = joint_order(names, scene_joints)  # command index -> scene index
        # a command value over this is a normalised action of 1: rad/s (m/s) on servo joints, N m (N) on
        # torque joints, which is what an effort controller sends
        self._action_scale = env.action_scale.copy()
        self._effort = np.array([kind == "effort" for kind in env.command_interfaces])
        self._joint_lower = env.joint_lower.copy()
        self._joint_upper = env.joint_upper.copy()
        self._env_control_dt = env.control_dt
        self._camera_name = env.camera_name
        self._camera_info = camera_info_for(env)

    def _open_and_start(self) -> ReachEnv:
        """Physics thread: open the scene, bind the command joints, draw episode 0 (the env closes on failure)."""
        env = self._open_env()
        try:
            self._bind_joints(env)
            self._teleport_rng = np.random.default_rng([self.seed, 1])
            self._goal_rng = np.random.default_rng([self.seed, 2])
            self._qpos = env.qpos
            self._goal = env.goal_qpos
            self._start_episode(env, seed=self.seed)
        except BaseException:
            env.close()
            raise
        return env

    def _physics_failed(self, error: Exception) -> None:
        if self.context.ok():
            self.failure = f"{type(error).__name__}: {error}"
            self.get_logger().fatal(f"physics stopped: {self.failure}")

    # ----------------------------------------------------------------- physics thread: running

    def _step(self, env: ReachEnv) -> None:
        """One control period with the command in force, then its messages."""
        result = env.step(self._current_action())
        self.steps += 1
        self.sim_time_ns += round(self._env_control_dt * 1e9)
        self._publish_step(result)

    def _current_action(self) -> np.ndarray:
        """The last valid command; zeros once it is older than command_timeout_ms (steady clock) or, for a
        trajectory point, once its time_from_start has passed in simulated time."""
        timeout_s = int(self.get_parameter("command_timeout_ms").value) / 1000.0
        with self._lock:
            command = self._command
        if (
            command is None
            or time.monotonic() - command.received > timeout_s
            or (command.expires_ns is not None and self.sim_time_ns >= command.expires_ns)
        ):
            return np.zeros(len(self.scene_joint_names))
        return command.action

    def _start_episode(self, env: ReachEnv, seed: int | None = None) -> str:
        """New start and goal; the env's generator, seeded once at startup, makes the sequence reproducible."""
        result = env.reset(seed)
        if self.goal_steps > 0:
            result = reachable_goal(env, result, self.goal_steps, self._goal_rng)
        self.episode += 1
        with self._lock:
            self._command = None  # an old command must not push the arm away from the new start
        self._goal = env.goal_qpos
        stamp = self._stamp()
        self._goal_pub.publish(rgb_to_image(env.goal_image(), "rgb8", CAMERA_FRAME, stamp))
        self._next_camera_ns = self.sim_time_ns  # show the new start at once
        self._publish_step(result)
        message = (
            f"episode {self.episode}: start {np.round(result.observation.qpos, 3).tolist()} "
            f"goal {np.round(self._goal, 3).tolist()}"
        )
        return message

    def _teleport(self, env: ReachEnv) -> str:
        """Jump to a random configuration far from the current one (velocities zero, goal kept)."""
        before = env.qpos
        target = far_configuration(
            self._teleport_rng, self._joint_lower, self._joint_upper, before,
            lambda configuration: env.collisions.penetrations(configuration, base_qpos=env.data.qpos),
        )
        result = env.set_state(target)
        self.teleports += 1
        self._next_camera_ns = self.sim_time_ns
        self._publish_step(result)
        return f"teleported from {np.round(before, 3).tolist()} to {np.round(target, 3).tolist()}"

    # ----------------------------------------------------------------- publishing (physics thread)

    def _stamp(self) -> Time:
        return sim_time_msg(self.sim_time_ns) if self.publish_clock else self.get_clock().now().to_msg()

    def _publish_step(self, result: StepResult) -> None:
        obs = result.observation
        self._qpos = obs.qpos
        stamp = self._stamp()
        joints = JointState()
        joints.header.stamp = stamp
        joints.name = list(self.scene_joint_names)
        joints.position = obs.qpos.tolist()
        joints.velocity = obs.qvel.tolist()
        self._joint_pub.publish(joints)
        self._success_pub.publish(Bool(data=bool(result.success)))
        self._error_pub.publish(Float64(data=float(result.max_joint_error)))
        if self.sim_time_ns >= self._next_camera_ns:
            period_ns = max(1, round(1e9 / float(self.get_parameter("camera_rate_hz").value)))
            while self._next_camera_ns <= self.sim_time_ns:
                self._next_camera_ns += period_ns
            self._image_pub.publish(rgb_to_image(obs.pixels, "rgb8", CAMERA_FRAME, stamp))
            self._camera_info.header.stamp = stamp
            self._info_pub.publish(self._camera_info)
        if self._clock_pub is not None:
            # The clock last: a node ticking on /clock (use_sim_time) then finds this step's frame already sent.
            self._clock_pub.publish(Clock(clock=sim_time_msg(self.sim_time_ns)))

    # ----------------------------------------------------------------- commands (executor threads)

    def _on_command(self, msg: Float64MultiArray | JointTrajectory) -> None:
        expires_ns = None
        try:
            if isinstance(msg, JointTrajectory):
                velocity, duration_s = self._velocity_from_trajectory(msg)
                if duration_s is not None:
                    expires_ns = self.sim_time_ns + round(duration_s * 1e9)
            else:
                velocity = self._velocity_from_array(msg)
            if not np.all(np.isfinite(velocity)):
                what = "efforts" if self._effort.all() else "commands" if self._effort.any() else "velocities"
                raise CommandError(f"{what} contain NaN or inf: {velocity.tolist()}")
        except (CommandError, TrajectoryError) as error:
            with self._lock:
                self.rejected_commands += 1
                self.last_rejection = str(error)
            self.get_logger().warning(
                f"command refused ({self.rejected_commands} so far), holding the previous one: {error}",
                throttle_duration_sec=_LOG_THROTTLE_S,
            )
            return
        action = np.clip(velocity / self._action_scale, -1.0, 1.0)
        with self._lock:
            if self.halted:
                return  # stopping: the actuators stay at zero
            self._command = _Command(action, time.monotonic(), expires_ns)
            self.accepted_commands += 1

    def halt(self, why: str) -> None:
        """Zero the actuators for good (the process is stopping): the command in force is dropped, later ones
        are ignored, and the physics steps that remain run with zero velocity."""
        with self._lock:
            self.halted = True
            self._command = None
        self.get_logger().info(f"{why}: actuators zeroed")

    def _velocity_from_array(self, msg: Float64MultiArray) -> np.ndarray:
        """Per-joint commands in scene order: joint velocities, or torques on the scene's torque joints."""
        data = np.asarray(msg.data, dtype=np.float64)
        if data.shape != (len(self.joint_names),):
            raise CommandError(
                f"Float64MultiArray has {data.size} values; expected one per joint of {list(self.joint_names)}"
            )
        velocity = np.empty_like(data)
        velocity[self._command_to_env] = data
        return velocity

    def _velocity_from_trajectory(self, msg: JointTrajectory) -> tuple[np.ndarray, float | None]:
        """Per-joint commands (scene order) of the first point, and for how many simulated seconds they act."""
        order = self._command_to_env[joint_order(msg.joint_names, self.joint_names)]
        if not msg.points:
            raise CommandError("JointTrajectory has no points")
        point = msg.points[0]
        horizon = point.time_from_start.sec + point.time_from_start.nanosec * 1e-9
        if self._effort.any():
            return point_effort(
                order, efforts=point.effort, velocities=point.velocities, time_from_start_s=horizon,
                effort_joints=self._effort, joints=self.scene_joint_names,
            )  # fmt: skip
        return point_velocity(
            order, positions=point.positions, velocities=point.velocities, time_from_start_s=horizon,
            current=self._qpos, min_duration_s=self._env_control_dt,
        )  # fmt: skip

    # ----------------------------------------------------------------- services (executor threads)

    def _on_reset(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self._ask_physics("reset")
        return response

    def _on_teleport(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self._ask_physics("teleport")
        return response

    def _ask_physics(self, kind: str) -> tuple[bool, str]:
        if self._physics is None or not self._physics.alive:
            return False, f"physics is not running ({self.failure or 'node shutting down'})"
        success, message = self._physics.ask(kind, SERVICE_TIMEOUT_S)
        if not success:
            self.get_logger().error(message)
        return success, message

    # ----------------------------------------------------------------- state for in-process users

    @property
    def qpos(self) -> np.ndarray:
        """Joint positions (scene order) as of the last physics step."""
        return np.array(self._qpos)

    @property
    def goal_qpos(self) -> np.ndarray:
        """Goal joint positions (scene order) of the current episode."""
        return np.array(self._goal)

    @property
    def sim_time(self) -> float:
        """Simulated seconds since the node started (monotonic across resets, unlike the env's time)."""
        return self.sim_time_ns * 1e-9

    def destroy_node(self) -> None:
        """Stop and join the physics thread (it closes the env) before the node's handles go away."""
        physics, self._physics = self._physics, None
        if physics is not None and not physics.stop(10.0):
            self.get_logger().error("physics thread did not stop within 10 s")
        super().destroy_node()


def main(args: Sequence[str] | None = None) -> None:
    """Console entry point: spin the sim until SIGINT, SIGTERM or shutdown; then the actuators are zeroed and the
    process exits 0 within about a second (1: bad parameters)."""
    from rclpy.signals import SignalHandlerOptions

    from lewm_ros.ros.stop_signals import StopRequested, StopSignals

    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)  # ours: see stop_signals
    node: MujocoSim | None = None
    status = 0
    with StopSignals() as signals:
        try:
            node = MujocoSim()
            executor = ResponsiveExecutor()
            executor.add_node(node)
            signals.spin(executor, rclpy.ok)
        except (StopRequested, KeyboardInterrupt, ExternalShutdownException):
            pass
        except (SimConfigError, ParameterException) as error:
            hint = " (floating-point parameters need a decimal point: 2.0, not 2)" if "'DOUBLE'" in str(error) else ""
            print(f"{NODE_NAME}: error: {error}{hint}", file=sys.stderr)
            status = 1
        finally:
            signals.starting = False
            if node is not None:
                node.halt(signals.name or "exit")
                node.destroy_node()
            rclpy.try_shutdown()
    if status:
        sys.exit(status)

if __name__ == "__main__":
    main()
