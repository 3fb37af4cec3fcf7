"""The sim's physics thread without ROS: startup errors reach the caller, work runs on the thread that owns the
env, steps are paced (or flat out), a failing step is reported once and the env is closed."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from lewm_ros.envs.physics_thread import PhysicsThread


class FakeEnv(SimpleNamespace):
    def __init__(self) -> None:
        super().__init__(control_dt=0.05, closed=threading.Event(), ticks=0)

    def close(self) -> None:
        self.closed.set()


def physics(env, *, tick=None, speed=0.0, work=None, failures=None, open_env=None):
    def count(e):
        e.ticks += 1

    return PhysicsThread(
        "test_physics",
        open_env=open_env or (lambda: env),
        tick=tick or count,
        speed_factor=lambda: speed,
        work=work or {},
        on_failure=(failures.append if failures is not None else lambda error: None),
    )


def test_an_error_opening_the_env_is_raised_in_the_caller():
    def broken():
        raise ValueError("no such scene")

    runner = physics(None, open_env=broken)
    with pytest.raises(ValueError, match="no such scene"):
        runner.start(5.0)
    assert runner.stop(5.0)


def test_work_runs_on_the_physics_thread_between_steps_and_failures_come_back_as_messages():
    env = FakeEnv()

    def where(e):
        return threading.current_thread().name

    def broken(e):
        raise RuntimeError("no free pose")

    runner = physics(env, work={"where": where, "broken": broken})
    runner.start(5.0)
    try:
        assert runner.ask("where", 5.0) == (True, "test_physics")
        assert runner.ask("broken", 5.0) == (False, "broken failed: RuntimeError: no free pose")
        assert env.ticks > 0  # speed 0: flat out
    finally:
        assert runner.stop(5.0)
    assert env.closed.is_set() and not runner.alive


def test_steps_are_paced_on_the_steady_clock_and_never_burst_ahead():
    env = FakeEnv()
    runner = physics(env, speed=1.0)
    started = time.monotonic()
    runner.start(5.0)
    time.sleep(0.3)
    runner.stop(5.0)
    elapsed = time.monotonic() - started
    assert 1 <= env.ticks <= elapsed / env.control_dt + 2


def test_a_failing_step_is_reported_once_and_the_env_closed():
    env, failures = FakeEnv(), []

    def explode(e):
        raise FloatingPointError("diverged")

    runner = physics(env, tick=explode, failures=failures)
    runner.start(5.0)
    assert env.closed.wait(5.0)
    runner.stop(5.0)
    assert [str(error) for error in failures] == ["diverged"]
    assert not runner.alive
