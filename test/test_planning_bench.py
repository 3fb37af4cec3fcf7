"""`lewm-ros bench planner`: one JSON line with sane timings, FLOPs and peak; the reference CEM when present."""

import json
import subprocess
import sys

import pytest

from lewm_ros.cli import main

TINY = ["bench", "planner", "--preset", "tiny", "--samples", "16", "--iterations", "2", "--elites", "4",
        "--repeats", "1", "--threads", "1"]  # one thread: tiny ops, and immune to a busy second core


def run_bench(capsys, *extra):
    code = main([*TINY, "--json", *extra])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 1, out  # with --json, stdout carries exactly the JSON line
    return json.loads(lines[0])


def test_bench_prints_a_human_summary_before_the_json_line(capsys):
    assert main([*TINY, "--no-reference"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])  # the JSON line stays last, for scripts
    summary = lines[:-1]
    assert 3 <= len(summary) <= 6 and all(len(line) < 160 and not line.startswith("{") for line in summary)
    labels = [line.split("  ")[0] for line in summary]
    assert labels[:3] == ["bench planner", "model", "ours"] and "reference" in labels
    starts = {len(line) - len(line[len(label) :].lstrip()) for line, label in zip(summary, labels, strict=True)}
    assert len(starts) == 1, summary  # the values start in one column
    ours = summary[labels.index("ours")]
    assert f"{report['ours']['ms_per_plan']:,.1f} ms per plan" in ours and "rollouts/s" in ours
    assert "cem 16 samples x 2 iterations" in summary[0] and "not timed: --no-reference" in summary[-1]


def reference_missing():
    from lewm_ros.benchmarks.reference import load_reference

    try:
        load_reference()
        import transformers  # noqa: F401
    except ImportError as err:
        return str(err)
    return None


def test_bench_reports_sane_positive_numbers(capsys):
    report = run_bench(capsys, "--no-reference")
    ours = report["ours"]
    for key in ("ms_per_plan", "ms_per_iteration", "rollouts_per_s", "gflop_per_plan", "gflops_achieved"):
        assert ours[key] > 0 and ours[key] < float("inf"), key
    assert ours["iterations"] == 2 and ours["candidate_rollouts_per_plan"] == 16 * 2
    assert ours["ms_per_iteration"] == pytest.approx(ours["ms_per_plan"] / 2)
    assert ours["rollouts_per_s"] == pytest.approx(32 / (ours["ms_per_plan"] / 1000))
    peak = report["peak"]
    assert "assumption" in peak
    if peak["fp32_gflops"] is not None:
        assert peak["fp32_gflops"] > 0 and 0 < ours["fraction_of_peak"] < 1
    settings = report["settings"]
    assert (settings["samples"], settings["iterations"], settings["elites"], settings["horizon"]) == (16, 2, 4, 5)
    assert settings["history_frames"] == 3 and settings["precision"] == "fp32" and settings["threads"] == 1
    assert report["machine"]["cpu_model"] and "FlopCounterMode" in report["flops_method"]
    assert report["reference"] is None and report["reference_over_ours"] is None
    assert report["reference_reason"] == "--no-reference"


def test_bench_against_reference_on_the_same_weights(capsys):
    missing = reference_missing()
    if missing:
        pytest.skip(f"reference not importable: {missing}")
    report = run_bench(capsys, "--reference-only-iterations", "1")
    ref = report["reference"]
    assert ref is not None, report["reference_reason"]
    assert report["reference_over_ours"] > 0
    assert ref["rollout_max_abs_diff"] < 1e-4  # identical weights: the two rollouts agree
    assert ref["iterations_timed"] == 1 and ref["scaled"] and len(ref["ms_per_plan_measured"]) == 1
    assert ref["ms_per_plan"] == pytest.approx(2 * ref["ms_per_plan_measured"][0])
    assert ref["gflop_per_plan"] > report["ours"]["gflop_per_plan"] > 0  # ours reuses the shared tokens
    assert ref["sampled_blocks"] == 5 + 3 - 1


def test_bench_group_and_errors(capsys):
    assert main(["bench"]) == 0
    assert "planner" in capsys.readouterr().out
    assert main([*TINY, "--elites", "20", "--no-reference"]) == 2
    assert "elites" in capsys.readouterr().err
    assert main([*TINY, "--history-frames", "4", "--no-reference"]) == 2
    assert "history-frames" in capsys.readouterr().err


def test_importing_the_bench_does_not_import_torch():
    script = "import sys, lewm_ros.benchmarks.planner; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", script]).returncode == 0
