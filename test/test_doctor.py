"""`lewm-ros doctor` on this machine (CPU): a table with a fix under every WARN/FAIL, exit 1 exactly when a line
FAILs, no traceback whatever is broken; and the rules of the individual checks on staged environments."""

from __future__ import annotations

import argparse
import collections
import shutil
from pathlib import Path

import pytest
import torch

from lewm_ros import doctor
from lewm_ros.cli import main
from lewm_ros.doctor import FAIL, PASS, SKIP, WARN, Check, Context
from lewm_ros.doctor.machine import GIB
from lewm_ros.doctor.measurements import judge_plan
from lewm_ros.ros import environment

ROOT = Path(__file__).resolve().parents[1]
STATUSES = (PASS, WARN, FAIL, SKIP)


def rows(text: str) -> dict[str, tuple[str, str, str]]:
    """check name -> (status, detail, fix) from the printed table."""
    found: dict[str, tuple[str, str, str]] = {}
    lines = text.splitlines()
    for i, line in enumerate(lines):
        status = line[:6].strip()
        if status not in STATUSES:
            continue
        name, _, detail = line[8:].partition("  ")
        fix = lines[i + 1].strip() if i + 1 < len(lines) and lines[i + 1].strip().startswith("fix:") else ""
        found[name.strip()] = (status, detail.strip(), fix)
    return found


def run_doctor(capsys, *argv: str) -> tuple[int, str, str, dict]:
    code = main(["doctor", *argv])
    out, err = capsys.readouterr()
    return code, out, err, rows(out)


def test_cpu_run_measures_the_shipped_bundle_and_exits_by_its_fails(capsys):
    code, out, err, table = run_doctor(capsys, "--device", "cpu", "--plans", "2")
    assert "Traceback" not in out + err
    expected = {name for name, _ in doctor.CHECKS} | {"joints", "encode latency"}
    assert expected <= set(table), sorted(expected - set(table))
    assert table["bundle"][0] == PASS and "reach2d" in table["bundle"][1]
    assert table["encoder"][0] == PASS and "on cpu at fp32" in table["encoder"][1]
    assert "p50" in table["encode latency"][1] and "p50" in table["plan latency"][1]
    assert table["cuda"][0] in (SKIP, WARN) and table["rclpy"][0] == PASS
    for name, (status, _, fix) in table.items():
        assert (status in (WARN, FAIL)) == bool(fix), f"{name}: a fix belongs under every WARN/FAIL line only"
    assert code == (1 if any(s == FAIL for s, _, _ in table.values()) else 0)
    assert out.strip().splitlines()[-1].endswith("ready")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the honest failure on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_fail_line_with_a_fix_not_a_traceback(capsys):
    code, out, err, table = run_doctor(capsys, "--device", "cuda", "--plans", "2")
    assert code == 1 and "Traceback" not in out + err and err == ""
    status, detail, fix = table["cuda"]
    assert status == FAIL and "no CUDA device" in detail
    assert "NVIDIA's PyTorch wheel" in fix and "--device cpu" in fix
    for name in ("precision", "encoder", "encode latency", "plan latency"):
        assert table[name][0] == SKIP, name
    assert table["bundle"][0] == PASS  # still loaded (on the CPU), so a broken bundle is not hidden
    assert "NOT ready" in out


def test_missing_bundle_is_a_fail_with_the_fix(capsys, tmp_path):
    code, _, _, table = run_doctor(capsys, "--device", "cpu", "--bundle", str(tmp_path / "nothing"))
    status, detail, fix = table["bundle"]
    assert code == 1 and status == FAIL and "bundle not found" in detail and "lewm-ros export" in fix
    assert table["encoder"][0] == SKIP and table["plan latency"][0] == SKIP


