"""The simulator's rate-limited and overloaded modes, seen from a plain HTTP client."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from dspy_async.ratelimit.headers import observe
from dspy_async.testing import ProviderSimulator

OPENAI_BODY = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
ANTHROPIC_BODY = {**OPENAI_BODY, "max_tokens": 50}
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


def post_openai(sim: ProviderSimulator, key: str = "sk-a", **body: object) -> httpx.Response:
    return httpx.post(
        f"{sim.openai_base_url}/chat/completions",
        json={**OPENAI_BODY, **body},
        headers={"authorization": f"Bearer {key}"},
    )


def test_openai_replies_carry_the_buckets_and_a_429_says_when(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.rate_limit(requests=2, tokens=10_000, per=60.0)
    first = post_openai(provider_simulator)
    assert first.status_code == 200
    seen = observe(first.headers)
    assert seen["requests"].limit == 2 and seen["requests"].remaining == 1
    assert seen["requests"].reset == pytest.approx(30.0, abs=0.5)
    assert seen["tokens"].limit == 10_000
    assert post_openai(provider_simulator).status_code == 200
    refused = post_openai(provider_simulator)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert int(refused.headers["retry-after"]) == 30
    assert int(refused.headers["retry-after-ms"]) == pytest.approx(30_000, abs=600)
    assert observe(refused.headers)["requests"].remaining == 0
    assert [r.outcome for r in provider_simulator.requests] == ["ok", "ok", "rate_limited"]
    # Buckets are per key; reset() ends the mode.
    assert post_openai(provider_simulator, key="sk-b").status_code == 200
    provider_simulator.reset()
    assert "x-ratelimit-limit-requests" not in post_openai(provider_simulator).headers


def test_tokens_are_reserved_up_to_max_tokens_then_settled_to_what_was_used(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.rate_limit(tokens=1_000, per=60.0)
    assert post_openai(provider_simulator, max_tokens=900).status_code == 200
    used = provider_simulator.requests[0]
    left = observe(post_openai(provider_simulator).headers)["tokens"].remaining
    assert left is not None
    spent = 2 * (used.prompt_tokens + used.completion_tokens)
    assert 1_000 - spent - 2 <= left <= 1_000 - spent + 2
    assert post_openai(provider_simulator, max_tokens=999).status_code == 429


def test_anthropic_replies_carry_anthropic_headers(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.rate_limit(requests=5, input_tokens=1_000, output_tokens=100, per=60.0)
    reply = httpx.post(
        f"{provider_simulator.anthropic_base_url}/v1/messages",
        json=ANTHROPIC_BODY,
        headers={**ANTHROPIC_HEADERS, "x-api-key": "sk-ant"},
    )
    assert reply.status_code == 200
    seen = observe(reply.headers)
    assert set(seen) == {"requests", "input_tokens", "output_tokens"}
    assert seen["requests"].remaining == 4
    assert seen["requests"].reset == pytest.approx(12.0, abs=0.5)
    assert not any(name.startswith("x-ratelimit") for name in reply.headers)
    too_long = httpx.post(
        f"{provider_simulator.anthropic_base_url}/v1/messages",
        json={**ANTHROPIC_BODY, "max_tokens": 200},  # more output than the bucket holds
        headers={**ANTHROPIC_HEADERS, "x-api-key": "sk-ant"},
    )
    assert too_long.status_code == 429
    assert too_long.json()["error"]["type"] == "rate_limit_error"
    assert "retry-after-ms" not in too_long.headers


@pytest.mark.parametrize("kwargs", [{"requests": 0}, {"tokens": -5}, {"requests": 5, "per": 0}])
def test_rate_limit_arguments_are_checked(
    provider_simulator: ProviderSimulator, kwargs: dict[str, float]
) -> None:
    with pytest.raises(ValueError):
        provider_simulator.rate_limit(**kwargs)  # type: ignore[arg-type]


async def test_an_overloaded_server_refuses_what_is_beyond_its_capacity(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.latency = 0.3
    provider_simulator.overload(3)
    async with httpx.AsyncClient() as client:
        replies = await asyncio.gather(
            *(
                client.post(
                    f"{provider_simulator.openai_base_url}/chat/completions", json=OPENAI_BODY
                )
                for _ in range(5)
            )
        )
    assert sorted(r.status_code for r in replies) == [200, 200, 200, 503, 503]
    assert sorted(r.outcome for r in provider_simulator.requests) == [
        "ok",
        "ok",
        "ok",
        "overloaded",
        "overloaded",
    ]
    with pytest.raises(ValueError):
        provider_simulator.overload(0)
