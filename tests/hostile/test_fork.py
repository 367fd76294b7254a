"""Fork while the parent is busy: no child may inherit a lock held, or wait on the parent.

Each parent runs in its own interpreter (a subprocess), so the test process never forks with
pytest's threads. A child that does not exit within its bound is killed and counted as hung.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dspy_async

# Shared by every parent script: fork, run `child()` there, wait for it with a bound.
FORKING = """
    import json, os, signal, sys, threading, time, warnings
    import dspy_async as dspy
    from dspy_async import _runtime
    from dspy_async.testing import ProviderSimulator

    warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: "multi-threaded, fork()"
    BOUND = float(sys.argv[1])

    def fork_and_wait(child, then=lambda: None):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = child()
            finally:
                os._exit(code)
        then()
        deadline = time.monotonic() + BOUND
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.005)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return "hung"

    def every_lock(lm, sim):
        # One call of each path that takes a lock dspy-async keeps: 0 if all went through.
        answer = lm("from the child").text
        lm.usage
        dspy.events.subscribe(lambda event: None)()
        dspy.configure(retry_enabled=True)
        sim.requests
        return 0 if answer else 2
"""

HAMMERED = """
    forks = int(sys.argv[2])
    with ProviderSimulator() as sim:
        lm = dspy.LM("openai/sim", api_base=sim.api_base("openai"), api_key="sk-test")
        stop = threading.Event()
        calls = []

        def hammer():
            while not stop.is_set():
                lm("from the parent")
                lm.usage
                calls.append(1)

        def churn():
            while not stop.is_set():
                dspy.events.subscribe(lambda event: None)()
                dspy.configure(retry_enabled=True)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        threads.append(threading.Thread(target=churn))
        for thread in threads:
            thread.start()
        while len(calls) < 20:
            time.sleep(0.01)
        before = len(calls)
        outcomes = [fork_and_wait(lambda: every_lock(lm, sim)) for _ in range(forks)]
        during = len(calls) - before
        stop.set()
        for thread in threads:
            thread.join(30)
        print(json.dumps({"outcomes": outcomes, "parent_calls": during}))
"""

# The same locks held for sure, by a parent thread parked inside them at the fork.
HELD = """
    import contextlib

    with ProviderSimulator() as sim:
        lm = dspy.LM("openai/sim", api_base=sim.api_base("openai"), api_key="sk-test")
        lm("warm up")
        locks = {
            "BaseLM._lock": lm._lock,
            "events._lock": dspy.events._lock,
            "Settings._lock": dspy.settings._lock,
            "_runtime._lock": _runtime._lock,
            "simulator Script._lock": sim._script._lock,
        }
        holding, release = threading.Event(), threading.Event()

        def hold():
            with contextlib.ExitStack() as stack:
                for lock in locks.values():
                    stack.enter_context(lock)
                holding.set()
                release.wait()

        holder = threading.Thread(target=hold)
        holder.start()
        holding.wait()
        # The parent lets go at once (its simulator needs its lock to answer the child).
        outcome = fork_and_wait(lambda: every_lock(lm, sim), then=release.set)
        holder.join()
        print(json.dumps({"outcome": outcome, "held": sorted(locks)}))
"""

# A future submitted before the fork: in the child, its loop thread is gone.
INHERITED_FUTURE = """
    import asyncio

    future = _runtime.submit(asyncio.sleep(30))

    def child():
        try:
            future.result(timeout=60)
        except dspy.RuntimeClosedError as error:
            print(f"refused: {error}", flush=True)
            return 0
        return 3

    print(json.dumps({"outcome": fork_and_wait(child)}), flush=True)
    future.cancel()
"""


SYNCHRONISATION = {
    "Lock",
    "RLock",
    "Condition",
    "Semaphore",
    "BoundedSemaphore",
    "Event",
    "Barrier",
}


def run_parent(body: str, *args: object, timeout: float) -> dict[str, object]:
    code = textwrap.dedent(FORKING) + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr
    report: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    report["stdout"] = result.stdout
    return report


@pytest.mark.slow
def test_children_forked_while_threads_hammer_calls_each_call_and_exit() -> None:
    # Before the locks were fork-safe, about one child in five hung (settings, events).
    forks, bound = 40, 15.0
    report = run_parent(HAMMERED, bound, forks, timeout=forks * bound + 60)
    assert report["outcomes"] == [0] * forks, report
    assert isinstance(report["parent_calls"], int)
    assert report["parent_calls"] > forks  # the parent really was busy while it forked


@pytest.mark.slow
def test_a_child_forked_while_every_lock_is_held_still_calls_and_exits() -> None:
    report = run_parent(HELD, 15.0, timeout=90)
    assert report["outcome"] == 0, report
    assert len(report["held"]) == 5  # type: ignore[arg-type]


@pytest.mark.slow
def test_an_inherited_future_refuses_to_be_waited_on_in_the_child() -> None:
    report = run_parent(INHERITED_FUTURE, 15.0, timeout=90)
    assert report["outcome"] == 0, report
    assert "only that process can wait for it" in str(report["stdout"])


def test_every_lock_in_the_package_is_fork_safe() -> None:
    # A new plain threading lock would bring this bug back. One that lives for a single call
    # (whose waiters cannot exist in a child) says so on its line.
    package = Path(dspy_async.__file__).parent
    unsafe = []
    for path in sorted(package.rglob("*.py")):
        if path.name == "_forksafe.py":
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "threading"
                and node.func.attr in SYNCHRONISATION
                and "# fork-safe: per call" not in lines[node.lineno - 1]
            ):
                unsafe.append(f"{path.relative_to(package)}:{node.lineno}")
    assert not unsafe, (
        "use dspy_async._forksafe.lock() / condition() for a lock that outlives one call, or "
        f"mark a per-call one '# fork-safe: per call': {unsafe}"
    )