def test_params_file_settings_are_checked_against_the_bundle(capsys):
    """jetson_arm.yaml on this CPU: its four joints do not fit the two-joint demo bundle, fp16 falls back."""
    code, out, err, table = run_doctor(capsys, "--params", str(ROOT / "config" / "jetson_arm.yaml"),
                                       "--bundle", "reach2d", "--device", "cpu", "--plans", "2")  # fmt: skip
    assert code == 1 and "Traceback" not in out + err
    assert table["settings"][0] == PASS and "mppi 128 samples" in table["settings"][1]
    assert table["joints"][0] == FAIL and "joint_names has 4 joints" in table["joints"][1]
    assert table["precision"][0] == WARN and "using fp32" in table["precision"][1]
    assert table["encoder"][0] == PASS and "at fp32" in table["encoder"][1]
    assert "at fp32" in table["plan latency"][1] and "fallback" in table["plan latency"][1]


def test_unreadable_params_file_is_a_usage_error(capsys, tmp_path):
    code = main(["doctor", "--params", str(tmp_path / "missing.yaml")])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "--params" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("mujoco_sim:\n  ros__parameters: {}\n")
    assert main(["doctor", "--params", str(bad)]) == 2
    assert "not an agent parameter file" in capsys.readouterr().err


def test_invalid_settings_are_a_fail_and_measurements_use_the_defaults(capsys, tmp_path):
    params = tmp_path / "arm.yaml"
    params.write_text("lewm_agent:\n  ros__parameters:\n    joint_names: [shoulder, elbow]\n    elites: 500\n")
    code, _, _, table = run_doctor(capsys, "--params", str(params), "--device", "cpu", "--plans", "2")
    assert code == 1 and table["settings"][0] == FAIL and "elites (500)" in table["settings"][1]
    assert table["joints"][0] == PASS and "p50" in table["plan latency"][1]


def test_a_crashing_check_becomes_its_fail_line(monkeypatch):
    def broken(context):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(doctor, "CHECKS", (("broken", broken), ("python", doctor.check_python)))
    checks = doctor.run_checks(Context(argparse.Namespace(device="cpu")))
    assert checks[0] == Check("broken", FAIL, "check crashed: RuntimeError: boom second line",
                              "report this line; the other checks still ran")  # fmt: skip
    assert checks[1].status == PASS


def context_with() -> Context:
    return Context(argparse.Namespace(device="cpu", record_dir=Path(".")))


@pytest.mark.parametrize("value, status", [(None, WARN), ("", WARN), ("abc", FAIL), ("42", PASS), ("150", WARN),
                                           ("300", FAIL)])  # fmt: skip
def test_ros_domain_id(monkeypatch, value, status):
    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)
    if value is not None:
        monkeypatch.setenv("ROS_DOMAIN_ID", value)
    check = doctor.check_domain(context_with())
    assert check.status == status and (status == PASS or "export ROS_DOMAIN_ID" in check.fix)


@pytest.mark.parametrize(
    "distro, localhost, scope, status, needle",
    [
        ("humble", "1", "", PASS, "this machine only"),
        ("humble", "", "LOCALHOST", WARN, "Humble ignores"),
        ("jazzy", "", "LOCALHOST", PASS, "this machine only"),
        ("jazzy", "1", "", WARN, "deprecated"),
        ("jazzy", "", "OFF", FAIL, "never see the camera"),
        ("jazzy", "", "NEIGHBOURHOOD", FAIL, "unknown range"),
        ("", "", "SUBNET", PASS, "the network"),
    ],
)
def test_discovery_settings_per_distro(monkeypatch, distro, localhost, scope, status, needle):
    for name, value in (("ROS_DISTRO", distro), ("ROS_LOCALHOST_ONLY", localhost),
                        ("ROS_AUTOMATIC_DISCOVERY_RANGE", scope)):  # fmt: skip
        monkeypatch.setenv(name, value) if value else monkeypatch.delenv(name, raising=False)
    check = doctor.check_discovery(context_with())
    assert check.status == status and needle in check.detail


def test_rmw_named_but_unknown_is_a_warning(monkeypatch):
    monkeypatch.setenv("RMW_IMPLEMENTATION", "rmw_made_up_cpp")
    assert doctor.check_rmw(context_with()).status == WARN
    monkeypatch.delenv("RMW_IMPLEMENTATION")
    check = doctor.check_rmw(context_with())
    assert check.status == PASS and "rmw_" in check.detail


