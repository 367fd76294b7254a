"""Reading the providers' rate-limit headers, and the simulator writing them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dspy_async.ratelimit.headers import Observation, observe, parse_duration, select
from dspy_async.testing._rate_limits import format_duration

NOW = 1_750_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1s", 1.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("17.297s", 17.297),
        ("0s", 0.0),
        ("2.5", 2.5),
        ("150us", 0.00015),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-1s", "1 s", "5x", "1s2", "nan", "-3"])
def test_durations_that_are_not(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize("seconds", [0.0, 0.02, 0.999, 1.0, 1.5, 59.25, 360.0, 3723.5])
def test_the_simulator_writes_durations_that_read_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=0.001)


def test_openai_headers() -> None:
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "599",
        "x-ratelimit-reset-requests": "100ms",
        "x-ratelimit-limit-tokens": "150000",
        "x-ratelimit-remaining-tokens": "149984",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert observe(headers, now=NOW) == {
        "requests": Observation(600, 599, 0.1),
        "tokens": Observation(150000, 149984, 360.0),
    }


def test_anthropic_headers_use_input_and_output_tokens_over_the_combined_figure() -> None:
    reset = datetime.fromtimestamp(NOW + 12.5, UTC).isoformat().replace("+00:00", "Z")
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": "8000",
        "anthropic-ratelimit-tokens-remaining": "7000",
        "anthropic-ratelimit-input-tokens-limit": "40000",
        "anthropic-ratelimit-input-tokens-remaining": "39000",
        "anthropic-ratelimit-input-tokens-reset": reset,
        "anthropic-ratelimit-output-tokens-limit": "8000",
        "anthropic-ratelimit-output-tokens-remaining": "7000",
        "anthropic-ratelimit-output-tokens-reset": "2020-01-01T00:00:00Z",  # past: now
    }
    found = observe(headers, now=NOW)
    assert found == {
        "requests": Observation(50, 49, pytest.approx(12.5)),
        "input_tokens": Observation(40000, 39000, pytest.approx(12.5)),
        "output_tokens": Observation(8000, 7000, 0.0),
    }
    del headers["anthropic-ratelimit-input-tokens-limit"]
    del headers["anthropic-ratelimit-output-tokens-limit"]
    assert observe(headers, now=NOW)["tokens"] == Observation(8000, 7000, None)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-ratelimit-limit-requests": "-1", "x-ratelimit-remaining-requests": "-1"},
        {"x-ratelimit-limit-requests": "0", "x-ratelimit-remaining-requests": "0"},
        {"x-ratelimit-limit-requests": "many"},
        {"x-ratelimit-limit-requests": "inf"},
        {"x-ratelimit-remaining-requests": "10", "x-ratelimit-reset-requests": "1s"},
        {"anthropic-ratelimit-requests-limit": "nan"},
    ],
)
def test_nonsense_is_ignored(headers: dict[str, str]) -> None:
    assert observe(headers, now=NOW) == {}


def test_nonsense_parts_of_a_sensible_limit_are_dropped() -> None:
    headers = {
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "-5",
        "x-ratelimit-reset-tokens": "whenever",
        "anthropic-ratelimit-requests-limit": "10",
        "anthropic-ratelimit-requests-remaining": "99",  # more than the limit
        "anthropic-ratelimit-requests-reset": "2025-01-01 00:00:00",  # no offset
    }
    assert observe(headers, now=NOW) == {
        "tokens": Observation(1000, None, None),
        "requests": Observation(10, 10, None),
    }


def test_select_keeps_only_rate_limit_and_retry_after_headers() -> None:
    headers = {
        "Content-Type": "application/json",
        "X-RateLimit-Limit-Requests": "5",
        "anthropic-ratelimit-tokens-limit": "7",
        "Retry-After": "2",
        "retry-after-ms": "2000",
        "set-cookie": "secret",
    }
    assert select(headers) == {
        "x-ratelimit-limit-requests": "5",
        "anthropic-ratelimit-tokens-limit": "7",
        "retry-after": "2",
        "retry-after-ms": "2000",
    }
