"""Real DSPy programs on the dspy-async runtime, through `dspy_async.dspy_lm`, against the
provider simulator: signatures, modules, agents, evaluation and optimization, with faults
injected and every request counted; then DSPy's error types, history, usage, callbacks,
copies, pickling, saving and fork safety."""

from __future__ import annotations

import asyncio
import copy
import io
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Literal

import pytest

dspy = pytest.importorskip(
    "dspy", reason="the DSPy bridge needs DSPy: pip install 'dspy-async[dspy]'"
)

import cloudpickle  # noqa: E402  (a DSPy dependency: save_program=True uses it)
from dspy import lm15  # noqa: E402
from dspy.utils import exceptions as dspy_errors  # noqa: E402

import dspy_async  # noqa: E402
from dspy_async.integrations.dspy import DSPyAsyncLM  # noqa: E402
from dspy_async.testing import ProviderSimulator, peak_in_flight  # noqa: E402

FAST = dspy_async.RetryPolicy(initial_delay=0.01, max_delay=0.05)
KEY = "sk-bridge-secret-0123456789"


@pytest.fixture(scope="module", autouse=True)
def _memory_only_dspy_cache() -> None:
    # DSPy's default response cache also writes to ~/.dspy_cache; tests keep it in memory.
    dspy.configure_cache(enable_disk_cache=False)


@pytest.fixture
def sim(provider_simulator: ProviderSimulator) -> ProviderSimulator:
    return provider_simulator


def make_lm(sim: ProviderSimulator, model: str = "gpt-4o-mini", **options: Any) -> DSPyAsyncLM:
    options = {"api_key": KEY, "cache": False, **options}
    if "num_retries" not in options:
        options.setdefault("retry", FAST)
    return dspy_async.dspy_lm(f"openai/{model}", api_base=sim.openai_base_url, **options)


@pytest.fixture
def lm(sim: ProviderSimulator) -> Iterator[DSPyAsyncLM]:
    """The bridge LM, in force (with DSPy's default ChatAdapter) for the test."""
    bridge = make_lm(sim)
    with dspy.context(lm=bridge, adapter=None):
        yield bridge


def chat(**fields: object) -> str:
    """A reply in ChatAdapter's format."""
    parts = [f"[[ ## {name} ## ]]\n{value}\n\n" for name, value in fields.items()]
    return "".join(parts) + "[[ ## completed ## ]]"


def ask(bridge: DSPyAsyncLM, question: str = "q") -> Any:
    """`question -> answer` through `bridge`, with DSPy's default adapter."""
    with dspy.context(lm=bridge, adapter=None):
        return dspy.Predict("question -> answer")(question=question)


def outcomes(sim: ProviderSimulator) -> list[str]:
    return [request.outcome for request in sim.requests]


def attempts_of_last_call(lm: DSPyAsyncLM) -> list[str]:
    """Our attempts of the LM's last call, as DSPy's history keeps them."""
    response = lm.history[-1]["response"]
    return [attempt["outcome"] for attempt in response.provider_data["dspy_async"]["attempts"]]


# -- the LM itself -----------------------------------------------------------------------


def test_importing_dspy_async_does_not_import_dspy() -> None:
    code = "import sys, dspy_async; assert dspy_async.dspy_lm; assert 'dspy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_it_is_a_dspy_lm_over_a_dspy_async_lm(sim: ProviderSimulator) -> None:
    bridge = make_lm(sim, max_concurrency=16, temperature=0.2)
    assert isinstance(bridge, dspy.BaseLM) and isinstance(bridge, dspy.LM)
    assert bridge.model == "openai/gpt-4o-mini"
    assert bridge.num_retries == 0  # dspy-async retries; DSPy adds none on top
    assert bridge.kwargs["temperature"] == 0.2
    inner = bridge.dspy_async_lm
    assert isinstance(inner, dspy_async.LM) and inner.max_concurrency == 16
    assert repr(bridge) == f"DSPyAsyncLM({inner!r})"
    assert dspy_async.dspy_lm(inner).dspy_async_lm is inner  # an existing LM, shared as is
    assert make_lm(sim, num_retries=1).dspy_async_lm.retry.max_attempts == 2


