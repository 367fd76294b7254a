"""OpenTelemetry: GenAI-convention spans and metrics, checked with the SDK's in-memory exporter
and metric reader against real calls to the provider simulator.

The acceptance scenario: a call waits for a concurrency slot (another call holds the LM's only
one), gets a 429 with Retry-After, backs off and succeeds. Its spans are checked exactly,
parented under the caller's span, for a sync call, an async call, a batch item and 20 threads
calling at once. These LMs run without a rate-limit budget (`rate_limit=False`): a 429 pauses
the account's budget, which would add budget waits to the other calls; `test_budget_wait` has
those on purpose.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, Tracer

import dspy_async as dspy
import dspy_async.integrations.otel  # (see below)
from dspy_async.testing import ProviderSimulator

# instrument() imports integrations/otel.py on first use. It is imported here, at collection,
# because pytest compiles the package's modules itself (it is a plugin) and CPython 3.11.7's
# parser is not thread-safe ("AST constructor recursion depth mismatch" when two threads
# compile at once): a lazy import during a test could race one on the runtime loop's thread.

LATENCY = 0.4  # each simulated reply
RETRY_AFTER = 0.5  # what the 429 asks for
KEY = "sk-otel-secret-4f0c9a7e1d2b"
RETRIED_CALL = ["attempt", "wait backoff", "attempt"]


@dataclass
class Telemetry:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer: Tracer

    @property
    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def points(self, metric: str) -> list[HistogramDataPoint]:
        data = self.reader.get_metrics_data()
        assert data is not None
        found: list[HistogramDataPoint] = []
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for instrument in scope.metrics:
                    if instrument.name == metric:
                        found += [p for p in instrument.data.data_points]  # type: ignore[misc]
        return found


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    dspy.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield Telemetry(exporter, reader, tracer_provider.get_tracer("tests"))
    finally:
        dspy.uninstrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()


@pytest.fixture
def sim(provider_simulator: ProviderSimulator) -> ProviderSimulator:
    provider_simulator.latency = LATENCY
    return provider_simulator


def make_lm(sim: ProviderSimulator, **options: Any) -> dspy.LM:
    options = {"max_concurrency": 1, "rate_limit": False, **options}
    return dspy.LM("openai/gpt-4o-mini", api_base=sim.openai_base_url, api_key=KEY, **options)


def unique(label: str) -> str:
    return f"{label} {uuid.uuid4().hex}"


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    """`parent`'s child spans, in the order they started."""
    found = [s for s in spans if s.parent is not None and s.parent.span_id == parent_id(parent)]
    return sorted(found, key=lambda span: span.start_time or 0)


