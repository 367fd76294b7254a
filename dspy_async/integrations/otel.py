"""OpenTelemetry spans and metrics for dspy-async, per the GenAI semantic conventions.

`dspy_async.instrument()` installs `OTelTracer` as the tracer of `pipeline/trace.py`; this is
the one module that imports OpenTelemetry, and only its API (the SDK and the exporters are
the application's). The spans of one Predict step whose call waited for a slot, got a 429
and succeeded after the backoff:

    Predict(QA)            INTERNAL  dspy_async.module, dspy_async.signature
      chat gpt-4o-mini     CLIENT    gen_ai.* request, response and usage; server.*;
                                     error.type if the call failed
        attempt            INTERNAL  dspy_async.attempt.number, http.response.status_code,
                                     error.type and dspy_async.attempt.retryable if it failed
          wait slot        INTERNAL  time at a gate before sending (dspy_async.wait.gate, and
                                     dspy_async.wait.reason if the gate gave one)
        wait backoff       INTERNAL  the wait before the next attempt (dspy_async.wait.reason:
                                     "retry_after" if the server asked for it, else "backoff")
        attempt
          wait slot

Wait spans are made when the wait is over, with its real start and end, so the gates that
make attempts wait need no tracing code; a gate that did not make the attempt wait at all
(0 s recorded) draws none. A call the response cache answered has `dspy_async.cache.hit`
and no usage. Each call also records the `gen_ai.client.operation.duration` (s) histogram,
and `gen_ai.client.token.usage` ({token}, by `gen_ai.token.type`) when tokens were used.

`error.type` is the canonical name of the exception the call or attempt failed with, e.g.
`dspy_async.errors.RateLimitError`, `dspy_async.errors.ProviderTimeoutError`,
`asyncio.exceptions.CancelledError`. Usage attributes count every billed attempt (a 200 whose
body was unusable included); cache tokens are a part of `gen_ai.usage.input_tokens`, set
only when the provider reported some. Prompts and replies (`gen_ai.input.messages`,
`gen_ai.system_instructions`, `gen_ai.output.messages`, JSON strings) are opt-in; request
headers, and with them the API key, are never recorded.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from .. import __version__
from ..errors import LMError
from ..pipeline import Call, Handler
from ..pipeline import trace as hooks
from ..providers.base import Reply
from ..records import Message, Usage, Wait, spent
from ..retry import AttemptFailed, AttemptState

__all__ = ["CAPTURE_CONTENT_ENV", "OTelTracer"]

CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
# The conventions' advisory bucket boundaries for the two histograms.
DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01 s ... 81.92 s
TOKEN_BUCKETS = tuple(4**i for i in range(14))  # 1 ... 67,108,864 tokens
DEFAULT_PORTS = {"http": 80, "https": 443}

# Request attributes, and the body fields that carry them (OpenAI and Anthropic at the top
# level, Ollama in "options", with its own name for max_tokens).
NUMERIC_REQUEST = (
    ("gen_ai.request.max_tokens", ("max_tokens", "max_completion_tokens", "num_predict")),
    ("gen_ai.request.temperature", ("temperature",)),
    ("gen_ai.request.top_p", ("top_p",)),
    ("gen_ai.request.top_k", ("top_k",)),
    ("gen_ai.request.frequency_penalty", ("frequency_penalty",)),
    ("gen_ai.request.presence_penalty", ("presence_penalty",)),
    ("gen_ai.request.seed", ("seed",)),
)

Attributes = dict[str, AttributeValue]


class OTelTracer:
    """The tracer `instrument()` installs: spans from one Tracer, metrics from one Meter."""

    def __init__(
        self,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        capture_content: bool | None,
    ) -> None:
        self.tracer = trace.get_tracer("dspy_async", __version__, tracer_provider)
        meter = metrics.get_meter("dspy_async", __version__, meter_provider)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        if capture_content is None:
            capture_content = os.environ.get(CAPTURE_CONTENT_ENV, "").lower() == "true"
        self.capture_content = capture_content

    def step(self, name: str, attributes: hooks.StepAttributes) -> AbstractContextManager[object]:
        # Current while the step runs: the runtime copies the caller's context to the loop
        # and a batch to each item, so the LM calls inside find it as their parent.
        return self.tracer.start_as_current_span(name, attributes=dict(attributes))

    def call(self, call: Call, messages: list[Message]) -> CallSpan:
        return CallSpan(self, call, messages)


class CallSpan:
    """One LM call's CLIENT span, current while the call runs, with its attempts and waits
    as children. Lives on the runtime loop, in the call's task: no lock is needed."""

    def __init__(self, owner: OTelTracer, call: Call, messages: list[Message]) -> None:
        self._owner = owner
        self._call = call
        self._messages = messages
        self._reply: Reply | None = None
        self._usage = Usage()
        self._cached = False
        self._backoff: tuple[int, Attributes] | None = None  # (start ns, attributes)

    def __enter__(self) -> CallSpan:
        call, owner = self._call, self._owner
        url = call.request.endpoint.url
        # Set at creation: the conventions name these as the ones sampling may look at.
        self._metric_attributes: Attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": call.provider,
            "gen_ai.request.model": call.model,
            "server.address": url.host,
            "server.port": url.port or DEFAULT_PORTS.get(url.scheme, 443),
        }
        attributes = {**self._metric_attributes, **_request_attributes(call.request.body)}
        if call.request.structured:
            attributes["gen_ai.output.type"] = "json"
        if owner.capture_content:
            attributes.update(_input_content(call.provider, self._messages))
        self._started = time.perf_counter()
        self._span = owner.tracer.start_span(
            f"chat {call.model}", kind=SpanKind.CLIENT, attributes=attributes
        )
        self._context = trace.set_span_in_context(self._span)
        self._context_token = otel_context.attach(self._context)
        self._call_token = hooks.current_call.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            now = time.time_ns()
            self._end_backoff(now)  # cancelled while backing off
            self._finish(exc, now)
        finally:
            hooks.current_call.reset(self._call_token)
            otel_context.detach(self._context_token)

    def _finish(self, exc: BaseException | None, now: int) -> None:
        span, reply, owner = self._span, self._reply, self._owner
        usage = spent(exc.attempts) if isinstance(exc, LMError) else self._usage
        # Tokens are reported for a provider's answer, and for a failure billed for some; a
        # response-cache hit made no request and used none.
        tokens_known = (reply is not None and not self._cached) or usage != Usage()
        metric_attributes = dict(self._metric_attributes)
        ended: Attributes = {}
        if reply is not None:
            ended = _response_attributes(reply)
            if reply.response_model is not None:
                metric_attributes["gen_ai.response.model"] = reply.response_model
            if owner.capture_content:
                ended["gen_ai.output.messages"] = _output_content(reply)
        if tokens_known:
            ended.update(_usage_attributes(usage))
        if self._cached:
            ended["dspy_async.cache.hit"] = True
        token_attributes = dict(metric_attributes)
        if exc is not None:
            metric_attributes["error.type"] = ended["error.type"] = _error_type(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc) or None))
        span.set_attributes(ended)
        span.end(end_time=now)
        owner.duration.record(time.perf_counter() - self._started, metric_attributes)
        if tokens_known:
            for kind, count in (
                ("input", usage.prompt_tokens),
                ("output", usage.completion_tokens),
            ):
                owner.tokens.record(count, {**token_attributes, "gen_ai.token.type": kind})

    def answered(self, reply: Reply, usage: Usage, *, cached: bool = False) -> None:
        self._reply, self._usage, self._cached = reply, usage, cached

    def backoff(self, failure: AttemptFailed, wait: float) -> None:
        # The retry loop honours the server's wait exactly when it names one it may use.
        reason = "retry_after" if wait == failure.server_wait else "backoff"
        attributes: Attributes = {
            "dspy_async.wait.gate": "backoff",
            "dspy_async.wait.reason": reason,
        }
        self._backoff = (time.time_ns(), attributes)

    def _end_backoff(self, now: int) -> None:
        if self._backoff is None:
            return
        (start, attributes), self._backoff = self._backoff, None
        span = self._owner.tracer.start_span(
            "wait backoff", self._context, attributes=attributes, start_time=start
        )
        span.end(end_time=now)

    async def attempt(self, call: Call, state: AttemptState, send: Handler) -> Reply:
        now = time.time_ns()
        self._end_backoff(now)
        span = self._owner.tracer.start_span(
            "attempt",
            self._context,
            attributes={"dspy_async.attempt.number": state.number},
            start_time=now,
        )
        attempt_context = trace.set_span_in_context(span)
        state.on_wait = lambda wait: self._wait(attempt_context, wait)
        token = otel_context.attach(attempt_context)
        try:
            reply = await send(call, state)
            span.set_attribute("http.response.status_code", 200)
            return reply
        except AttemptFailed as failed:
            error = failed.error
            span.set_attributes(
                {"error.type": _error_type(error), "dspy_async.attempt.retryable": failed.retryable}
            )
            if error.status_code is not None:
                span.set_attribute("http.response.status_code", error.status_code)
            span.set_status(Status(StatusCode.ERROR, str(error)))
            raise
        except BaseException as exc:
            span.set_attribute("error.type", _error_type(exc))
            span.set_status(Status(StatusCode.ERROR, str(exc) or None))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def _wait(self, parent: Context, wait: Wait) -> None:
        if wait.seconds <= 0:
            return  # a gate that let the attempt straight through (a budget with room)
        end = time.time_ns()
        attributes: Attributes = {"dspy_async.wait.gate": wait.gate}
        if wait.reason is not None:
            attributes["dspy_async.wait.reason"] = wait.reason
        span: Span = self._owner.tracer.start_span(
            f"wait {wait.gate}",
            parent,
            attributes=attributes,
            start_time=end - round(wait.seconds * 1e9),
        )
        span.end(end_time=end)


