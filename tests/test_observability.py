"""What DSPy users call to see their calls: lm.history, inspect_history, callbacks with
DSPy's handler names, and Prediction.get_lm_usage(), against the simulator."""

import io
import pickle
import threading
from typing import Any

import pytest

import dspy_async as dspy
from dspy_async.testing import DummyLM, ProviderSimulator

SECRET = "sk-secret-0123456789"


def lm_for(sim: ProviderSimulator, provider: str = "openai") -> dspy.LM:
    return dspy.LM(f"{provider}/test-model", api_base=sim.api_base(provider), api_key=SECRET)


class Recorder(dspy.BaseCallback):
    """Every handler call, in order, as (handler, call_id, payload)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.threads: dict[str, str] = {}
        self._lock = threading.Lock()

    def _add(self, name: str, call_id: str, payload: Any) -> None:
        with self._lock:
            self.events.append((name, call_id, payload))
            self.threads[name] = threading.current_thread().name

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._add("module_start", call_id, (type(instance).__name__, inputs))

    def on_module_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self._add("module_end", call_id, (outputs, exception))

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._add("lm_start", call_id, (instance, inputs))

    def on_lm_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self._add("lm_end", call_id, (outputs, exception))

    def on_adapter_format_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._add("format_start", call_id, inputs)

    def on_adapter_format_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self._add("format_end", call_id, outputs)

    def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._add("parse_start", call_id, inputs)

    def on_adapter_parse_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self._add("parse_end", call_id, (outputs, exception))

    def on_tool_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._add("tool_start", call_id, inputs)

    def on_tool_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self._add("tool_end", call_id, (outputs, exception))

    def on_evaluate_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self._add("evaluate_start", call_id, inputs)

    def on_evaluate_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
        self._add("evaluate_end", call_id, outputs)

    def names(self) -> list[str]:
        return [name for name, _, _ in self.events]


# -- lm.history and inspect_history ----------------------------------------------------------


def test_history_entries_have_dspy_keys_and_no_key(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond(output={"answer": "4"})
    lm = lm_for(provider_simulator)
    dspy.Predict("question -> answer", lm=lm, temperature=0.2)(question="2+2?")
    (entry,) = lm.history
    assert set(entry) >= {
        "prompt",
        "messages",
        "kwargs",
        "response",
        "outputs",
        "usage",
        "cost",
        "timestamp",
        "uuid",
        "model",
        "response_model",
    }
    assert entry["model"] == "openai/test-model"
    assert entry["outputs"] == ['{"answer": "4"}']
    assert entry["messages"][-1]["content"].startswith("question: 2+2?")
    assert entry["kwargs"] == {"temperature": 0.2}
    assert entry["usage"]["total_tokens"] == entry["response"].usage.total_tokens > 0
    assert SECRET not in repr(entry)
    out = io.StringIO()
    dspy.inspect_history(1, file=out)
    printed = out.getvalue()
    assert "User message:" in printed and "question: 2+2?" in printed
    assert '{"answer": "4"}' in printed and "\x1b[" not in printed  # no colour into a file
    assert SECRET not in printed


def test_history_is_bounded_and_can_be_off() -> None:
    lm = DummyLM(["a"] * 10)
    with dspy.context(max_history_size=3):
        for index in range(5):
            lm(f"prompt {index}")
    assert [entry["prompt"] for entry in lm.history] == ["prompt 2", "prompt 3", "prompt 4"]
    with dspy.context(disable_history=True):
        lm("prompt 5")
    assert len(lm.history) == 3
    out = io.StringIO()
    lm.inspect_history(2, file=out)
    assert "prompt 3" in out.getvalue() and "prompt 4" in out.getvalue()
    assert "prompt 2" not in out.getvalue()


def test_a_copy_of_an_lm_starts_with_no_history() -> None:
    lm = DummyLM(["a"])
    lm("hello")
    assert len(lm.history) == 1
    assert pickle.loads(pickle.dumps(lm)).history == []


def test_history_shows_images_by_size_not_data() -> None:
    lm = DummyLM(["a cat"])
    url = "data:image/png;base64," + "A" * 400
    lm(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])
    out = io.StringIO()
    lm.inspect_history(file=out)
    assert "400 characters" in out.getvalue() and "A" * 100 not in out.getvalue()


def test_settings_are_checked() -> None:
    with pytest.raises(dspy.ConfigurationError, match="max_history_size"):
        dspy.configure(max_history_size=-1)
    with pytest.raises(dspy.ConfigurationError, match="callbacks"):
        dspy.configure(callbacks=Recorder())
    with pytest.raises(dspy.ConfigurationError, match="track_usage"):
        dspy.configure(track_usage="yes")


# -- callbacks ---------------------------------------------------------------------------------


def test_module_lm_and_adapter_events_in_order(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond(output={"reasoning": "r", "answer": "4"})
    recorder = Recorder()
    cot = dspy.ChainOfThought("question -> answer", lm=lm_for(provider_simulator))
    with dspy.context(callbacks=[recorder]):
        result = cot(question="2+2?")
    assert recorder.names() == [
        "module_start",  # ChainOfThought
        "module_start",  # its Predict
        "format_start",
        "format_end",
        "lm_start",
        "lm_end",
        "parse_start",
        "parse_end",
        "module_end",
        "module_end",
    ]
    (_, outer, (name, inputs)), (_, inner, (inner_name, _)) = recorder.events[:2]
    assert (name, inner_name) == ("ChainOfThought", "Predict")
    assert inputs == {"args": (), "kwargs": {"question": "2+2?"}}
    ends = {call_id: payload for name, call_id, payload in recorder.events if name == "module_end"}
    assert ends[outer] == (result, None) and ends[inner] == (result, None)
    lm_end = next(payload for name, _, payload in recorder.events if name == "lm_end")
    assert lm_end == (['{"reasoning": "r", "answer": "4"}'], None)
    assert recorder.threads["module_start"] == threading.current_thread().name
    assert recorder.threads["lm_start"] != threading.current_thread().name  # the runtime loop


def test_a_failed_call_ends_with_its_exception(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="status", status=400, times=1)
    recorder = Recorder()
    step = dspy.Predict("question -> answer", lm=lm_for(provider_simulator))
    with dspy.context(callbacks=[recorder]), pytest.raises(dspy.BadRequestError):
        step(question="q")
    module_end = next(p for n, _, p in recorder.events if n == "module_end")
    lm_end = next(p for n, _, p in recorder.events if n == "lm_end")
    assert module_end[0] is None and isinstance(module_end[1], dspy.BadRequestError)
    assert lm_end[0] is None and isinstance(lm_end[1], dspy.BadRequestError)


def test_a_failing_handler_is_logged_and_never_fails_the_call(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(dspy.BaseCallback):
        def on_module_start(self, call_id: str, instance: Any, inputs: Any) -> None:
            raise RuntimeError("handler bug")

    lm = DummyLM([{"answer": "ok"}])
    with dspy.context(callbacks=[Broken()]):
        assert dspy.Predict("question -> answer", lm=lm)(question="q").answer == "ok"
    assert "handler bug" in caplog.text


def test_callbacks_see_async_and_batch_calls() -> None:
    recorder = Recorder()
    lm = DummyLM(respond=lambda messages: {"answer": "ok"})
    step = dspy.Predict("question -> answer", lm=lm)
    with dspy.context(callbacks=[recorder]):
        step.batch([{"question": str(i)} for i in range(4)], max_concurrency=2)
    starts = [p for n, _, p in recorder.events if n == "module_start"]
    assert sorted(inputs["kwargs"]["question"] for _, inputs in starts) == ["0", "1", "2", "3"]
    assert recorder.names().count("lm_end") == 4


def test_tool_and_evaluate_events() -> None:
    recorder = Recorder()

    def add(a: int, b: int) -> int:
        return a + b

    tool = dspy.Tool(add)
    devset = [dspy.Example(question="q", answer="ok").with_inputs("question")]
    evaluate = dspy.Evaluate(devset=devset, metric=lambda ex, pred: pred.answer == ex.answer)
    step = dspy.Predict("question -> answer", lm=DummyLM(respond=lambda m: {"answer": "ok"}))
    with dspy.context(callbacks=[recorder]):
        assert tool(a=1, b=2) == 3
        result = evaluate(step)
    events = {name: payload for name, _, payload in recorder.events}
    assert events["tool_start"] == {"kwargs": {"a": 1, "b": 2}}
    assert events["tool_end"] == (3, None)
    assert events["evaluate_start"]["program"] is step
    assert events["evaluate_end"] is result


# -- get_lm_usage ---------------------------------------------------------------------------


class TwoSteps(dspy.Module):
    def __init__(self, first: dspy.BaseLM, second: dspy.BaseLM) -> None:
        self.first = dspy.Predict("question -> answer", lm=first)
        self.second = dspy.Predict("answer -> check", lm=second)

    def forward(self, question: str) -> dspy.Prediction:
        answer = self.first(question=question).answer
        return dspy.Prediction(check=self.second(answer=answer).check)


def test_get_lm_usage_sums_the_call_per_model(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond(output={"answer": "4", "check": "fine"})
    openai, anthropic = lm_for(provider_simulator), lm_for(provider_simulator, "anthropic")
    program = TwoSteps(openai, anthropic)
    assert program(question="2+2?").get_lm_usage() is None  # off unless asked, as in DSPy
    with dspy.context(track_usage=True):
        result = program(question="2+2?")
        inner = program.first(question="3+3?")  # a call of its own is a top-level call
    usage = result.get_lm_usage()
    assert set(usage) == {"openai/test-model", "anthropic/test-model"}
    billed = {
        r.provider: r.prompt_tokens + r.completion_tokens for r in provider_simulator.requests[2:4]
    }
    assert usage["openai/test-model"]["total_tokens"] == billed["openai"]
    assert usage["anthropic/test-model"]["total_tokens"] == billed["anthropic"]
    assert set(inner.get_lm_usage()) == {"openai/test-model"}


async def test_get_lm_usage_from_async_code() -> None:
    lm = DummyLM([{"answer": "4"}])
    with dspy.context(track_usage=True):
        result = await dspy.Predict("question -> answer", lm=lm).acall(question="2+2?")
    assert result.get_lm_usage()["dummy/dummy"]["total_tokens"] == result.usage.total_tokens
