"""The response cache shared by real processes: one disk file, and one Redis server."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dspy_async.cache import ResponseCache
from dspy_async.cache.disk import DB_NAME
from dspy_async.cache.entry import decode
from dspy_async.lm import LM
from dspy_async.testing import ProviderSimulator

# A child process: configure the cache as told, ask the prompts, print what came back.
CALLER = textwrap.dedent(
    """
    import json, sys
    import dspy_async as dspy

    base, config, prompts = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    dspy.configure_cache(**config)
    lm = dspy.LM("openai/test-model", api_base=base, api_key="sk-procs")
    answers = [lm(prompt) for prompt in prompts]
    print(json.dumps([[a.text, a.cached] for a in answers]))
    """
)

# A child process writing (and reading back) entries straight through one disk tier.
WRITER = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from dspy_async.cache.disk import DiskTier
    from dspy_async.cache.entry import Entry
    from dspy_async.providers.base import Reply
    from dspy_async.records import Usage

    directory, name = Path(sys.argv[1]), sys.argv[2]
    count, limit = int(sys.argv[3]), int(sys.argv[4])
    tier = DiskTier(directory, size_limit=limit)
    while not (directory / "go").exists():  # both writers start together
        time.sleep(0.01)

    async def main():
        for i in range(count):
            # Half the keys are this writer's own, half are written by both.
            key = f"shared-{i}" if i % 2 else f"{name}-{i}"
            tier.put(key, Entry(Reply(f"{name} {i} " + "x" * (i % 300), Usage(i, 1), "stop", None)))
            if i % 10 == 0:
                await tier.get(f"shared-{i - 1}")

    asyncio.run(main())
    tier.close()
    """
)


def run_caller(sim: ProviderSimulator, config: dict[str, object], prompts: list[str]) -> list:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CALLER,
            sim.openai_base_url,
            json.dumps(config),
            json.dumps(prompts),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: list = json.loads(done.stdout)
    return result


@pytest.mark.slow
def test_a_second_process_answers_from_the_first_ones_disk_entries(
    provider_simulator: ProviderSimulator, tmp_path: Path
) -> None:
    config = {"disk_cache_dir": str(tmp_path / "responses")}
    prompts = [f"process question {i}" for i in range(20)]
    first = run_caller(provider_simulator, config, prompts)
    assert not any(cached for _, cached in first)
    assert len(provider_simulator.requests) == 20
    second = run_caller(provider_simulator, config, prompts)
    assert second == [[text, True] for text, _ in first]
    assert len(provider_simulator.requests) == 20


@pytest.mark.slow
def test_concurrent_writers_corrupt_nothing(tmp_path: Path) -> None:
    limit = 150_000  # small enough that both writers evict, again and again, at once
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), name, "1500", str(limit)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("a", "b")
    ]
    (tmp_path / "go").touch()
    for writer in writers:
        _, stderr = writer.communicate(timeout=120)
        assert writer.returncode == 0, stderr
        assert "Traceback" not in stderr and "WARNING" not in stderr, stderr
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (total,) = db.execute("SELECT bytes FROM totals").fetchone()
        (summed,) = db.execute("SELECT SUM(size) FROM responses").fetchone()
        stored = db.execute("SELECT key, value FROM responses").fetchall()
    assert total == summed <= limit
    assert len(stored) > 100
    for key, value in stored:
        entry = decode(bytes(value))
        assert entry is not None, key
        writer, number = entry.reply.text.split()[:2]
        assert key in (f"shared-{number}", f"{writer}-{number}")


@pytest.mark.slow
def test_two_processes_share_answers_through_redis(
    provider_simulator: ProviderSimulator, redis_url: str
) -> None:
    config = {"enable_memory_cache": False, "enable_disk_cache": False, "shared": redis_url}
    prompts = [f"fleet question {i}" for i in range(10)]
    first = run_caller(provider_simulator, config, prompts)
    second = run_caller(provider_simulator, config, prompts)
    assert not any(cached for _, cached in first)
    assert second == [[text, True] for text, _ in first]
    assert len(provider_simulator.requests) == 10


@pytest.mark.slow
def test_a_forked_child_keeps_the_cache_working(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    lm = LM("openai/test-model", api_base=provider_simulator.openai_base_url, api_key="sk-f")
    parent = lm("asked before the fork")  # the disk tier's thread runs in the parent
    context = multiprocessing.get_context("fork")
    results = context.SimpleQueue()

    def child() -> None:
        inherited = lm("asked before the fork")  # the memory tier came along
        new = lm("asked in the child")  # written to disk by the child's own cache thread
        results.put((inherited.cached, inherited.text, new.cached))

    process = context.Process(target=child)
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert results.get() == (True, parent.text, False)
    assert lm("asked in the child").cached  # the parent reads what the child wrote
    assert len(provider_simulator.requests) == 2
