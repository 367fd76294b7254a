"""The disk tier on its own: JSON rows, the byte bound and LRU eviction, damaged files."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dspy_async import cache
from dspy_async.cache import configure_cache
from dspy_async.cache.disk import DB_NAME, DiskTier
from dspy_async.cache.entry import Entry, decode
from dspy_async.lm import LM
from dspy_async.providers.base import Reply
from dspy_async.records import Usage
from dspy_async.testing import ProviderSimulator


def entry(text: str) -> Entry:
    return Entry(Reply(text, Usage(3, 4), "stop", None))


@pytest.fixture
def tier(tmp_path: Path) -> Iterator[DiskTier]:
    made = DiskTier(tmp_path / "responses", size_limit=1 << 20)
    yield made
    made.close()


def rows(path: Path) -> dict[str, bytes]:
    with sqlite3.connect(path) as db:
        return {key: bytes(value) for key, value in db.execute("SELECT key, value FROM responses")}


def test_entries_round_trip_as_json(tier: DiskTier) -> None:
    tier.put("k1", Entry(Reply("héllo ✓", Usage(5, 6), None, True), expires=1e12))
    got = asyncio.run(tier.get("k1"))
    assert got == Entry(Reply("héllo ✓", Usage(5, 6), None, True), expires=1e12)
    assert asyncio.run(tier.get("absent")) is None
    tier.close()
    (value,) = rows(tier.path).values()
    assert decode(value) == got
    assert value.startswith(b'{"v":1,')


@pytest.mark.parametrize(
    "stored",
    [b"\x80\x04K\x01.", b"[]", b'{"v":2,"text":"x"}', b'{"v":1,"text":3,"usage":[0,0]}'],
    ids=["pickle", "not-an-object", "another-version", "wrong-types"],
)
def test_rows_that_are_not_entries_are_misses_and_removed(tier: DiskTier, stored: bytes) -> None:
    tier.put("k", entry("good"))
    tier.close()
    with sqlite3.connect(tier.path) as db:
        db.execute("UPDATE responses SET value = ?", (stored,))
    reopened = DiskTier(tier.path.parent, size_limit=1 << 20)
    assert asyncio.run(reopened.get("k")) is None
    reopened.close()
    assert rows(tier.path) == {}


def test_the_size_limit_evicts_the_least_recently_used(tmp_path: Path) -> None:
    limited = DiskTier(tmp_path, size_limit=20_000)
    try:
        for i in range(10):
            limited.put(f"key-{i}", entry("x" * 1000))
        assert asyncio.run(limited.get("key-0")) is not None  # used again: now the newest
        for i in range(10, 40):
            limited.put(f"key-{i}", entry("x" * 1000))
        limited.close()
        kept = rows(limited.path)
        with sqlite3.connect(limited.path) as db:
            (total,) = db.execute("SELECT bytes FROM totals").fetchone()
            (summed,) = db.execute("SELECT SUM(size) FROM responses").fetchone()
        assert total == summed <= 20_000
        assert "key-39" in kept and "key-1" not in kept
        assert "key-0" in kept or len(kept) < 19  # touched after the first ten: kept longest
    finally:
        limited.close()


def test_an_entry_larger_than_the_limit_is_not_stored(tmp_path: Path) -> None:
    small = DiskTier(tmp_path, size_limit=500)
    small.put("big", entry("x" * 1000))
    small.put("fits", entry("ok"))
    small.close()
    assert set(rows(small.path)) == {"fits"}


def test_expired_entries_are_misses(tier: DiskTier) -> None:
    tier.put("old", Entry(Reply("stale", Usage(), None, None), expires=1.0))
    assert asyncio.run(tier.get("old")) is None
    tier.close()
    assert rows(tier.path) == {}


def _garbage(path: Path) -> None:
    path.write_bytes(b"this was never a database " * 400)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


@pytest.mark.parametrize("damage", [_garbage, _truncated], ids=["garbage", "truncated"])
def test_a_damaged_file_is_logged_once_and_rebuilt(
    provider_simulator: ProviderSimulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    damage: Callable[[Path], None],
) -> None:
    directory = tmp_path / "responses"
    lm = LM("openai/test-model", api_base=provider_simulator.openai_base_url, api_key="sk-x")
    try:
        configure_cache(enable_memory_cache=False, disk_cache_dir=directory)
        for i in range(200):  # enough pages that a truncation cuts into the tables
            lm(f"prompt {i} " + "padding " * 20)
        cache.reset()  # closes the file: everything is in it, no WAL left
        damage(directory / DB_NAME)
        configure_cache(enable_memory_cache=False, disk_cache_dir=directory)
        sent = len(provider_simulator.requests)
        with caplog.at_level(logging.WARNING, logger="dspy_async"):
            answers = [lm(f"prompt {i} " + "padding " * 20) for i in range(3)]
            again = [lm(f"prompt {i} " + "padding " * 20) for i in range(3)]
        assert not any(a.cached for a in answers)  # the old entries are gone with the file
        assert all(a.cached for a in again)  # the new file works
        assert len(provider_simulator.requests) == sent + 3
        damaged = [r for r in caplog.records if "is damaged" in r.getMessage()]
        assert len(damaged) == 1
        cache.reset()
        with sqlite3.connect(directory / DB_NAME) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        cache.reset()


def test_a_file_from_a_newer_format_is_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tmp_path.joinpath(DB_NAME).touch()
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        db.execute("PRAGMA user_version = 99")
    newer = DiskTier(tmp_path, size_limit=1 << 20)
    with caplog.at_level(logging.WARNING, logger="dspy_async"):
        newer.put("k", entry("x"))
        assert asyncio.run(newer.get("k")) is None
    newer.close()
    assert "newer dspy-async" in caplog.text
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (99,)
