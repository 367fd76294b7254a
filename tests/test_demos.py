"""Few-shot demos on the wire, n completions, and Predict's config, against the simulator."""

import json
from typing import Any, Literal

import pytest

import dspy_async as dspy
from dspy_async.adapters.messages import INCOMPLETE_DEMO, NOT_SUPPLIED, build_messages
from dspy_async.errors import ConfigurationError, OutputValidationError
from dspy_async.testing import DummyLM, ProviderSimulator

PROVIDERS = ["openai", "anthropic", "ollama"]


class Classify(dspy.Signature):
    """Classify an email by intent."""

    email: str = dspy.InputField()
    category: Literal["meeting", "spam", "other"] = dspy.OutputField()
    confidence: float = dspy.OutputField(ge=0, le=1)


DEMOS = [
    dspy.Example(email="Lunch at noon?", category="meeting", confidence=0.9),
    dspy.Example(email="WIN A CRUISE", category="spam", confidence=1.0),
]


def make_lm(sim: ProviderSimulator, provider: str, *, native: bool) -> dspy.LM:
    lm = dspy.LM(f"{provider}/test-model", api_base=sim.api_base(provider), api_key="k")
    lm.supports_native_structured = native
    return lm


def chat_turns(body: dict[str, Any], provider: str) -> list[tuple[str, str]]:
    """(role, text) of each non-system message of a request body, whatever the wire format."""
    turns = []
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, list):  # Anthropic content blocks
            content = "".join(block["text"] for block in content if block.get("type") == "text")
        if message["role"] != "system":
            turns.append((message["role"], content))
    return turns


