"""Predict, ChainOfThought, Module and Prediction against DummyLM (no network)."""

import asyncio
import enum
import json
import pickle
import threading
from collections.abc import Iterator
from typing import Any, Literal, Optional

import pydantic
import pytest

from dspy_async.errors import (
    ConfigurationError,
    OutputValidationError,
    SignatureError,
    UnsupportedParameterError,
)
from dspy_async.lm import Message
from dspy_async.module import Module
from dspy_async.predict import ChainOfThought, Predict
from dspy_async.prediction import Prediction
from dspy_async.records import Attempt, Usage
from dspy_async.settings import StructuredOutputSettings, configure, context, settings
from dspy_async.signatures import InputField, OutputField, Signature
from dspy_async.testing._dummy import DummyLM


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(pydantic.BaseModel):
    city: str
    zip_code: str | None = None


class Person(pydantic.BaseModel):
    name: str
    addresses: list[Address]


class EmailClassifier(Signature):
    """Classify an email by intent."""

    email_content: str = InputField(desc="raw email text")
    category: Literal["meeting", "spam", "other"] = OutputField()
    confidence: float = OutputField(ge=0, le=1)


GOOD = {"category": "meeting", "confidence": 0.9}


@pytest.fixture(autouse=True)
def no_global_lm() -> Iterator[None]:
    configure(lm=None)
    yield
    configure(lm=None)


def prompt_only(lm: DummyLM) -> DummyLM:
    lm.supports_native_structured = False
    return lm


def echo_lm(name: str) -> DummyLM:
    """A DummyLM that answers {"answer": name} forever."""
    return DummyLM(respond=lambda messages: {"answer": name})


# ---- every output type round-trips -------------------------------------------------------

ROUND_TRIPS: list[tuple[Any, Any, Any]] = [
    (str, "hello", "hello"),
    (int, 42, 42),
    (float, 0.25, 0.25),
    (bool, False, False),
    (Literal["a", "b"], "b", "b"),
    (Color, "blue", Color.BLUE),
    (list[int], [1, 2, 3], [1, 2, 3]),
    (list[Literal["x", "y"]], ["y", "x"], ["y", "x"]),
    (dict[str, int], {"a": 1, "b": 2}, {"a": 1, "b": 2}),
    (dict[str, list[float]], {"k": [0.5]}, {"k": [0.5]}),
    (Optional[int], None, None),  # noqa: UP045
    (Optional[int], 7, 7),  # noqa: UP045
    (Address, {"city": "Oslo"}, Address(city="Oslo")),
    (
        Person,
        {"name": "Ann", "addresses": [{"city": "Oslo", "zip_code": "0150"}]},
        Person(name="Ann", addresses=[Address(city="Oslo", zip_code="0150")]),
    ),
]


@pytest.mark.parametrize("native", [True, False], ids=["native", "prompt_json"])
@pytest.mark.parametrize(("annotation", "sent", "expected"), ROUND_TRIPS)
def test_every_output_type_round_trips(
    annotation: Any, sent: Any, expected: Any, native: bool
) -> None:
    class Typed(Signature):
        question: str = InputField()
        value: annotation = OutputField()  # type: ignore[valid-type]

    lm = DummyLM([{"value": sent}])
    lm.supports_native_structured = native
    result = Predict(Typed, lm=lm)(question="q")
    assert result.value == expected
    assert type(result.value) is type(expected)
    call = lm.calls[0]
    if not native:
        assert call.output_schema is None
        assert 'one JSON object with the keys "value"' in call.messages[0]["content"]
    else:  # dict outputs cannot be expressed in strict mode: sent natively, strict off
        assert call.output_schema is not None
        assert call.output_schema.schema["required"] == ["value"]
        dict_output = annotation in (dict[str, int], dict[str, list[float]])
        assert call.output_schema.strict is not dict_output


def test_string_signature_with_several_typed_outputs() -> None:
    lm = DummyLM(['{"score": 0.5, "toxic": false}'])
    result = Predict("text -> score: float, toxic: bool", lm=lm)(text="hi")
    assert (result.score, result.toxic) == (0.5, False)
    assert lm.calls[0].messages[1]["content"] == "text: hi"


