"""`lewm-ros --version` and `--help` answer without paying for torch, and each subcommand imports only what it
needs: checked by what a fresh interpreter imported, and by running the commands with packages made unimportable
(a timing test would fail on a busy machine and pass on a broken one)."""

import json
import subprocess
import sys
from pathlib import Path

from lewm_ros import __version__
from lewm_ros.cli import COMMAND_MODULES, COMMANDS, asks_version, build_parser

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "scipy", "matplotlib", "mujoco", "rosbags", "h5py", "rclpy")
ROS_PACKAGES = ("rosbags", "rclpy")  # a training box or a Jetson may lack them: only bags and nodes need them

# Runs `lewm-ros` once per argv of the JSON list argv[2] with the top-level packages named in argv[1] unimportable
# (a meta-path finder that raises ModuleNotFoundError, as on a machine without them); prints one RESULTS line.
BLOCKED_RUNNER = """
import json, sys
blocked = set(filter(None, sys.argv[1].split(",")))
class Unimportable:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (made unimportable by the test)", name=name)
        return None
sys.meta_path.insert(0, Unimportable())
for name in [m for m in sys.modules if m.split(".")[0] in blocked]:
    del sys.modules[name]
from lewm_ros.cli import main
results = []
for argv in json.loads(sys.argv[2]):
    try:
        results.append(main(argv))
    except BaseException as error:
        results.append(f"{type(error).__name__}: {error}")
print("RESULTS " + json.dumps(results))
"""


def run_without(blocked: tuple[str, ...], *argvs: list[str], timeout: float = 600) -> tuple[list, str, str]:
    """(exit code or escaped exception per argv, stdout, stderr) of one fresh interpreter running them in turn."""
    command = [sys.executable, "-c", BLOCKED_RUNNER, ",".join(blocked), json.dumps([[str(a) for a in argv]
                                                                                    for argv in argvs])]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    out, _, results = done.stdout.rpartition("RESULTS ")
    assert done.returncode == 0 and results, done.stderr[-3000:]
    return json.loads(results), out, done.stderr


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


def test_help_lists_every_subcommand_without_importing_any():
    """The listing comes from cli.COMMANDS: no subcommand module, so no torch, MuJoCo, rosbags, h5py or rclpy."""
    modules, out = imported_after("from lewm_ros.cli import main\nmain(['--help'])")
    assert not modules & set(COMMAND_MODULES), sorted(modules & set(COMMAND_MODULES))
    for command in COMMANDS:
        assert f"    {command} " in out or f"    {command}\n" in out, command
    heavy = sorted(name for name in modules if name.split(".")[0] in HEAVY)
    assert not heavy, heavy[:5]


def test_help_works_with_torch_and_the_other_heavy_packages_unimportable():
    results, out, err = run_without(HEAVY, ["--help"], [])
    assert results == [0, 0], err[-2000:]
    assert "bag2dataset" in out and "Traceback" not in err


def test_the_table_names_each_commands_module_and_help():
    """Each command is registered by the module COMMANDS names (not left a listed-only stub), under the help line
    `lewm-ros --help` shows from the table; the bench group gets every benchmark of its modules."""
    for name, command in COMMANDS.items():
        subparsers = build_parser([name])._subparsers._group_actions[0]
        assert subparsers.choices[name].add_help, f"{name}: not registered by {command.modules}"
        shown = {action.dest: action.help for action in subparsers._choices_actions}
        assert shown[name] == command.help, name
    full = build_parser()._subparsers._group_actions[0].choices
    assert set(full) == set(COMMANDS)
    assert "planner" in full["bench"]._subparsers._group_actions[0].choices


def test_every_command_help_works_without_rosbags_or_rclpy():
    """Even the commands that need them to run (record, sim-reach, bag-check, bag2dataset) explain themselves."""
    argvs = [[name, "--help"] for name in COMMANDS] + [["bench", "planner", "--help"]]
    results, out, err = run_without(ROS_PACKAGES, *argvs, ["bag-check", "--dry-run", ROOT / "test"])
    assert results[:-1] == [0] * len(argvs), [(a[0], r) for a, r in zip(argvs, results, strict=False) if r != 0]
    assert out.count("usage: lewm-ros ") == len(argvs) and "Traceback" not in err
    assert results[-1].startswith("ModuleNotFoundError: No module named 'rosbags'")  # the runner does block them


def test_train_eval_bench_and_doctor_run_without_rosbags_or_rclpy(episodes, tiny_bundle, tmp_path):
    """A training box or a Jetson without rosbags/rclpy runs what it needs (issue 20: these died on importing
    rosbags). Tiny settings: each run is seconds; doctor FAILs its rclpy line, as it should, and measures the rest."""
    train = ["train", "--data", episodes, "--out", tmp_path / "run", "--epochs", 1, "--stop-after", 3,
             "--preset", "tiny", "--no-progress", "--threads", 1, "--device", "cpu", "--batch-size", 8,
             "--sigreg-directions", 64, "--precision", "fp32"]  # fmt: skip
    evaluate = ["eval", "--bundle", tiny_bundle, "--episodes", 1, "--budget", 5, "--samples", 8, "--iterations", 1,
                "--elites", 2, "--no-progress", "--precision", "fp32", "--out", tmp_path / "eval",
                "--video-episodes", 0]  # fmt: skip
    bench = ["bench", "planner", "--preset", "tiny", "--samples", 16, "--iterations", 2, "--elites", 4,
             "--repeats", 1, "--threads", 1, "--no-reference", "--json"]  # fmt: skip
    doctor = ["doctor", "--device", "cpu", "--plans", 2]
    results, out, err = run_without(ROS_PACKAGES, train, evaluate, bench, doctor)
    assert results[:3] == [0, 0, 0], (results, err[-3000:])
    assert (tmp_path / "run").is_dir() and (tmp_path / "eval" / "eval.json").is_file()
    assert results[3] == 1 and "Traceback" not in out + err, err[-3000:]  # exit 1: the rclpy line FAILs
    failed = [line.split()[1] for line in out.splitlines() if line.startswith("FAIL")]
    assert "rclpy" in failed and "cannot import rclpy" in out, failed
    assert "encode latency" in out and "plan latency" in out  # the measurements ran all the same


def test_version_is_recognised_only_before_the_subcommand():
    assert asks_version(["--version"]) and asks_version(["--some-flag", "--version"])
    assert not asks_version(["eval", "--version"]) and not asks_version(["--help", "--version"])
    assert not asks_version([]) and not asks_version(["--", "--version"])


def test_the_roadmap_file_name_copies_agree():
    """eval's presets and roadmap_build name the file without importing torch's roadmap module: one name for all."""
    from lewm_ros.evaluation import presets
    from lewm_ros.planning import roadmap, roadmap_build

    assert presets.ROADMAP_FILE == roadmap_build.ROADMAP_FILE == roadmap.ROADMAP_FILE
