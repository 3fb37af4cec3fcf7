"""ResponsiveExecutor keeps rclpy's executor contract: async callbacks suspended on a future resume, callback
exceptions surface from spin_once, and a task waiting in the pool is never submitted twice. (Tick regularity
with the real agent is asserted in test_agent_node.py; the stock-vs-fixed figures are bench/executor_starvation.py.)
"""

from __future__ import annotations

import threading
import time

import pytest
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.task import Future
from std_srvs.srv import Trigger

from lewm_ros.ros.executor import ResponsiveExecutor


@pytest.fixture
def node_and_executor(ros_context):
    node = Node("executor_probe", context=ros_context)
    executor = ResponsiveExecutor(num_threads=3, context=ros_context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown(timeout_sec=2.0)
    node.destroy_node()


def test_an_async_service_callback_awaiting_another_service_completes(node_and_executor):
    """The nested-call pattern: a suspended coroutine must be resubmitted once its future is done."""
    node, executor = node_and_executor
    group = ReentrantCallbackGroup()  # the suspended outer callback holds its group until it returns
    node.create_service(Trigger, "inner", lambda req, res: setattr(res, "message", "inner ok") or res,
                        callback_group=group)  # fmt: skip
    inner = node.create_client(Trigger, "inner", callback_group=group)

    async def outer_callback(request, response):
        result = await inner.call_async(Trigger.Request())
        response.success, response.message = True, f"outer saw: {result.message}"
        return response

    node.create_service(Trigger, "outer", outer_callback)
    outer = node.create_client(Trigger, "outer")
    threading.Thread(target=executor.spin, daemon=True).start()
    assert outer.wait_for_service(timeout_sec=10) and inner.wait_for_service(timeout_sec=10)
    future = outer.call_async(Trigger.Request())
    deadline = time.monotonic() + 10
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert future.done(), "the outer service never answered"
    assert future.result().message == "outer saw: inner ok"


def test_a_callback_exception_surfaces_from_spin_once(node_and_executor):
    node, executor = node_and_executor
    node.create_timer(0.01, lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        for _ in range(200):
            executor.spin_once(timeout_sec=0.05)


def test_spin_until_future_complete_returns_when_a_timer_sets_the_future(node_and_executor):
    node, executor = node_and_executor
    future = Future()
    node.create_timer(0.02, lambda: future.done() or future.set_result("set"))
    executor.spin_until_future_complete(future, timeout_sec=5.0)
    assert future.result() == "set"


def test_a_task_queued_in_the_pool_is_not_submitted_again(node_and_executor):
    """Fill the pool with slow callbacks so a fast timer's task waits in the queue: rclpy 7.1.6 re-submits it in a
    loop; here every submission of a task waits for the previous one to finish."""
    node, executor = node_and_executor
    latest: dict[object, object] = {}  # task -> its latest pool future
    resubmitted_while_pending = []
    original = executor._executor.submit

    def checking_submit(task, *args, **kwargs):
        previous = latest.get(task)
        if previous is not None and not previous.done():
            resubmitted_while_pending.append(task)
        latest[task] = future = original(task, *args, **kwargs)
        return future

    executor._executor.submit = checking_submit
    slow_group = ReentrantCallbackGroup()
    for _ in range(3):  # as many as there are workers
        node.create_timer(0.05, lambda: time.sleep(0.2), callback_group=slow_group)
    fast_calls = []
    node.create_timer(0.01, lambda: fast_calls.append(time.monotonic()))
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    time.sleep(1.5)
    executor.shutdown(timeout_sec=2.0)
    assert fast_calls, "the fast timer never ran"
    assert not resubmitted_while_pending, f"{len(resubmitted_while_pending)} tasks submitted while still queued"
    assert executor.duplicate_yields > 0, "the pool was never full: the test did not exercise the queued case"