def test_misconfiguration_fails_before_any_request(sim: ProviderSimulator) -> None:
    with pytest.raises(dspy_async.ConfigurationError, match="not both"):
        make_lm(sim, num_retries=2, retry=dspy_async.RetryPolicy())
    with pytest.raises(dspy_async.ConfigurationError, match="max_concurrency"):
        dspy_async.dspy_lm(make_lm(sim).dspy_async_lm, max_concurrency=4)
    with pytest.raises(dspy_async.ConfigurationError, match="wraps a dspy_async LM"):
        DSPyAsyncLM(dspy.LM("openai/gpt-4o-mini"))  # type: ignore[arg-type]
    with pytest.raises(dspy_async.ConfigurationError, match="retries stay off"):
        make_lm(sim).copy(num_retries=3)
    assert sim.requests == []


# -- programs --------------------------------------------------------------------------


class Triage(dspy.Signature):  # type: ignore[misc]
    """Triage a support ticket."""

    ticket: str = dspy.InputField()
    category: Literal["billing", "bug", "other"] = dspy.OutputField()
    priority: int = dspy.OutputField()
    urgent: bool = dspy.OutputField()
    tags: list[str] = dspy.OutputField()


def test_class_signature_with_typed_outputs_through_faults(
    sim: ProviderSimulator, lm: DSPyAsyncLM
) -> None:
    reply = chat(category="billing", priority=2, urgent="true", tags='["refund", "card"]')
    sim.respond("charged twice", output=reply)
    sim.fault(status=429, retry_after=0.05)
    sim.fault(status=503)
    sim.fault(kind="drop")

    result = dspy.Predict(Triage)(ticket="My card was charged twice")

    assert (result.category, result.priority, result.urgent) == ("billing", 2, True)
    assert result.tags == ["refund", "card"]
    assert outcomes(sim) == ["status", "status", "drop", "ok"]
    assert [r.match_attempt for r in sim.requests] == [1, 2, 3, 4]  # the same request, retried
    assert attempts_of_last_call(lm) == ["error", "error", "error", "ok"]
    assert len(lm.history) == 1  # one DSPy call: the retries were ours


def test_string_signature_and_chain_of_thought(sim: ProviderSimulator, lm: DSPyAsyncLM) -> None:
    sim.respond("capital of France", output=chat(answer="Paris"))
    sim.respond("sky blue", output=chat(reasoning="Short waves scatter most.", answer="Rayleigh"))
    sim.fault("sky blue", status=500, times=2)

    assert dspy.Predict("question -> answer")(question="The capital of France?").answer == "Paris"
    thought = dspy.ChainOfThought("question -> answer")(question="Why is the sky blue?")

    assert (thought.reasoning, thought.answer) == ("Short waves scatter most.", "Rayleigh")
    assert outcomes(sim) == ["ok", "status", "status", "ok"]


def test_json_adapter_asks_natively_then_by_prompt_once_refused(
    sim: ProviderSimulator, lm: DSPyAsyncLM
) -> None:
    predict = dspy.Predict("question -> answer: int, sure: bool")
    with dspy.context(adapter=dspy.JSONAdapter()):
        first = predict(question="What is 2 + 2?")  # unscripted: the simulator fills the schema
        sim.respond("3 + 3", output={"answer": 6, "sure": True})
        sim.fault(kind="unsupported_param")
        second = predict(question="What is 3 + 3?")

    assert isinstance(first.answer, int) and isinstance(first.sure, bool)
    assert (second.answer, second.sure) == (6, True)
    native = sim.requests[0].body["response_format"]
    assert native["type"] == "json_schema" and native["json_schema"]["strict"] is True
    assert set(native["json_schema"]["schema"]["properties"]) == {"answer", "sure"}
    assert outcomes(sim) == ["ok", "unsupported_param", "ok"]
    assert "response_format" not in sim.requests[2].body  # asked through the prompt instead
    assert lm.dspy_async_lm.supports_native_structured is False  # and remembered


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
def test_each_provider_takes_the_schema_natively_and_the_call_options(
    sim: ProviderSimulator, provider: str
) -> None:
    bridge = dspy_async.dspy_lm(
        f"{provider}/some-model", api_base=sim.api_base(provider), api_key=KEY, cache=False
    )
    predict = dspy.Predict("question -> answer: int, sure: bool")
    with dspy.context(lm=bridge, adapter=dspy.JSONAdapter()):
        result = predict(question="What is 2 + 2?", config={"stop": ["END"], "top_p": 0.5})

    assert isinstance(result.answer, int) and isinstance(result.sure, bool)
    body = sim.requests[-1].body
    native = {"openai": "response_format", "anthropic": "tool_choice", "ollama": "format"}
    assert native[provider] in body
    sent = body.get("options", body)  # Ollama's sampling options sit in `options`
    assert sent["top_p"] == 0.5
    assert sent["stop_sequences" if provider == "anthropic" else "stop"] == ["END"]


