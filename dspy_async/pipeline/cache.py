"""The Cache stage, around the whole retry loop: the response cache (`dspy_async.cache`).

    recall    the call's key (cache/key.py), then memory: a hit answers at once
    follow    an identical call already in flight: wait for its answer (single-flight)
    lead      else lead that flight: ask disk and Redis, and on a miss run the rest of the
              chain, the retry loop
    commit    a plain call's answer is kept at once; a call made after `defer_commit()`
              (by the structured-output adapter, which validates replies) is kept only when
              the caller says `response.accept()`, and `response.reject()` makes sure an
              answer that failed validation is never served again

Off costs nothing: with no cache configured, or `cache=False` for the LM or the call, the
stage hands the call on before computing anything. `cache=` and `rollout_id=` are call
options, never sent: `rollout_id` only separates entries (as in DSPy: a new rollout of the
same request gets a fresh answer, and is then cached under its own id).
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from .. import _checks
from .._noop import NOTHING
from ..cache import ResponseCache, current
from ..cache.flights import flights
from ..cache.key import cache_key
from ..errors import ConfigurationError
from ..providers.base import Reply
from ..records import Attempt, Usage, Wait
from . import Answer, Call, CallHandler

__all__ = [
    "OPTIONS",
    "Cache",
    "Verdict",
    "check_rollout_id",
    "defer_commit",
    "nth_completion",
    "restore_commit",
    "split_options",
]

T = TypeVar("T")

OPTIONS = frozenset({"cache", "rollout_id"})
"""Call parameters the cache takes for itself: they are never sent to the provider."""

# Set for the task that makes the calls (and the work it starts), read by the stage.
_on_accept: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dspy_async_commit_on_accept", default=False
)
_completion: contextvars.ContextVar[int] = contextvars.ContextVar(
    "dspy_async_completion", default=0
)


def nth_completion(index: int) -> AbstractContextManager[None]:
    """Calls made inside are completion `index` of several asked of one request (Predict's
    `n`): each has its own entry, so that n identical requests get n answers, not one shared.
    Already so (every call of a one-completion step is completion 0): nothing to set."""
    return NOTHING if _completion.get() == index else _Set(_completion, index)


def defer_commit() -> bool:
    """Calls made from now on (in this task, and the work it starts) are cached only once the
    caller validates the answer and calls `response.accept()`, until `restore_commit` is
    given what this returned. Two calls, not a context manager: a `with` suspended across
    the call would hold three objects more for each call in flight."""
    deferred = _on_accept.get()
    _on_accept.set(True)
    return deferred


def restore_commit(deferred: bool) -> None:
    """End what `defer_commit` began (it returned `deferred`)."""
    _on_accept.set(deferred)


class _Set(Generic[T]):
    """`var` set to `value` inside the `with` block. A class rather than a generator: one
    object per call in flight, not three."""

    __slots__ = ("_token", "_value", "_var")

    def __init__(self, var: contextvars.ContextVar[T], value: T) -> None:
        self._var = var
        self._value = value

    def __enter__(self) -> None:
        self._token = self._var.set(self._value)

    def __exit__(self, *exc_info: object) -> None:
        self._var.reset(self._token)


def split_options(
    params: Mapping[str, Any], *, cache: bool, rollout_id: int | None
) -> tuple[bool, int | None, dict[str, Any]]:
    """The call's `cache` and `rollout_id` (the LM's defaults where it sets none), checked,
    and the parameters left to send (`params` itself when it holds neither option)."""
    if "cache" not in params and "rollout_id" not in params:
        return cache, rollout_id, params if isinstance(params, dict) else dict(params)
    if "cache" in params:
        cache = _checks.boolean("the cache option", params["cache"])
    if "rollout_id" in params:
        rollout_id = check_rollout_id(params["rollout_id"])
    return cache, rollout_id, {k: v for k, v in params.items() if k not in OPTIONS}


def check_rollout_id(value: object) -> int | None:
    """`value` if it is a whole number or None (no rollout), as DSPy takes it."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise ConfigurationError(
        f"rollout_id must be a whole number or None, not {_checks.shown(value)}"
    )


class Verdict:
    """What the caller's validation says of an answer, told to the cache. Safe from any thread.

    `accept()` keeps an answer the provider just gave, so that later calls are served it;
    `reject()` makes sure it is never served: an answer not kept yet is dropped, one already
    kept (or served from the cache) is deleted from every tier.
    """

    __slots__ = ("_cache", "_key", "_pending")

    def __init__(self, store: ResponseCache, key: str, pending: Reply | None) -> None:
        self._cache = store
        self._key = key
        self._pending = pending

    def __reduce__(self) -> tuple[Callable[[], None], tuple[()]]:
        # A copy of a response (pickled to another process, deep-copied) reaches no cache.
        return _no_verdict, ()

    def accept(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            self._cache.put(self._key, pending)

    def reject(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            self._cache.delete(self._key)


def _no_verdict() -> None:
    return None


class Cache:
    """Answer a call from the response cache, or through one flight per key; keep the answer."""

    def __call__(self, call: Call, proceed: CallHandler) -> Awaitable[Answer]:
        store = current() if call.cache else None
        if store is None:  # off: the call goes on, with no key made and no frame of this stage
            return proceed(call)
        return self._through(store, call, proceed)

    async def _through(self, store: ResponseCache, call: Call, proceed: CallHandler) -> Answer:
        started = time.monotonic()
        request = call.request
        key = cache_key(
            call.provider, request.endpoint.url, request.body, call.rollout_id, _completion.get()
        )
        # No wait between asking memory and joining or leading a flight: a call that finished
        # in between would otherwise be in neither, and this one would ask the provider again.
        entry = store.recall(key)
        if entry is not None:
            return _served(entry.reply, Verdict(store, key, None), time.monotonic() - started)
        registry = flights()
        flight = registry.get(key)
        if flight is not None:
            reply = await flight.wait()
            if reply is not None:
                waited = Wait("flight", time.monotonic() - started)
                return _served(reply, Verdict(store, key, None), 0.0, waited)
            # The leader failed: this call makes its own, with its own retries.
            return _kept(store, key, await proceed(call))
        with registry.lead(key) as flight:
            entry = await store.fetch(key)  # disk, Redis: followers wait for this too
            if entry is not None:
                flight.land(entry.reply)
                return _served(entry.reply, Verdict(store, key, None), time.monotonic() - started)
            answer = await proceed(call)
            flight.land(answer.reply)
        return _kept(store, key, answer)


def _kept(store: ResponseCache, key: str, answer: Answer) -> Answer:
    verdict = Verdict(store, key, answer.reply)
    if not _on_accept.get():
        verdict.accept()  # no validation to wait for: kept before any other call can ask
    return dataclasses.replace(answer, verdict=verdict)


def _served(reply: Reply, verdict: Verdict, elapsed: float, *gates: Wait) -> Answer:
    """An answer no provider was asked for: it spends no tokens and saves the reply's."""
    usage = Usage(saved_tokens=reply.usage.total_tokens)
    attempt = Attempt(1, "ok", elapsed=elapsed, usage=usage, gates=gates, cached=True)
    return Answer(dataclasses.replace(reply, usage=usage), (attempt,), True, verdict)