def parent_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def only(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = [s for s in spans if s.name == name]
    return span


def duration(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


def block_the_slot(sim: ProviderSimulator, lm: dspy.LM) -> threading.Thread:
    """Occupy the LM's one slot with another call, from another thread, until it is answered."""
    seen = len(sim.requests)
    blocker = threading.Thread(target=lm, args=(unique("blocker"),))
    blocker.start()
    sim.wait_for_requests(seen + 1)
    return blocker


def check_retried_call(
    spans: list[ReadableSpan],
    chat: ReadableSpan,
    response: dspy.LMResponse | dspy.Prediction,
    port: int,
    **extra: object,
) -> None:
    """The exact spans of a call that waited for a slot, got a 429, backed off and succeeded
    (`response`: its LMResponse, or the Prediction of the one call a step made)."""
    assert chat.name == "chat gpt-4o-mini"
    assert chat.kind is SpanKind.CLIENT
    assert chat.status.status_code is StatusCode.UNSET
    attributes = dict(chat.attributes or {})
    assert str(attributes.pop("gen_ai.response.id")).startswith("chatcmpl-")
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "127.0.0.1",
        "server.port": port,
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": response.usage.prompt_tokens,
        "gen_ai.usage.output_tokens": response.usage.completion_tokens,
        **extra,
    }
    first, backoff, second = steps = children(spans, chat)
    assert [span.name for span in steps] == RETRIED_CALL
    assert dict(first.attributes or {}) == {
        "dspy_async.attempt.number": 1,
        "error.type": "dspy_async.errors.RateLimitError",
        "dspy_async.attempt.retryable": True,
        "http.response.status_code": 429,
    }
    assert first.status.status_code is StatusCode.ERROR
    assert dict(second.attributes or {}) == {
        "dspy_async.attempt.number": 2,
        "http.response.status_code": 200,
    }
    assert second.status.status_code is StatusCode.UNSET
    assert dict(backoff.attributes or {}) == {
        "dspy_async.wait.gate": "backoff",
        "dspy_async.wait.reason": "retry_after",
    }
    # One after the other: the backoff starts once the failed attempt is over and ends the
    # instant the next attempt starts.
    assert first.end_time is not None and backoff.start_time is not None
    assert first.end_time <= backoff.start_time
    assert backoff.end_time == second.start_time
    assert abs(duration(backoff) - response.attempts[1].waited) < 0.05
    assert duration(backoff) >= RETRY_AFTER - 0.01
    # An attempt that queued for a slot has a span as long as the wait its record holds,
    # inside it; one that found a slot free has no wait, no record and no span.
    for attempt, record in zip((first, second), response.attempts, strict=True):
        slots = children(spans, attempt)
        assert len(slots) == len(record.gates) <= 1
        for slot, gate in zip(slots, record.gates, strict=True):
            assert slot.name == "wait slot"
            assert dict(slot.attributes or {}) == {"dspy_async.wait.gate": "slot"}
            assert gate.gate == "slot"
            assert slot.end_time is not None and slot.start_time is not None
            assert slot.end_time - slot.start_time == round(gate.seconds * 1e9)
            assert attempt.start_time is not None and attempt.end_time is not None
            assert attempt.start_time <= slot.start_time and slot.end_time <= attempt.end_time
            assert children(spans, slot) == []
    assert children(spans, backoff) == []


@pytest.mark.slow
def test_sync_call_waits_for_a_slot_backs_off_and_succeeds(
    sim: ProviderSimulator, telemetry: Telemetry
) -> None:
    lm = make_lm(sim)
    prompt = unique("traced")
    blocker = block_the_slot(sim, lm)
    sim.fault(prompt, kind="status", status=429, retry_after=RETRY_AFTER)
    with telemetry.tracer.start_as_current_span("caller") as caller:
        response = lm(prompt)
    blocker.join()
    spans = telemetry.spans
    (chat,) = children(spans, only(spans, "caller"))
    assert chat.context is not None
    assert chat.context.trace_id == caller.get_span_context().trace_id
    check_retried_call(spans, chat, response, sim.port)
    # The slot wait of the first attempt is the blocker's reply, give or take.
    assert response.attempts[0].gates[0].seconds > LATENCY / 2


@pytest.mark.slow
def test_async_call_waits_for_a_slot_backs_off_and_succeeds(
    sim: ProviderSimulator, telemetry: Telemetry
) -> None:
    lm = make_lm(sim)
    prompt = unique("traced")

    async def main() -> dspy.LMResponse:
        blocker = asyncio.ensure_future(lm.acall(unique("blocker")))
        await asyncio.to_thread(sim.wait_for_requests, 1)
        sim.fault(prompt, kind="status", status=429, retry_after=RETRY_AFTER)
        with telemetry.tracer.start_as_current_span("caller"):
            response = await lm.acall(prompt)
        await blocker
        return response

    response = asyncio.run(main())
    spans = telemetry.spans
    (chat,) = children(spans, only(spans, "caller"))
    check_retried_call(spans, chat, response, sim.port)
    assert response.attempts[0].gates[0].seconds > LATENCY / 2


@pytest.mark.slow
def test_batch_item_waits_for_a_slot_backs_off_and_succeeds(
    sim: ProviderSimulator, telemetry: Telemetry
) -> None:
    lm = make_lm(sim, max_concurrency=None)
    qa = dspy.Predict("question -> answer", lm=lm)
    questions = [unique("first"), unique("second")]
    # The batch's one slot: the first item holds it, the second waits, then gets the 429.
    sim.fault(questions[1], kind="status", status=429, retry_after=RETRY_AFTER)
    with telemetry.tracer.start_as_current_span("caller"):
        predictions = qa.batch([{"question": q} for q in questions], max_concurrency=1)
    spans = telemetry.spans
    (batch,) = children(spans, only(spans, "caller"))
    assert batch.name == "Predict(StringSignature).batch"
    assert dict(batch.attributes or {}) == {
        "dspy_async.module": "Predict",
        "dspy_async.signature": "StringSignature",
        "dspy_async.batch.size": 2,
    }
    items = children(spans, batch)
    assert [item.name for item in items] == ["Predict(StringSignature)"] * 2
    chats = [children(spans, item) for item in items]
    assert all(len(chat) == 1 for chat in chats)
    plain, retried = chats[0][0], chats[1][0]
    assert [span.name for span in children(spans, plain)] == ["attempt"]
    assert children(spans, children(spans, plain)[0]) == []  # the slot was free: no wait
    # A structured step: the request asks for JSON through the native response_format.
    check_retried_call(spans, retried, predictions[1], sim.port, **{"gen_ai.output.type": "json"})
    assert predictions[1].attempts[0].gates[0].seconds > LATENCY / 2


@pytest.mark.slow
def test_sync_module_batch_parents_each_item_across_the_worker_threads(
    sim: ProviderSimulator, telemetry: Telemetry
) -> None:
    sim.latency = 0.05
    lm = make_lm(sim, max_concurrency=None)

    class Pipeline(dspy.Module):
        def __init__(self) -> None:
            self.step = dspy.Predict("question -> answer", lm=lm)

        def forward(self, question: str) -> dspy.Prediction:
            return self.step(question=question)  # from a batch worker thread

    items = [{"question": unique(f"item {i}")} for i in range(6)]
    with telemetry.tracer.start_as_current_span("caller"):
        Pipeline().batch(items, max_concurrency=3)
    spans = telemetry.spans
    (batch,) = children(spans, only(spans, "caller"))
    assert batch.name == "Pipeline.batch"
    runs = children(spans, batch)
    assert [run.name for run in runs] == ["Pipeline"] * 6
    trace_ids = set()
    for run in runs:
        (step,) = children(spans, run)
        assert step.name == "Predict(StringSignature)"
        (chat,) = children(spans, step)
        assert chat.name == "chat gpt-4o-mini"
        (attempt,) = children(spans, chat)
        # 3 slots for 6 items: an attempt that queued for one has its wait, the others none.
        assert [span.name for span in children(spans, attempt)] in ([], ["wait slot"])
        assert chat.context is not None
        trace_ids.add(chat.context.trace_id)
    assert len(trace_ids) == 1


@pytest.mark.slow
def test_twenty_threads_at_once_each_get_their_own_exact_spans(
    sim: ProviderSimulator, telemetry: Telemetry
) -> None:
    lm = make_lm(sim, max_concurrency=4)
    prompts = [unique(f"thread {i}") for i in range(20)]
    for prompt in prompts:
        sim.fault(prompt, kind="status", status=429, retry_after=RETRY_AFTER)
    start = threading.Barrier(20)
    results: dict[int, tuple[int, dspy.LMResponse]] = {}

    def caller(index: int) -> None:
        start.wait()
        with telemetry.tracer.start_as_current_span(f"caller {index}") as span:
            results[index] = (span.get_span_context().span_id, lm(prompts[index]))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spans = telemetry.spans
    assert len([s for s in spans if s.name == "chat gpt-4o-mini"]) == 20
    for index in range(20):
        span_id, response = results[index]
        caller_span = only(spans, f"caller {index}")
        assert parent_id(caller_span) == span_id
        (chat,) = children(spans, caller_span)
        check_retried_call(spans, chat, response, sim.port)
    # 20 first attempts on 4 slots: most of them queued for at least one reply's time.
    queued = [w.seconds for _, r in results.values() for w in r.attempts[0].gates]
    assert sum(wait > LATENCY / 2 for wait in queued) >= 10


@pytest.mark.slow
def test_metrics_duration_and_token_usage(sim: ProviderSimulator, telemetry: Telemetry) -> None:
    sim.latency = 0.05
    lm = make_lm(sim, max_concurrency=None)
    responses = [lm(unique(f"metric {i}")) for i in range(3)]
    failing = unique("failing")
    sim.fault(failing, kind="status", status=401)
    with pytest.raises(dspy.AuthenticationError):
        lm(failing)
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "server.address": "127.0.0.1",
        "server.port": sim.port,
    }
    durations = {
        tuple(sorted(dict(p.attributes or {}).items())): p
        for p in telemetry.points("gen_ai.client.operation.duration")
    }
    ok = durations.pop(tuple(sorted({**common, "gen_ai.response.model": "gpt-4o-mini"}.items())))
    failed = durations.pop(
        tuple(sorted({**common, "error.type": "dspy_async.errors.AuthenticationError"}.items()))
    )
    assert durations == {}
    assert ok.count == 3 and failed.count == 1
    assert 3 * 0.05 <= ok.sum < 3 * 5
    assert list(ok.explicit_bounds[:3]) == [0.01, 0.02, 0.04]
    tokens = {
        dict(p.attributes or {})["gen_ai.token.type"]: p
        for p in telemetry.points("gen_ai.client.token.usage")
    }
    assert set(tokens) == {"input", "output"}
    assert tokens["input"].count == tokens["output"].count == 3
    assert tokens["input"].sum == sum(r.usage.prompt_tokens for r in responses)
    assert tokens["output"].sum == sum(r.usage.completion_tokens for r in responses)
    assert dict(tokens["input"].attributes or {}) == {
        **common,
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.token.type": "input",
    }