def test_n_candidates_are_asked_one_request_each(sim: ProviderSimulator, lm: DSPyAsyncLM) -> None:
    sim.respond(None, output=chat(answer="one"), times=1)
    sim.respond(None, output=chat(answer="two"), times=1)
    result = dspy.Predict("question -> answer", n=2)(question="Two answers?")
    assert [c.answer for c in result.completions] == ["one", "two"]
    assert len(sim.requests) == 2 and sim.requests[0].body["temperature"] == 0.7  # DSPy's n rule


def test_react_with_two_tools_and_a_context_window_to_shorten(
    sim: ProviderSimulator, lm: DSPyAsyncLM
) -> None:
    calls: list[str] = []

    def add(a: int, b: int) -> int:
        """Add two integers."""
        calls.append(f"add({a}, {b})")
        return a + b

    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        calls.append(f"multiply({a}, {b})")
        return a * b

    step = "[[ ## next_tool_name ## ]]"  # in the agent's prompt, not in the extractor's
    sim.respond(step, output=chat(next_thought="Add first.", next_tool_name="add",
                                  next_tool_args='{"a": 2, "b": 3}'), times=1)  # fmt: skip
    sim.respond(step, output=chat(next_thought="Now multiply.", next_tool_name="multiply",
                                  next_tool_args='{"a": 5, "b": 4}'), times=1)  # fmt: skip
    sim.respond(step, output=chat(next_thought="Done.", next_tool_name="finish",
                                  next_tool_args="{}"), times=1)  # fmt: skip
    sim.respond(None, output=chat(reasoning="(2 + 3) * 4 = 20", answer="20"))
    sim.fault(step, status=429, retry_after=0.05)
    # The third step's prompt is too long: ReAct must see DSPy's ContextWindowExceededError
    # to drop the oldest tool call and ask again.
    sim.fault("[[ ## observation_1 ## ]]", kind="context_window")

    agent = dspy.ReAct("question -> answer: int", tools=[add, multiply])
    result = agent(question="What is (2 + 3) * 4?")

    assert result.answer == 20
    assert calls == ["add(2, 3)", "multiply(5, 4)"]
    assert "thought_0" not in result.trajectory  # shortened, as ReAct does for that error
    assert result.trajectory["tool_name_2"] == "finish"
    assert outcomes(sim) == ["status", "ok", "ok", "context_window", "ok", "ok"]


class Digest(dspy.Module):  # type: ignore[misc]
    """Two steps: summarize a report, then rate the summary."""

    def __init__(self) -> None:
        super().__init__()
        self.summarize = dspy.Predict("report -> summary")
        self.rate = dspy.Predict("summary -> mood: Literal['up', 'down']")

    def forward(self, report: str) -> Any:
        summary = self.summarize(report=report).summary
        return self.rate(summary=summary)


def script_digest(sim: ProviderSimulator, count: int) -> list[Any]:
    for i in range(count):
        sim.respond(f"[report {i:02d}]", output=chat(summary=f"summary-{i:02d}"))
        sim.respond(f"summary-{i:02d}", output=chat(mood="up" if i % 2 else "down"))
    return [
        dspy.Example(report=f"[report {i:02d}] sales").with_inputs("report") for i in range(count)
    ]


