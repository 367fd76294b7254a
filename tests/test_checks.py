"""Argument checks: every bad value fails before any request, with the same kind of message.

LM, RetryPolicy, batch and settings share `dspy_async._checks`, so each bad value is refused
with ConfigurationError naming the parameter, the value and what it may be. LM parameters are
checked against the provider's own (a misspelling names the closest one), and text, keys and
URLs that could never be sent are refused when they are given, not deep inside a request.
"""

from __future__ import annotations

import math
import re
from typing import Any

import httpx
import pytest

import dspy_async as dspy
from dspy_async import ConfigurationError, RetryPolicy, SignatureError
from dspy_async.adapters.messages import NO_INPUTS
from dspy_async.lm import LM
from dspy_async.testing import DummyLM, ProviderSimulator

KEY = "sk-test-0123456789abcdef"
NAN, INF = math.nan, math.inf


def sim_lm(sim: ProviderSimulator, provider: str = "openai", **kwargs: Any) -> LM:
    return LM(f"{provider}/test-model", api_key=KEY, api_base=sim.api_base(provider), **kwargs)


def lm_with(**kwargs: Any) -> LM:
    return LM("openai/m", api_key=KEY, **kwargs)


def retry_with(**kwargs: Any) -> RetryPolicy:
    return RetryPolicy(**kwargs)


def batch_with(**kwargs: Any) -> object:
    predict = dspy.Predict("q -> a", lm=DummyLM(respond=lambda messages: {"a": "x"}))
    return predict.batch([{"q": "1"}], **kwargs)


# -- one message for every bad value -------------------------------------------------------

BAD_COUNTS = ["4", 2.5, 0, -1, True, NAN, INF, None]
BAD_SECONDS = ["1", 0, -0.5, NAN, INF, False]

CASES = [
    *[(lm_with, "max_concurrency", v, "LM max_concurrency", ">= 1") for v in BAD_COUNTS[:-1]],
    *[(lm_with, "timeout", v, "LM timeout", "> 0") for v in BAD_SECONDS],
    *[(lm_with, "max_response_bytes", v, "LM max_response_bytes", ">= 1") for v in BAD_COUNTS],
    (lm_with, "max_tokens", 0, "LM max_tokens", ">= 1"),
    (lm_with, "temperature", -0.1, "LM temperature", ">= 0"),
    (lm_with, "temperature", NAN, "LM temperature", ">= 0"),
    (lm_with, "retry", {"max_attempts": 2}, "LM retry", "RetryPolicy"),
    (lm_with, "http_client", httpx.Client(), "LM http_client", "AsyncClient"),
    *[(retry_with, "max_attempts", v, "RetryPolicy max_attempts", ">= 1") for v in BAD_COUNTS],
    *[(retry_with, "max_elapsed", v, "RetryPolicy max_elapsed", "> 0") for v in BAD_SECONDS],
    (retry_with, "initial_delay", -1, "RetryPolicy initial_delay", ">= 0"),
    (retry_with, "initial_delay", NAN, "RetryPolicy initial_delay", ">= 0"),
    (retry_with, "max_delay", -1, "RetryPolicy max_delay", ">= 0"),
    (retry_with, "max_delay", INF, "RetryPolicy max_delay", ">= 0"),
    (retry_with, "jitter", "no", "RetryPolicy jitter", "True or False"),
    (retry_with, "respect_retry_after", 0, "RetryPolicy respect_retry_after", "True or False"),
    *[(batch_with, "max_concurrency", v, "batch max_concurrency", ">= 1") for v in BAD_COUNTS],
    *[(batch_with, "timeout", v, "batch timeout", "> 0") for v in BAD_SECONDS],
]


