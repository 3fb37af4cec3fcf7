"""A ReachEnv owned by one thread from creation to close, stepped on the steady clock at a chosen speed; other
threads hand it work (reset, teleport, ...) and wait for the answer.

MuJoCo's offscreen GL context belongs to the thread that made it, and a single owner needs no lock around
the simulation. The mujoco_sim node runs its physics on one of these; what a step does (which command, what
is published) is the owner's callback, so this module knows nothing of ROS.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lewm_ros.envs.reach_env import ReachEnv

Work = Callable[[ReachEnv], str]  # runs on the physics thread; returns the message for the asker


@dataclass
class _Request:
    """Work another thread hands to the physics thread."""

    kind: str
    done: threading.Event = field(default_factory=threading.Event)
    success: bool = False
    message: str = ""


class PhysicsThread:
    """Opens the env on its own thread, then calls `tick(env)` every control_dt / speed_factor() seconds of
    steady time (flat out when speed_factor() is 0) and runs handed-in work between ticks."""

    def __init__(
        self,
        name: str,
        *,
        open_env: Callable[[], ReachEnv],
        tick: Callable[[ReachEnv], None],
        speed_factor: Callable[[], float],
        work: Mapping[str, Work],
        on_failure: Callable[[Exception], None],
    ) -> None:
        self._open_env, self._tick, self._speed_factor = open_env, tick, speed_factor
        self._work, self._on_failure = dict(work), on_failure
        self._requests: queue.SimpleQueue[_Request] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self.stopping = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self, timeout_s: float) -> None:
        """Start the thread and wait until `open_env` returned; its error is raised here, in the caller.

        Raises TimeoutError when opening takes longer than `timeout_s`.
        """
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"the simulation did not start within {timeout_s:.0f} s")
        if self._startup_error is not None:
            raise self._startup_error

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def ask(self, kind: str, timeout_s: float) -> tuple[bool, str]:
        """Run work `kind` on the physics thread and wait: (success, message)."""
        request = _Request(kind)
        self._requests.put(request)
        self._wake.set()
        if not request.done.wait(timeout_s):
            return False, f"{kind} timed out after {timeout_s:.0f} s"
        return request.success, request.message

    def stop(self, join_timeout_s: float) -> bool:
        """Ask the thread to end (it closes the env) and wait for it; False when it is still running."""
        self.stopping = True
        if self._thread.ident is None or self._thread is threading.current_thread():
            return True
        self._wake.set()
        self._thread.join(timeout=join_timeout_s)
        return not self._thread.is_alive()

    def _main(self) -> None:
        env: ReachEnv | None = None
        try:
            env = self._open_env()
        except BaseException as error:  # raised by start()
            self._startup_error = error
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop(env)
        except Exception as error:
            if not self.stopping:
                self._on_failure(error)
        finally:
            env.close()
            self._fail_pending_requests()

    def _loop(self, env: ReachEnv) -> None:
        """Tick once per control_dt / speed_factor on the steady clock; serve requests in between."""
        next_tick = time.monotonic()
        while not self.stopping:
            self._serve_requests(env)
            speed = float(self._speed_factor())
            now = time.monotonic()
            if speed > 0 and now < next_tick:
                self._wake.wait(next_tick - now)
                self._wake.clear()
                continue
            self._tick(env)
            if speed > 0:
                period = env.control_dt / speed
                next_tick += period
                if time.monotonic() - next_tick > max(0.25, 5 * period):
                    next_tick = time.monotonic()  # fell far behind: resume pacing instead of bursting
            else:
                next_tick = time.monotonic()
                time.sleep(0)  # let other threads in between flat-out steps

    def _serve_requests(self, env: ReachEnv) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            try:
                request.message = self._work[request.kind](env)
                request.success = True
            except Exception as error:
                request.message = f"{request.kind} failed: {type(error).__name__}: {error}"
            finally:
                request.done.set()

    def _fail_pending_requests(self) -> None:
        while True:
            try:
                request = self._requests.get_nowait()
            except queue.Empty:
                return
            request.message = "physics stopped"
            request.done.set()