def test_a_failed_call_has_error_type_and_status(
    provider_simulator: ProviderSimulator, telemetry: Telemetry
) -> None:
    lm = make_lm(provider_simulator)
    prompt = unique("denied")
    provider_simulator.fault(prompt, kind="status", status=401)
    with pytest.raises(dspy.AuthenticationError):
        lm(prompt)
    spans = telemetry.spans
    chat = only(spans, "chat gpt-4o-mini")
    assert chat.status.status_code is StatusCode.ERROR
    assert "HTTP 401" in (chat.status.description or "")
    attributes = dict(chat.attributes or {})
    assert attributes["error.type"] == "dspy_async.errors.AuthenticationError"
    assert "gen_ai.usage.input_tokens" not in attributes  # nothing was billed
    (attempt,) = children(spans, chat)
    assert dict(attempt.attributes or {}) == {
        "dspy_async.attempt.number": 1,
        "error.type": "dspy_async.errors.AuthenticationError",
        "dspy_async.attempt.retryable": False,
        "http.response.status_code": 401,
    }


def test_steps_parent_their_calls_sync_and_async(
    provider_simulator: ProviderSimulator, telemetry: Telemetry
) -> None:
    lm = make_lm(provider_simulator, max_concurrency=None)

    class Answer(dspy.Module):
        def __init__(self) -> None:
            self.qa = dspy.ChainOfThought("question -> answer", lm=lm)

        async def aforward(self, question: str) -> dspy.Prediction:
            return await self.qa.acall(question=question)

    with telemetry.tracer.start_as_current_span("sync caller"):
        dspy.Predict("question -> answer", lm=lm)(question=unique("sync"))
    with telemetry.tracer.start_as_current_span("async caller"):
        asyncio.run(Answer().acall(question=unique("async")))
    spans = telemetry.spans
    (step,) = children(spans, only(spans, "sync caller"))
    assert step.name == "Predict(StringSignature)"
    assert [s.name for s in children(spans, step)] == ["chat gpt-4o-mini"]
    (module,) = children(spans, only(spans, "async caller"))
    assert module.name == "Answer"
    assert dict(module.attributes or {}) == {"dspy_async.module": "Answer"}
    (inner,) = children(spans, module)
    assert inner.name == "ChainOfThought(StringSignature)"  # a module around its Predict
    (predict,) = children(spans, inner)
    assert predict.name == "Predict(StringSignature)"
    assert [s.name for s in children(spans, predict)] == ["chat gpt-4o-mini"]