def test_a_two_step_module_in_batch_and_in_parallel(
    sim: ProviderSimulator, lm: DSPyAsyncLM
) -> None:
    examples = script_digest(sim, 6)
    sim.fault("[report 01]", status=429, retry_after=0.05)
    sim.fault("summary-04", status=503)

    results = Digest().batch(examples, num_threads=4, disable_progress_bar=True)
    parallel = dspy.Parallel(num_threads=3, disable_progress_bar=True)
    again = parallel([(Digest(), example) for example in examples[:2]])

    assert [r.mood for r in results] == ["down", "up"] * 3
    assert [r.mood for r in again] == ["down", "up"]
    assert len(sim.requests) == 2 * 6 + 2 + 2 * 2
    assert outcomes(sim).count("status") == 2


def test_evaluate_over_twenty_examples(sim: ProviderSimulator, lm: DSPyAsyncLM) -> None:
    devset = []
    for i in range(20):
        question = f"What is {i} plus {i}?"
        sim.respond(question, output=chat(answer=str(2 * i)))
        if i % 4 == 0:
            sim.fault(question, status=429, retry_after=0.05)
        devset.append(dspy.Example(question=question, answer=str(2 * i)).with_inputs("question"))

    def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
        return bool(example.answer == prediction.answer)

    evaluate = dspy.Evaluate(devset=devset, metric=exact, num_threads=4, display_progress=False)
    result = evaluate(dspy.Predict("question -> answer"))

    assert result.score == 100.0
    assert len(sim.requests) == 25 and outcomes(sim).count("status") == 5


def test_bootstrap_few_shot_compiles_a_small_program(
    sim: ProviderSimulator, lm: DSPyAsyncLM
) -> None:
    # Rules match in order, and the compiled program's prompt quotes its demos: the question
    # asked after compiling goes first.
    sim.respond("Spell elder backwards", output=chat(answer="redle"))
    trainset = []
    for word in ("apple", "banana", "cherry", "damson"):
        sim.respond(f"Spell {word} backwards", output=chat(answer=word[::-1]))
        trainset.append(
            dspy.Example(question=f"Spell {word} backwards", answer=word[::-1]).with_inputs(
                "question"
            )
        )
    sim.fault("Spell banana", status=503)

    def exact(example: Any, prediction: Any, trace: Any = None) -> bool:
        return bool(example.answer == prediction.answer)

    optimizer = dspy.BootstrapFewShot(metric=exact, max_bootstrapped_demos=2, max_labeled_demos=0)
    compiled = optimizer.compile(dspy.Predict("question -> answer"), trainset=trainset)

    demos = compiled.predictors()[0].demos
    assert [demo.answer for demo in demos] == ["elppa", "ananab"]
    assert compiled(question="Spell elder backwards").answer == "redle"
    asked = sim.requests[-1].text
    assert "Spell apple backwards" in asked and "ananab" in asked  # the demos went along
    assert outcomes(sim).count("status") == 1


async def test_acall_runs_many_programs_at_once(sim: ProviderSimulator) -> None:
    bridge = make_lm(sim)
    sim.latency = 0.2
    for i in range(8):
        sim.respond(f"item {i} ", output=chat(reasoning="r", answer=f"answer {i}"))
    sim.fault("item 3 ", status=429, retry_after=0.05)
    program = dspy.ChainOfThought("question -> answer")

    with dspy.context(lm=bridge, adapter=None):
        started = time.monotonic()
        results = await asyncio.gather(*(program.acall(question=f"item {i} ?") for i in range(8)))
        elapsed = time.monotonic() - started

    assert [r.answer for r in results] == [f"answer {i}" for i in range(8)]
    assert len(sim.requests) == 9
    assert peak_in_flight(sim.requests) >= 4  # concurrent, not one after another
    assert elapsed < 8 * 0.2


async def test_streamify_hands_listeners_the_fields(sim: ProviderSimulator) -> None:
    bridge = make_lm(sim)
    sim.respond(None, output=chat(answer="streamed"))
    sim.fault(status=503)
    listener = dspy.streaming.StreamListener(signature_field_name="answer")
    program = dspy.streamify(dspy.Predict("question -> answer"), stream_listeners=[listener])

    with dspy.context(lm=bridge, adapter=None):
        received = [value async for value in program(question="q")]

    chunks = [v.chunk for v in received if isinstance(v, dspy.streaming.StreamResponse)]
    assert "".join(chunks) == "streamed"
    assert received[-1].answer == "streamed"
    assert outcomes(sim) == ["status", "ok"]


