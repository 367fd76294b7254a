"""DummyLM and the BaseLM contract it shares with LM: scripting, recording, usage, input checks."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from dspy_async.errors import RateLimitError
from dspy_async.lm import OutputSchema
from dspy_async.records import Usage
from dspy_async.testing._dummy import DummyCall, DummyLM


def test_scripted_outputs_in_order_dicts_as_json() -> None:
    lm = DummyLM(["first answer", {"answer": 4}])
    assert lm("q1").text == "first answer"
    response = lm(messages=[{"role": "user", "content": "q2"}])
    assert json.loads(response.text) == {"answer": 4}
    assert response.provider == "dummy"
    assert response.finish_reason == "stop"
    assert [a.outcome for a in response.attempts] == ["ok"]


def test_scripted_exception_is_raised() -> None:
    error = RateLimitError("slow down", provider="dummy", status_code=429)
    lm = DummyLM([error, "ok"])
    with pytest.raises(RateLimitError) as raised:
        lm("q")
    assert raised.value is error
    assert lm("q").text == "ok"
    assert len(lm.calls) == 2


def test_respond_callable_answers_once_script_is_used_up() -> None:
    lm = DummyLM(["scripted"], respond=lambda messages: {"echo": messages[-1]["content"]})
    assert lm("a").text == "scripted"
    assert json.loads(lm("b").text) == {"echo": "b"}


def test_running_out_of_outputs_says_so() -> None:
    lm = DummyLM(["only"])
    lm("a")
    with pytest.raises(LookupError, match=r"ran out of scripted outputs after 1 \(call #2"):
        lm("b")


def test_calls_are_recorded_with_schema_and_params() -> None:
    schema = OutputSchema("Answer", {"type": "object"})
    lm = DummyLM(["x"])
    lm(
        messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        output_schema=schema,
        temperature=0.5,
    )
    assert lm.calls == [
        DummyCall(
            messages=[{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            output_schema=schema,
            params={"temperature": 0.5},
        )
    ]


def test_usage_per_response_and_cumulative_across_threads() -> None:
    lm = DummyLM(respond=lambda messages: "two words")
    threads = [threading.Thread(target=lm, args=("three word prompt",)) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert lm.usage == Usage(prompt_tokens=60, completion_tokens=40)
    assert lm.usage.total_tokens == 100


async def test_acall_from_user_loop_and_concurrently() -> None:
    lm = DummyLM(respond=lambda messages: messages[0]["content"].upper())
    texts = await asyncio.gather(*(lm.acall(f"q{i}") for i in range(5)))
    assert [r.text for r in texts] == ["Q0", "Q1", "Q2", "Q3", "Q4"]


@pytest.mark.parametrize(
    ("prompt", "messages"),
    [
        (None, None),
        ("p", [{"role": "user", "content": "m"}]),
        (None, []),
        (None, [{"role": "robot", "content": "m"}]),
        (None, [{"role": "user", "content": 3}]),
        (None, [{"role": "user"}]),
    ],
)
def test_bad_input_is_rejected_before_the_model_sees_it(prompt: object, messages: object) -> None:
    lm = DummyLM(["never"])
    with pytest.raises(TypeError):
        lm(prompt, messages=messages)  # type: ignore[arg-type]
    assert lm.calls == []
