"""`lewm-ros --version` and `--help` answer without paying for torch: checked by what a fresh interpreter
imported (a timing test would fail on a busy machine and pass on a broken one)."""

import subprocess
import sys
from pathlib import Path

from lewm_ros import __version__
from lewm_ros.cli import COMMAND_MODULES, asks_version

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "scipy", "matplotlib")  # rclpy: ~0.2 s, and the ROS nodes may need it


def imported_after(code: str) -> tuple[set[str], str]:
    """Modules a fresh interpreter holds after running `code` (which prints to stdout first)."""
    probe = f"{code}\nimport sys\nprint('MODULES', ' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    out, _, modules = done.stdout.rpartition("MODULES ")
    return set(modules.split()), out


def test_version_imports_no_subcommand_module():
    modules, out = imported_after("from lewm_ros.cli import main\nmain(['--version'])")
    assert out.strip() == f"lewm-ros {__version__}"
    assert not modules & set(COMMAND_MODULES), sorted(modules & set(COMMAND_MODULES))
    assert not any(name.split(".")[0] in HEAVY or name == "numpy" for name in modules)


def test_help_registers_every_subcommand_without_torch_or_rclpy():
    modules, out = imported_after("from lewm_ros.cli import main\nmain(['--help'])")
    assert set(COMMAND_MODULES) <= modules  # each subcommand still registers itself from its own module
    for command in ("eval", "collect", "train", "roadmap", "bench", "sim-reach", "record"):
        assert command in out, command
    heavy = sorted(name for name in modules if name.split(".")[0] in HEAVY)
    assert not heavy, heavy[:5]


def test_version_is_recognised_only_before_the_subcommand():
    assert asks_version(["--version"]) and asks_version(["--some-flag", "--version"])
    assert not asks_version(["eval", "--version"]) and not asks_version(["--help", "--version"])
    assert not asks_version([]) and not asks_version(["--", "--version"])


def test_the_roadmap_file_name_copies_agree():
    """evaluate and roadmap_build name the file without importing torch's roadmap module: one name for all."""
    from lewm_ros import evaluate
    from lewm_ros.planning import roadmap, roadmap_build

    assert evaluate.ROADMAP_FILE == roadmap_build.ROADMAP_FILE == roadmap.ROADMAP_FILE
