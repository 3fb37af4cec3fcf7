"""House rules that must hold for every commit: ROS-free core, ruff clean, installable layout."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROS_MODULES = ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "trajectory_msgs", "rosgraph_msgs")


def test_core_modules_do_not_import_ros():
    """Import every module outside lewm_ros/ros in a fresh interpreter; no ROS package may load."""
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        import lewm_ros
        names = [m.name for m in pkgutil.walk_packages(lewm_ros.__path__, "lewm_ros.")
                 if not m.name.startswith("lewm_ros.ros")]
        for name in names:
            importlib.import_module(name)
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in {ROS_MODULES!r})
        print(len(names), "core modules;", "leaked:", leaked)
        sys.exit(1 if leaked else 0)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_clean():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_help_runs():
    result = subprocess.run(
        [sys.executable, "-m", "lewm_ros.cli", "--help"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0 and "lewm-ros" in result.stdout, result.stderr


def test_test_session_uses_loopback_and_random_domain():
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert os.environ["ROS_LOCALHOST_ONLY"] == "1"
    assert 1 <= int(os.environ["ROS_DOMAIN_ID"]) <= 100


def test_ament_layout_present():
    for required in ("package.xml", "setup.py", "setup.cfg", "resource/lewm_ros"):
        assert (ROOT / required).is_file(), required
    for folder in ("lewm_ros", "launch", "config", "sim", "test"):
        assert (ROOT / folder).is_dir(), folder
    setup_cfg = (ROOT / "setup.cfg").read_text()
    assert "script_dir=$base/lib/lewm_ros" in setup_cfg
    assert "install_scripts=$base/lib/lewm_ros" in setup_cfg


# An unstable one-joint scene: MuJoCo warns (bad qacc) within five steps.
UNSTABLE_SCRIPT = textwrap.dedent(
    """
    import mujoco
    import lewm_ros.envs.reach_env  # noqa: F401
    xml = (
        '<mujoco><option timestep="0.05" integrator="Euler"/><worldbody><body><joint name="j" type="hinge"/>'
        '<geom size="0.1" mass="0.001"/></body></worldbody><actuator><velocity joint="j" kv="1e6"/></actuator>'
        '</mujoco>'
    )
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    data.ctrl[:] = 1.0
    mujoco.mj_step(model, data, 5)
    assert data.warning[mujoco.mjtWarning.mjWARN_BADQACC].number > 0, "the scene did not warn"
    """
)


def test_mujoco_warnings_leave_no_log_file_in_the_working_directory(tmp_path):
    """MuJoCo appends every warning to MUJOCO_LOG.TXT in the CWD by default: importing lewm_ros's simulation
    turns that off, so an unstable scene run from a checkout (or a dataset folder) leaves nothing behind."""
    env = {key: value for key, value in os.environ.items() if key != "LEWM_MUJOCO_LOG"}
    result = subprocess.run([sys.executable, "-c", UNSTABLE_SCRIPT], capture_output=True, text=True, cwd=tmp_path,
                            env=env)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(os.listdir(tmp_path)) == []
    assert not (ROOT / "MUJOCO_LOG.TXT").exists(), "a test or tool left MUJOCO_LOG.TXT in the checkout"


def test_mujoco_warnings_go_to_the_file_named_by_lewm_mujoco_log(tmp_path):
    log = tmp_path / "logs" / "mujoco.txt"
    log.parent.mkdir()
    env = {**os.environ, "LEWM_MUJOCO_LOG": str(log), "MUJOCO_GL": "egl"}
    result = subprocess.run([sys.executable, "-c", UNSTABLE_SCRIPT], cwd=tmp_path, env=env, capture_output=True,
                            text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "QACC" in log.read_text()
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_headless_machines_pick_an_offscreen_backend_and_an_explicit_one_wins():
    """Without DISPLAY or MUJOCO_GL, importing the simulation picks EGL (then OSMesa) by itself; a user's
    MUJOCO_GL is never overridden."""
    from lewm_ros.envs.gl_backend import headless_gl_backend

    script = "import os, lewm_ros.envs.reach_env; print(os.environ.get('MUJOCO_GL'))"
    bare = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY")}
    picked = subprocess.run([sys.executable, "-c", script], env=bare, capture_output=True, text=True, check=True)
    assert picked.stdout.strip() == str(headless_gl_backend())
    chosen = subprocess.run([sys.executable, "-c", script], env={**bare, "MUJOCO_GL": "glfw"},
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert chosen.stdout.strip() == "glfw"
