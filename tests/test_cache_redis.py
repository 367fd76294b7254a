"""The Redis tier against a real redis-server: entries with a TTL, and an outage survived."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import redis

from dspy_async import cache
from dspy_async.cache import configure_cache
from dspy_async.cache.redis import PREFIX
from dspy_async.lm import LM
from dspy_async.testing import ProviderSimulator
from tests.redis_server import RedisServer


@pytest.fixture
def lm(provider_simulator: ProviderSimulator) -> Iterator[LM]:
    yield LM("openai/test-model", api_base=provider_simulator.openai_base_url, api_key="sk-r")
    cache.reset()


def test_answers_are_kept_in_redis_with_the_ttl(
    lm: LM, provider_simulator: ProviderSimulator, redis_url: str
) -> None:
    configure_cache(enable_memory_cache=False, enable_disk_cache=False, shared=redis_url, ttl=60)
    first = lm("kept in redis")
    second = lm("kept in redis")
    assert second.cached and second.text == first.text
    assert len(provider_simulator.requests) == 1
    with redis.Redis.from_url(redis_url) as client:
        (key,) = client.keys(PREFIX + "*")
        assert 0 < client.pttl(key) <= 60_000
        assert client.get(key).startswith(b'{"v":1,')  # JSON, never pickle


def test_a_redis_hit_fills_the_local_tiers(
    lm: LM, provider_simulator: ProviderSimulator, redis_url: str
) -> None:
    configure_cache(enable_disk_cache=False, shared=redis_url)
    lm("from redis to memory")
    configure_cache(enable_disk_cache=False, shared=redis_url)  # a new process, say
    assert lm("from redis to memory").cached
    with redis.Redis.from_url(redis_url) as client:
        client.flushall()
    assert lm("from redis to memory").cached  # now from memory
    assert len(provider_simulator.requests) == 1


@pytest.mark.slow
def test_losing_redis_logs_one_warning_and_calls_go_on(
    lm: LM,
    provider_simulator: ProviderSimulator,
    spare_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure_cache(enable_memory_cache=False, enable_disk_cache=False, shared=spare_redis.url)
    lm("before the outage")
    spare_redis.kill()
    with caplog.at_level(logging.WARNING, logger="dspy_async"):
        answers = [lm(f"during the outage {i}") for i in range(5)]
    assert all(not a.cached and a.text for a in answers)
    outages = [r for r in caplog.records if "Redis at" in r.getMessage()]
    assert len(outages) == 1
    assert "using the local tiers" in outages[0].getMessage()
