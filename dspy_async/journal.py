"""A batch's journal: each finished item recorded in a SQLite file, so that running the same
batch again skips what is done (`module.batch(items, journal="run.sqlite")`).

One row per item: its index in the input, a key of its inputs (SHA-256 of their JSON), and its
outcome as JSON, never pickle: a result (a Prediction with its values, usage and attempts, or
a plain JSON value) or an error (its type, message, status and attempts). A rerun hands over
the recorded results of the items whose index and inputs match, read back as Predictions with
the signature's types, and runs the rest: failed items are run again, and their row replaced.

One thread owns the connection (sqlite3, WAL mode), so the runtime loop never waits on the
disk: the loop queues each finished item and goes on; the thread writes whatever has queued
up in one transaction (group commit), and only then does the batch hand those items over.
So an item anyone has seen is on disk, and a process killed with SIGKILL loses at most the
items in flight. A committed WAL transaction survives the process; with `synchronous=NORMAL`
only a power cut could take back the last ones.

    CREATE TABLE items (idx INTEGER PRIMARY KEY, key TEXT, ok INTEGER, outcome TEXT)
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT)    -- format, program
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping
from typing import Any

import pydantic
import pydantic_core

from .errors import ConfigurationError
from .prediction import Prediction
from .records import Attempt, Usage, Wait
from .signatures import Signature, field_values

__all__ = ["Journal", "decode", "encode", "inputs_key"]

logger = logging.getLogger("dspy_async")

FORMAT = "1"
# The most queued messages one transaction takes; more wait for the next.
MAX_GROUP = 2048

Finished = tuple[int, Any]
Listener = Callable[[list[Finished], BaseException | None], None]
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    idx INTEGER PRIMARY KEY, key TEXT NOT NULL, ok INTEGER NOT NULL, outcome TEXT NOT NULL
);
"""


def inputs_key(inputs: Mapping[str, Any]) -> str:
    """A key of an item's inputs: the SHA-256 of their JSON, keys sorted (a value JSON
    cannot hold counts by its repr)."""
    plain = pydantic_core.to_jsonable_python(dict(inputs), fallback=repr)
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def encode(outcome: Any) -> tuple[bool, str]:
    """Whether `outcome` is a result (or an error), and its JSON. Raises
    `pydantic_core.PydanticSerializationError` for a result JSON cannot hold."""
    if isinstance(outcome, BaseException):
        return False, json.dumps({"error": _error_document(outcome)}, ensure_ascii=False)
    if isinstance(outcome, Prediction):
        document: dict[str, Any] = {"prediction": _prediction_document(outcome)}
    else:
        document = {"value": pydantic_core.to_jsonable_python(outcome)}
    return True, json.dumps(document, ensure_ascii=False)


def decode(text: str, signature: type | None = None) -> Any:
    """The result `encode` wrote: a Prediction (its values typed by `signature`'s outputs,
    when they are its fields) or a plain JSON value."""
    document = json.loads(text)
    if "prediction" in document:
        return _prediction(document["prediction"], signature)
    return document["value"]


def _prediction_document(prediction: Prediction) -> dict[str, Any]:
    document: dict[str, Any] = {
        "values": pydantic_core.to_jsonable_python(prediction.to_dict()),
        "usage": dataclasses.asdict(prediction.usage),
        "attempts": [dataclasses.asdict(attempt) for attempt in prediction.attempts],
    }
    completions = prediction.completions
    if completions is not None and len(completions) > 1:
        document["completions"] = [
            pydantic_core.to_jsonable_python(completion.to_dict()) for completion in completions
        ]
    return document


def _error_document(error: BaseException) -> dict[str, Any]:
    kind = type(error)
    attempts = getattr(error, "attempts", None) or ()
    return {
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": str(error),
        "status_code": getattr(error, "status_code", None),
        "attempts": [dataclasses.asdict(a) for a in attempts if isinstance(a, Attempt)],
    }