def test_rclpy_missing_module_is_a_fail_with_the_sourcing_fix(monkeypatch):
    monkeypatch.setattr(environment, "ROS_MODULES", ("rclpy", "no_such_msgs_package.msg"))
    check = doctor.check_rclpy(context_with())
    assert check.status == FAIL and "no_such_msgs_package.msg" in check.detail and "setup.bash" in check.fix


@pytest.mark.parametrize("value, status", [("", WARN), ("egl", PASS), ("osmesa", PASS), ("glfw", WARN),
                                           ("vulkan", FAIL)])  # fmt: skip
def test_mujoco_gl(monkeypatch, value, status):
    monkeypatch.setenv("MUJOCO_GL", value) if value else monkeypatch.delenv("MUJOCO_GL", raising=False)
    assert doctor.check_mujoco(context_with()).status == status


@pytest.mark.parametrize("free_gib, status", [(0.5, FAIL), (5, WARN), (50, PASS)])
def test_free_disk_for_recording(monkeypatch, tmp_path, free_gib, status):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(0, 0, int(free_gib * GIB)))
    context = Context(argparse.Namespace(record_dir=tmp_path / "not" / "yet"))  # a folder bags will create
    check = doctor.check_disk(context)
    assert check.status == status and "min of raw 640x480" in check.detail


class FakePlanner:
    """What judge_plan reads of a LatentPlanner."""

    def __init__(self, notes: list[str]) -> None:
        self.compile_mode = None
        self.notes = notes
        self.config = argparse.Namespace(precision="fp32")


def judged(deadline: float, plans: list[float], iteration: float, encode: float = 1.0, notes=(),
           adaptive: bool = False) -> Check:  # fmt: skip
    from lewm_ros.control.settings import build_settings

    context = Context(argparse.Namespace())
    context.settings = build_settings({"joint_names": ["a"], "deadline_ms": deadline, "plan_overrun_ms": 100.0,
                                       "adaptive_samples": adaptive})  # fmt: skip
    context.encode_ms = encode
    return judge_plan(context, FakePlanner(list(notes)), plans, [iteration] * len(plans), 3)


def test_plan_judgement_against_the_agents_limits():
    assert judged(30.0, [40.0] * 5, 35.0).status == FAIL  # not one iteration fits the deadline
    assert judged(0.0, [120.0] * 5, 40.0).status == FAIL  # no deadline and plans beyond the overrun limit
    assert judged(30.0, [45.0] * 5, 15.0).status == WARN  # the deadline cuts the search
    late = judged(0.0, [60.0] * 5, 20.0)
    assert late.status == WARN and "control period" in late.detail  # fits the overrun, not the 50 ms period
    assert judged(30.0, [12.0] * 5, 4.0).status == PASS
    fallback = judged(30.0, [12.0] * 5, 4.0, notes=["precision fp16 is emulated on the CPU"])
    assert fallback.status == WARN and "fallback" in fallback.detail


def test_plan_judgement_with_adaptive_samples_judges_the_plans_the_agent_will_make():
    # defaults: MPPI 100 samples, 3 warm iterations, elites 10 -> floor 20 samples
    sized = judged(30.0, [40.0] * 5, 35.0, adaptive=True)  # 0.35 ms per candidate: 10 ms per iteration -> 28
    assert sized.status == PASS and "~28 of 100 samples" in sized.detail
    slow = judged(30.0, [400.0] * 5, 200.0, adaptive=True)  # 2 ms per candidate: even 20 samples take 40 ms
    assert slow.status == WARN and "even 20 samples take 40 ms" in slow.detail  # degraded, not locked: no FAIL
    hopeless = judged(30.0, [4000.0] * 5, 1000.0, adaptive=True)  # 10 ms per candidate: 200 ms > plan_overrun_ms
    assert hopeless.status == FAIL and "even 20 samples take 200 ms" in hopeless.detail  # every plan overruns