@pytest.mark.parametrize("native", [True, False], ids=["native", "prompt_json"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_demos_are_sent_as_user_and_assistant_turns_before_the_question(
    provider_simulator: ProviderSimulator, provider: str, native: bool
) -> None:
    provider_simulator.respond(output={"category": "other", "confidence": 0.5})
    classify = dspy.Predict(Classify, lm=make_lm(provider_simulator, provider, native=native))
    classify.demos = list(DEMOS)
    result = classify(email="Invoice attached")
    assert result.toDict() == {"category": "other", "confidence": 0.5}
    (request,) = provider_simulator.requests
    turns = chat_turns(request.body, provider)
    assert [role for role, _ in turns] == ["user", "assistant", "user", "assistant", "user"]
    assert turns[0][1] == "email: Lunch at noon?"
    assert json.loads(turns[1][1]) == {"category": "meeting", "confidence": 0.9}
    assert turns[2][1] == "email: WIN A CRUISE"
    assert json.loads(turns[3][1]) == {"category": "spam", "confidence": 1.0}
    assert turns[4][1].startswith("email: Invoice attached")
    assert ("Answer in JSON" in turns[4][1]) is not native


def test_demos_from_a_simulator_made_answer_still_validate(
    provider_simulator: ProviderSimulator,
) -> None:
    # No scripted answer: the simulator answers from the prompt's closing example, which must
    # still be the last object in the prompt, after the demos' objects.
    classify = dspy.Predict(Classify, lm=make_lm(provider_simulator, "openai", native=False))
    classify.demos = [dspy.Example(email="x", category="spam", confidence=0.25)]
    assert classify(email="y").category in {"meeting", "spam", "other"}


def test_incomplete_demos_come_first_and_say_what_is_missing() -> None:
    demos = [
        dspy.Example(email="full", category="spam", confidence=1.0),
        dspy.Example(email="no confidence", category="meeting"),
        dspy.Example(category="other", confidence=0.1),  # no input: skipped
        dspy.Example(email="no outputs"),  # no output: skipped
        {"email": "a dict", "category": "spam", "confidence": 0.5, "unrelated": "ignored"},
        dspy.Example(email="none is missing", category=None, confidence=0.3),
    ]
    messages = build_messages(Classify, {"email": "q"}, json_format=False, demos=demos)
    texts = [(m["role"], m["content"]) for m in messages[1:]]
    assert texts == [
        ("user", f"{INCOMPLETE_DEMO}\n\nemail: no confidence"),
        ("assistant", '{"category":"meeting"}'),
        ("user", f"{INCOMPLETE_DEMO}\n\nemail: none is missing"),
        ("assistant", '{"confidence":0.3}'),
        ("user", "email: full"),
        ("assistant", '{"category":"spam","confidence":1.0}'),
        ("user", "email: a dict"),
        ("assistant", '{"category":"spam","confidence":0.5}'),
        ("user", "email: q"),
    ]
    two = dspy.Signature("question, context -> answer")
    (user, _, _) = build_messages(
        two,
        {"question": "q", "context": "c"},
        json_format=False,
        demos=[{"question": "dq", "answer": "da"}],
    )[1:]
    assert user["content"] == f"{INCOMPLETE_DEMO}\n\nquestion: dq\n\ncontext: {NOT_SUPPLIED}"


def test_demo_values_of_any_type_are_written_as_json() -> None:
    sig = dspy.Signature("items: list[int] -> total: int, parts: dict[str, int]")
    demo = dspy.Example(items=[1, 2], total=3, parts={"a": 1})
    _, user, assistant, _ = build_messages(sig, {"items": [4]}, json_format=True, demos=[demo])
    assert user["content"] == "items: [1,2]"
    assert json.loads(assistant["content"]) == {"total": 3, "parts": {"a": 1}}


def test_demos_are_read_at_call_time_and_checked() -> None:
    lm = DummyLM([{"answer": "1"}, {"answer": "2"}])
    qa = dspy.Predict("question -> answer", lm=lm)
    assert qa.demos == []
    qa(question="a")
    qa.demos = [dspy.Example(question="d", answer="e")]
    qa(question="b")
    assert len(lm.calls[0].messages) == 2 and len(lm.calls[1].messages) == 4
    qa.demos = ["not a demo"]  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match=r"demos\[0\] must be an Example or a dict"):
        qa(question="c")
    qa.demos = dspy.Example(question="d", answer="e")  # type: ignore[assignment]
    with pytest.raises(ConfigurationError, match="demos must be a list"):
        qa(question="c")
    assert len(lm.calls) == 2
    qa.demos = [dspy.Example(question="d", answer="e")]
    qa.reset()
    assert qa.demos == [] and qa.lm is lm


def test_chain_of_thought_holds_its_predict_and_its_demos() -> None:
    lm = DummyLM([{"reasoning": "because", "answer": "4"}])
    cot = dspy.ChainOfThought("question -> answer", lm=lm)
    assert isinstance(cot.predict, dspy.Predict)
    assert list(cot.predict.signature.output_fields) == ["reasoning", "answer"]
    assert cot.signature is cot.predict.signature
    cot.predict.demos = [dspy.Example(question="1+1", reasoning="one and one", answer="2")]
    result = cot(question="2+2")
    assert (result.reasoning, result.answer) == ("because", "4")
    assert json.loads(lm.calls[0].messages[2]["content"]) == {
        "reasoning": "one and one",
        "answer": "2",
    }


# ---- config, n ----------------------------------------------------------------------


def test_config_as_keywords_get_and_update() -> None:
    lm = DummyLM([{"answer": "x"}] * 2)
    qa = dspy.Predict("question -> answer", lm=lm, temperature=0.3, config={"max_tokens": 5})
    assert qa.get_config() == {"max_tokens": 5, "temperature": 0.3}
    qa.update_config(temperature=0.9, seed=1)
    assert qa.get_config() == {"max_tokens": 5, "temperature": 0.9, "seed": 1}
    qa(question="q")
    assert lm.calls[0].params == {"max_tokens": 5, "temperature": 0.9, "seed": 1}
    with pytest.raises(ConfigurationError, match="config cannot set messages"):
        qa.update_config(messages=[])
    assert "messages" not in qa.get_config()


def test_update_config_checks_the_parameters_of_the_lm_provider() -> None:
    lm = dspy.LM("anthropic/claude", api_base="http://127.0.0.1:9", api_key="k")
    qa = dspy.Predict("question -> answer", lm=lm)
    with pytest.raises(ConfigurationError, match="temprature"):
        qa.update_config(temprature=0.5)
    assert qa.get_config() == {}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_n_completions_are_n_requests_each_validated(
    provider_simulator: ProviderSimulator, provider: str
) -> None:
    provider_simulator.fault(kind="invalid_output", times=1)
    for category in ("meeting", "spam", "other"):
        provider_simulator.respond(output={"category": category, "confidence": 0.5}, times=1)
    classify = dspy.Predict(Classify, lm=make_lm(provider_simulator, provider, native=True), n=3)
    result = classify(email="hello")
    assert result.completions is not None and len(result.completions) == 3
    assert sorted(result.completions.category) == ["meeting", "other", "spam"]
    assert result.category == result.completions[0].category
    requests = provider_simulator.requests
    assert len(requests) == 4  # one completion was re-asked
    assert all("n" not in r.body for r in requests)
    assert all(
        r.body.get("temperature", r.body.get("options", {}).get("temperature")) == 0.7
        for r in requests
    )
    assert result.usage == sum((c.usage for c in result.completions), dspy.Usage())
    assert [a.number for a in result.attempts] == [1, 2, 3, 4]
    assert sorted(a.outcome for a in result.attempts) == ["invalid_output", "ok", "ok", "ok"]


def test_n_from_the_call_config_keeps_an_explicit_temperature() -> None:
    lm = DummyLM([{"answer": str(i)} for i in range(3)])
    qa = dspy.Predict("question -> answer", lm=lm, temperature=0.0)
    result = qa(question="q", config={"n": 2})
    assert result.completions is not None and len(result.completions) == 2
    assert [c.params for c in lm.calls] == [{"temperature": 0.0}] * 2
    assert qa(question="q").completions is not None  # n=1: one completion, as in DSPy
    with pytest.raises(ConfigurationError, match=r"n \(the number of completions\) must be"):
        qa(question="q", config={"n": 0})
    with pytest.raises(ConfigurationError, match=r"n \(the number of completions\) must be"):
        dspy.Predict("question -> answer", n=True)


def test_one_failed_completion_fails_the_step() -> None:
    lm = DummyLM([{"answer": "ok"}, "not json", "still not json"])
    qa = dspy.Predict("question -> answer", lm=lm, n=2)
    settings = dspy.StructuredOutputSettings(max_retries=0)
    with dspy.context(structured_outputs=settings), pytest.raises(OutputValidationError):
        qa(question="q")


def test_n_completions_with_the_response_cache_are_cached_apart(
    provider_simulator: ProviderSimulator, response_cache: Any
) -> None:
    for answer in ("a", "b", "c"):
        provider_simulator.respond(output={"answer": answer}, times=1)
    lm = make_lm(provider_simulator, "openai", native=True)
    qa = dspy.Predict("question -> answer", lm=lm, n=3)
    first = qa(question="q")
    assert first.completions is not None
    assert sorted(first.completions.answer) == ["a", "b", "c"]  # not one answer three times
    assert len(provider_simulator.requests) == 3
    again = qa(question="q")  # the same three rollouts, from the cache
    assert again.completions is not None
    assert again.completions.answer == first.completions.answer
    assert len(provider_simulator.requests) == 3
