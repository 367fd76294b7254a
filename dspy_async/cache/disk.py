"""The disk tier: one SQLite file in WAL mode, shared by every process that opens it.

Why the standard library's `sqlite3` and not diskcache (DSPy's choice): diskcache pickles values
by default, a code-execution hole for anyone who can write to the cache directory
(CVE-2025-69872, which no release fixes; the project has had no release since 2023), and all
we need of it is a keyed table of JSON blobs with a size bound, which is a page of SQL.

Every statement runs on one dedicated thread per tier: a lookup never blocks the event loop, a
connection stays on the thread that made it, and a write is done before any lookup queued
after it. Processes share the file safely: WAL lets readers work beside the one writer, and
each write is one short `BEGIN IMMEDIATE` transaction that waits up to BUSY_TIMEOUT for another
process's. The size counted is the bytes of keys and values, kept in the `totals` row by
triggers; a write that takes it past the limit evicts expired entries, then the least recently
used, down to LOW_WATER of the limit.

A damaged file (not a database, truncated, a malformed page) is reported by SQLite on the first
statement that meets the damage. It is then logged once, removed and created anew, and the
statement is tried again; opening and rebuilding hold a lock file, so two processes never
rebuild at once, nor remove the file the other has just made.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from .. import _forksafe
from .entry import Entry, decode

__all__ = ["DB_NAME", "DiskTier"]

logger = logging.getLogger("dspy_async")

T = TypeVar("T")

DB_NAME = "responses.sqlite3"
SCHEMA_VERSION = 1
BUSY_TIMEOUT = 10.0  # seconds a write waits for another process's transaction
LOW_WATER = 0.9  # eviction frees down to this share of the limit, so it is not run every write
EVICT_BATCH = 256
DAMAGED = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS responses (
        key TEXT PRIMARY KEY, value BLOB NOT NULL, size INTEGER NOT NULL,
        accessed REAL NOT NULL, expires REAL)""",
    "CREATE INDEX IF NOT EXISTS responses_accessed ON responses (accessed)",
    "CREATE INDEX IF NOT EXISTS responses_expires ON responses (expires)",
    "CREATE TABLE IF NOT EXISTS totals (id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER)",
    "INSERT OR IGNORE INTO totals VALUES (0, 0)",
    """CREATE TRIGGER IF NOT EXISTS responses_added AFTER INSERT ON responses
        BEGIN UPDATE totals SET bytes = bytes + NEW.size; END""",
    """CREATE TRIGGER IF NOT EXISTS responses_removed AFTER DELETE ON responses
        BEGIN UPDATE totals SET bytes = bytes - OLD.size; END""",
    """CREATE TRIGGER IF NOT EXISTS responses_resized AFTER UPDATE OF size ON responses
        BEGIN UPDATE totals SET bytes = bytes - OLD.size + NEW.size; END""",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
UPSERT = """INSERT INTO responses (key, value, size, accessed, expires) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET value = excluded.value, size = excluded.size,
    accessed = excluded.accessed, expires = excluded.expires"""


class _Unusable(Exception):
    """The tier cannot work here (a read-only directory, a file of a newer format)."""


