"""Predict over real HTTP against the ProviderSimulator, for OpenAI, Anthropic and Ollama."""

import enum
from typing import Any, Literal, Optional

import pydantic
import pytest

from dspy_async.errors import AuthenticationError, OutputValidationError, SignatureError
from dspy_async.lm import LM
from dspy_async.predict import ChainOfThought, Predict
from dspy_async.settings import StructuredOutputSettings, context
from dspy_async.signatures import InputField, OutputField, Signature
from dspy_async.testing import ProviderSimulator

PROVIDERS = ["openai", "anthropic", "ollama"]
# The request field that carries the native schema, per provider.
NATIVE_FIELD = {"openai": "response_format", "anthropic": "tool_choice", "ollama": "format"}


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Address(pydantic.BaseModel):
    city: str
    zip_code: Optional[str] = None  # noqa: UP045


class Everything(Signature):
    """Fill in every field."""

    text: str = InputField(desc="any text")
    summary: str = OutputField()
    count: int = OutputField(ge=0, le=10)
    score: float = OutputField(ge=0, le=1)
    flag: bool = OutputField()
    label: Literal["x", "y"] = OutputField()
    mood: Mood = OutputField()
    tags: list[str] = OutputField()
    maybe: Optional[int] = OutputField()  # noqa: UP045
    address: Address = OutputField()
    homes: list[Address] = OutputField()


class WithMap(Signature):
    """Count words."""

    text: str = InputField()
    counts: dict[str, int] = OutputField()


class Classify(Signature):
    """Classify an email by intent."""

    email_content: str = InputField()
    category: Literal["meeting", "spam", "other"] = OutputField()
    confidence: float = OutputField(ge=0, le=1)


EVERYTHING = {
    "summary": "short",
    "count": 3,
    "score": 0.5,
    "flag": True,
    "label": "y",
    "mood": "sad",
    "tags": ["a", "b"],
    "maybe": None,
    "address": {"city": "Oslo", "zip_code": "0150"},
    "homes": [{"city": "Bergen", "zip_code": None}],
}
GOOD = {"category": "spam", "confidence": 0.25}


def make_lm(sim: ProviderSimulator, provider: str, *, native: bool = True) -> LM:
    lm = LM(f"{provider}/test-model", api_base=sim.api_base(provider), api_key="k")
    lm.supports_native_structured = native
    return lm


def sent_natively(body: Any, provider: str) -> bool:
    return NATIVE_FIELD[provider] in body