def test_prompt_json_reply_with_prose_and_fence_is_parsed() -> None:
    lm = prompt_only(DummyLM(['Sure! Here you go:\n```json\n{"answer": "Paris"}\n```']))
    assert Predict("question -> answer", lm=lm)(question="Capital of France?").answer == "Paris"


# ---- invalid output is re-asked with the error --------------------------------------------

INVALID_REPLIES = [
    pytest.param({"category": "urgent", "confidence": 0.5}, "Input should be 'meeting'", id="enum"),
    pytest.param({"category": "spam"}, "confidence: Field required", id="missing"),
    pytest.param("I think it is a meeting.", "no JSON object", id="non_json"),
    pytest.param('{"category": "spam", ', "not valid JSON", id="broken_json"),
    pytest.param(
        {"category": "spam", "confidence": 7}, "less than or equal to 1 (got 7)", id="constraint"
    ),
]


@pytest.mark.parametrize("native", [True, False], ids=["native", "prompt_json"])
@pytest.mark.parametrize(("bad", "error"), INVALID_REPLIES)
def test_invalid_output_is_reasked_with_the_error_then_succeeds(
    bad: Any, error: str, native: bool
) -> None:
    lm = DummyLM([bad, GOOD])
    lm.supports_native_structured = native
    result = Predict(EmailClassifier, lm=lm)(email_content="Meet at 3?")
    assert result.to_dict() == GOOD
    assert len(lm.calls) == 2
    first, second = (call.messages for call in lm.calls)
    bad_text = bad if isinstance(bad, str) else json.dumps(bad)
    assert second[: len(first)] == first
    assert second[len(first)] == {"role": "assistant", "content": bad_text}
    assert second[-1]["role"] == "user"
    assert error in second[-1]["content"]
    assert [a.outcome for a in result.attempts] == ["invalid_output", "ok"]
    assert [a.number for a in result.attempts] == [1, 2]
    assert error in (result.attempts[0].error or "")
    assert result.usage == lm.usage  # both replies counted


def test_exhausted_reasks_raise_output_validation_error_with_every_attempt() -> None:
    replies = ["nope", {"category": "urgent", "confidence": 0.1}, {"category": "spam"}]
    lm = DummyLM(list(replies))
    with pytest.raises(OutputValidationError) as caught:
        Predict(EmailClassifier, lm=lm)(email_content="x")
    error = caught.value
    assert len(lm.calls) == 3  # the first ask + max_retries (2) re-asks
    assert error.raw_outputs == ["nope", json.dumps(replies[1]), json.dumps(replies[2])]
    assert len(error.errors) == 3
    assert "no JSON object" in error.errors[0]
    assert "urgent" in error.errors[1]
    assert "confidence: Field required" in error.errors[2]
    assert [a.outcome for a in error.attempts] == ["invalid_output"] * 3
    assert [a.number for a in error.attempts] == [1, 2, 3]
    assert "after 3 replies" in str(error)
    assert pickle.loads(pickle.dumps(error)).raw_outputs == error.raw_outputs


def test_retry_disabled_raises_on_the_first_invalid_output() -> None:
    lm = DummyLM(["nope", GOOD])
    with (
        context(structured_outputs=StructuredOutputSettings(retry_enabled=False)),
        pytest.raises(OutputValidationError) as caught,
    ):
        Predict(EmailClassifier, lm=lm)(email_content="x")
    assert len(lm.calls) == 1
    assert caught.value.raw_outputs == ["nope"]
    assert "after 1 reply" in str(caught.value)


def test_max_retries_setting_is_read_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings.structured_outputs, "max_retries", 1)  # dspy.settings style
    lm = DummyLM(["bad", "bad", GOOD])
    with pytest.raises(OutputValidationError):
        Predict(EmailClassifier, lm=lm)(email_content="x")
    assert len(lm.calls) == 2
    with context(structured_outputs=StructuredOutputSettings(max_retries=5)):
        assert Predict(EmailClassifier, lm=DummyLM(["bad"] * 5 + [GOOD]))(email_content="x")


