"""The budget's rules, held to the same cases in the local store and in Redis (Lua)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import pytest
import redis

from dspy_async.ratelimit.bucket import HEADROOM, START_MARGIN, Limit, Settlement
from dspy_async.ratelimit.headers import Observation
from dspy_async.ratelimit.shared import KEY_PREFIX, RECONNECT_AFTER, RedisStore
from dspy_async.ratelimit.store import LocalStore, Store
from tests.redis_server import RedisServer, command

KEY = "openai|https://api.example.com|0123456789abcdef|gpt-4o-mini"
SLOW = 1e-6  # a refill rate so slow that the time between two steps of a test is nothing


def costs(requests: float = 1, tokens: float = 0, inputs: float = 0, outputs: float = 0):
    return {
        "requests": float(requests),
        "tokens": float(tokens),
        "input_tokens": float(inputs),
        "output_tokens": float(outputs),
    }


@pytest.fixture(params=["local", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[Store]:
    if request.param == "local":
        yield LocalStore()
        return
    url = request.getfixturevalue("redis_url")
    shared = RedisStore(url, LocalStore())
    yield shared
    await shared.aclose()


def now() -> float:
    return time.monotonic()


async def test_nothing_known_lets_everything_through_blind(store: Store) -> None:
    for _ in range(50):
        grant = await store.take(KEY, costs(tokens=10_000), {}, now())
        assert grant.taken and grant.blind


async def test_a_configured_limit_paces_requests(store: Store) -> None:
    limits = {"requests": Limit(2, 0.5)}
    assert (await store.take(KEY, costs(), limits, now())).taken
    grant = await store.take(KEY, costs(), limits, now())
    assert grant.taken and not grant.blind
    short = await store.take(KEY, costs(), limits, now())
    assert not short.taken
    assert short.reason == "requests"
    # A new budget starts refilling START_MARGIN after its first take, as the provider's
    # starts when that request arrives.
    assert short.wait == pytest.approx(2.0 + START_MARGIN, abs=0.1)


async def test_taking_is_all_or_nothing(store: Store) -> None:
    limits = {"requests": Limit(3, SLOW), "tokens": Limit(100, SLOW)}
    assert (await store.take(KEY, costs(tokens=80), limits, now())).taken
    short = await store.take(KEY, costs(tokens=80), limits, now())
    assert not short.taken and short.reason == "tokens"
    # The refused take took no request: two are still there.
    assert (await store.take(KEY, costs(tokens=0), limits, now())).taken
    assert (await store.take(KEY, costs(tokens=0), limits, now())).taken
    assert not (await store.take(KEY, costs(tokens=0), limits, now())).taken


async def test_a_cost_over_capacity_waits_for_a_full_bucket_then_leaves_a_debt(
    store: Store,
) -> None:
    limits = {"tokens": Limit(100, 100.0)}
    assert (await store.take(KEY, costs(tokens=250), limits, now())).taken
    grant = await store.take(KEY, costs(tokens=1), limits, now())
    assert grant.wait == pytest.approx(1.51 + START_MARGIN, abs=0.1)


async def test_limits_and_levels_are_learned_from_headers(store: Store) -> None:
    seen = {"requests": Observation(limit=10, remaining=4, reset=3.0)}
    await store.settle(KEY, Settlement(observed=seen), {}, now())
    for _ in range(4):
        assert (await store.take(KEY, costs(), {}, now())).taken
    grant = await store.take(KEY, costs(), {}, now())
    rate = (10 - 4 - 1) / 3.0 * HEADROOM  # remaining is rounded down: one less is sure
    assert grant.reason == "requests"
    assert grant.wait == pytest.approx(1 / rate, abs=0.1)


async def test_a_learned_limit_without_a_reset_refills_over_a_minute(store: Store) -> None:
    seen = {"tokens": Observation(limit=60, remaining=0, reset=None)}
    await store.settle(KEY, Settlement(observed=seen), {}, now())
    grant = await store.take(KEY, costs(tokens=1), {}, now())
    assert grant.wait == pytest.approx(1 / HEADROOM, abs=0.1)


async def test_configured_limits_win_over_learned_ones(store: Store) -> None:
    limits = {"requests": Limit(20, SLOW)}
    seen = {"requests": Observation(limit=2, remaining=None, reset=None)}
    await store.settle(KEY, Settlement(observed=seen), limits, now())
    granted = [(await store.take(KEY, costs(), limits, now())).taken for _ in range(21)]
    assert granted == [True] * 20 + [False]


async def test_what_the_server_says_remains_caps_the_level(store: Store) -> None:
    # Others share the key outside this budget: the server's count is the truth.
    limits = {"requests": Limit(20, SLOW)}
    seen = {"requests": Observation(limit=20, remaining=3, reset=None)}
    await store.settle(KEY, Settlement(observed=seen), limits, now())
    granted = [(await store.take(KEY, costs(), limits, now())).taken for _ in range(4)]
    assert granted == [True, True, True, False]


async def test_refunds_return_what_an_estimate_overshot(store: Store) -> None:
    limits = {"tokens": Limit(100, SLOW)}
    assert (await store.take(KEY, costs(tokens=60), limits, now())).taken
    assert not (await store.take(KEY, costs(tokens=60), limits, now())).taken
    await store.settle(KEY, Settlement(refunds={"tokens": 50.0}), limits, now())
    assert (await store.take(KEY, costs(tokens=60), limits, now())).taken
    # A negative refund charges what an estimate undershot.
    await store.settle(KEY, Settlement(refunds={"tokens": -200.0}), limits, now())
    assert not (await store.take(KEY, costs(tokens=0.5), limits, now())).taken


async def test_a_pause_closes_the_whole_budget(store: Store) -> None:
    await store.settle(KEY, Settlement(pause=1.5), {}, now())
    grant = await store.take(KEY, costs(), {}, now())
    assert grant.reason == "pause"
    assert grant.wait == pytest.approx(1.5, abs=0.1)
    other = await store.take(KEY.replace("gpt-4o-mini", "gpt-4o"), costs(), {}, now())
    assert other.taken  # another model's budget is another budget


async def test_anthropic_dimensions_are_separate_budgets(store: Store) -> None:
    seen = {
        "input_tokens": Observation(limit=1000, remaining=1000, reset=None),
        "output_tokens": Observation(limit=100, remaining=100, reset=None),
    }
    await store.settle(KEY, Settlement(observed=seen), {}, now())
    assert (await store.take(KEY, costs(inputs=900, outputs=50), {}, now())).taken
    short = await store.take(KEY, costs(inputs=50, outputs=80), {}, now())
    assert short.reason == "output_tokens"


async def test_redis_holds_the_budget_under_a_prefixed_key_with_a_lifetime(
    redis_server: RedisServer, redis_url: str
) -> None:
    shared = RedisStore(redis_url, LocalStore())
    try:
        await shared.take(KEY, costs(), {"requests": Limit(5, 1.0)}, now())
    finally:
        await shared.aclose()
    assert command(redis_server.port, "EXISTS", KEY_PREFIX + KEY) == b":1"
    ttl = int(command(redis_server.port, "TTL", KEY_PREFIX + KEY)[1:])
    assert 0 < ttl <= 86_400


async def test_redis_down_falls_back_to_the_local_budget_with_one_warning(
    spare_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    local = LocalStore()
    shared = RedisStore(spare_redis.url, local)
    limits = {"requests": Limit(3, SLOW)}
    fast = {"requests": Limit(3, 10.0)}
    try:
        assert (await shared.take(KEY, costs(), limits, now())).taken
        spare_redis.kill()
        caplog.set_level(logging.INFO, logger="dspy_async")
        started = time.monotonic()
        # The local budget is the fallback, empty at first (the fleet may have spent the
        # shared one) and refilling at the limit's rate.
        short = await shared.take(KEY, costs(), fast, now())
        assert not short.taken and short.wait == pytest.approx(0.1, abs=0.05)
        await asyncio.sleep(0.25)
        granted = [(await shared.take(KEY, costs(), fast, now())).taken for _ in range(3)]
        await shared.settle(KEY, Settlement(pause=0.0), fast, now())
        assert time.monotonic() - started < 2.0  # no hang on a dead server
        assert granted == [True, True, False]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "cannot be reached" in warnings[0].getMessage()
        # Back up: tried again once RECONNECT_AFTER has passed, and used.
        spare_redis.start()
        later = now() + RECONNECT_AFTER + 1
        grant = await shared.take(KEY, costs(), limits, later)
        assert grant.taken  # a restarted Redis starts empty: a full bucket
        assert any("reachable again" in r.getMessage() for r in caplog.records)
        spare_redis.kill()
        await shared.take(KEY, costs(), limits, later + 1)
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    finally:
        await shared.aclose()


async def test_a_pause_and_learned_limits_reach_every_client_of_the_redis(
    redis_url: str,
) -> None:
    # Two stores with their own connections: two processes, or two hosts.
    first, second = RedisStore(redis_url, LocalStore()), RedisStore(redis_url, LocalStore())
    try:
        seen = {"requests": Observation(limit=3, remaining=1, reset=None)}
        await first.settle(KEY, Settlement(observed=seen), {}, now())
        assert (await second.take(KEY, costs(), {}, now())).taken
        assert (await second.take(KEY, costs(), {}, now())).reason == "requests"
        await second.settle(KEY, Settlement(pause=1.0), {}, now())
        assert (await first.take(KEY, costs(), {}, now())).reason == "pause"
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_thousand_calls_at_once_share_a_few_redis_connections(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    shared = RedisStore(redis_url, LocalStore())
    limits = {"requests": Limit(2000, 1.0)}
    try:
        grants = await asyncio.gather(
            *(shared.take(KEY, costs(), limits, now()) for _ in range(1000)),
            *(
                shared.settle(KEY, Settlement(refunds={"tokens": 1}), limits, now())
                for _ in range(1000)
            ),
        )
    finally:
        await shared.aclose()
    assert all(grant.taken for grant in grants[:1000])
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    client = redis.Redis.from_url(redis_url)
    try:
        level = float(client.hget(KEY_PREFIX + KEY, "requests:level") or 0)
    finally:
        client.close()
    assert level == pytest.approx(1000, abs=1)  # every take counted, none fell back