@pytest.mark.parametrize("native", [True, False], ids=["native", "prompt_json"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_every_type_round_trips_over_http(
    provider_simulator: ProviderSimulator, provider: str, native: bool
) -> None:
    provider_simulator.respond(output=EVERYTHING)
    result = Predict(Everything, lm=make_lm(provider_simulator, provider, native=native))(
        text="hello"
    )
    assert result.to_dict() == {
        **EVERYTHING,
        "mood": Mood.SAD,
        "address": Address(city="Oslo", zip_code="0150"),
        "homes": [Address(city="Bergen")],
    }
    (request,) = provider_simulator.requests
    assert sent_natively(request.body, provider) is native
    assert result.usage.total_tokens > 0
    assert [a.outcome for a in result.attempts] == ["ok"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_values_the_simulator_makes_up_from_our_native_schema_validate(
    provider_simulator: ProviderSimulator, provider: str
) -> None:
    for text in ("anything", "something else"):
        result = Predict(Everything, lm=make_lm(provider_simulator, provider))(text=text)
        assert 0 <= result.count <= 10 and isinstance(result.mood, Mood)
    assert [r.match_attempt for r in provider_simulator.requests] == [1, 1]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_dict_outputs_go_native_without_openai_strict_mode(
    provider_simulator: ProviderSimulator, provider: str
) -> None:
    lm = make_lm(provider_simulator, provider)
    counts = Predict(WithMap, lm=lm)(text="a b a").counts  # a value generated from the schema
    assert isinstance(counts, dict) and all(isinstance(v, int) for v in counts.values())
    (request,) = provider_simulator.requests
    assert sent_natively(request.body, provider)
    if provider == "openai":
        assert request.body["response_format"]["json_schema"]["strict"] is False


@pytest.mark.parametrize("native", [True, False], ids=["native", "prompt_json"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_invalid_output_is_reasked_over_http_with_the_error_in_the_prompt(
    provider_simulator: ProviderSimulator, provider: str, native: bool
) -> None:
    provider_simulator.fault(kind="invalid_output", times=1)
    provider_simulator.respond(output=GOOD)
    result = Predict(Classify, lm=make_lm(provider_simulator, provider, native=native))(
        email_content="Buy now!"
    )
    assert result.to_dict() == GOOD
    first, second = provider_simulator.requests
    assert first.outcome == "invalid_output" and second.outcome == "ok"
    assert "Your reply was invalid:" in second.text
    assert result.attempts[0].error is not None
    assert result.attempts[0].error.splitlines()[0] in second.text
    assert [a.outcome for a in result.attempts] == ["invalid_output", "ok"]


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"category": "urgent", "confidence": 0.5}, "Input should be 'meeting', 'spam' or 'other'"),
        ({"category": "spam"}, "confidence: Field required"),
        ("Definitely spam.", "the reply contains no JSON object"),
        ({"category": "spam", "confidence": 3}, "less than or equal to 1 (got 3)"),
    ],
    ids=["enum", "missing", "non_json", "constraint"],
)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_kind_of_invalid_output_is_quoted_back(
    provider_simulator: ProviderSimulator, provider: str, bad: Any, error: str
) -> None:
    provider_simulator.respond(output=bad, times=1)
    provider_simulator.respond(output=GOOD)
    lm = make_lm(provider_simulator, provider, native=False)
    assert Predict(Classify, lm=lm)(email_content="Buy now!").to_dict() == GOOD
    first, second = provider_simulator.requests
    assert error in second.text and error not in first.text


@pytest.mark.parametrize("provider", PROVIDERS)
def test_exhaustion_raises_output_validation_error_with_every_attempt(
    provider_simulator: ProviderSimulator, provider: str
) -> None:
    provider_simulator.fault(kind="invalid_output", times=3)
    with pytest.raises(OutputValidationError) as caught:
        Predict(Classify, lm=make_lm(provider_simulator, provider))(email_content="x")
    assert len(provider_simulator.requests) == 3
    assert len(caught.value.raw_outputs) == len(caught.value.errors) == 3
    assert [a.outcome for a in caught.value.attempts] == ["invalid_output"] * 3
    assert [a.status_code for a in caught.value.attempts] == [200] * 3


def test_retry_disabled_raises_on_the_first_invalid_output_over_http(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.fault(kind="invalid_output", times=1)
    with (
        context(structured_outputs=StructuredOutputSettings(retry_enabled=False)),
        pytest.raises(OutputValidationError),
    ):
        Predict(Classify, lm=make_lm(provider_simulator, "openai"))(email_content="x")
    assert len(provider_simulator.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_native_rejection_falls_back_to_prompt_json_and_is_remembered(
    provider_simulator: ProviderSimulator, provider: str
) -> None:
    provider_simulator.fault(kind="unsupported_param", times=1)
    provider_simulator.respond(output=GOOD)
    lm = make_lm(provider_simulator, provider)
    predict = Predict(Classify, lm=lm)
    result = predict(email_content="Lunch tomorrow?")
    assert result.to_dict() == GOOD
    rejected, fallback = provider_simulator.requests
    assert sent_natively(rejected.body, provider) and rejected.status == 400
    assert not sent_natively(fallback.body, provider)
    assert 'one JSON object with the keys "category"' in fallback.text
    assert lm.supports_native_structured is False
    assert [a.outcome for a in result.attempts] == ["error", "ok"]
    predict(email_content="Again?")
    assert not sent_natively(provider_simulator.requests[2].body, provider)
    assert len(provider_simulator.requests) == 3


def test_llama_cpp_style_500_naming_response_format_also_falls_back(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.fault(
        kind="status", status=500, message="Unsupported response_format type: json_schema"
    )
    provider_simulator.respond(output=GOOD)
    lm = make_lm(provider_simulator, "openai")
    assert Predict(Classify, lm=lm)(email_content="x").category
    assert lm.supports_native_structured is False
    assert len(provider_simulator.requests) == 2


def test_bad_inputs_never_reach_the_server(provider_simulator: ProviderSimulator) -> None:
    predict = Predict(Classify, lm=make_lm(provider_simulator, "openai"))
    for args, kwargs in [
        (("positional",), {}),
        ((), {}),
        ((), {"email_content": "x", "extra": 1}),
        ((), {"email_content": ["not", "a", "string"]}),
    ]:
        with pytest.raises(SignatureError):
            predict(*args, **kwargs)
    assert provider_simulator.requests == []


async def test_async_chain_of_thought_over_http(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond(output={"reasoning": "Sells things.", **GOOD})
    cot = ChainOfThought(Classify, lm=make_lm(provider_simulator, "anthropic"))
    result = await cot.acall(email_content="Buy now!")
    assert (result.reasoning, result.category) == ("Sells things.", "spam")
    (request,) = provider_simulator.requests
    assert request.body["tools"][0]["input_schema"]["required"] == [
        "reasoning",
        "category",
        "confidence",
    ]


def test_provider_error_after_a_reask_carries_the_whole_history(
    provider_simulator: ProviderSimulator,
) -> None:
    sim = provider_simulator
    sim.fault(kind="invalid_output")
    sim.fault(kind="status", status=401, message="key revoked")
    lm = make_lm(sim, "openai")
    with pytest.raises(AuthenticationError) as info:
        Predict(Classify, lm=lm)(email_content="hello")
    assert [a.outcome for a in info.value.attempts] == ["invalid_output", "error"]
    assert [a.number for a in info.value.attempts] == [1, 2]