@pytest.mark.parametrize(("make", "param", "value", "name", "allowed"), CASES)
def test_bad_value_names_parameter_value_and_range(
    make: Any, param: str, value: object, name: str, allowed: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        make(**{param: value})
    message = str(raised.value)
    assert message.startswith(f"{name} must be "), message
    assert allowed in message
    assert f"not {repr(value)[:20]}" in message


def test_good_values_pass_and_are_normalised() -> None:
    lm = lm_with(max_concurrency=3, timeout=2, max_response_bytes=1000, temperature=0)
    assert (lm.max_concurrency, lm.timeout, lm.max_response_bytes) == (3, 2.0, 1000)
    assert lm_with(timeout=None, max_concurrency=None).timeout is None
    RetryPolicy(max_attempts=1, initial_delay=0, max_delay=0, max_elapsed=0.001)


def test_max_delay_below_initial_delay_says_both() -> None:
    with pytest.raises(ConfigurationError, match=r"max_delay must be >= initial_delay \(2\)"):
        RetryPolicy(initial_delay=2, max_delay=1)


def test_a_wrong_type_is_named_in_the_message() -> None:
    with pytest.raises(ConfigurationError, match=r"not '4' \(str\)"):
        lm_with(max_concurrency="4")


@pytest.mark.parametrize(
    ("values", "pattern"),
    [
        ({"retry_enabled": "false"}, r"setting retry_enabled must be True or False, not 'false'"),
        ({"retry_enabled": 1}, r"setting retry_enabled must be True or False, not 1"),
        ({"structured_outputs": {"max_retries": 1}}, r"must be a StructuredOutputSettings"),
        (
            {"structured_outputs": dspy.StructuredOutputSettings(max_retries=-1)},
            r"structured_outputs\.max_retries must be a whole number >= 0, not -1",
        ),
        (
            {"structured_outputs": dspy.StructuredOutputSettings(retry_enabled=None)},  # type: ignore[arg-type]
            r"structured_outputs\.retry_enabled must be True or False",
        ),
        ({"retry_enable": True}, r"unknown setting 'retry_enable'; did you mean 'retry_enabled'"),
    ],
)
def test_configure_and_context_check_values_alike(values: dict[str, Any], pattern: str) -> None:
    before = dspy.settings.retry_enabled
    with pytest.raises(ConfigurationError, match=pattern):
        dspy.configure(**values)
    with pytest.raises(ConfigurationError, match=pattern), dspy.context(**values):
        pass
    assert dspy.settings.retry_enabled is before


# -- LM parameters, checked against the provider's ---------------------------------------


@pytest.mark.parametrize(
    ("provider", "typo", "meant"),
    [
        ("openai", "temprature", "temperature"),
        ("openai", "max_token", "max_tokens"),
        ("anthropic", "stop_sequence", "stop_sequences"),
        ("anthropic", "topk", "top_k"),
        ("ollama", "num_ctxx", "num_ctx"),
        ("ollama", "keepalive", "keep_alive"),
    ],
)
def test_misspelt_parameter_names_the_closest_known_one(
    provider: str, typo: str, meant: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        LM(f"{provider}/m", api_key=KEY, **{typo: 1})
    message = str(raised.value)
    assert f"unknown {provider} parameter {typo!r}; did you mean {meant!r}?" in message
    assert "extra_body={...}" in message


def test_a_name_nothing_like_a_parameter_lists_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"'zzz'; known: .*temperature, tool_choice"):
        lm_with(zzz=1)


def test_misspelt_call_parameter_is_refused_before_any_request(
    provider_simulator: ProviderSimulator,
) -> None:
    lm = sim_lm(provider_simulator)
    with pytest.raises(ConfigurationError, match="did you mean 'temperature'"):
        lm("q", temprature=1)
    predict = dspy.Predict("q -> a", lm=lm)
    with pytest.raises(ConfigurationError, match="did you mean 'top_p'"):
        predict(q="x", config={"top_pp": 0.5})
    with dspy.context(lm=lm), pytest.raises(ConfigurationError, match="did you mean 'seed'"):
        dspy.Predict("q -> a", config={"seeed": 1})(q="x")
    assert provider_simulator.requests == []


def test_predict_config_is_checked_when_predict_is_made() -> None:
    with pytest.raises(ConfigurationError, match="did you mean 'max_tokens'"):
        dspy.Predict("q -> a", lm=lm_with(), config={"max_tokenz": 5})
    # DummyLM has no provider: its params are recorded, not checked.
    lm = DummyLM([{"a": "x"}])
    dspy.Predict("q -> a", lm=lm, config={"anything": 1})(q="x")
    assert lm.calls[0].params == {"anything": 1}


@pytest.mark.parametrize("argument", ["messages", "prompt", "output_schema"])
def test_call_arguments_are_not_lm_defaults(argument: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"{argument} is an argument of each call"):
        lm_with(**{argument: []})


def test_extra_body_sends_unknown_fields_on_purpose(provider_simulator: ProviderSimulator) -> None:
    sim = provider_simulator
    sim_lm(sim, extra_body={"top_k": 40, "min_p": 0.05})("q", temperature=0.5)
    sim_lm(sim, "anthropic")("q", extra_body={"anthropic_beta_field": True})
    sim_lm(sim, "ollama", temperature=0.1)("q", extra_body={"format": "json"})
    openai, anthropic, ollama = (request.body for request in sim.requests)
    assert (openai["top_k"], openai["min_p"], openai["temperature"]) == (40, 0.05, 0.5)
    assert "extra_body" not in openai
    assert anthropic["anthropic_beta_field"] is True
    # Ollama: merged at the top level of the body, not into its model options.
    assert ollama["format"] == "json" and ollama["options"] == {"temperature": 0.1}


def test_extra_body_must_be_a_dict_of_fields() -> None:
    with pytest.raises(ConfigurationError, match=r"extra_body must be a dict .*not \[1\]"):
        lm_with(extra_body=[1])
    with pytest.raises(ConfigurationError, match="extra_body must be a dict"):
        lm_with(extra_body={1: "x"})


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"seed": NAN}, "Out of range float values are not JSON compliant"),
        ({"logit_bias": {"50256": -INF}}, "Out of range float"),
        ({"stop": {"a", "b"}}, "Object of type set is not JSON serializable"),
        ({"user": "x\ud800"}, "it has a lone surrogate"),
        ({"extra_body": {"top_k": NAN}}, "Out of range float"),
    ],
)
def test_parameters_that_are_not_json_are_refused(
    provider_simulator: ProviderSimulator, params: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ConfigurationError, match=rf"cannot be sent as JSON: {reason}"):
        lm_with(**params)
    with pytest.raises(ConfigurationError, match=reason):
        sim_lm(provider_simulator)("q", **params)
    assert provider_simulator.requests == []