def test_a_failed_step_records_its_error(
    provider_simulator: ProviderSimulator, telemetry: Telemetry
) -> None:
    lm = make_lm(provider_simulator)
    question = unique("invalid")
    provider_simulator.fault(question, kind="invalid_output", times=None)
    no_reask = dspy.StructuredOutputSettings(max_retries=0)
    with dspy.context(structured_outputs=no_reask), pytest.raises(dspy.OutputValidationError):
        dspy.Predict("question -> answer: int", lm=lm)(question=question)
    step = only(telemetry.spans, "Predict(StringSignature)")
    assert step.status.status_code is StatusCode.ERROR
    assert [event.name for event in step.events] == ["exception"]
    # The call itself succeeded: the step, not the LM, refused its output.
    (chat,) = children(telemetry.spans, step)
    assert chat.status.status_code is StatusCode.UNSET


def test_content_only_when_opted_in_and_never_the_key(
    provider_simulator: ProviderSimulator, telemetry: Telemetry
) -> None:
    provider_simulator.api_key = KEY
    lm = dspy.LM(
        "anthropic/claude-3-haiku",
        api_base=provider_simulator.anthropic_base_url,
        api_key=KEY,
        temperature=0.3,
        max_tokens=64,
        rate_limit=False,
    )
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": unique("hello")},
    ]
    lm(messages=messages)
    quiet = only(telemetry.spans, "chat claude-3-haiku")
    attributes = dict(quiet.attributes or {})
    assert not {k for k in attributes if "messages" in k or "instructions" in k}
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert attributes["gen_ai.request.temperature"] == 0.3
    assert attributes["gen_ai.request.max_tokens"] == 64
    assert str(attributes["gen_ai.response.id"]).startswith("msg_")
    assert attributes["gen_ai.response.finish_reasons"] == ("end_turn",)

    telemetry.exporter.clear()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(telemetry.exporter))
    dspy.instrument(tracer_provider=tracer_provider, capture_content=True)
    response = lm(messages=messages)
    provider_simulator.fault(kind="status", status=500, message=f"echo {KEY}")
    with pytest.raises(dspy.ProviderServerError):
        dspy.LM(
            "anthropic/claude-3-haiku",
            api_base=provider_simulator.anthropic_base_url,
            api_key=KEY,
            retry=dspy.RetryPolicy(max_attempts=1),
            rate_limit=False,
        )(unique("fails"))
    spans = telemetry.spans
    answered, failed = sorted(
        (s for s in spans if s.name == "chat claude-3-haiku"), key=lambda s: s.start_time or 0
    )
    assert failed.status.status_code is StatusCode.ERROR
    told = dict(answered.attributes or {})
    assert json.loads(str(told["gen_ai.system_instructions"])) == [
        {"type": "text", "content": "Be terse."}
    ]
    assert json.loads(str(told["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": messages[1]["content"]}]}
    ]
    assert json.loads(str(told["gen_ai.output.messages"])) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": response.text}],
            "finish_reason": "end_turn",
        }
    ]
    assert "gen_ai.output.messages" not in dict(failed.attributes or {})
    exported = "".join(span.to_json() for span in spans)
    assert "echo" in exported  # the failure's message is there, scrubbed of the key
    assert KEY not in exported and KEY[:12] not in exported
    tracer_provider.shutdown()


