"""The local stack's Lambda environments (leanopsctl.local.pool): warm workers, INIT bounded apart from the
handler's timeout, overruns and crashes reported as Lambda reports them, the concurrency limit."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import pytest
from leanopsctl.local.pool import FunctionDefinition, FunctionPool

REPO = Path(__file__).resolve().parents[2]


def pool_for(
    tmp_path: Path, handler: str, *, timeout: float = 5.0, concurrency: int = 2, **env: str
) -> FunctionPool:
    definition = FunctionDefinition(
        name="Toy",
        arn="arn:aws:lambda:us-east-1:123456789012:function:Toy",
        handler=f"tests.functional.pool_handlers.{handler}",
        timeout=timeout,
        memory_size=128,
        environment={"PYTHONPATH": str(REPO), **env},
    )
    return FunctionPool(definition, log=tmp_path / "functions.log", concurrency=concurrency)


def call(pool: FunctionPool, event: object) -> tuple[dict, str | None]:
    result = pool.invoke(json.dumps(event).encode())
    return json.loads(result.payload), result.function_error


def test_an_environment_stays_warm_between_invocations(tmp_path):
    pool = pool_for(tmp_path, "echo")
    try:
        first, error = call(pool, {"n": 1})
        second, _ = call(pool, {"n": 2})
        assert error is None and first["event"] == {"n": 1}
        assert first["pid"] == second["pid"] and pool.cold_starts == 1
        assert 0 < first["remaining_ms"] <= 5000
        log = (tmp_path / "functions.log").read_text()
        assert log.count("START RequestId:") == 2 and log.count("REPORT RequestId:") == 2
    finally:
        pool.close()


def test_init_is_not_counted_in_the_handlers_timeout(tmp_path):
    # GIVEN a handler whose import takes longer than its function's whole timeout
    pool = pool_for(tmp_path, "echo", timeout=1.0, POOL_TEST_INIT_SLEEP="2")
    try:
        # THEN its first invocation succeeds: Lambda bounds INIT apart (Sandbox.Timedout only for the handler)
        body, error = call(pool, {"cold": True})
        assert error is None, body
        assert body["event"] == {"cold": True}
    finally:
        pool.close()


def test_a_handler_that_overruns_is_timed_out_and_its_environment_destroyed(tmp_path):
    pool = pool_for(tmp_path, "sleep", timeout=1.0)
    try:
        body, error = call(pool, {"seconds": 30})
        assert error == "Unhandled" and body["errorType"] == "Sandbox.Timedout"
        assert "Task timed out after 1.00 seconds" in body["errorMessage"]
        # the overrun environment is gone; the next invocation INITs a new one and works
        body, error = call(pool, {"seconds": 0})
        assert error is None and body == {"slept": 0} and pool.cold_starts == 2
    finally:
        pool.close()


def test_a_runtime_that_exits_mid_invocation_is_an_exit_error(tmp_path):
    pool = pool_for(tmp_path, "exit_hard")
    try:
        body, error = call(pool, {})
        assert error == "Unhandled" and body["errorType"] == "Runtime.ExitError"
        assert "exit status 3" in body["errorMessage"]
    finally:
        pool.close()


def test_a_runtime_killed_mid_invocation_is_an_exit_error_not_a_timeout(tmp_path):
    pool = pool_for(tmp_path, "kill_self", timeout=60.0)
    try:
        body, error = call(pool, {})
        assert error == "Unhandled" and body["errorType"] == "Runtime.ExitError", body
        assert "signal 9" in body["errorMessage"]
    finally:
        pool.close()


def test_a_handler_that_cannot_be_imported_is_an_import_error(tmp_path):
    pool = pool_for(tmp_path, "missing_function")
    try:
        body, error = call(pool, {})
        assert error == "Unhandled" and body["errorType"] == "Runtime.HandlerNotFound"
    finally:
        pool.close()


def test_no_more_invocations_run_at_once_than_the_concurrency_limit(tmp_path):
    # GIVEN a pool of 2 environments and 4 invocations that each hold until released
    pool = pool_for(tmp_path, "hold", timeout=120.0, concurrency=2)
    results: list[tuple[dict, str | None]] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(call(pool, {"dir": str(tmp_path), "id": i})))
        for i in range(4)
    ]
    try:
        for thread in threads:
            thread.start()
        # WHEN two are running (each marks itself), the other two wait for an environment
        running = wait_for(lambda: len(list(tmp_path.glob("*.running"))) == 2)
        assert running
        assert len(list(tmp_path.glob("*.running"))) == 2 and pool.cold_starts == 2
        # THEN once released, all four complete, served by the same two environments
        (tmp_path / "release").write_text("")
        for thread in threads:
            thread.join(timeout=120)
        assert sorted(body["id"] for body, error in results if error is None) == [0, 1, 2, 3]
        assert pool.cold_starts == 2
    finally:
        (tmp_path / "release").write_text("")
        pool.close()


def test_an_environment_killed_while_idle_is_never_handed_out(tmp_path):
    pool = pool_for(tmp_path, "echo")
    try:
        first, _ = call(pool, {})
        os.kill(first["pid"], signal.SIGKILL)  # from outside, between invocations
        # until it is dead and waitable (all its threads gone), without reaping it: the pool must notice
        waitable = os.WEXITED | os.WNOHANG | os.WNOWAIT
        assert wait_for(lambda: os.waitid(os.P_PID, first["pid"], waitable) is not None)
        second, error = call(pool, {})
        assert error is None and second["pid"] != first["pid"] and pool.cold_starts == 2, second
    finally:
        pool.close()


def test_recycle_makes_the_next_invocation_init_again(tmp_path):
    pool = pool_for(tmp_path, "echo")
    try:
        first, _ = call(pool, {})
        pool.recycle()
        second, _ = call(pool, {})
        assert first["pid"] != second["pid"] and pool.cold_starts == 2
        with pytest.raises(ProcessLookupError):
            os.kill(first["pid"], 0)  # the retired environment is gone
    finally:
        pool.close()


def wait_for(condition, timeout: float = 120.0) -> bool:
    """Wait on a condition of the file system, polling: the timeout only bounds a broken run."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
