"""The response cache through real LM calls to the provider simulator: hits, keys, options,
single-flight, validation, bounds and configuration."""

from __future__ import annotations

import asyncio
import pickle
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import pytest

import dspy_async as dspy
from dspy_async import cache, events
from dspy_async.cache import ResponseCache, configure_cache, current
from dspy_async.cache.disk import DB_NAME
from dspy_async.errors import AuthenticationError, ConfigurationError
from dspy_async.lm import LM, OutputSchema
from dspy_async.pipeline.cache import defer_commit, restore_commit
from dspy_async.records import Usage
from dspy_async.retry import RetryPolicy
from dspy_async.testing import ProviderSimulator

KEY = "sk-cache-test-0123456789"
FAST = RetryPolicy(initial_delay=0.01, max_delay=0.02, jitter=False)
SCHEMA = OutputSchema(
    "Answer",
    {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    },
)

Configure = Callable[..., ResponseCache | None]


def make_lm(sim: ProviderSimulator, provider: str = "openai", **kwargs: Any) -> LM:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("api_key", KEY)
    return LM(f"{provider}/test-model", api_base=sim.api_base(provider), **kwargs)


@pytest.fixture
def configure(tmp_path: Path) -> Iterator[Configure]:
    """`configure_cache(...)` with the disk tier under tmp_path; the default again after."""

    def configure(*args: Any, **kwargs: Any) -> ResponseCache | None:
        kwargs.setdefault("disk_cache_dir", tmp_path / "responses")
        configure_cache(*args, **kwargs)
        return current()

    yield configure
    cache.reset()


@pytest.fixture
def recorded() -> Iterator[list[events.LMEvent]]:
    seen: list[events.LMEvent] = []
    unsubscribe = events.subscribe(seen.append)
    yield seen
    unsubscribe()


# -- hits --------------------------------------------------------------------------------


def test_an_identical_call_is_answered_from_the_cache(
    provider_simulator: ProviderSimulator,
    response_cache: ResponseCache,
    recorded: list[events.LMEvent],
) -> None:
    sim = provider_simulator
    sim.respond("Say hi", output="Hi there!")
    lm = make_lm(sim, temperature=0.2)
    first = lm("Say hi")
    second = lm("Say hi")
    assert len(sim.requests) == 1
    assert not first.cached and second.cached
    assert second.text == first.text == "Hi there!"
    assert second.finish_reason == first.finish_reason
    # No provider tokens for the hit; the tokens it saved are the first call's.
    saved = first.usage.total_tokens
    assert saved > 0
    assert second.usage == Usage(saved_tokens=saved)
    (attempt,) = second.attempts
    assert attempt.cached and attempt.outcome == "ok" and attempt.status_code is None
    assert not any(a.cached for a in first.attempts)
    assert lm.usage == first.usage + Usage(saved_tokens=saved)
    # The hit sends no request, and its response event says it was cached.
    requests = [e for e in recorded if isinstance(e, events.RequestEvent)]
    responses = [e for e in recorded if isinstance(e, events.ResponseEvent)]
    assert len(requests) == 1
    assert [e.cached for e in responses] == [False, True]
    assert responses[1].usage.saved_tokens == saved