def _prediction(document: Mapping[str, Any], signature: type | None) -> Prediction:
    usage = _record(Usage, document["usage"])
    attempts = [_attempt(attempt) for attempt in document["attempts"]]
    values = _typed(document["values"], signature)
    first = Prediction(values, usage=usage, attempts=attempts)
    completions = document.get("completions")
    if not completions:
        return first
    # The first completion carries the whole usage and every attempt, the others none: the
    # sums from_completions takes are then the ones recorded.
    others = [Prediction(_typed(values, signature)) for values in completions[1:]]
    return Prediction.from_completions([first, *others], signature=signature)


def _typed(values: Mapping[str, Any], signature: type | None) -> dict[str, Any]:
    """`values` validated into the signature's output types (models, enums, ...) when they
    are exactly its output fields; as JSON read them otherwise."""
    if not (isinstance(signature, type) and issubclass(signature, Signature)):
        return dict(values)
    if set(values) != set(signature.output_fields):
        return dict(values)
    try:
        return field_values(signature.output_model.model_validate(values))
    except pydantic.ValidationError:
        return dict(values)


def _record(kind: type[Any], data: Mapping[str, Any]) -> Any:
    names = {field.name for field in dataclasses.fields(kind)}
    return kind(**{name: value for name, value in data.items() if name in names})


def _attempt(data: Mapping[str, Any]) -> Attempt:
    fields = dict(data)
    fields["usage"] = _record(Usage, fields.get("usage") or {})
    fields["gates"] = tuple(_record(Wait, gate) for gate in fields.get("gates") or ())
    attempt: Attempt = _record(Attempt, fields)
    return attempt