# -- threads: a call backing off holds no slot ----------------------------------------------


@pytest.mark.slow
def test_batch_threads_beyond_max_concurrency_reach_the_slot_free_schedule(
    sim: ProviderSimulator,
) -> None:
    bridge = make_lm(sim, max_concurrency=2)
    sim.latency = 0.1
    for i in range(6):
        sim.respond(f"doc {i} ", output=chat(answer=str(i)))
    sim.fault("doc 0 ", status=429, retry_after=1.0)
    sim.fault("doc 1 ", status=429, retry_after=1.0)
    examples = [dspy.Example(question=f"doc {i} ?").with_inputs("question") for i in range(6)]

    with dspy.context(lm=bridge, adapter=None):
        results = dspy.Predict("question -> answer").batch(
            examples, num_threads=6, disable_progress_bar=True
        )

    assert [r.answer for r in results] == [str(i) for i in range(6)]
    requests = sim.requests
    assert peak_in_flight(requests) <= 2
    retries = [r for r in requests if r.match_attempt == 2]
    others = [r for r in requests if "doc 0 " not in r.text and "doc 1 " not in r.text]
    # While docs 0 and 1 waited out their Retry-After, their threads held no slot: all four
    # other docs were answered before either retry was sent.
    assert len(retries) == 2
    first_retry = min(r.arrived for r in retries)
    assert all(r.finished is not None and r.finished <= first_retry for r in others)


# -- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected", "ours", "sent"),
    [
        (
            {"status": 429, "retry_after": 0.01, "times": None},
            dspy_errors.LMRateLimitError,
            dspy_async.RateLimitError,
            2,
        ),
        (
            {"status": 503, "times": None},
            dspy_errors.LMServerError,
            dspy_async.ProviderServerError,
            2,
        ),
        (
            {"kind": "drop", "times": None},
            dspy_errors.LMTransportError,
            dspy_async.ProviderConnectionError,
            2,
        ),
        (
            {"kind": "malformed", "times": None},
            dspy_errors.LMProviderError,
            dspy_async.ProviderResponseError,
            2,
        ),
        ({"status": 401}, dspy_errors.LMAuthError, dspy_async.AuthenticationError, 1),
        ({"status": 400}, dspy_errors.LMInvalidRequestError, dspy_async.BadRequestError, 1),
        (
            {"kind": "context_window"},
            dspy_errors.ContextWindowExceededError,
            dspy_async.ContextWindowExceededError,
            1,
        ),
    ],
    ids=["429", "503", "drop", "malformed", "401", "400", "context_window"],
)
def test_each_failure_reaches_dspy_as_its_own_error(
    sim: ProviderSimulator,
    fault: dict[str, Any],
    expected: type[Exception],
    ours: type[dspy_async.LMError],
    sent: int,
) -> None:
    retry = dspy_async.RetryPolicy(max_attempts=2, initial_delay=0.01, max_delay=0.01)
    sim.fault(**fault)
    with pytest.raises(expected) as raised:
        ask(make_lm(sim, retry=retry))

    assert type(raised.value) is expected
    canonical = raised.value.__cause__  # DSPy maps the engine's dspy.lm15 error ...
    assert isinstance(canonical, lm15.LM15Error)
    original = canonical.__cause__  # ... which is raised from ours, attempts and all
    assert type(original) is ours and len(original.attempts) == sent
    assert len(sim.requests) == sent
    assert KEY not in str(raised.value) and KEY not in repr(original)


def test_a_timeout_reaches_dspy_as_lm_timeout_error(sim: ProviderSimulator) -> None:
    sim.fault(kind="hang")
    retry = dspy_async.RetryPolicy(max_attempts=1)
    with pytest.raises(dspy_errors.LMTimeoutError) as raised:
        ask(make_lm(sim, retry=retry, timeout=0.3))
    assert isinstance(raised.value.__cause__.__cause__, dspy_async.ProviderTimeoutError)