@pytest.mark.slow
def test_budget_wait(provider_simulator: ProviderSimulator, telemetry: Telemetry) -> None:
    """A call that must wait for the account's rate-limit budget (learned from the provider's
    headers) has a `wait budget` span under its attempt, as long as its recorded wait."""
    provider_simulator.latency = 0.05
    provider_simulator.rate_limit(requests=2, per=2.0)  # one more request a second
    lm = make_lm(provider_simulator, rate_limit=None, max_concurrency=None)
    lm(unique("first"))
    lm(unique("second"))  # the budget is spent, and the LM knows it from the headers
    with telemetry.tracer.start_as_current_span("caller"):
        response = lm(unique("waits"))
    spans = telemetry.spans
    (chat,) = children(spans, only(spans, "caller"))
    (attempt,) = children(spans, chat)
    (budget,) = children(spans, attempt)  # the budget's wait; the slot was free
    assert budget.name == "wait budget"
    (recorded,) = [w for w in response.attempts[0].gates if w.gate == "budget"]
    assert recorded.seconds > 0.2
    assert budget.end_time is not None and budget.start_time is not None
    assert budget.end_time - budget.start_time == round(recorded.seconds * 1e9)


def test_off_after_uninstrument(
    provider_simulator: ProviderSimulator, telemetry: Telemetry
) -> None:
    lm = make_lm(provider_simulator)
    dspy.uninstrument()
    lm(unique("untraced"))
    dspy.Predict("question -> answer", lm=lm)(question=unique("untraced"))
    assert telemetry.spans == []


OFF_SCRIPT = """
import sys
import dspy_async as dspy
from dspy_async.testing import ProviderSimulator

with ProviderSimulator() as sim:
    lm = dspy.LM("openai/gpt-4o-mini", api_base=sim.openai_base_url, api_key="sk-off")
    dspy.Predict("question -> answer", lm=lm).batch([{"question": "q"}])
    lm("hi")
loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
assert loaded == [], loaded
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
try:
    dspy.instrument()
except ImportError as error:
    assert "pip install 'dspy-async[otel]'" in str(error), error
else:
    raise AssertionError("instrument() worked without OpenTelemetry")
"""


@pytest.mark.slow
def test_nothing_is_imported_when_off() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", OFF_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_image_parts_are_recorded_as_the_conventions_parts(
    provider_simulator: ProviderSimulator, telemetry: Telemetry
) -> None:
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(telemetry.exporter))
    dspy.instrument(tracer_provider=tracer_provider, capture_content=True)
    lm = make_lm(provider_simulator)
    content = [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    lm(messages=[{"role": "user", "content": content}])
    chat = only(telemetry.spans, "chat gpt-4o-mini")
    assert json.loads(str(dict(chat.attributes or {})["gen_ai.input.messages"])) == [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "What is in these?"},
                {
                    "type": "blob",
                    "modality": "image",
                    "mime_type": "image/png",
                    "content": "iVBORw0KGgo=",
                },
                {"type": "uri", "modality": "image", "uri": "https://example.com/cat.jpg"},
            ],
        }
    ]
    tracer_provider.shutdown()