# -- keys and URLs ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "what"),
    [
        (f"{KEY}\n", "a line break at character 25"),
        (f"{KEY}\r\nX-Injected: 1", "a carriage return at character 25"),
        (f"sk-{'é'}{KEY}", "a non-ASCII character at character 4"),
        (f" {KEY}", "a space at character 1"),
        (f"{KEY}\x00", "a control character"),
    ],
)
@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
def test_a_key_that_cannot_go_in_a_header_is_refused_unquoted(
    provider: str, key: str, what: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        LM(f"{provider}/m", api_key=key, api_base="http://127.0.0.1:1")
    message = str(raised.value)
    assert message.startswith(f"api_key has {what}")
    assert KEY not in message and KEY[3:15] not in message


def test_a_key_from_the_environment_says_where_it_came_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", f"{KEY}\n")
    with pytest.raises(ConfigurationError, match="the OPENAI_API_KEY environment variable has a "):
        LM("openai/m")
    with pytest.raises(ConfigurationError, match="api_key must be a str, not bytes"):
        LM("openai/m", api_key=KEY.encode())  # type: ignore[arg-type]


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
def test_credentials_in_api_base_are_refused_unquoted(provider: str) -> None:
    with pytest.raises(ConfigurationError, match="must not carry credentials") as raised:
        LM(f"{provider}/m", api_key=KEY, api_base="https://user:hunter2-secret@example.com/v1")
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("api_base", "pattern"),
    [
        ("ftp://example.com/v1", "must be an http:// or https:// URL with a host"),
        ("http://", "must be an http:// or https:// URL with a host"),
        ("http://[::1/v1", "is not a valid URL"),
        (b"http://x", "api_base must be a URL string, not bytes"),
    ],
)
def test_a_bad_api_base_is_refused_at_construction(api_base: Any, pattern: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(pattern)):
        LM("openai/m", api_key=KEY, api_base=api_base)


def test_ollama_host_from_the_environment_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "http://me:pw@127.0.0.1:11434")
    with pytest.raises(ConfigurationError, match="the OLLAMA_HOST environment variable must not"):
        LM("ollama/m")
    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")
    assert repr(LM("ollama/m")) == "LM('ollama/m', host='http://127.0.0.1:9')"


# -- text that UTF-8 cannot encode -----------------------------------------------------