def test_rate_limit_error_keeps_the_wait_the_server_asked_for(sim: ProviderSimulator) -> None:
    sim.fault(status=429, retry_after=7, times=None)
    retry = dspy_async.RetryPolicy(max_attempts=1)
    with pytest.raises(dspy_errors.LMRateLimitError) as raised:
        # A model of its own: a rate limit may hold back every later call of the same account.
        ask(make_lm(sim, model="rate-limited", retry=retry))
    assert raised.value.retry_after == 7.0 and raised.value.status == 429


def test_what_the_lm_cannot_carry_is_refused_before_any_request(
    sim: ProviderSimulator, lm: DSPyAsyncLM
) -> None:
    class Describe(dspy.Signature):  # type: ignore[misc]
        """Describe the picture."""

        image: dspy.Image = dspy.InputField()
        caption: str = dspy.OutputField()

    describe = dspy.Predict(Describe)
    with pytest.raises(dspy_errors.LMUnsupportedFeatureError, match="image content") as raised:
        describe(image=dspy.Image("https://example.com/cat.png"))
    assert raised.value.feature == "messages[0].parts[1]"

    tool = lm15.FunctionTool(
        name="lookup", description="Look it up.", parameters={"type": "object"}
    )
    request = lm15.Request(model=lm.model, messages=(lm15.Message.user("hi"),), tools=(tool,))
    with pytest.raises(dspy_errors.LMUnsupportedFeatureError, match="native tool calling"):
        lm(request)
    assert sim.requests == []


# -- what DSPy keeps around a call ------------------------------------------------------


class Recorder(dspy.utils.callback.BaseCallback):  # type: ignore[misc]
    def __init__(self) -> None:
        self.started: list[Any] = []
        self.ended: list[Any] = []

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.started.append(instance)

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        self.ended.append(exception)


def test_history_usage_tracking_and_callbacks(sim: ProviderSimulator) -> None:
    recorder = Recorder()
    bridge = make_lm(sim, callbacks=[recorder])
    sim.respond(None, output=chat(answer="42"))
    sim.fault(status=503)

    with dspy.context(lm=bridge, adapter=None, track_usage=True):
        prediction = dspy.Predict("question -> answer")(question="The answer?")

    ours = bridge.dspy_async_lm.usage
    usage = prediction.get_lm_usage()[bridge.model]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        ours.prompt_tokens,
        ours.completion_tokens,
    )
    assert ours.total_tokens > 0
    assert len(bridge.history) == 1 and bridge.history[0]["outputs"] == [chat(answer="42")]
    shown = io.StringIO()
    bridge.inspect_history(file=shown)
    assert "The answer?" in shown.getvalue() and "[[ ## answer ## ]]" in shown.getvalue()
    assert recorder.started == [bridge] and recorder.ended == [None]


def test_dspy_context_picks_the_lm_for_each_call(sim: ProviderSimulator) -> None:
    first, second = make_lm(sim, model="model-a"), make_lm(sim, model="model-b")
    sim.respond(None, output=chat(answer="ok"))
    predict = dspy.Predict("question -> answer")
    with dspy.context(lm=first, adapter=None):
        predict(question="one")
        with dspy.context(lm=second):
            predict(question="two")
        predict(question="three")
    assert [r.body["model"] for r in sim.requests] == ["model-a", "model-b", "model-a"]


def test_dspy_cache_is_on_by_default_and_off_when_asked(sim: ProviderSimulator) -> None:
    sim.respond(None, output=chat(answer="cached"))
    question = f"a question never asked before: {uuid.uuid4()}"
    for bridge, sent in ((make_lm(sim, cache=False), 2), (make_lm(sim, cache=True), 3)):
        with dspy.context(lm=bridge, adapter=None):
            for _ in range(2):
                assert dspy.Predict("question -> answer")(question=question).answer == "cached"
        assert len(sim.requests) == sent


def test_the_lms_own_cache_is_skipped_so_nothing_is_cached_twice(
    sim: ProviderSimulator, response_cache: Any
) -> None:
    inner = dspy_async.LM(
        "openai/gpt-4o-mini", api_base=sim.openai_base_url, api_key=KEY, retry=FAST
    )
    bridge = dspy_async.dspy_lm(inner, cache=False)  # DSPy's cache off as well
    sim.respond(None, output=chat(answer="fresh"))
    question = f"a question never asked before: {uuid.uuid4()}"

    assert [ask(bridge, question).answer for _ in range(2)] == ["fresh", "fresh"]
    assert len(sim.requests) == 2
    inner(question)
    inner(question)  # the LM's own calls still use its cache
    assert len(sim.requests) == 3


