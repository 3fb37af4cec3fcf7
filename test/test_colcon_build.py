"""`colcon build` of a clean copy of the repository installs the ament_python layout a ROS machine expects."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked_files() -> list[str]:
    result = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.split()


def test_colcon_build_installs_scripts_share_files_and_ament_index(tmp_path):
    colcon = Path(sys.executable).with_name("colcon")
    assert colcon.exists(), "colcon-common-extensions is a test requirement (requirements.txt)"
    source = tmp_path / "ws" / "src" / "lewm_ros"
    for name in tracked_files():
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    result = subprocess.run(
        [str(colcon), "build", "--packages-select", "lewm_ros"],
        cwd=tmp_path / "ws", capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    prefix = tmp_path / "ws" / "install" / "lewm_ros"
    for expected in (
        "lib/lewm_ros/lewm-ros",
        "share/lewm_ros/package.xml",
        "share/lewm_ros/sim/reach2d.xml",
        "share/lewm_ros/sim/arm3d.xml",
        "share/ament_index/resource_index/packages/lewm_ros",
    ):
        assert (prefix / expected).is_file(), f"colcon did not install {expected}"
    site = next(prefix.glob("lib/python3*/site-packages"))
    assert (site / "lewm_ros" / "model" / "lewm.py").is_file()
    env = {**os.environ, "PYTHONPATH": str(site)}
    cli = subprocess.run([sys.executable, str(prefix / "lib/lewm_ros/lewm-ros"), "--help"], env=env,
                         capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 0 and "collect" in cli.stdout, cli.stderr