def test_lone_surrogates_in_messages_are_refused_before_any_request(
    provider_simulator: ProviderSimulator,
) -> None:
    lm = sim_lm(provider_simulator)
    with pytest.raises(TypeError, match=r"prompt holds a lone surrogate"):
        lm("caf\udce9")
    with pytest.raises(TypeError, match=r"messages\[1\]\['content'\] holds a lone surrogate"):
        lm(messages=[{"role": "system", "content": "ok"}, {"role": "user", "content": "\ud83d"}])
    assert provider_simulator.requests == []
    assert lm("a real emoji: \U0001f600").text  # a proper pair is fine


def test_message_shapes_are_checked() -> None:
    lm = DummyLM(["x"])
    with pytest.raises(TypeError, match="messages must be a list of message dicts, not str"):
        lm(messages="hello")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"messages\[0\] must be .*got a str"):
        lm(messages=["hello"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="prompt must be a str, not int"):
        lm(42)  # type: ignore[arg-type]
    assert lm.calls == []


def test_lone_surrogates_in_inputs_are_a_signature_error() -> None:
    lm = DummyLM([{"a": "x"}])
    with pytest.raises(SignatureError, match=r"input q holds a lone surrogate"):
        dspy.Predict("q -> a", lm=lm)(q="bad \udcff")
    nested = dspy.Predict("q: dict[str, list[str]] -> a", lm=lm)
    with pytest.raises(SignatureError, match=r"input q\['k'\]\[1\] holds a lone surrogate"):
        nested(q={"k": ["fine", "bad \udcff"]})
    assert lm.calls == []


# -- signatures ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["keys", "items", "values", "get", "copy", "json", "update"])
def test_fields_named_like_mapping_methods_work(name: str) -> None:
    lm = DummyLM([{name: "out"}, {"k": "done"}])
    result = dspy.Predict(f"q -> {name}", lm=lm)(q="x")
    assert (result[name], getattr(result, name), result.to_dict()) == ("out", "out", {name: "out"})
    assert dspy.Predict(f"{name} -> k", lm=lm)(**{name: "in"}).k == "done"
    assert f"{name}: in" in lm.calls[1].messages[-1]["content"]


def test_a_signature_without_inputs_asks_with_a_non_empty_user_turn(
    provider_simulator: ProviderSimulator,
) -> None:
    # DSPy allows "-> answer" (its parser takes an empty input list); so do we.
    provider_simulator.respond(output={"joke": "knock knock"})
    lm = sim_lm(provider_simulator, "anthropic")
    assert dspy.Predict("-> joke", lm=lm)().joke == "knock knock"
    [request] = provider_simulator.requests
    assert request.body["messages"] == [{"role": "user", "content": NO_INPUTS}]
    with pytest.raises(SignatureError, match=r"unknown input field\(s\): q \(inputs: none\)"):
        dspy.Predict("-> joke", lm=lm)(q="x")


@pytest.mark.parametrize("reply", ['{"score": 1e999}', '{"score": "nan"}', '{"score": "-inf"}'])
def test_nan_and_infinity_outputs_are_invalid_and_re_asked(reply: str) -> None:
    lm = DummyLM([reply, {"score": 0.25}])
    result = dspy.Predict("q -> score: float", lm=lm)(q="x")
    assert result.score == 0.25
    [invalid, ok] = result.attempts
    assert invalid.outcome == "invalid_output" and ok.outcome == "ok"
    assert "finite number" in (invalid.error or "")


def test_a_field_may_allow_infinity_explicitly() -> None:
    class Bound(dspy.Signature):
        q: str = dspy.InputField()
        limit: float = dspy.OutputField(allow_inf_nan=True)

    assert dspy.Predict(Bound, lm=DummyLM(['{"limit": 1e999}']))(q="x").limit == INF


# -- DummyLM ------------------------------------------------------------------------------


def test_dummy_lm_says_which_validation_error_used_up_its_script() -> None:
    lm = DummyLM([{"n": "one"}, {"n": "two"}])
    with pytest.raises(LookupError) as raised:
        dspy.Predict("q -> n: int", lm=lm)(q="x")
    message = str(raised.value)
    assert message.startswith("DummyLM ran out of scripted outputs after 2 (call #3 has none)")
    assert "the last output was re-asked because:\nn: Input should be a valid integer" in message
    assert "(got 'two')" in message
    with pytest.raises(LookupError) as plain:
        DummyLM()("q")
    assert "re-asked" not in str(plain.value)