# -- copies, pickles, saved programs, forks -------------------------------------------------


def test_copies_of_a_program_share_the_lm_and_its_limits(sim: ProviderSimulator) -> None:
    bridge = make_lm(sim, max_concurrency=4)
    program = dspy.ChainOfThought("question -> answer")
    program.set_lm(bridge)
    for copied in (copy.deepcopy(program), program.deepcopy()):
        assert copied.predictors()[0].lm.dspy_async_lm is bridge.dspy_async_lm

    warmer = bridge.copy(temperature=0.7)
    assert warmer.dspy_async_lm is bridge.dspy_async_lm and warmer.history == []
    sim.respond(None, output=chat(reasoning="r", answer="a"))
    with dspy.context(lm=warmer, adapter=None):
        dspy.ChainOfThought("question -> answer")(question="q")
    assert sim.requests[-1].body["temperature"] == 0.7


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_a_pickled_program_never_holds_the_key(
    sim: ProviderSimulator, monkeypatch: pytest.MonkeyPatch, dumps: Callable[[Any], bytes]
) -> None:
    bridge = make_lm(sim, max_concurrency=3, temperature=0.2)
    program = dspy.Predict(Triage)  # plain pickle cannot take a string signature's class
    program.set_lm(bridge)

    data = dumps(program)

    assert KEY.encode() not in data
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(dspy_async.ConfigurationError, match="OPENAI_API_KEY"):
        pickle.loads(data)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    restored = pickle.loads(data)
    inner = restored.lm.dspy_async_lm
    assert isinstance(restored.lm, DSPyAsyncLM) and inner is not bridge.dspy_async_lm
    assert (inner.max_concurrency, inner.params, inner.retry) == (3, {"temperature": 0.2}, FAST)
    sim.api_key = "sk-from-the-environment"  # any other key now gets a 401
    sim.respond(None, output=chat(category="bug", priority=1, urgent="false", tags="[]"))
    assert restored(ticket="It crashes").category == "bug"


def test_a_saved_program_loads_without_the_key_in_the_file(
    sim: ProviderSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    program = dspy.ChainOfThought("question -> answer")
    program.set_lm(make_lm(sim, temperature=0.3))
    path = tmp_path / "program.json"
    program.save(path)
    assert KEY not in path.read_text()

    fresh = dspy.ChainOfThought("question -> answer")
    with pytest.raises(ValueError, match="allow_unsafe_lm_state"):
        fresh.load(path)  # DSPy's rule for any LM class but its own
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    fresh.load(path, allow_unsafe_lm_state=True)

    loaded = fresh.predictors()[0].lm
    assert isinstance(loaded, DSPyAsyncLM) and loaded.kwargs["temperature"] == 0.3
    assert loaded.dspy_async_lm.params == {"temperature": 0.3}
    sim.api_key = "sk-from-the-environment"
    sim.respond(None, output=chat(reasoning="r", answer="loaded"))
    assert fresh(question="q").answer == "loaded"


@pytest.mark.slow
def test_forked_workers_run_the_program_on_their_own_runtime(
    sim: ProviderSimulator, lm: DSPyAsyncLM
) -> None:
    # gunicorn --preload: the parent builds (and here uses) the program, then forks workers.
    sim.respond(None, output=chat(answer="fine"))
    predict = dspy.Predict("question -> answer")
    assert predict(question="in the parent").answer == "fine"
    context = multiprocessing.get_context("fork")
    answers = context.SimpleQueue()

    def work() -> None:
        with dspy.context(lm=lm, adapter=None):
            answers.put(predict(question=f"in child {os.getpid()}").answer)

    children = [context.Process(target=work) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert [child.exitcode for child in children] == [0, 0]
    assert [answers.get(), answers.get()] == ["fine", "fine"]
    assert predict(question="in the parent again").answer == "fine"
    assert len(sim.requests) == 4