class DiskTier:
    """Entries in `directory`/responses.sqlite3, at most `size_limit` bytes of them."""

    def __init__(self, directory: Path, size_limit: int) -> None:
        self.path = directory / DB_NAME
        self.size_limit = size_limit
        self._lock = _forksafe.lock()  # guards the executor's creation and shutdown
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pid = -1
        self._closed = False
        # Only the executor's thread touches these.
        self._db: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._unusable = False
        self._warned = False

    async def get(self, key: str) -> Entry | None:
        future = self._submit(self._get, key)
        return None if future is None else await asyncio.wrap_future(future)

    def put(self, key: str, entry: Entry) -> None:
        """Queue the write; it is done before any lookup queued after it."""
        self._submit(self._put, key, entry.encode(), entry.expires)

    def delete(self, key: str) -> None:
        self._submit(self._run, _delete, key)

    def close(self) -> None:
        """Finish the queued writes and close the file."""
        with self._lock:
            executor, self._executor, self._closed = self._executor, None, True
        if executor is not None and self._pid == os.getpid():
            executor.submit(self._disconnect)
            executor.shutdown(wait=True)

    def _submit(
        self, function: Callable[..., T], *args: object
    ) -> concurrent.futures.Future[T] | None:
        pid = os.getpid()
        with self._lock:
            if self._closed:
                return None  # a call that began before configure_cache() replaced this tier
            if self._executor is None or self._pid != pid:
                # A forked child has no copy of the parent's thread, and must not touch the
                # parent's connection: it starts its own thread and opens its own.
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="dspy-async-cache"
                )
                self._pid, self._db = pid, None
            return self._executor.submit(function, *args)

    # -- on the tier's thread ------------------------------------------------------------

    def _get(self, key: str) -> Entry | None:
        now = time.time()
        value = self._run(_lookup, key, now)
        if value is None:
            return None
        entry = decode(value)
        if entry is None:  # written by another format: a miss, and room for a good one
            self._run(_delete, key)
            return None
        # The access time is written after the answer is handed back, by the same thread.
        self._submit(self._run, _touch, key, now)
        return entry

    def _put(self, key: str, value: bytes, expires: float | None) -> None:
        size = len(key) + len(value)
        if size <= self.size_limit:
            self._run(_store, key, value, size, expires, self.size_limit)

    def _run(self, operation: Callable[..., T], *args: object) -> T | None:
        """`operation(db, *args)`, once more after rebuilding a damaged file; None if the tier
        cannot be used (logged once) or the statement failed (a lock held for too long)."""
        if self._unusable:
            return None
        for retry in (False, True):
            try:
                return operation(self._open(), *args)
            except sqlite3.DatabaseError as error:
                if _damaged(error) and not retry:
                    self._rebuild(error)
                    continue
                self._warn_once("failed", error)
            except (_Unusable, OSError) as error:
                self._unusable = True
                self._warn_once("is not used", error)
            break
        return None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            with self._file_lock():
                try:
                    self._db = self._connect()
                except sqlite3.DatabaseError as error:
                    if not _damaged(error):
                        raise
                    _warn_damaged(self.path, error)
                    _remove(self.path)
                    self._db = self._connect()
        return self._db

    def _connect(self) -> sqlite3.Connection:
        """Open (or create) the file and its tables; the caller holds the file lock."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # prompts and answers
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # WAL stays consistent; fsync at checkpoint
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise _Unusable(f"{self.path} was written by a newer dspy-async")
            if version < SCHEMA_VERSION:
                with _transaction(db):
                    for statement in SCHEMA:
                        db.execute(statement)
        except BaseException:
            db.close()
            raise
        self._identity = _identity(self.path)
        return db

    def _rebuild(self, error: sqlite3.DatabaseError) -> None:
        _warn_damaged(self.path, error)
        self._disconnect()
        with self._file_lock():
            # Another process may have rebuilt it since we opened it: then keep its new file.
            if _identity(self.path) == self._identity:
                _remove(self.path)

    def _disconnect(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Held while opening or rebuilding, by this process's one tier thread at a time."""
        try:
            import fcntl
        except ImportError:  # not POSIX: rebuilds there are not guarded against each other
            yield
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.path.with_name(DB_NAME + ".lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _warn_once(self, what: str, error: BaseException) -> None:
        log = logger.debug if self._warned else logger.warning
        self._warned = True
        log("dspy-async response cache: the disk tier %s %s (%s)", self.path, what, error)


def _lookup(db: sqlite3.Connection, key: str, now: float) -> bytes | None:
    row = db.execute("SELECT value, expires FROM responses WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    value, expires = row
    if expires is not None and expires <= now:
        db.execute("DELETE FROM responses WHERE key = ?", (key,))
        return None
    return bytes(value)


def _touch(db: sqlite3.Connection, key: str, now: float) -> None:
    db.execute("UPDATE responses SET accessed = ? WHERE key = ?", (now, key))


def _delete(db: sqlite3.Connection, key: str) -> None:
    db.execute("DELETE FROM responses WHERE key = ?", (key,))


def _store(
    db: sqlite3.Connection, key: str, value: bytes, size: int, expires: float | None, limit: int
) -> None:
    now = time.time()
    with _transaction(db):
        db.execute(UPSERT, (key, value, size, now, expires))
        if _total(db) > limit:
            _evict(db, int(limit * LOW_WATER), now)


def _evict(db: sqlite3.Connection, target: int, now: float) -> None:
    """Delete expired entries, then the least recently used, until at most `target` bytes."""
    db.execute("DELETE FROM responses WHERE expires <= ?", (now,))
    excess = _total(db) - target
    while excess > 0:
        rows = db.execute(
            "SELECT key, size FROM responses ORDER BY accessed LIMIT ?", (EVICT_BATCH,)
        ).fetchall()
        if not rows:
            return
        doomed = []
        for key, size in rows:
            doomed.append((key,))
            excess -= size
            if excess <= 0:
                break
        db.executemany("DELETE FROM responses WHERE key = ?", doomed)


def _total(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT bytes FROM totals").fetchone()[0])


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taking the write lock at once (waiting up to BUSY_TIMEOUT)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:  # a failed COMMIT too: the transaction must not stay open
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def _damaged(error: sqlite3.DatabaseError) -> bool:
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in DAMAGED


def _warn_damaged(path: Path, error: sqlite3.DatabaseError) -> None:
    logger.warning("dspy-async response cache: %s is damaged (%s); starting it anew", path, error)


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _remove(path: Path) -> None:
    """Remove the database and its WAL and shared-memory files (a stale WAL must not outlive
    the file it belongs to)."""
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        with contextlib.suppress(FileNotFoundError):
            path.with_name(name).unlink()