def test_native_rejection_falls_back_to_prompt_json_and_is_remembered() -> None:
    rejected = UnsupportedParameterError(
        "response_format is not supported",
        provider="dummy",
        status_code=400,
        attempts=[Attempt(number=1, outcome="error", error="400", status_code=400)],
    )
    lm = DummyLM([rejected, GOOD, GOOD])
    predict = Predict(EmailClassifier, lm=lm)
    result = predict(email_content="x")
    assert result.category == "meeting"
    assert lm.supports_native_structured is False
    assert lm.calls[0].output_schema is not None
    assert lm.calls[1].output_schema is None
    assert "one JSON object with the keys" in lm.calls[1].messages[0]["content"]
    assert [a.outcome for a in result.attempts] == ["error", "ok"]
    predict(email_content="again")
    assert len(lm.calls) == 3
    assert lm.calls[2].output_schema is None  # remembered: no second native try


def test_unsupported_parameter_on_a_plain_call_propagates() -> None:
    lm = prompt_only(DummyLM([UnsupportedParameterError("temperature not supported")]))
    with pytest.raises(UnsupportedParameterError):
        Predict(EmailClassifier, lm=lm)(email_content="x")


# ---- bad inputs and configuration fail before any call ------------------------------------


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("hello",), {}, "keyword arguments only \\(email_content=...\\)"),
        ((), {}, "missing input field\\(s\\): email_content"),
        ((), {"email_content": "x", "emial": 1}, "unknown input field\\(s\\): emial"),
        ((), {"email_content": 12}, "email_content: Input should be a valid string"),
    ],
)
def test_bad_inputs_raise_signature_error_before_any_call(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    lm = DummyLM([GOOD])
    with pytest.raises(SignatureError, match=message):
        Predict(EmailClassifier, lm=lm)(*args, **kwargs)
    assert lm.calls == []


async def test_bad_inputs_raise_before_any_call_in_async_code_too() -> None:
    lm = DummyLM([GOOD])
    with pytest.raises(SignatureError, match="missing input"):
        await Predict(EmailClassifier, lm=lm).acall()
    assert lm.calls == []


def test_no_lm_configured_says_how_to_configure_one() -> None:
    with pytest.raises(ConfigurationError, match=r"call dspy\.configure\(lm=\.\.\.\)"):
        Predict(EmailClassifier)(email_content="x")


def test_a_string_where_an_lm_is_expected_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"dspy\.LM\('openai/gpt-4o-mini'\)"):
        Predict(EmailClassifier, lm="openai/gpt-4o-mini")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not the string"):
        Predict(EmailClassifier)(email_content="x", lm="openai/gpt-4o-mini")


def test_predict_rejects_signatures_without_outputs_and_bad_config() -> None:
    class InputsOnly(Signature):
        a: str = InputField()

    with pytest.raises(SignatureError, match="no output field"):
        Predict(InputsOnly)
    with pytest.raises(ConfigurationError, match="config cannot set messages"):
        Predict(EmailClassifier, config={"messages": []})
    with pytest.raises(ConfigurationError, match="mapping"):
        Predict(EmailClassifier, lm=DummyLM())(email_content="x", config=0.2)


def test_lm_resolution_order() -> None:
    predict = Predict("question -> answer")
    pinned = Predict("question -> answer", lm=echo_lm("predict"))
    configure(lm=echo_lm("configure"))
    assert predict(question="q").answer == "configure"
    with context(lm=echo_lm("context")):
        assert predict(question="q").answer == "context"
        assert pinned(question="q").answer == "predict"
        assert pinned(question="q", lm=echo_lm("call")).answer == "call"
    assert predict(question="q").answer == "configure"


def test_config_is_passed_to_the_lm_per_call_over_predict_defaults() -> None:
    lm = echo_lm("x")
    predict = Predict("question -> answer", lm=lm, config={"temperature": 0.1, "max_tokens": 9})
    predict(question="q", config={"temperature": 0.7})
    assert lm.calls[0].params == {"temperature": 0.7, "max_tokens": 9}


# ---- ChainOfThought, Prediction, Module -------------------------------------------------


def test_chain_of_thought_adds_reasoning_first() -> None:
    lm = DummyLM([{"reasoning": "It proposes a time.", **GOOD}])
    cot = ChainOfThought(EmailClassifier, lm=lm)
    assert list(cot.signature.output_fields) == ["reasoning", "category", "confidence"]
    result = cot(email_content="Meet at 3?")
    assert result.reasoning == "It proposes a time."
    assert result.category == "meeting"
    schema = lm.calls[0].output_schema
    assert schema is not None
    assert list(schema.schema["properties"]) == ["reasoning", "category", "confidence"]
    assert repr(cot).startswith("ChainOfThought(EmailClassifier(email_content: str -> reasoning")


