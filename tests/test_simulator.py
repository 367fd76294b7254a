"""ProviderSimulator: the official SDKs and httpx get real wire formats, errors and faults."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from typing import Any, Literal

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from dspy_async.testing import ProviderSimulator

KEY = "sk-test-0123456789"
ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}


class Ticket(BaseModel):
    category: Literal["billing", "bug", "other"]
    urgency: int = Field(ge=1, le=5)
    summary: str = Field(min_length=3, max_length=40)


TICKET_SCHEMA = Ticket.model_json_schema()


def openai_client(sim: ProviderSimulator, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.openai_base_url, api_key=KEY, max_retries=0, **kw)


def anthropic_client(sim: ProviderSimulator, **kw: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.anthropic_base_url, api_key=KEY, max_retries=0, **kw)


def ask_openai(client: openai.OpenAI, text: str = "hello there") -> str | None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}]
    )
    return completion.choices[0].message.content


def say_hi(client: anthropic.Anthropic) -> anthropic.types.Message:
    return client.messages.create(
        model="claude-3-5-haiku-latest",
        max_tokens=5,
        messages=[{"role": "user", "content": "hi"}],
    )


def ollama_body(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "llama3.2", "messages": [{"role": "user", "content": text}], **extra}


# -- wire formats: success --------------------------------------------------------------


def test_openai_sdk_sync_plain_and_structured(provider_simulator: ProviderSimulator) -> None:
    with openai_client(provider_simulator) as client:
        completion = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What is up?"},
            ],
        )
        structured = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Classify: my invoice is wrong"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "Ticket", "schema": TICKET_SCHEMA, "strict": True},
            },
        )
        models = client.models.list()
    assert completion.object == "chat.completion"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.role == "assistant"
    assert "What is up?" in (completion.choices[0].message.content or "")
    assert completion.usage is not None
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    Ticket.model_validate_json(structured.choices[0].message.content or "")
    assert "gpt-4o-mini" in [m.id for m in models.data]
    first = provider_simulator.requests[0]
    assert (first.path, first.provider, first.outcome, first.status) == (
        "/v1/chat/completions",
        "openai",
        "ok",
        200,
    )
    assert first.text == "Be brief.\nWhat is up?"


async def test_openai_sdk_async(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond("capital", output={"answer": "Paris"})
    async with openai.AsyncOpenAI(
        base_url=provider_simulator.openai_base_url, api_key=KEY, max_retries=0
    ) as client:
        completion = await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "The capital of France?"}]
        )
    assert json.loads(completion.choices[0].message.content or "") == {"answer": "Paris"}
    assert completion.model == "gpt-4o"


def test_anthropic_sdk_sync_text_and_forced_tool(provider_simulator: ProviderSimulator) -> None:
    with anthropic_client(provider_simulator) as client:
        text = client.messages.create(
            model="claude-3-5-haiku-latest",
            max_tokens=100,
            system="You are terse.",
            messages=[{"role": "user", "content": "Say hi"}],
        )
        tool = client.messages.create(
            model="claude-3-5-haiku-latest",
            max_tokens=100,
            messages=[{"role": "user", "content": "Classify: the app crashes"}],
            tools=[{"name": "Ticket", "description": "A ticket", "input_schema": TICKET_SCHEMA}],
            tool_choice={"type": "tool", "name": "Ticket"},
        )
    assert text.type == "message" and text.role == "assistant"
    assert text.stop_reason == "end_turn"
    assert text.content[0].type == "text" and "Say hi" in text.content[0].text
    assert text.usage.input_tokens > 0 and text.usage.output_tokens > 0
    block = tool.content[0]
    assert tool.stop_reason == "tool_use"
    assert block.type == "tool_use" and block.name == "Ticket"
    Ticket.model_validate(block.input)
    assert provider_simulator.requests[0].text == "You are terse.\nSay hi"


async def test_anthropic_sdk_async_scripted_tool_input(
    provider_simulator: ProviderSimulator,
) -> None:
    wanted = {"category": "bug", "urgency": 5, "summary": "crash on start"}
    provider_simulator.respond("crashes", output=wanted)
    async with anthropic.AsyncAnthropic(
        base_url=provider_simulator.anthropic_base_url, api_key=KEY, max_retries=0
    ) as client:
        message = await client.messages.create(
            model="claude-3-5-haiku-latest",
            max_tokens=100,
            messages=[{"role": "user", "content": [{"type": "text", "text": "It crashes"}]}],
            tools=[{"name": "Ticket", "input_schema": TICKET_SCHEMA}],
            tool_choice={"type": "any"},
        )
    block = message.content[0]
    assert block.type == "tool_use" and block.input == wanted


def test_ollama_over_httpx(provider_simulator: ProviderSimulator) -> None:
    with httpx.Client(base_url=provider_simulator.ollama_base_url) as client:
        one = client.post("/api/chat", json=ollama_body(stream=False)).json()
        structured = client.post(
            "/api/chat", json=ollama_body("Classify: refund", stream=False, format=TICKET_SCHEMA)
        ).json()
        streamed = client.post("/api/chat", json=ollama_body())
    assert one["done"] is True and one["done_reason"] == "stop"
    assert one["message"]["role"] == "assistant" and "hello there" in one["message"]["content"]
    assert one["prompt_eval_count"] > 0 and one["eval_count"] > 0
    assert one["created_at"].endswith("Z")
    Ticket.model_validate_json(structured["message"]["content"])
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    chunks = [json.loads(line) for line in streamed.text.splitlines()]
    assert [c["done"] for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert len(chunks) > 2  # the text comes in pieces
    assert "".join(c["message"]["content"] for c in chunks) == one["message"]["content"]


def test_schema_embedded_in_prompt_gets_json_text(provider_simulator: ProviderSimulator) -> None:
    prompt = (
        "Answer with a JSON object that follows this JSON schema:\n```json\n"
        + json.dumps(TICKET_SCHEMA)
        + "\n```\nTicket: the invoice total is wrong"
    )
    with openai_client(provider_simulator) as client:
        content = ask_openai(client, prompt)
    Ticket.model_validate_json(content or "")


def test_same_prompt_same_answer(provider_simulator: ProviderSimulator) -> None:
    with openai_client(provider_simulator) as client:
        answers = [
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": text}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "T", "schema": TICKET_SCHEMA},
                },
            )
            .choices[0]
            .message.content
            for text in ("a", "a", "b")
        ]
    assert answers[0] == answers[1]


# -- scripted answers, latency, attempts ------------------------------------------------


def test_respond_rules_in_order_with_times(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond("weather", output="sunny", times=1)
    provider_simulator.respond("weather", output="rainy")
    provider_simulator.respond(output="fallback")
    with openai_client(provider_simulator) as client:
        got = [ask_openai(client, t) for t in ("weather?", "weather?", "weather?", "other")]
    assert got == ["sunny", "rainy", "rainy", "fallback"]
    assert [r.match_attempt for r in provider_simulator.requests] == [1, 2, 3, 1]


def test_latency_fixed_and_per_match(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.latency = 0.1
    provider_simulator.respond("slow", output="late", latency=0.2)
    with openai_client(provider_simulator) as client:
        started = time.monotonic()
        ask_openai(client, "fast")
        fast = time.monotonic() - started
        started = time.monotonic()
        assert ask_openai(client, "slow one") == "late"
        slow = time.monotonic() - started
    assert fast >= 0.1 and slow >= 0.2
    first, second = provider_simulator.requests
    assert first.finished is not None and first.finished - first.arrived >= 0.1
    assert second.finished is not None and second.finished - second.arrived >= 0.2


async def test_concurrent_requests_overlap(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.latency = 0.4
    async with httpx.AsyncClient(base_url=provider_simulator.ollama_base_url) as client:
        replies = await asyncio.gather(
            *(client.post("/api/chat", json=ollama_body(f"q{i}", stream=False)) for i in range(4))
        )
    assert all(r.status_code == 200 for r in replies)
    records = provider_simulator.requests
    finished = [r.finished for r in records if r.finished is not None]
    assert len(finished) == 4
    assert max(r.arrived for r in records) < min(finished)


def test_reset_forgets_everything(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond(output="scripted")
    provider_simulator.fault(kind="status", status=500, times=None)
    with openai_client(provider_simulator) as client:
        with pytest.raises(openai.InternalServerError):
            ask_openai(client)
        provider_simulator.reset()
        assert provider_simulator.requests == []
        assert ask_openai(client) != "scripted"
    assert [r.match_attempt for r in provider_simulator.requests] == [1]


def test_invalid_arguments_are_refused() -> None:
    sim = ProviderSimulator()
    with pytest.raises(ValueError, match="kind"):
        sim.fault(kind="explode")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="times"):
        sim.respond(output="x", times=0)
    with pytest.raises(RuntimeError, match="start"):
        _ = sim.base_url
    assert "not started" in repr(sim)


def test_port_in_use_fails_cleanly() -> None:
    with ProviderSimulator() as first:
        second = ProviderSimulator(port=first.port)
        with pytest.raises(OSError):
            second.start()
        assert "not started" in repr(second)


# -- authentication and secrets ---------------------------------------------------------


def test_api_key_checked_and_never_recorded(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.api_key = KEY
    with (
        openai.OpenAI(
            base_url=provider_simulator.openai_base_url, api_key="sk-wrong", max_retries=0
        ) as bad,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        ask_openai(bad)
    assert caught.value.code == "invalid_api_key"
    with (
        anthropic.Anthropic(
            base_url=provider_simulator.anthropic_base_url, api_key="wrong", max_retries=0
        ) as bad_anthropic,
        pytest.raises(anthropic.AuthenticationError) as caught_anthropic,
    ):
        say_hi(bad_anthropic)
    assert caught_anthropic.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": caught_anthropic.value.response.headers["request-id"],
    }
    with openai_client(provider_simulator) as good:
        assert ask_openai(good)
    with anthropic_client(provider_simulator) as good_anthropic:
        say_hi(good_anthropic)
    records = provider_simulator.requests
    assert [r.outcome for r in records] == ["unauthorized", "unauthorized", "ok", "ok"]
    assert records[0].headers["authorization"] == "Bearer ***"
    assert records[1].headers["authorization"] == "Bearer ***"
    assert "sk-wrong" not in repr(records) and KEY not in repr(records)
    assert KEY not in repr(provider_simulator)


def test_provider_request_validation(provider_simulator: ProviderSimulator) -> None:
    with httpx.Client(base_url=provider_simulator.base_url) as client:
        no_version = client.post(
            "/v1/messages",
            json={"model": "c", "max_tokens": 5, "messages": []},
        )
        no_max_tokens = client.post(
            "/v1/messages", headers=ANTHROPIC_HEADERS, json={"model": "c", "messages": []}
        )
        no_messages = client.post("/v1/chat/completions", json={"model": "m"})
        not_json = client.post("/api/chat", content=b"{oops")
    assert no_version.status_code == 400
    assert no_version.json()["error"]["message"] == "anthropic-version: header is required"
    assert no_max_tokens.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    assert no_messages.json()["error"]["message"] == "Missing required parameter: 'messages'."
    assert not_json.status_code == 400 and isinstance(not_json.json()["error"], str)
    assert {r.outcome for r in provider_simulator.requests} == {"bad_request"}


# -- faults -------------------------------------------------------------------------------


def test_status_429_with_retry_after_openai(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault("limited", kind="status", status=429, retry_after=2, times=2)
    with openai_client(provider_simulator) as client:
        for _ in range(2):
            with pytest.raises(openai.RateLimitError) as caught:
                ask_openai(client, "limited")
            assert caught.value.response.headers["retry-after"] == "2"
            assert caught.value.code == "rate_limit_exceeded"
        assert ask_openai(client, "not this one")
        assert ask_openai(client, "limited")
    records = provider_simulator.requests
    assert [(r.outcome, r.status) for r in records] == [
        ("status", 429),
        ("status", 429),
        ("ok", 200),
        ("ok", 200),
    ]
    assert [r.match_attempt for r in records] == [1, 2, 1, 3]


def test_status_529_anthropic_with_retry_after_ms(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="status", status=529, retry_after_ms=1500)
    with (
        anthropic_client(provider_simulator) as client,
        pytest.raises(anthropic.InternalServerError) as caught,
    ):
        say_hi(client)
    assert caught.value.status_code == 529
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"] == {"type": "overloaded_error", "message": "Overloaded"}
    assert caught.value.response.headers["retry-after-ms"] == "1500"
    assert caught.value.response.headers["request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("status", "anthropic_type"),
    [(400, "invalid_request_error"), (429, "rate_limit_error"), (500, "api_error")],
)
def test_status_error_bodies_per_provider(
    provider_simulator: ProviderSimulator, status: int, anthropic_type: str
) -> None:
    provider_simulator.fault(kind="status", status=status, times=3, message="custom text")
    with httpx.Client(base_url=provider_simulator.base_url) as client:
        oa = client.post("/v1/chat/completions", json={"model": "m", "messages": []})
        an = client.post(
            "/v1/messages",
            headers=ANTHROPIC_HEADERS,
            json={"model": "c", "max_tokens": 1, "messages": []},
        )
        ol = client.post("/api/chat", json=ollama_body(stream=False))
    assert oa.status_code == an.status_code == ol.status_code == status
    assert set(oa.json()["error"]) == {"message", "type", "param", "code"}
    assert oa.json()["error"]["message"] == "custom text"
    assert an.json()["type"] == "error"
    assert an.json()["error"] == {"type": anthropic_type, "message": "custom text"}
    assert ol.json() == {"error": "custom text"}


def test_context_window_errors(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="context_window", times=3)
    with (
        openai_client(provider_simulator) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        ask_openai(client)
    assert caught.value.code == "context_length_exceeded"
    assert caught.value.param == "messages"
    with (
        anthropic_client(provider_simulator) as an_client,
        pytest.raises(anthropic.BadRequestError) as an_caught,
    ):
        say_hi(an_client)
    assert "prompt is too long" in str(an_caught.value)
    with httpx.Client(base_url=provider_simulator.ollama_base_url) as http:
        ollama = http.post("/api/chat", json=ollama_body(stream=False))
    assert ollama.status_code == 400 and "context length" in ollama.json()["error"]


def test_unsupported_param_names_the_parameter(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="unsupported_param", times=2)
    with (
        openai_client(provider_simulator) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        ask_openai(client)
    assert caught.value.param == "response_format"
    with (
        anthropic_client(provider_simulator) as an_client,
        pytest.raises(anthropic.BadRequestError, match="tool_choice"),
    ):
        say_hi(an_client)


def test_drop_openai_sees_connection_error(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="drop", times=2)
    with openai_client(provider_simulator) as client:
        for _ in range(2):
            with pytest.raises(openai.APIConnectionError):
                ask_openai(client)
        assert ask_openai(client)
    records = provider_simulator.wait_for_requests(3, finished=True)
    assert [(r.outcome, r.status) for r in records] == [("drop", None), ("drop", None), ("ok", 200)]
    assert [r.match_attempt for r in records] == [1, 2, 3]


async def test_drop_anthropic_async(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="drop")
    async with anthropic.AsyncAnthropic(
        base_url=provider_simulator.anthropic_base_url, api_key=KEY, max_retries=0
    ) as client:
        with pytest.raises(anthropic.APIConnectionError):
            await client.messages.create(
                model="c", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
            )
    assert len(provider_simulator.requests) == 1


def test_hang_until_client_timeout(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="hang")
    with openai_client(provider_simulator, timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):
            ask_openai(client)
        assert ask_openai(client)
    records = provider_simulator.wait_for_requests(2, finished=True)
    assert [r.outcome for r in records] == ["hang", "ok"]


async def test_hang_released_by_reset(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="hang", times=3)
    async with httpx.AsyncClient(base_url=provider_simulator.ollama_base_url, timeout=30) as http:
        calls = [
            asyncio.create_task(http.post("/api/chat", json=ollama_body(f"q{i}", stream=False)))
            for i in range(3)
        ]
        hanging = await asyncio.to_thread(provider_simulator.wait_for_requests, 3)
        assert all(r.finished is None and r.outcome == "pending" for r in hanging)
        provider_simulator.reset()
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, httpx.RemoteProtocolError) for r in results)


def test_truncate_cuts_the_body(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="truncate")
    with (
        httpx.Client(base_url=provider_simulator.base_url) as http,
        pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"),
    ):
        http.post("/v1/chat/completions", json={"model": "m", "messages": []})
    with openai_client(provider_simulator) as client:
        provider_simulator.fault(kind="truncate")
        with pytest.raises(openai.APIConnectionError):
            ask_openai(client)
    records = provider_simulator.wait_for_requests(2, finished=True)
    assert [(r.outcome, r.status) for r in records] == [("truncate", 200), ("truncate", 200)]


def test_malformed_is_200_without_json(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="malformed", times=2)
    with httpx.Client(base_url=provider_simulator.base_url) as http:
        reply = http.post("/api/chat", json=ollama_body(stream=False))
    assert reply.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        reply.json()
    with openai_client(provider_simulator) as client, pytest.raises(json.JSONDecodeError):
        ask_openai(client)
    assert [r.outcome for r in provider_simulator.requests] == ["malformed", "malformed"]


def test_invalid_output_violates_the_schema(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault("Classify:", kind="invalid_output", times=2)
    provider_simulator.fault("no schema", kind="invalid_output")
    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "Ticket", "schema": TICKET_SCHEMA, "strict": True},
    }
    tool: Any = {"name": "Ticket", "input_schema": TICKET_SCHEMA}
    with openai_client(provider_simulator) as client, anthropic_client(provider_simulator) as an:

        def structured() -> str | None:
            return (
                client.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": "Classify: x"}],
                    response_format=response_format,
                )
                .choices[0]
                .message.content
            )

        invalid = structured()
        message = an.messages.create(
            model="c",
            max_tokens=5,
            messages=[{"role": "user", "content": "Classify: y"}],
            tools=[tool],
            tool_choice={"type": "tool", "name": "Ticket"},
        )
        plain = ask_openai(client, "Answer with no schema")
        valid = structured()
    assert isinstance(json.loads(invalid or ""), dict)
    with pytest.raises(ValueError):
        Ticket.model_validate_json(invalid or "")
    block = message.content[0]
    assert block.type == "tool_use"
    with pytest.raises(ValueError):
        Ticket.model_validate(block.input)
    with pytest.raises(json.JSONDecodeError):
        json.loads(plain or "")
    Ticket.model_validate_json(valid or "")
    outcomes = [(r.outcome, r.match_attempt) for r in provider_simulator.requests]
    assert outcomes == [
        ("invalid_output", 1),
        ("invalid_output", 1),
        ("invalid_output", 1),
        ("ok", 2),
    ]


def test_unusable_schema_gets_a_400(provider_simulator: ProviderSimulator) -> None:
    endless = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"next": {"$ref": "#/$defs/Node"}},
                "required": ["next"],
            }
        },
        "$ref": "#/$defs/Node",
    }
    with openai_client(provider_simulator) as client:
        for schema in (endless, {"$ref": "https://example.com/schema.json"}):
            with pytest.raises(openai.BadRequestError, match="Invalid schema"):
                client.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": "x"}],
                    response_format={
                        "type": "json_schema",
                        "json_schema": {"name": "S", "schema": schema},
                    },
                )
    assert [r.outcome for r in provider_simulator.requests] == ["bad_request", "bad_request"]


def test_faults_are_used_in_registration_order(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.fault(kind="status", status=429)
    provider_simulator.fault(kind="status", status=503)
    provider_simulator.fault("special", kind="status", status=500)
    with httpx.Client(base_url=provider_simulator.openai_base_url) as http:
        body = {"model": "m", "messages": [{"role": "user", "content": "special"}]}
        statuses = [http.post("/chat/completions", json=body).status_code for _ in range(4)]
    assert statuses == [429, 503, 500, 200]


# -- standalone server ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(signum: signal.Signals) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "dspy_async.testing", "serve", "--latency", "0", "--api-key", KEY],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = first.rsplit(" ", 1)[-1].strip()
        assert url.startswith("http://127.0.0.1:")
        with openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0) as client:
            assert ask_openai(client)
        process.send_signal(signum)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert "stopped" in out
    assert KEY not in first + out


def test_context_manager_restarts_cleanly() -> None:
    for _ in range(2):
        with ProviderSimulator() as sim, httpx.Client() as http:
            assert http.get(sim.openai_base_url + "/models").status_code == 200
        assert [(r.path, r.outcome) for r in sim.requests] == [("/v1/models", "ok")]


async def test_close_cuts_hanging_requests() -> None:
    sim = ProviderSimulator().start()
    try:
        sim.fault(kind="hang")
        async with httpx.AsyncClient(base_url=sim.ollama_base_url, timeout=30) as http:
            call = asyncio.create_task(http.post("/api/chat", json=ollama_body(stream=False)))
            await asyncio.to_thread(sim.wait_for_requests, 1)
            await asyncio.to_thread(sim.close)
            with pytest.raises(httpx.RemoteProtocolError):
                await call
    finally:
        sim.close()
    assert [r.outcome for r in sim.requests] == ["hang"]


def test_api_base_names_each_providers_address() -> None:
    with ProviderSimulator() as sim:
        assert sim.api_base("openai") == sim.openai_base_url
        assert sim.api_base("anthropic") == sim.anthropic_base_url
        assert sim.api_base("ollama") == sim.ollama_base_url
        with pytest.raises(ValueError, match="unknown provider"):
            sim.api_base("cohere")
