"""`lewm-ros train` start-up measurements print progress: under load they take minutes, and silence there
looked like a hang (issue 23: `train --minutes 3` printed nothing for 4 minutes)."""

import contextlib
import io

import torch

from lewm_ros import cli
from lewm_ros.model.precision import choose_precision


def test_choose_precision_reports_every_measured_call():
    calls, lines = [], []
    chosen, timings = choose_precision(torch.device("cpu"), "auto", calls.append, repeats=2, progress=lines.append)
    assert calls == ["fp32"] * 3 + ["bf16"] * 3 and len(lines) == len(calls)  # one line per call, as it ends
    assert [line.split(":")[1].split()[0] for line in lines] == calls
    assert "warm-up" in lines[0] and "call 2/2" in lines[2] and chosen in timings
    assert choose_precision(torch.device("cpu"), "fp32", calls.append, progress=lines.append) == ("fp32", {})
    assert len(lines) == 6  # nothing measured, nothing printed


def test_train_prints_start_up_progress_before_the_budget_line(episodes, tmp_path):
    out, err = io.StringIO(), io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["train", "--data", str(episodes), "--preset", "tiny", "--out", str(tmp_path / "run"),
                             "--minutes", "0.05", "--batch-size", "16", "--threads", "1", "--precision", "auto",
                             "--no-progress"])  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err.getvalue()
    lines = out.getvalue().splitlines()
    precision = [i for i, line in enumerate(lines) if line.startswith("start-up: measuring precision")]
    steps = [i for i, line in enumerate(lines) if line.startswith("start-up: timing a training step")]
    budget = next(i for i, line in enumerate(lines) if line.startswith("budget 0.05 min: measured"))
    assert len(precision) == 6 and len(steps) == 4  # fp32 and bf16: a warm-up and 2 timed steps each; 4 steps
    assert max(precision) < min(steps) and max(steps) < budget