def test_prediction_access_usage_and_repr() -> None:
    lm = DummyLM([GOOD])
    result = Predict(EmailClassifier, lm=lm).call(email_content="hi there")
    assert isinstance(result, Prediction)
    assert result.category == result["category"] == "meeting"
    assert result.to_dict() == GOOD
    assert list(result) == ["category", "confidence"]
    assert "confidence" in result
    assert repr(result) == "Prediction(category='meeting', confidence=0.9)"
    assert result.usage == lm.usage and result.usage.total_tokens > 0
    assert result.attempts[0].outcome == "ok"
    with pytest.raises(AttributeError, match="no field 'answer'"):
        _ = result.answer
    copy = pickle.loads(pickle.dumps(result))
    assert copy == result and copy.usage == result.usage and copy.attempts == result.attempts


def test_prediction_built_by_hand() -> None:
    made = Prediction(answer="4", usage=Usage(1, 2))
    assert made.answer == "4" and made.usage.total_tokens == 3 and made.attempts == ()


async def test_acall_from_another_event_loop_and_concurrent_calls() -> None:
    seen_threads: set[str] = set()

    def respond(messages: list[Message]) -> dict[str, Any]:
        seen_threads.add(threading.current_thread().name)
        return {"answer": messages[-1]["content"].removeprefix("question: ")}

    predict = Predict("question -> answer", lm=DummyLM(respond=respond))
    results = await asyncio.gather(*(predict.acall(question=str(i)) for i in range(20)))
    assert [r.answer for r in results] == [str(i) for i in range(20)]
    assert seen_threads == {"dspy-async-runtime"}  # the work ran on the runtime loop


class SyncPipeline(Module):
    def __init__(self) -> None:
        self.classify = Predict(EmailClassifier)

    def forward(self, email_content: str) -> Prediction:
        return self.classify(email_content=email_content)


class AsyncPipeline(Module):
    def __init__(self) -> None:
        self.classify = Predict(EmailClassifier)

    async def aforward(self, email_content: str) -> Prediction:
        return await self.classify.acall(email_content=email_content)


@pytest.mark.parametrize("pipeline", [SyncPipeline, AsyncPipeline])
async def test_modules_run_sync_and_async_whichever_they_define(pipeline: type[Module]) -> None:
    configure(lm=DummyLM(respond=lambda messages: GOOD))
    module = pipeline()
    assert (await module.acall("a")).category == "meeting"
    assert (await asyncio.to_thread(module, "b")).category == "meeting"
    assert (await asyncio.to_thread(module.call, email_content="c")).category == "meeting"


def test_module_sync_call_of_each_kind() -> None:
    configure(lm=DummyLM(respond=lambda messages: GOOD))
    assert SyncPipeline()("a").category == "meeting"
    assert AsyncPipeline()("a").confidence == 0.9


def test_module_without_forward_says_what_to_define() -> None:
    class Empty(Module):
        pass

    with pytest.raises(NotImplementedError, match="Empty must define forward\\(\\) or aforward"):
        Empty()()
    with pytest.raises(NotImplementedError, match="Empty must define"):
        asyncio.run(Empty().acall())


def test_context_overrides_are_isolated_between_50_threads() -> None:
    configure(lm=echo_lm("global"))
    predict = Predict("question -> answer")
    count = 50
    barrier = threading.Barrier(count, timeout=60)
    results: dict[int, list[str]] = {}

    def worker(index: int) -> None:
        answers = []
        if index % 5 == 0:  # some threads use no override and must see the global LM
            barrier.wait()
            answers.append(predict(question="q").answer)
        else:
            with context(lm=echo_lm(f"thread-{index}")):
                barrier.wait()  # every override is in force at once
                answers.append(predict(question="q").answer)
                answers.append(asyncio.run(predict.acall(question="q")).answer)
        answers.append(predict(question="q").answer)  # the override is gone after the block
        results[index] = answers

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == count
    for index, answers in results.items():
        if index % 5 == 0:
            assert answers == ["global", "global"]
        else:
            assert answers == [f"thread-{index}", f"thread-{index}", "global"]