class Journal:
    """One batch's journal file, written by its own thread; used from the runtime loop."""

    def __init__(
        self, path: str, program: str, signature: type | None, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.path = path
        self.program = program
        self.signature = signature
        self._loop = loop
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._listener: Listener | None = None
        self._unencodable_warned = False
        self._thread = threading.Thread(target=self._serve, name="dspy-async-journal", daemon=True)
        self._thread.start()

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], program: str, signature: type | None
    ) -> Journal:
        """Open (or create) the journal at `path` for batches of `program`; ConfigurationError
        if it is no journal, or one that another program wrote."""
        journal = cls(os.fspath(path), program, signature, asyncio.get_running_loop())
        try:
            await journal._ask(journal._open)
        except BaseException:
            await journal.aclose()
            raise
        return journal

    def listen(self, listener: Listener) -> None:
        """Call `listener(items, error)` on the loop after each write: the items now on disk
        (or not, with the error that stopped them)."""
        self._listener = listener

    async def lookup(self, chunk: list[tuple[int, Any]]) -> list[tuple[str | None, bool, Any]]:
        """For each `(index, inputs)`: its key, and whether the journal holds its result (and
        which), read back off the loop."""
        found: list[tuple[str | None, bool, Any]] = await self._ask(self._lookup, chunk)
        return found

    def record(self, index: int, key: str, outcome: Any) -> None:
        """Queue a finished item; the listener hears of it once it is written."""
        self._queue.put(("record", index, key, outcome))

    async def aclose(self) -> None:
        """Write what is queued, then close the file and end the thread."""
        if self._thread.is_alive():
            await self._ask(None)

    # -- on the journal's thread --------------------------------------------------------

    async def _ask(self, job: Callable[..., Any] | None, *args: Any) -> Any:
        reply: asyncio.Future[Any] = self._loop.create_future()
        reply.add_done_callback(_retrieve)  # an error nobody awaits any more is not logged
        self._queue.put(("ask", job, args, reply))
        # Not cancelled with the caller: the thread would set the result of a dead future.
        return await asyncio.shield(reply)

    def _serve(self) -> None:
        self._connection: sqlite3.Connection | None = None
        try:
            while True:
                group = [self._queue.get()]
                while len(group) < MAX_GROUP:
                    try:
                        group.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                records = [message[1:] for message in group if message[0] == "record"]
                if records:
                    self._write(records)
                for message in group:
                    if message[0] == "ask" and not self._answer(*message[1:]):
                        return
        finally:
            self._close()

    def _answer(
        self, job: Callable[..., Any] | None, args: tuple[Any, ...], reply: asyncio.Future[Any]
    ) -> bool:
        """Run an asked-for job (None: close the file) and settle its future; False once
        closed, which ends the thread."""
        try:
            outcome, error = (job if job is not None else self._close)(*args), None
        except BaseException as exc:
            outcome, error = None, exc
        self._call_loop(_settle, reply, outcome, error)
        return job is not None

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _call_loop(self, callback: Callable[..., None], *args: Any) -> None:
        # The loop closes only as the process exits, when no one waits for the answer.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(callback, *args)

    def _open(self) -> None:
        try:
            connection = sqlite3.connect(self.path, isolation_level=None)
            self._connection = connection
            connection.execute("PRAGMA busy_timeout = 5000")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.executescript(_SCHEMA)
            connection.execute(
                "INSERT OR IGNORE INTO meta VALUES ('format', ?), ('program', ?)",
                (FORMAT, self.program),
            )
            meta = dict(connection.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"batch journal {self.path!r} cannot be used as a journal: {exc}"
            ) from None
        if meta.get("format") != FORMAT:
            raise ConfigurationError(
                f"batch journal {self.path!r} has format {meta.get('format')!r}; this version "
                f"of dspy-async writes format {FORMAT!r}: use another file"
            )
        if meta.get("program") != self.program:
            raise ConfigurationError(
                f"batch journal {self.path!r} holds the results of {meta.get('program')!r}, "
                f"not of {self.program!r}: give this batch another file, or delete it to "
                "start over"
            )

    def _lookup(self, chunk: list[tuple[int, Any]]) -> list[tuple[str | None, bool, Any]]:
        assert self._connection is not None
        keys = [inputs_key(inputs) if isinstance(inputs, Mapping) else None for _, inputs in chunk]
        indexes = [index for index, _ in chunk]
        rows = self._connection.execute(
            "SELECT idx, key, outcome FROM items WHERE ok = 1 AND idx BETWEEN ? AND ?",
            (min(indexes), max(indexes)),
        ).fetchall()
        recorded = {index: (key, outcome) for index, key, outcome in rows}
        found: list[tuple[str | None, bool, Any]] = []
        for index, key in zip(indexes, keys, strict=True):
            row = recorded.get(index)
            if key is None or row is None or row[0] != key:
                found.append((key, False, None))
                continue
            try:
                found.append((key, True, decode(row[1], self.signature)))
            except (ValueError, LookupError, TypeError):  # unreadable: run the item again
                found.append((key, False, None))
        return found

    def _write(self, records: list[tuple[Any, ...]]) -> None:
        rows = []
        for index, key, outcome in records:
            try:
                ok, text = encode(outcome)
            except (pydantic_core.PydanticSerializationError, TypeError, ValueError) as exc:
                self._warn_unencodable(index, exc)
                continue
            rows.append((index, key, int(ok), text))
        finished = [(index, outcome) for index, _, outcome in records]
        error: BaseException | None = None
        try:
            assert self._connection is not None
            with self._connection:  # one transaction for the whole group
                self._connection.execute("BEGIN")
                self._connection.executemany(
                    "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?)", rows
                )
        except sqlite3.Error as exc:
            error = exc
        if self._listener is not None:
            self._call_loop(self._listener, finished, error)

    def _warn_unencodable(self, index: int, exc: Exception) -> None:
        if not self._unencodable_warned:
            self._unencodable_warned = True
            logger.warning(
                "batch journal %r: the result of item %d cannot be written as JSON (%s); "
                "such items are not recorded, and run again next time",
                *(self.path, index, exc),
            )


def _retrieve(reply: asyncio.Future[Any]) -> None:
    if not reply.cancelled():
        reply.exception()


def _settle(reply: asyncio.Future[Any], outcome: Any, error: BaseException | None) -> None:
    if reply.done():
        return
    if error is not None:
        reply.set_exception(error)
    else:
        reply.set_result(outcome)
