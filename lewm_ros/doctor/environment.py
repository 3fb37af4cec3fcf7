"""Checks of the environment a deployment runs in: rclpy and the agent's message packages, ROS_DOMAIN_ID, the
discovery range, the RMW, and MuJoCo's GL backend (simulation only). rclpy itself is imported only through
lewm_ros/ros/environment.py."""

from __future__ import annotations

import os

from lewm_ros.doctor.report import FAIL, PASS, SKIP, WARN, Check, Context, one_line

DISCOVERY_RANGES = ("SYSTEM_DEFAULT", "LOCALHOST", "SUBNET", "OFF")
KNOWN_RMWS = ("rmw_fastrtps_cpp", "rmw_fastrtps_dynamic_cpp", "rmw_cyclonedds_cpp", "rmw_connextdds",
              "rmw_zenoh_cpp", "rmw_gurumdds_cpp")  # fmt: skip
# How to make the agent's ROS imports (lewm_ros/ros/environment.py lists them) importable on the robot.
ROS_FIX = (
    "source /opt/ros/humble/setup.bash (apt install ros-humble-ros-base) and the workspace's "
    "install/setup.bash; without a ROS install: pip install ros-jazzy-rclpy[fastrtps] and the ros-jazzy-*-msgs wheels"
)


def check_rclpy(context: Context) -> Check:
    from lewm_ros.ros.environment import missing_ros_modules

    missing = [f"{module} ({type(err).__name__}: {one_line(err)[:80]})" for module, err in missing_ros_modules()]
    distro = os.environ.get("ROS_DISTRO", "")
    if missing:
        return Check("rclpy", FAIL, "cannot import " + "; ".join(missing), ROS_FIX)
    where = f"ROS_DISTRO {distro}" if distro else "ROS_DISTRO unset: pip wheels or an unsourced install"
    return Check("rclpy", PASS, f"rclpy and the agent's message packages import; {where}")


def check_domain(context: Context) -> Check:
    value = os.environ.get("ROS_DOMAIN_ID")
    fix = ("export ROS_DOMAIN_ID=<0..101, one per robot> on the robot and every machine that should talk to it "
           "(~/.bashrc)")  # fmt: skip
    if value is None or value.strip() == "":
        return Check("ROS_DOMAIN_ID", WARN, "unset (domain 0): every ROS 2 machine on this network shares it", fix)
    try:
        domain = int(value)
    except ValueError:
        return Check("ROS_DOMAIN_ID", FAIL, f"{value!r} is not an integer: nodes will fail to start", fix)
    if not 0 <= domain <= 232:
        return Check("ROS_DOMAIN_ID", FAIL, f"{domain} is outside 0..232: nodes will fail to start", fix)
    if domain > 101:
        return Check("ROS_DOMAIN_ID", WARN, f"{domain}: above 101 the DDS ports can collide with Linux's ephemeral "
                     "ports", fix)  # fmt: skip
    return Check("ROS_DOMAIN_ID", PASS, str(domain))


def check_discovery(context: Context) -> Check:
    """Humble reads ROS_LOCALHOST_ONLY; Jazzy reads ROS_AUTOMATIC_DISCOVERY_RANGE (ROS_LOCALHOST_ONLY deprecated)."""
    distro = os.environ.get("ROS_DISTRO", "").lower()
    localhost = os.environ.get("ROS_LOCALHOST_ONLY", "")
    scope = os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "")
    shown = f"ROS_LOCALHOST_ONLY={localhost or '(unset)'}, ROS_AUTOMATIC_DISCOVERY_RANGE={scope or '(unset)'}"
    if scope and scope.upper() not in DISCOVERY_RANGES:
        return Check("discovery", FAIL, f"{shown}: unknown range {scope!r}",
                     f"ROS_AUTOMATIC_DISCOVERY_RANGE is one of {', '.join(DISCOVERY_RANGES)}")  # fmt: skip
    if scope.upper() == "OFF" and distro != "humble":
        return Check("discovery", FAIL, f"{shown}: discovery OFF, the agent will never see the camera or controller",
                     "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (all nodes on the robot) or SUBNET")  # fmt: skip
    if distro == "humble":
        if scope:
            return Check("discovery", WARN, f"{shown}: Humble ignores ROS_AUTOMATIC_DISCOVERY_RANGE",
                         "on Humble use ROS_LOCALHOST_ONLY=1 (robot-only graph) or leave it unset")  # fmt: skip
        meaning = "this machine only" if localhost == "1" else "the whole network"
    elif distro:
        if localhost and not scope:
            return Check("discovery", WARN, f"{shown}: ROS_LOCALHOST_ONLY is deprecated on {distro}",
                         "use ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST instead")  # fmt: skip
        meaning = "this machine only" if scope.upper() == "LOCALHOST" else "the network"
    else:
        meaning = "this machine only" if (localhost == "1" or scope.upper() == "LOCALHOST") else "the network"
    return Check("discovery", PASS, f"{shown}: nodes discovered on {meaning} (camera driver, controllers and "
                 "agent must share that scope; the laptop with rviz too)")  # fmt: skip


def check_rmw(context: Context) -> Check:
    value = os.environ.get("RMW_IMPLEMENTATION", "")
    fix = ("unset RMW_IMPLEMENTATION (Fast DDS), or install the one named (apt install ros-humble-rmw-cyclonedds-cpp) "
           "and use the same on every machine")  # fmt: skip
    if value and value not in KNOWN_RMWS:
        return Check("RMW", WARN, f"RMW_IMPLEMENTATION={value}: not a known RMW", fix)
    try:
        from lewm_ros.ros.environment import rmw_identifier

        loaded = rmw_identifier()
    except Exception as err:  # rclpy missing (reported above) or the named RMW not installed
        if value:
            return Check("RMW", FAIL, f"RMW_IMPLEMENTATION={value} cannot be loaded: {one_line(err)[:120]}", fix)
        return Check("RMW", SKIP, "rclpy not importable (see rclpy)")
    return Check("RMW", PASS, f"{loaded}" + ("" if value else " (default; RMW_IMPLEMENTATION unset)"))


def check_mujoco(context: Context) -> Check:
    import importlib.util

    if importlib.util.find_spec("mujoco") is None:
        return Check("MUJOCO_GL", SKIP, "mujoco not installed: only the simulation needs it")
    value = os.environ.get("MUJOCO_GL", "")
    fix = "export MUJOCO_GL=egl (GPU or Mesa EGL, headless) or MUJOCO_GL=osmesa (software)"
    if not value:
        return Check("MUJOCO_GL", WARN, "unset: offscreen rendering tries a display (GLFW) and fails headless", fix)
    if value not in ("egl", "osmesa", "glfw"):
        return Check("MUJOCO_GL", FAIL, f"{value!r}: MuJoCo accepts egl, osmesa or glfw", fix)
    if value == "glfw":
        return Check("MUJOCO_GL", WARN, "glfw: needs a display", fix)
    return Check("MUJOCO_GL", PASS, f"{value} (simulation only)")