async def test_sync_and_async_calls_share_entries(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    sim = provider_simulator
    lm = make_lm(sim)
    first = await asyncio.to_thread(lm, "shared between sync and async")
    second = await lm.acall(messages=[{"role": "user", "content": "shared between sync and async"}])
    assert second.cached and second.text == first.text
    assert len(sim.requests) == 1


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
def test_every_provider_is_cached(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache, provider: str
) -> None:
    lm = make_lm(provider_simulator, provider)
    texts = {lm("what is cached?", output_schema=SCHEMA).text for _ in range(3)}
    assert len(texts) == 1 and len(provider_simulator.requests) == 1


# -- the key -----------------------------------------------------------------------------


def test_the_key_holds_what_shapes_the_reply(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    sim = provider_simulator
    lm = make_lm(sim, temperature=0.5)
    lm("keyed")
    sent = len(sim.requests)
    for different in (
        lambda: lm("keyed", temperature=0.6),  # a sampling parameter
        lambda: lm("keyed", max_tokens=7),
        lambda: lm("keyed", extra_body={"top_k": 3}),  # fields sent as they are
        lambda: lm("keyed", output_schema=SCHEMA),  # the native schema
        lambda: lm(messages=[{"role": "system", "content": "keyed"}]),  # the messages
        lambda: LM("openai/other-model", api_base=sim.openai_base_url, api_key=KEY)("keyed"),
        lambda: lm("keyed", rollout_id=1),
    ):
        response = different()
        assert not response.cached
        sent += 1
        assert len(sim.requests) == sent
    # ... and never the API key: another key is served the same entry.
    other_key = make_lm(sim, temperature=0.5, api_key="sk-another-key-9876543210")
    assert other_key("keyed").cached
    assert len(sim.requests) == sent


def test_two_endpoints_serving_one_model_name_never_share_entries(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    with ProviderSimulator() as other:
        here = make_lm(provider_simulator)
        there = LM("openai/test-model", api_base=other.openai_base_url, api_key=KEY)
        assert not here("same model, two servers").cached
        assert not there("same model, two servers").cached
        assert len(other.requests) == 1 and len(provider_simulator.requests) == 1


def test_rollout_id_separates_entries_and_is_never_sent(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    sim = provider_simulator
    lm = make_lm(sim, temperature=1.0)
    plain = lm("roll")
    one = lm("roll", rollout_id=1)
    assert not one.cached and len(sim.requests) == 2
    assert lm("roll", rollout_id=1).cached and lm("roll").cached
    assert lm("roll", rollout_id=None).text == plain.text  # None is no rollout, as in DSPy
    assert all("rollout_id" not in r.body and "cache" not in r.body for r in sim.requests)
    # An LM default, which a call overrides.
    rolled = make_lm(sim, temperature=1.0, rollout_id=1)
    assert rolled("roll").cached
    assert not rolled("roll", rollout_id=2).cached
    assert len(sim.requests) == 3


def test_the_disk_file_holds_json_and_no_api_key(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    lm = make_lm(provider_simulator)
    lm("stored as JSON")
    assert response_cache.disk is not None
    response_cache.disk.close()  # the write is done, and the WAL folded into the file
    path = response_cache.disk.path
    assert KEY.encode() not in path.read_bytes()
    with sqlite3.connect(path) as db:
        (value,) = db.execute("SELECT value FROM responses").fetchone()
    assert bytes(value).startswith(b'{"v":1,"text":')


# -- switching it off ----------------------------------------------------------------------


def test_cache_false_per_lm_and_per_call(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    sim = provider_simulator
    uncached = make_lm(sim, cache=False)
    assert not uncached("off for this LM").cached
    assert not uncached("off for this LM").cached
    assert len(sim.requests) == 2
    assert not uncached("off for this LM", cache=True).cached  # a call may turn it on
    assert uncached("off for this LM", cache=True).cached
    lm = make_lm(sim)
    lm("off for this call")
    assert not lm("off for this call", cache=False).cached
    assert len(sim.requests) == 5


def test_off_means_nothing_is_held_and_no_file_is_made(
    provider_simulator: ProviderSimulator, configure: Configure, tmp_path: Path
) -> None:
    assert configure(enable_disk_cache=False, enable_memory_cache=False) is None
    lm = make_lm(provider_simulator)
    for _ in range(3):
        assert not lm("no cache at all").cached
    assert len(provider_simulator.requests) == 3
    assert not (tmp_path / "responses").exists()


def test_the_default_follows_the_environment_switch(
    monkeypatch: pytest.MonkeyPatch, provider_simulator: ProviderSimulator, tmp_path: Path
) -> None:
    # The test run has it off (the pytest plugin); the default is on otherwise.
    assert cache.ENV_VAR == "DSPY_ASYNC_RESPONSE_CACHE"
    cache.reset()
    assert current() is None
    monkeypatch.setenv("HOME", str(tmp_path))  # where the default disk tier would go
    try:
        for value in ("on", "1", ""):
            monkeypatch.setenv(cache.ENV_VAR, value)
            cache.reset()
            default = current()
            assert default is not None and default.memory is not None and default.disk is not None
            assert default.disk.path == tmp_path / ".cache/dspy-async/responses" / DB_NAME
        monkeypatch.setenv(cache.ENV_VAR, "sometimes")
        cache.reset()
        with pytest.raises(ConfigurationError, match="DSPY_ASYNC_RESPONSE_CACHE='sometimes'"):
            make_lm(provider_simulator)("hi")
        assert provider_simulator.requests == []
    finally:
        cache.reset()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"enable_disk_cache": "yes"}, "enable_disk_cache must be True or False"),
        ({"memory_max_entries": 0}, "memory_max_entries must be a whole number >= 1"),
        ({"disk_size_limit_bytes": 1.5}, "disk_size_limit_bytes must be a whole number"),
        ({"ttl": -1}, "ttl must be a finite number > 0, or None"),
        ({"disk_cache_dir": 3}, "disk_cache_dir must be a path"),
        ({"shared": "http://127.0.0.1:6379"}, "must be a redis://"),
        ({"shared": "mysql://user:hunter2@db"}, "user:\\*\\*\\*@db"),
    ],
)
def test_configure_cache_checks_its_arguments(
    configure: Configure, kwargs: dict[str, Any], message: str
) -> None:
    before = configure()
    with pytest.raises(ConfigurationError, match=message) as raised:
        configure_cache(**kwargs)
    assert "hunter2" not in str(raised.value)
    assert current() is before  # a refused configuration changes nothing


def test_bad_cache_options_fail_before_any_request(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    lm = make_lm(provider_simulator)
    with pytest.raises(ConfigurationError, match="cache option must be True or False"):
        lm("hi", cache="no")
    with pytest.raises(ConfigurationError, match="rollout_id must be a whole number or None"):
        lm("hi", rollout_id="3")
    with pytest.raises(ConfigurationError, match="LM cache must be True or False"):
        make_lm(provider_simulator, cache=1)
    predict = dspy.Predict("question -> answer", lm=lm)
    with pytest.raises(ConfigurationError, match="rollout_id"):
        predict(question="q", config={"rollout_id": True})
    assert provider_simulator.requests == []


# -- single-flight -------------------------------------------------------------------------


async def _many(lm: LM, prompts: list[str], in_flight: int) -> list[dspy.LMResponse]:
    gate = asyncio.Semaphore(in_flight)

    async def one(prompt: str) -> dspy.LMResponse:
        async with gate:
            return await lm.acall(prompt)

    return await asyncio.gather(*(one(prompt) for prompt in prompts))


@pytest.mark.slow
@pytest.mark.parametrize("cached", [True, False], ids=["cache-on", "cache-off"])
async def test_a_thousand_calls_half_duplicates_reach_the_provider_once_each(
    provider_simulator: ProviderSimulator, configure: Configure, cached: bool
) -> None:
    sim = provider_simulator
    sim.latency = 0.02  # so that duplicates are in flight at the same time
    configure(enable_disk_cache=cached, enable_memory_cache=cached)
    prompts = [f"item {i}" for i in range(500)] * 2
    random.Random(14).shuffle(prompts)
    lm = make_lm(sim, max_concurrency=200)
    responses = await _many(lm, prompts, in_flight=200)
    by_prompt = {prompt: response.text for prompt, response in zip(prompts, responses, strict=True)}
    assert all(r.text == by_prompt[p] for p, r in zip(prompts, responses, strict=True))
    assert len(sim.requests) == (500 if cached else 1000)
    assert sum(r.cached for r in responses) == (500 if cached else 0)


async def test_followers_of_a_failed_call_make_their_own(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    sim = provider_simulator
    sim.latency = 0.3  # the followers arrive while the first request is in flight
    sim.fault(kind="status", status=401, times=1)  # only the first request: not retried
    lm = make_lm(sim)
    results = await asyncio.gather(
        *(lm.acall("fail the leader") for _ in range(4)), return_exceptions=True
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    answers = [r for r in results if isinstance(r, dspy.LMResponse)]
    assert len(failures) == 1 and isinstance(failures[0], AuthenticationError)
    assert len(answers) == 3 and not any(a.cached for a in answers)
    assert len(sim.requests) == 4  # the failure was not handed on as an answer


async def test_followers_of_a_cancelled_call_make_their_own(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    sim = provider_simulator
    sim.latency = 0.5
    lm = make_lm(sim)
    leader = asyncio.ensure_future(lm.acall("cancel the leader"))
    await asyncio.to_thread(sim.wait_for_requests, 1, timeout=10)
    followers = [asyncio.ensure_future(lm.acall("cancel the leader")) for _ in range(3)]
    await asyncio.sleep(0.1)
    leader.cancel()
    answers = await asyncio.gather(*followers)
    assert all(not a.cached for a in answers)
    assert len({a.text for a in answers}) == 1
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_a_cancelled_follower_leaves_the_flight_to_the_others(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    sim = provider_simulator
    sim.latency = 0.4
    lm = make_lm(sim)
    calls = [asyncio.ensure_future(lm.acall("cancel a follower")) for _ in range(3)]
    await asyncio.to_thread(sim.wait_for_requests, 1, timeout=10)
    calls[1].cancel()
    first, third = await asyncio.gather(calls[0], calls[2])
    assert not first.cached and third.cached and third.text == first.text
    assert len(sim.requests) == 1


# -- validation ------------------------------------------------------------------------------


def test_an_invalid_structured_output_is_never_served_from_the_cache(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    sim = provider_simulator
    sim.fault(kind="invalid_output", times=1)
    predict = dspy.Predict("question -> answer: int", lm=make_lm(sim))
    first = predict(question="how many?")
    assert [a.outcome for a in first.attempts] == ["invalid_output", "ok"]
    assert len(sim.requests) == 2
    # The invalid reply was not kept: the same question is asked again, and answered validly.
    second = predict(question="how many?")
    assert [(a.outcome, a.cached) for a in second.attempts] == [("ok", False)]
    assert len(sim.requests) == 3
    assert sim.requests[2].body == sim.requests[0].body
    # That valid answer is kept.
    third = predict(question="how many?")
    assert [(a.outcome, a.cached) for a in third.attempts] == [("ok", True)]
    assert third.answer == second.answer and len(sim.requests) == 3


def test_a_rejected_answer_is_never_served_again(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    sim = provider_simulator
    lm = make_lm(sim)
    lm("judge me").reject()  # kept at once (a plain call), then rejected: deleted
    hit = lm("judge me")
    assert not hit.cached and len(sim.requests) == 2
    again = lm("judge me")
    assert again.cached
    again.reject()  # a hit rejected: deleted from every tier
    assert not lm("judge me").cached and len(sim.requests) == 3


async def test_after_defer_commit_only_accepted_answers_are_kept(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    sim = provider_simulator
    lm = make_lm(sim)
    deferred = defer_commit()
    unjudged = await lm.acall("wait for the verdict")
    restore_commit(deferred)
    assert not (await lm.acall("wait for the verdict")).cached  # not kept without accept()
    deferred = defer_commit()
    judged = await lm.acall("accept me")
    restore_commit(deferred)
    judged.accept()
    judged.accept()  # once is enough; again changes nothing
    assert (await lm.acall("accept me")).cached
    assert not unjudged.cached and len(sim.requests) == 3


# -- bounds and lifetimes ----------------------------------------------------------------------


def test_memory_is_bounded_by_entries(
    provider_simulator: ProviderSimulator, configure: Configure
) -> None:
    store = configure(enable_disk_cache=False, memory_max_entries=2)
    assert store is not None and store.memory is not None
    lm = make_lm(provider_simulator)
    for prompt in ("one", "two", "one", "three"):  # "one" used again: "two" is the oldest
        lm(prompt)
    assert len(store.memory) == 2
    assert lm("one").cached and lm("three").cached
    assert not lm("two").cached
    assert len(provider_simulator.requests) == 4


def test_entries_expire_after_the_ttl(
    provider_simulator: ProviderSimulator, configure: Configure
) -> None:
    configure(ttl=0.3)
    lm = make_lm(provider_simulator)
    lm("expire")
    assert lm("expire").cached
    time.sleep(0.5)
    assert not lm("expire").cached
    assert len(provider_simulator.requests) == 2


def test_the_disk_tier_outlives_the_memory_tier(
    provider_simulator: ProviderSimulator, configure: Configure
) -> None:
    configure()
    lm = make_lm(provider_simulator)
    first = lm("persisted")
    configure()  # a new cache on the same directory: what a new process sees
    replay = lm("persisted")
    assert replay.cached and replay.text == first.text
    configure(enable_memory_cache=False)
    assert lm("persisted").cached and lm("persisted").cached
    assert len(provider_simulator.requests) == 1


def test_an_unusable_directory_leaves_the_memory_tier_working(
    provider_simulator: ProviderSimulator,
    configure: Configure,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    configure(disk_cache_dir=blocker / "responses")
    lm = make_lm(provider_simulator)
    with caplog.at_level("WARNING", logger="dspy_async"):
        answers = [lm("no disk here") for _ in range(3)]
        more = [lm(f"no disk {i}") for i in range(3)]
    assert [a.cached for a in answers] == [False, True, True]
    assert not any(a.cached for a in more)
    warnings = [r for r in caplog.records if "disk tier" in r.getMessage()]
    assert len(warnings) == 1


def test_each_of_n_completions_has_its_own_entry(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    sim = provider_simulator
    predict = dspy.Predict("question -> answer", lm=make_lm(sim), config={"n": 3})
    first = predict(question="three ways")
    assert len(sim.requests) == 3  # not one request shared by three identical calls
    again = predict(question="three ways")
    assert len(sim.requests) == 3
    assert [c.answer for c in again.completions] == [c.answer for c in first.completions]
    assert all(a.cached for c in again.completions for a in c.attempts)


def test_a_response_pickles_without_its_cache(
    provider_simulator: ProviderSimulator, response_cache: ResponseCache
) -> None:
    lm = make_lm(provider_simulator)
    lm("copied")
    hit = lm("copied")
    for copy in (pickle.loads(pickle.dumps(hit)), deepcopy(hit)):
        assert copy == hit and copy.cached
        copy.reject()  # a copy's verdict reaches no cache
    assert lm("copied").cached and len(provider_simulator.requests) == 1
