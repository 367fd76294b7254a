"""Language models: the `BaseLM` contract every layer above calls, and `LM`, which calls a
provider over HTTP.

`BaseLM.acall` is the one engine; `__call__` is the same call made from sync code through the
hidden runtime loop. Subclasses implement `_generate` and inherit message handling and
thread-safe cumulative usage. `LM` runs every call on the runtime loop, whichever thread or
loop it comes from, so all callers share one connection pool and one concurrency limit.
"""

from __future__ import annotations

import abc
import functools
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

import httpx

from . import _checks, _forksafe, _http, _runtime, callbacks, events, history, usage
from ._messages import to_messages
from .errors import ConfigurationError, LMError
from .history import Recorded
from .pipeline import Answer, Call, compose, compose_call, trace
from .pipeline.budget import Budget
from .pipeline.cache import Cache, Verdict, check_rollout_id, split_options
from .pipeline.limiter import Limiter
from .pipeline.send import Send
from .pipeline.slots import Slots
from .providers import get_provider
from .providers.base import request_params
from .providers.exchange import Request
from .ratelimit.config import Account, RateLimit, for_lm
from .records import Attempt, Message, OutputSchema, ToolCall, Usage, spent
from .retry import AttemptFailed, RetryPolicy, call_with_retries
from .settings import settings
from .streaming import scope
from .streaming.reader import Sink
from .streaming.stream import AsyncTextStream, TextStream

__all__ = ["LM", "BaseLM", "LMResponse", "Message", "OutputSchema"]

logger = logging.getLogger("dspy_async")


@dataclass(frozen=True, slots=True)
class LMResponse:
    """What one LM call produced: the text, its token usage and every attempt it took.
    `usage` is what every attempt was billed, failed ones included (mostly zero). `cached`:
    the response cache answered, with no request (`usage.saved_tokens` says what it saved).
    `tool_calls`: the tools the model called, when the call offered tools (`text` is then the
    prose beside the calls, often empty)."""

    text: str
    usage: Usage
    model: str
    provider: str
    attempts: tuple[Attempt, ...]
    finish_reason: str | None = None
    cached: bool = False
    _verdict: Verdict | None = field(default=None, repr=False, compare=False)
    tool_calls: tuple[ToolCall, ...] = ()

    def accept(self) -> None:
        """Let the response cache keep this answer, which passed the caller's checks. Needed
        only after `defer_commit()` (the structured-output adapter's way of calling); other
        answers are kept at once."""
        if self._verdict is not None:
            self._verdict.accept()

    def reject(self) -> None:
        """Tell the response cache this answer failed the caller's checks: it is never served
        again, so asking again gets a fresh answer."""
        if self._verdict is not None:
            self._verdict.reject()