def _error_type(exc: BaseException) -> str:
    kind = type(exc)
    return f"{kind.__module__}.{kind.__qualname__}"


def _request_attributes(body: Mapping[str, Any]) -> Attributes:
    """The sampling settings a request body carries, named as the conventions name them."""
    options = body.get("options")
    fields = {**body, **options} if isinstance(options, Mapping) else body
    attributes: Attributes = {}
    for name, keys in NUMERIC_REQUEST:
        value = next((fields[key] for key in keys if key in fields), None)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    stop = fields.get("stop", fields.get("stop_sequences"))
    if isinstance(stop, str):
        stop = [stop]
    if isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        attributes["gen_ai.request.stop_sequences"] = tuple(stop)
    count = fields.get("n")
    if isinstance(count, int) and not isinstance(count, bool) and count != 1:
        attributes["gen_ai.request.choice.count"] = count
    return attributes


def _response_attributes(reply: Reply) -> Attributes:
    attributes: Attributes = {}
    if reply.response_model is not None:
        attributes["gen_ai.response.model"] = reply.response_model
    if reply.response_id is not None:
        attributes["gen_ai.response.id"] = reply.response_id
    if reply.finish_reason is not None:
        attributes["gen_ai.response.finish_reasons"] = (reply.finish_reason,)
    return attributes


