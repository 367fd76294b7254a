"""Resumable batches: `batch(items, journal="run.sqlite")` records each finished item as JSON,
hands it over only once it is on disk, and a rerun skips what is recorded."""

from __future__ import annotations

import collections
import enum
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Literal

import pydantic
import pytest

import dspy_async as dspy
from dspy_async.batch import WINDOW
from dspy_async.journal import decode, encode, inputs_key
from dspy_async.testing import ProviderSimulator


class Level(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Contact(pydantic.BaseModel):
    name: str
    age: int


class Triage(dspy.Signature):
    """Triage an email."""

    email_content: str = dspy.InputField()
    category: Literal["meeting", "spam", "other"] = dspy.OutputField()
    level: Level = dspy.OutputField()
    sender: Contact = dspy.OutputField()
    score: float = dspy.OutputField()


def sim_lm(sim: ProviderSimulator) -> dspy.LM:
    return dspy.LM("openai/gpt-4o-mini", api_base=sim.openai_base_url, api_key="sk-t", cache=False)


def emails(count: int) -> list[dict[str, str]]:
    return [{"email_content": f"[doc {i:04d}] please read"} for i in range(count)]


def rows(path: Path) -> dict[int, tuple[str, int, str]]:
    """The journal's rows, read from outside the batch (a second connection, read-only)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
        found = connection.execute("SELECT idx, key, ok, outcome FROM items").fetchall()
    return {index: (key, ok, outcome) for index, key, ok, outcome in found}


def test_a_rerun_returns_the_recorded_predictions_typed_and_sends_nothing(
    provider_simulator: ProviderSimulator, tmp_path: Path
) -> None:
    sim = provider_simulator
    sim.fault("[doc 0002]", kind="status", status=503)  # a retry shows in the attempts
    triage = dspy.ChainOfThought(Triage, lm=sim_lm(sim))
    journal = tmp_path / "run.sqlite"
    first = triage.batch(emails(8), journal=journal)
    assert len(sim.requests) == 9
    again = triage.batch(iter(emails(8)), journal=journal)  # any iterable of the same items
    assert len(sim.requests) == 9
    for before, after in zip(first, again, strict=True):
        assert after.to_dict() == before.to_dict()
        assert isinstance(after.level, Level) and isinstance(after.sender, Contact)
        assert after.usage == before.usage and after.attempts == before.attempts
    assert [a.outcome for a in again[2].attempts] == ["error", "ok"]
    assert again[2].attempts[0].status_code == 503


def test_completions_and_plain_values_round_trip_through_json() -> None:
    usage = dspy.Usage(prompt_tokens=5, completion_tokens=7)
    attempt = dspy.Attempt(1, "ok", usage=usage, gates=())
    completions = [
        dspy.Prediction(answer="a", usage=usage, attempts=[attempt]),
        dspy.Prediction(answer="b", usage=usage, attempts=[attempt]),
    ]
    prediction = dspy.Prediction.from_completions(completions)
    ok, text = encode(prediction)
    restored = decode(text)
    assert ok and restored.answer == "a" and restored.completions.answer == ["a", "b"]
    assert restored.usage == prediction.usage and restored.attempts == prediction.attempts
    assert decode(encode({"n": [1, 2.5, None]})[1]) == {"n": [1, 2.5, None]}
    failed, error_text = encode(dspy.RateLimitError("slow down", provider="openai"))
    assert not failed and json.loads(error_text)["error"]["type"].endswith("RateLimitError")
    assert "pickle" not in text and json.loads(text)  # plain JSON, never a pickle
    assert inputs_key({"a": 1, "b": "x"}) == inputs_key({"b": "x", "a": 1})


def test_failed_and_changed_items_run_again(
    provider_simulator: ProviderSimulator, tmp_path: Path
) -> None:
    sim = provider_simulator
    sim.fault("[doc 0001]", kind="status", status=401)
    triage = dspy.Predict(Triage, lm=sim_lm(sim))
    journal = tmp_path / "run.sqlite"
    first = triage.batch(emails(5), journal=journal, return_exceptions=True)
    assert isinstance(first[1], dspy.AuthenticationError)
    recorded = rows(journal)
    assert recorded[1][1] == 0 and "AuthenticationError" in recorded[1][2]
    sim.reset()
    items = emails(5)
    items[3] = {"email_content": "[doc 0003] a different email at the same place"}
    second = triage.batch(items, journal=journal)
    asked = sorted(re.findall(r"\[doc (\d{4})\]", " ".join(r.text for r in sim.requests)))
    assert asked == ["0001", "0003"]  # failed before; other inputs at the same index
    assert all(isinstance(p, dspy.Prediction) for p in second)
    assert rows(journal)[1][1] == 1  # the failure's row replaced by the result


def test_items_are_handed_over_only_once_they_are_on_disk(
    provider_simulator: ProviderSimulator, tmp_path: Path
) -> None:
    triage = dspy.Predict(Triage, lm=sim_lm(provider_simulator))
    journal = tmp_path / "run.sqlite"
    for index, prediction in triage.batch_iter(emails(30), max_concurrency=6, journal=journal):
        key, ok, outcome = rows(journal)[index]
        assert ok == 1 and key == inputs_key(emails(30)[index])
        assert json.loads(outcome)["prediction"]["values"]["score"] == prediction.score


def test_a_journal_refuses_another_program_and_other_files(
    provider_simulator: ProviderSimulator, tmp_path: Path
) -> None:
    lm = sim_lm(provider_simulator)
    journal = tmp_path / "run.sqlite"
    dspy.Predict(Triage, lm=lm).batch(emails(1), journal=journal)
    with pytest.raises(dspy.ConfigurationError, match=r"holds the results of 'Predict\(Triage\)'"):
        dspy.Predict("email_content -> summary", lm=lm).batch(emails(1), journal=journal)
    not_sqlite = tmp_path / "notes.txt"
    not_sqlite.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(dspy.ConfigurationError, match="cannot be used as a journal"):
        dspy.Predict(Triage, lm=lm).batch(emails(1), journal=not_sqlite)
    with pytest.raises(dspy.ConfigurationError, match="journal must be a file path"):
        dspy.Predict(Triage, lm=lm).batch(emails(1), journal=3)  # type: ignore[arg-type]
    assert len(provider_simulator.requests) == 1


def test_a_result_json_cannot_hold_is_handed_over_but_not_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Opaque(dspy.Module):
        async def aforward(self, n: int) -> object:
            return object() if n == 1 else {"n": n}

    journal = tmp_path / "run.sqlite"
    with caplog.at_level(logging.WARNING, logger="dspy_async"):
        results = Opaque().batch([{"n": 0}, {"n": 1}], journal=journal)
    assert results[0] == {"n": 0} and type(results[1]) is object
    assert sorted(rows(journal)) == [0]
    assert "cannot be written as JSON" in caplog.text


def rows_so_far(path: Path) -> dict[int, tuple[str, int, str]]:
    """`rows`, or none while the child is still creating the file and its table."""
    try:
        return rows(path)
    except sqlite3.OperationalError:
        return {}


CHILD = textwrap.dedent(
    """
    import json, sys
    from typing import Literal
    import dspy_async as dspy

    class Classify(dspy.Signature):
        email_content: str = dspy.InputField()
        category: Literal["meeting", "spam", "other"] = dspy.OutputField()

    base, journal, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    lm = dspy.LM("openai/gpt-4o-mini", api_base=base, api_key="sk-t", cache=False)
    items = ({"email_content": f"[doc {i:04d}] please read"} for i in range(count))
    results = dspy.Predict(Classify, lm=lm).batch(items, max_concurrency=40, journal=journal)
    print(json.dumps([r.category for r in results]))
    """
)


@pytest.mark.slow
def test_kill_9_halfway_then_rerun_asks_the_provider_once_per_finished_item(
    provider_simulator: ProviderSimulator, tmp_path: Path
) -> None:
    sim = provider_simulator
    sim.latency = 0.05
    count, journal = 2000, tmp_path / "run.sqlite"
    args = [sys.executable, "-c", CHILD, sim.openai_base_url, str(journal), str(count)]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (journal.exists() and len(rows_so_far(journal)) >= count // 2):
            assert child.poll() is None, child.communicate()[1]
            assert time.monotonic() < deadline, "the batch did not get halfway in 60 s"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate(timeout=10)  # reaps it and closes its pipes
    finished_before = rows(journal)
    assert count // 2 <= len(finished_before) < count
    asked_before = len(sim.requests)

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=90, check=False)
    assert rerun.returncode == 0, rerun.stderr
    categories = json.loads(rerun.stdout)

    asked = collections.Counter(
        int(found.group(1))
        for request in sim.requests
        if (found := re.search(r"\[doc (\d{4})\]", request.text))
    )
    assert sorted(asked) == list(range(count))
    assert all(asked[index] == 1 for index in finished_before)  # never asked again
    # Asked twice: only items in flight at the kill (sent, not yet on disk).
    assert len(sim.requests) - count <= WINDOW * 40
    assert len(sim.requests) - asked_before == count - len(finished_before)  # the rest, once
    # Every result, in input order: the journal's rows are keyed by each item's inputs, and
    # the list is what the journal holds at each index.
    final = rows(journal)
    assert [final[i][0] for i in range(count)] == [inputs_key(item) for item in emails(count)]
    assert categories == [decode(final[i][2]).category for i in range(count)]
