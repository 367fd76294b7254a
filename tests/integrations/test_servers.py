"""The examples' web apps under real servers, driven over HTTP: threaded WSGI servers calling the
sync API, async servers awaiting acall on their own loop, and gunicorn forking workers after
the app already used the LM."""

from __future__ import annotations

import httpx
import pytest

from dspy_async.testing import ProviderSimulator

from .harness import StartServer, post_concurrently

GUNICORN = ["-m", "gunicorn", "-b", "127.0.0.1:{port}", "--graceful-timeout", "5"]
UVICORN = ["-m", "uvicorn", "--host", "127.0.0.1", "--port", "{port}", "--no-access-log"]
SERVERS = {
    "flask-werkzeug-threaded": (["-m", "examples.flask_app"], "/triage"),
    "django-sync-gunicorn-gthread": (
        [*GUNICORN, "-k", "gthread", "--threads", "24", "examples.django_app:application"],
        "/triage",
    ),
    "django-async-uvicorn": ([*UVICORN, "examples.django_app:asgi_application"], "/atriage"),
    "starlette-uvicorn": ([*UVICORN, "examples.starlette_app:app"], "/triage"),
}
TEAMS = {"billing", "technical", "sales", "other"}
# Requests (by index in a burst of 20) whose first attempt fails, and the status it gets.
RETRIED = {3: 429, 9: 503, 16: 429}


@pytest.mark.slow
@pytest.mark.parametrize("name", SERVERS)
def test_concurrent_requests_some_retried(
    name: str, start_server: StartServer, simulator: ProviderSimulator, http: httpx.Client
) -> None:
    """20 requests at once, 3 of whose first attempts fail with Retry-After 1 s: all succeed,
    and every request that needed no retry returns in about one latency (0.2 s), far below
    the second the retried ones wait."""
    args, path = SERVERS[name]
    url = start_server(args).url + path
    warm = http.post(url, json={"message": "warm-up"})
    assert warm.status_code == 200, warm.text
    for index, status in RETRIED.items():
        simulator.fault(f"ticket-{index:02d}", kind="status", status=status, retry_after=1)

    replies = post_concurrently(http, url, [f"Please look at ticket-{i:02d}" for i in range(20)])

    assert [reply.status for reply in replies] == [200] * 20, replies
    assert {reply.body["team"] for reply in replies} <= TEAMS
    retried = [reply.elapsed for i, reply in enumerate(replies) if i in RETRIED]
    others = [reply.elapsed for i, reply in enumerate(replies) if i not in RETRIED]
    assert min(retried) >= 1.0, retried
    assert max(others) < 1.0, others
    outcomes = sorted(request.outcome for request in simulator.requests)
    assert outcomes == ["ok"] * 21 + ["status"] * len(RETRIED)


@pytest.mark.slow
def test_gunicorn_preload_workers_fork_after_the_master_used_the_lm(
    start_server: StartServer, simulator: ProviderSimulator, http: httpx.Client
) -> None:
    server = start_server(
        [*GUNICORN, "--preload", "-w", "2", "examples.flask_app:app"],
        {"DSPY_ASYNC_WARMUP": "1"},
    )
    assert "warm-up" in simulator.requests[0].text  # made in the master, before the fork

    pids: set[int] = set()
    for wave in range(10):  # sync workers take one request each: a few waves reach both
        messages = [f"wave {wave} request {index}" for index in range(8)]
        replies = post_concurrently(http, server.url + "/triage", messages)
        assert [reply.status for reply in replies] == [200] * len(messages), replies
        pids |= {reply.body["pid"] for reply in replies}
        if len(pids) == 2:
            break
    assert len(pids) == 2, f"only worker(s) {pids} served"
    assert server.process.pid not in pids