class BaseLM(abc.ABC):
    """A chat model. `usage` sums every call's tokens, safely across threads and tasks.

    `supports_native_structured` starts True; the adapter clears it after the provider rejects a
    native structured-output parameter, so later calls go out as plain chat.
    """

    def __init__(self, model: str, provider: str) -> None:
        self.model = model
        self.provider = provider
        self.supports_native_structured = True
        self._usage = Usage()
        self._history: deque[Recorded] = deque()
        # Guards this LM's mutable state (subclasses share it); unlocked in a forked child.
        self._lock = _forksafe.lock()

    def __getstate__(self) -> dict[str, Any]:
        # Copies (pickle, deepcopy) get a fresh lock and no history (as DSPy's copies), and
        # keep the usage counted so far.
        state = self.__dict__.copy()
        del state["_lock"]
        state.pop("_history", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = _forksafe.lock()
        self._history = deque()

    @property
    def history(self) -> list[dict[str, Any]]:
        """This LM's last calls, oldest first, as DSPy's `lm.history` has them (see
        history.py); a snapshot, safe to read while calls are adding to it."""
        with self._lock:
            return [recorded.entry() for recorded in self._history]

    def inspect_history(self, n: int = 1, file: TextIO | None = None) -> None:
        """Print this LM's last `n` calls (`dspy.inspect_history(n)` prints every LM's)."""
        history.pretty_print(self.history, n, file)

    def _remember(self, entry: Recorded, limit: int) -> None:
        with self._lock:
            self._history.append(entry)
            while len(self._history) > limit:
                self._history.popleft()

    @property
    def usage(self) -> Usage:
        """Token usage summed over every call of this LM, with the billed attempts of calls
        that failed (also counted in each open `dspy_async.track_usage()`)."""
        with self._lock:
            return self._usage

    async def acall(
        self,
        prompt: str | None = None,
        *,
        messages: list[Message] | None = None,
        output_schema: OutputSchema | None = None,
        **params: Any,
    ) -> LMResponse:
        """Send a prompt (as one user message) or a list of chat messages; await the response."""
        with callbacks.lm_call(self, prompt, messages, params) as seen:
            checked = to_messages(prompt, messages)
            streamed = scope.open_reply()  # None unless made by a stream (streaming/scope.py)
            try:
                response = await self._generate(checked, output_schema, params)
                if streamed is not None:
                    await streamed.rest(response.text)  # if no LM streamed it: at once
            except LMError as error:
                self._count(spent(error.attempts))  # a failed call can still have been billed
                raise
            finally:
                if streamed is not None:
                    streamed.close()
            self._count(response.usage)
            seen.outputs = outputs = history.entry_outputs(response)
            history.record(self, prompt, checked, params, response, outputs)
            return response

    def stream(
        self,
        prompt: str | None = None,
        *,
        messages: list[Message] | None = None,
        output_schema: OutputSchema | None = None,
        **params: Any,
    ) -> TextStream:
        """The call, streamed: iterate for the reply's text as it arrives; `.response` is the
        LMResponse once it ended. The request starts at once; see `streaming/`."""
        to_messages(prompt, messages)  # bad input fails here, not at the first chunk
        return TextStream(
            functools.partial(self._streamed, prompt, messages, output_schema, params)
        )

    def astream(
        self,
        prompt: str | None = None,
        *,
        messages: list[Message] | None = None,
        output_schema: OutputSchema | None = None,
        **params: Any,
    ) -> AsyncTextStream:
        """`stream`, for `async for` on any event loop."""
        to_messages(prompt, messages)
        return AsyncTextStream(
            functools.partial(self._streamed, prompt, messages, output_schema, params)
        )

    async def _streamed(
        self,
        prompt: str | None,
        messages: list[Message] | None,
        output_schema: OutputSchema | None,
        params: dict[str, Any],
        put: Sink,
    ) -> LMResponse:
        with scope.streaming_to(lambda: put):
            return await self.acall(
                prompt, messages=messages, output_schema=output_schema, **params
            )

    def _count(self, billed: Usage) -> None:
        with self._lock:
            self._usage += billed
        usage.record(f"{self.provider}/{self.model}", billed)

    def __call__(
        self,
        prompt: str | None = None,
        *,
        messages: list[Message] | None = None,
        output_schema: OutputSchema | None = None,
        **params: Any,
    ) -> LMResponse:
        """The blocking form of `acall`, run on the hidden runtime loop."""
        return _runtime.run(
            self.acall(prompt, messages=messages, output_schema=output_schema, **params)
        )

    @abc.abstractmethod
    async def _generate(
        self,
        messages: list[Message],
        output_schema: OutputSchema | None,
        params: dict[str, Any],
    ) -> LMResponse:
        """Produce the response to validated `messages`; `params` override the LM's defaults."""


def _announce_retry(
    max_attempts: int, call: Call, failure: AttemptFailed, number: int, wait: float
) -> None:
    """Before a backoff: the trace, the log and the event say which attempt failed and why."""
    trace.current().backoff(failure, wait)  # the call's trace, current in its task
    error = failure.error
    status = f"HTTP {error.status_code}" if error.status_code else "no response"
    logger.warning(
        "%s/%s: attempt %d/%d failed (%s, %s); retrying in %.2f s",
        *(call.provider, call.model, number, max_attempts, status, type(error).__name__, wait),
    )
    if events.subscribed():
        events.emit(
            events.RetryEvent(
                call.id, call.provider, call.model, number, error.status_code, error, wait
            )
        )


class LM(BaseLM):
    """A chat model behind a provider's HTTP API: `LM("openai/gpt-4o-mini")`.

    The model id is `provider/model`, split at the first `/`. Providers: `openai` (and any
    OpenAI-compatible server, through `api_base`), `anthropic` and `ollama`. The key comes from
    `api_key` or the provider's environment variable. `temperature`, `max_tokens` and other
    keyword `params` are defaults each call may override. `timeout` bounds each attempt and
    `retry` the whole call; `max_concurrency` caps attempts in flight across every caller.
    `http_client` replaces the shared pooled client (the caller then owns and closes it).
    Response bodies over `max_response_bytes` are refused.

    Every call draws from its account's rate-limit budget (provider, origin, API key, model),
    shared by every LM, thread and batch using that account: limits are learned from the
    response headers, or given as `rpm=`/`tpm=`, or as `rate_limit=RateLimit(...)` (with
    `shared="redis://..."` for one budget across processes and hosts); `rate_limit=False`
    turns it off. `adaptive_concurrency=True` adapts the in-flight limit to a server's
    overload answers (429/503/529, timeouts), up to `max_concurrency`.
    """

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        api_base: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        timeout: float | None = 60.0,
        retry: RetryPolicy | None = None,
        max_concurrency: int | None = None,
        http_client: httpx.AsyncClient | None = None,
        max_response_bytes: int = _http.DEFAULT_MAX_RESPONSE_BYTES,
        rpm: int | None = None,
        tpm: int | None = None,
        rate_limit: RateLimit | Literal[False] | None = None,
        adaptive_concurrency: bool = False,
        cache: bool = True,
        rollout_id: int | None = None,
        **params: Any,
    ) -> None:
        provider_name, _, name = model.partition("/") if isinstance(model, str) else ("", "", "")
        if not provider_name or not name:
            raise ConfigurationError(
                f"model id {model!r} must be 'provider/model', e.g. 'openai/gpt-4o-mini'"
            )
        provider = get_provider(provider_name)
        # Every value is checked here, so a bad one fails now, not at the first call.
        timeout = _checks.positive_number("LM timeout", timeout, allow_none=True)
        max_concurrency = _checks.positive_int(
            "LM max_concurrency", max_concurrency, allow_none=True
        )
        max_response_bytes = _checks.positive_int("LM max_response_bytes", max_response_bytes)
        budgeted = for_lm(rate_limit, rpm=rpm, tpm=tpm)
        if not isinstance(adaptive_concurrency, bool):
            raise ConfigurationError("LM adaptive_concurrency must be True or False")
        self.cache = _checks.boolean("LM cache", cache)
        self.rollout_id = check_rollout_id(rollout_id)
        for arg, value, kind in (
            ("retry", retry, RetryPolicy),
            ("http_client", http_client, httpx.AsyncClient),
        ):
            if value is not None and not isinstance(value, kind):
                raise ConfigurationError(
                    f"LM {arg} must be a {kind.__name__} or None, not {_checks.shown(value)}"
                )
        defaults = {
            "temperature": _checks.non_negative_number(
                "LM temperature", temperature, allow_none=True
            ),
            "max_tokens": _checks.positive_int("LM max_tokens", max_tokens, allow_none=True),
            **params,
        }
        super().__init__(name, provider_name)
        self._endpoint = provider.endpoint(api_key, api_base)
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.max_concurrency = max_concurrency
        self.max_response_bytes = max_response_bytes
        self.params = {key: value for key, value in defaults.items() if value is not None}
        request_params(provider_name, provider.PARAMS, self.params)  # misspelt names, NaN
        self._http_client = http_client
        url = self._endpoint.url
        account = Account.of(provider_name, url, self._endpoint.secret, name)
        budget = None if budgeted is None else Budget(account, budgeted)
        # The gates of every attempt, outermost first (see pipeline/__init__.py).
        stages = [
            trace.Trace(),  # outermost, so that the attempt's span holds its gates' waits
            budget,
            Limiter(max_concurrency) if adaptive_concurrency else None,
            Slots(max_concurrency),
            None if budget is None else budget.checkpoint,
        ]
        self._stages = [stage for stage in stages if stage is not None]
        self._send = Send(timeout, max_response_bytes)
        self._attempt = compose(self._stages, self._send)
        # The gates of every call, around its retry loop (see pipeline/__init__.py).
        self._call_stages = (Cache(),)
        self._origin = (url.scheme, url.host, url.port)

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of every call."""
        return self._retry

    @retry.setter
    def retry(self, policy: RetryPolicy) -> None:
        self._retry = policy
        # Made once per policy: a bound method per call would be an object more for the
        # garbage collector to scan, for each of thousands of calls in flight.
        self._on_retry = functools.partial(_announce_retry, policy.max_attempts)

    @property
    def missing_key(self) -> str | None:
        """What to set before this LM can be called, if it was built without the API key its
        provider needs (its calls then raise ConfigurationError with this message); else None.
        """
        return self._endpoint.missing_key

    def __repr__(self) -> str:
        url = self._endpoint.url
        host = f"{url.scheme}://{url.host}" + (f":{url.port}" if url.port else "")
        model_id = f"{self.provider}/{self.model}"
        return f"LM({model_id!r}, host={host!r})"

    def _generate(
        self,
        messages: list[Message],
        output_schema: OutputSchema | None,
        params: dict[str, Any],
    ) -> Coroutine[Any, Any, LMResponse]:
        # A plain function: on the runtime loop the caller awaits `_call` itself, no frame more.
        return _runtime.arun(self._call(messages, output_schema, params))

    async def _call(
        self,
        messages: list[Message],
        output_schema: OutputSchema | None,
        params: dict[str, Any],
    ) -> LMResponse:
        """One call, on the runtime loop: its attempts through the pipeline, the waits between."""
        call = self._start_call(messages, output_schema, params)
        started = time.monotonic()
        with trace.call(call, messages) as traced:  # a no-op unless instrumented
            try:
                answer = await compose_call(self._call_stages, self._retries)(call)
            except LMError as error:
                if events.subscribed():
                    elapsed = time.monotonic() - started
                    events.emit(
                        events.FailureEvent(call.id, *self._names, error.attempts, error, elapsed)
                    )
                raise
            reply, attempts = answer.reply, answer.attempts
            billed = spent(attempts)
            traced.answered(reply, billed, cached=answer.cached)
        elapsed = time.monotonic() - started
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "%s/%s: answered in %.2f s after %d attempt(s), %d tokens%s",
                *self._names,
                *(elapsed, len(attempts), billed.total_tokens, " (cached)" * answer.cached),
            )
        if events.subscribed():
            provider, model = self._names
            events.emit(
                events.ResponseEvent(
                    call.id,
                    provider,
                    model,
                    attempts,
                    billed,
                    elapsed,
                    reply.finish_reason,
                    cached=answer.cached,
                )
            )
        text, tool_calls = reply.text, reply.tool_calls
        if call.request.structured and tool_calls:
            # Anthropic answers a structured call with the forced tool, whose input is the answer.
            text, tool_calls = json.dumps(tool_calls[0].args), ()
        return LMResponse(
            text,
            billed,
            self.model,
            self.provider,
            attempts,
            reply.finish_reason,
            answer.cached,
            answer.verdict,
            tool_calls,
        )

    def _retries(self, call: Call) -> Awaitable[Answer]:
        """The innermost link of the call chain: the attempts and the backoffs between them.
        A streamed call (its cache missed) sends them through a Send that hands its text on.
        A plain function handing on the retry loop: no frame of its own per call in flight."""
        sink = scope.take()
        attempt = (
            self._attempt if sink is None else compose(self._stages, self._send.streaming(sink))
        )
        return call_with_retries(
            attempt,
            call,
            self.retry,
            enabled=settings.retry_enabled,
            on_retry=self._on_retry,
            answer=Answer,
        )

    def _start_call(
        self,
        messages: list[Message],
        output_schema: OutputSchema | None,
        params: dict[str, Any],
    ) -> Call:
        """The call's request and where it goes; on the runtime loop, which owns the pool."""
        if self.missing_key is not None:  # built without a key: refuse, send nothing
            raise ConfigurationError(self.missing_key)
        cache, rollout_id, params = split_options(
            params, cache=self.cache, rollout_id=self.rollout_id
        )
        schema = output_schema if self.supports_native_structured else None
        provider = get_provider(self.provider)
        request = Request(
            self.provider,
            provider,
            self._endpoint,
            provider.build_body(self.model, messages, {**self.params, **params}, schema),
            structured=schema is not None,
        )
        sender: _http.Sender | None = self._http_client
        slots = None
        if sender is None:
            pool = _http.shared_pool(self._origin)
            sender, slots = pool.transport, pool.slots
        call_id = events.new_call_id()
        return Call(call_id, *self._names, request, sender, slots, cache, rollout_id)

    @property
    def _names(self) -> tuple[str, str]:
        return self.provider, self.model