def _usage_attributes(usage: Usage) -> Attributes:
    attributes: Attributes = {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.completion_tokens,
    }
    if usage.cache_read_tokens:
        attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_tokens
    if usage.cache_creation_tokens:
        attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_creation_tokens
    return attributes


def _parts(content: object) -> list[dict[str, str]]:
    """A message's content as the conventions' parts: text, and images by URI or inline."""
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    parts: list[dict[str, str]] = []
    for part in content if isinstance(content, list) else ():
        if part.get("type") == "text":
            parts.append({"type": "text", "content": str(part.get("text", ""))})
        elif part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            header, comma, data = url.partition(",")
            if url.startswith("data:") and comma and header.endswith(";base64"):
                mime = header[len("data:") : -len(";base64")]
                blob = {"type": "blob", "modality": "image", "mime_type": mime, "content": data}
                parts.append(blob)
            else:
                parts.append({"type": "uri", "modality": "image", "uri": url})
    return parts


def _input_content(provider: str, messages: list[Message]) -> Attributes:
    """The opt-in content attributes of a request. Anthropic takes the system prompt apart
    from the chat, so there it is `gen_ai.system_instructions`; elsewhere it is a message."""
    system = [m.get("content") for m in messages if m["role"] == "system"]
    chat = [m for m in messages if provider != "anthropic" or m["role"] != "system"]
    attributes: Attributes = {
        "gen_ai.input.messages": json.dumps(
            [{"role": m["role"], "parts": _parts(m.get("content"))} for m in chat]
        )
    }
    if provider == "anthropic" and system:
        attributes["gen_ai.system_instructions"] = json.dumps(
            [part for content in system for part in _parts(content)]
        )
    return attributes


def _output_content(reply: Reply) -> str:
    message = {
        "role": "assistant",
        "parts": _parts(reply.text),
        "finish_reason": reply.finish_reason or "",
    }
    return json.dumps([message])
