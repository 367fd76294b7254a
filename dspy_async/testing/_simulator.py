"""ProviderSimulator: a real HTTP server speaking the OpenAI, Anthropic and Ollama wire formats.

It runs an ``aiohttp.web`` server on 127.0.0.1 in its own event loop on its own daemon
thread, so sync tests, async tests and the library's hidden runtime can all call it without
sharing a loop. Tests script answers (``respond``), inject faults (``fault``), and inspect
what arrived (``requests``). See the package docstring of ``dspy_async.testing`` for a tour.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any

from aiohttp import web

from ._rate_limits import Admission, RateLimits, api_key_of, max_tokens_of, usage_of
from ._schema_values import (
    SchemaError,
    find_prompt_example,
    find_prompt_schema,
    generate_value,
    invalid_value,
)
from ._script import (
    FAULT_KINDS,
    Fault,
    FaultKind,
    RecordedRequest,
    Script,
    ScriptedAnswer,
    peak_in_flight,
)
from ._streams import stream_frames, wants_stream
from ._wire import ANTHROPIC, OLLAMA, OPENAI, Answer, Parsed, Reply, Wire, WireError

__all__ = ["ProviderSimulator", "RecordedRequest", "peak_in_flight"]

_HOST = "127.0.0.1"
_BACKLOG = 8192
_WANTED_OPEN_FILES = 16_384  # room for 5,000+ server sockets plus the client's own
_MAX_BODY = 64 * 2**20
_THREAD_TIMEOUT = 30.0


class ProviderSimulator:
    """A local fake of the OpenAI, Anthropic and Ollama HTTP APIs, with scripted faults.

    Use as a context manager (or ``start()``/``close()``)::

        with ProviderSimulator(latency=0.05) as sim:
            sim.respond("capital of France", output={"answer": "Paris"})
            sim.fault(kind="status", status=429, retry_after=1, times=2)
            client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test")

    ``latency`` (seconds, ``asyncio.sleep``) delays every reply and may be changed at any
    time; ``api_key``, when set, makes requests without that key get the provider's 401.
    Without it any key (or none) is accepted. Keys are never recorded or shown.

    A request asking for a stream (``stream: true``; Ollama's default) gets the answer as
    the provider streams it (see ``_streams.py``), in word-sized pieces ``chunk_delay``
    seconds apart (changeable at any time too); ``fault(kind="drop" | "hang",
    after_chunks=N)`` cuts or stalls it after N pieces.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        api_key: str | None = None,
        port: int = 0,
        chunk_delay: float = 0.0,
    ) -> None:
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.api_key = api_key
        self._port = port  # asked for; 0: any free one
        self._bound_port: int | None = None  # set once serving
        self._script = Script()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._released: asyncio.Event | None = None  # set to let hanging requests go
        self._rate_limits: RateLimits | None = None
        self._overload: tuple[int, int] | None = None  # (max in flight, status above it)
        self._in_flight = 0  # chat requests being served, counted on the server's loop

    def __repr__(self) -> str:
        where = self.base_url if self._bound_port is not None else "not started"
        return f"ProviderSimulator({where}, latency={self.latency})"

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> ProviderSimulator:
        """Bind the port and start serving; returns self."""
        if self._thread is not None:
            raise RuntimeError("this ProviderSimulator was already started")
        _raise_open_file_limit()
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(
            target=_run_loop, args=(loop,), name="dspy-async-provider-simulator", daemon=True
        )
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._serve(), loop).result(_THREAD_TIMEOUT)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop serving (hanging requests are cut), stop the loop and join its thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or loop.is_closed():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(_THREAD_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_THREAD_TIMEOUT)
            self._runner = None
            self._bound_port = None

    def __enter__(self) -> ProviderSimulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def _serve(self) -> None:
        self._released = asyncio.Event()
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_post("/v1/chat/completions", partial(self._chat, wire=OPENAI))
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/messages", partial(self._chat, wire=ANTHROPIC))
        app.router.add_post("/api/chat", partial(self._chat, wire=OLLAMA))
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=0.25,
        )
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, _HOST, self._port, backlog=_BACKLOG)
        await site.start()
        self._bound_port = int(runner.addresses[0][1])

    async def _shutdown(self) -> None:
        self._release_hangs()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- addresses ------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("the ProviderSimulator is not running: call start() first")
        return self._bound_port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: the root every endpoint hangs off."""
        return f"http://{_HOST}:{self.port}"

    url = base_url

    @property
    def openai_base_url(self) -> str:
        """What ``openai.OpenAI(base_url=...)`` wants: the root plus ``/v1``."""
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What ``anthropic.Anthropic(base_url=...)`` wants: the root."""
        return self.base_url

    @property
    def ollama_base_url(self) -> str:
        """What an Ollama client wants (the ``OLLAMA_HOST`` form): the root."""
        return self.base_url

    def api_base(self, provider: str) -> str:
        """The ``api_base`` that ``LM(f"{provider}/...")`` needs to reach this simulator."""
        bases = {
            "openai": self.openai_base_url,
            "anthropic": self.anthropic_base_url,
            "ollama": self.ollama_base_url,
        }
        if provider not in bases:
            raise ValueError(f"unknown provider {provider!r}; expected one of {sorted(bases)}")
        return bases[provider]

    # -- scripting ------------------------------------------------------------------

    def respond(
        self,
        match: str | None = None,
        *,
        output: str | Mapping[str, Any] | None = None,
        tool_calls: Sequence[Mapping[str, Any]] | None = None,
        latency: float | None = None,
        times: int | None = None,
    ) -> None:
        """Answer requests whose message text contains ``match`` (every request if None).

        A mapping ``output`` is sent as a JSON object (as the input of a forced tool, when
        the request forces one); a string is sent as text. ``tool_calls``
        (``[{"name": "search", "args": {...}}]``) answer with those tool calls in the
        provider's format (OpenAI ``tool_calls``, Anthropic ``tool_use`` blocks, Ollama's
        ``message.tool_calls``), a string ``output`` as the text beside them.
        ``latency`` overrides the simulator's for these requests; ``times`` limits how many
        requests the rule answers (None: no limit). The first registered rule that still
        has uses and matches wins.
        """
        _check_times(times)
        calls = tuple(_check_tool_call(call) for call in tool_calls or ())
        if output is None and not calls:
            raise ValueError("respond() needs an output, or tool_calls, or both")
        text = "" if output is None else output
        value: str | dict[str, Any] = text if isinstance(text, str) else dict(text)
        self._script.add_answer(ScriptedAnswer(match, value, latency, times, calls))

    def fault(
        self,
        match: str | None = None,
        *,
        times: int | None = 1,
        kind: FaultKind = "status",
        status: int = 503,
        retry_after: float | None = None,
        retry_after_ms: int | None = None,
        headers: Mapping[str, str] | None = None,
        message: str | None = None,
        after_chunks: int | None = None,
    ) -> None:
        """Make the next ``times`` requests matching ``match`` (None: any) fail as ``kind``.

        Kinds: ``status`` (HTTP ``status`` with the provider's error body and ``message``),
        ``context_window`` (the provider's real prompt-too-long 400), ``unsupported_param``
        (a 400 rejecting response_format / tool_choice / format), ``drop`` (connection closed
        without a response), ``hang`` (no answer until the client gives up, ``reset()`` or
        ``close()``), ``truncate`` (Content-Length promised, half the body sent, connection
        closed), ``malformed`` (200 with a non-JSON body), ``invalid_output`` (a well-formed
        answer that violates the requested schema, or non-JSON text without one).
        ``retry_after`` / ``retry_after_ms`` / ``headers`` are added to error replies.
        With ``after_chunks``, a ``drop`` or ``hang`` of a streamed answer comes after that
        many pieces of its text were sent (an unstreamed request gets it at once).
        Faults are used in registration order, before any ``respond`` rule.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        if not 100 <= status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {status}")
        _check_times(times)
        extra = dict(headers or {})
        if retry_after is not None:
            extra["retry-after"] = f"{retry_after:g}"
        if retry_after_ms is not None:
            extra["retry-after-ms"] = str(retry_after_ms)
        if after_chunks is not None and (kind not in ("drop", "hang") or after_chunks < 0):
            raise ValueError("after_chunks is a count >= 0, for a drop or a hang")
        self._script.add_fault(Fault(kind, match, times, status, message, extra, after_chunks))

    def rate_limit(
        self,
        *,
        requests: int | None = None,
        tokens: int | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        per: float = 60.0,
    ) -> None:
        """Limit every API key like a provider does: at most ``requests`` requests and
        ``tokens`` tokens (prompt plus completion; or Anthropic's ``input_tokens`` and
        ``output_tokens``) per ``per`` seconds, each a bucket that refills continuously.

        A request that does not fit gets the provider's 429 with ``retry-after`` (and, for
        OpenAI, ``retry-after-ms``) saying when it would; every reply carries the provider's
        rate-limit headers (OpenAI ``x-ratelimit-*``, Anthropic ``anthropic-ratelimit-*``).
        Refused requests are recorded with outcome ``"rate_limited"``. Calling it again
        starts over with full buckets; ``reset()`` ends the mode.
        """
        limits = {
            "requests": requests,
            "tokens": tokens,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
        }
        for name, limit in limits.items():
            if limit is not None and limit < 1:
                raise ValueError(f"{name} must be a positive count or None, got {limit}")
        if not per > 0:
            raise ValueError(f"per must be a positive number of seconds, got {per}")
        chosen = {name: limit for name, limit in limits.items() if limit is not None}
        self._rate_limits = RateLimits(chosen, per) if chosen else None

    def overload(self, max_in_flight: int, *, status: int = 503) -> None:
        """Answer ``status`` at once to every chat request beyond ``max_in_flight`` being
        served, as an overloaded server without rate-limit headers does (vLLM, Ollama).
        Recorded with outcome ``"overloaded"``; ``reset()`` ends it."""
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be a positive count, got {max_in_flight}")
        self._overload = (max_in_flight, status)

    def reset(self) -> None:
        """Forget every rule, fault, record, attempt count, rate limit and overload; cut
        hanging requests."""
        self._script.reset()
        self._rate_limits = None
        self._overload = None
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._release_hangs)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received since the last ``reset()``, in arrival order."""
        return self._script.records()

    def wait_for_requests(
        self, count: int, *, timeout: float = 10.0, finished: bool = False
    ) -> list[RecordedRequest]:
        """Block until ``count`` requests arrived (and all finished, if ``finished``)."""
        return self._script.wait_for(count, timeout, finished)

    # -- serving --------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.StreamResponse:
        record = self._script.arrive(request.path, OPENAI.provider, None, request.headers, "")
        rejection = OPENAI.check_headers(request.headers, self.api_key)
        reply = rejection or OPENAI.models()
        self._script.finish(record, "unauthorized" if rejection else "ok", reply.status)
        return _response(reply)

    async def _chat(self, request: web.Request, *, wire: Wire) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        rejection = wire.check_headers(request.headers, self.api_key)
        parsed: Parsed | None = None
        if rejection is None:
            try:
                parsed = wire.parse(body)
            except WireError as error:
                rejection = error.reply
        text = parsed.text if parsed is not None else raw.decode("utf-8", "replace")
        record = self._script.arrive(request.path, wire.provider, body, request.headers, text)
        outcome, status = "disconnected", None  # what is recorded if the client goes away
        billed = (0, 0)  # the tokens the reply reports, if it is a 200 sent at all
        limits, key = self._rate_limits, api_key_of(request.headers)
        admission: Admission | None = None
        streamed = parsed is not None and wants_stream(wire.provider, body)
        sent = _Sent()
        self._in_flight += 1
        try:
            if parsed is not None and self._overload is not None:
                most, overload_status = self._overload
                if self._in_flight > most:
                    outcome, status = "overloaded", overload_status
                    return _response(wire.error(overload_status))
            if parsed is not None and limits is not None:
                admitted = limits.admit(key, parsed, max_tokens_of(body))
                if not isinstance(admitted, Admission):
                    outcome, status = "rate_limited", 429
                    return _response(
                        _rate_limited(wire, admitted, limits.headers(key, wire.provider))
                    )
                admission = admitted
            fault, answer = self._script.choose(text) if parsed is not None else (None, None)
            latency = self.latency if answer is None or answer.latency is None else answer.latency
            if latency > 0:
                await asyncio.sleep(latency)
            reply: Reply | None
            if parsed is None:
                outcome = "unauthorized" if rejection and rejection.status == 401 else "bad_request"
                reply = rejection
            else:
                try:
                    outcome = fault.kind if fault is not None else "ok"
                    reply = await self._reply(request, wire, parsed, fault, answer, streamed)
                except SchemaError as error:
                    outcome = "bad_request"
                    reply = wire.error(400, f"Invalid schema: {error}")
            if reply is None:
                return web.Response()  # the connection is gone: aiohttp drops this quietly
            status = reply.status
            if status == 200:
                billed = usage_of(wire.provider, reply.body)
            if limits is not None and admission is not None:
                if status == 200:
                    limits.settle(admission, *billed)
                reply = _with_headers(reply, limits.headers(key, wire.provider))
            if outcome == "truncate":
                return await _truncated(request, reply)
            if streamed and status == 200 and reply.content_type == "application/json":
                answered, outcome = outcome, "disconnected"  # until the stream has been sent
                response = await self._stream(request, wire, body, reply, fault, sent)
                outcome = answered
                return response
            return _response(reply)
        finally:
            self._in_flight -= 1
            self._script.finish(record, outcome, status, billed, (sent.chunks, sent.first))

    async def _reply(
        self,
        request: web.Request,
        wire: Wire,
        parsed: Parsed,
        fault: Fault | None,
        answer: ScriptedAnswer | None,
        streamed: bool,
    ) -> Reply | None:
        """The reply to a valid request, or None once a fault has closed the connection. A
        fault that comes `after_chunks` of a stream is the stream's to play (`_stream`)."""
        if fault is None or (streamed and fault.after_chunks is not None):
            calls = answer.tool_calls if answer is not None else ()
            return wire.success(parsed, _answer(parsed, answer), calls)
        headers = fault.headers or {}
        if fault.kind == "status":
            return _with_headers(wire.error(fault.status, fault.message), headers)
        if fault.kind == "context_window":
            return _with_headers(wire.context_window_error(parsed), headers)
        if fault.kind == "unsupported_param":
            return _with_headers(wire.unsupported_param_error(), headers)
        if fault.kind == "malformed":
            body = b"<html><body><h1>Bad Gateway</h1></body></html>"
            return Reply(200, body, headers=headers)
        if fault.kind == "invalid_output":
            return wire.success(parsed, _invalid_answer(parsed))
        if fault.kind == "truncate":
            return wire.success(parsed, _answer(parsed, answer))
        if fault.kind == "hang":
            assert self._released is not None
            await self._released.wait()
        request.protocol.force_close()  # "drop", or a hang that was let go
        return None

    async def _stream(
        self,
        request: web.Request,
        wire: Wire,
        body: Mapping[str, Any],
        reply: Reply,
        fault: Fault | None,
        sent: _Sent,
    ) -> web.StreamResponse:
        """Send the 200 `reply` as the stream `body` asked for, piece by piece; a drop or a
        hang fault cuts it after its `after_chunks` pieces."""
        frames = stream_frames(wire.provider, body, json.loads(reply.body))
        cut = None if fault is None else fault.after_chunks
        response = web.StreamResponse(status=200, headers=reply.headers)
        response.content_type = frames.content_type
        await response.prepare(request)
        for frame in frames.frames:
            if frame.chunk:
                if sent.chunks == cut:
                    if fault is not None and fault.kind == "hang":
                        assert self._released is not None
                        await self._released.wait()
                    request.protocol.force_close()
                    return response
                if sent.chunks and self.chunk_delay > 0:
                    await asyncio.sleep(self.chunk_delay)
                if sent.first is None:
                    sent.first = time.monotonic()
                sent.chunks += 1
            await response.write(frame.data)
        await response.write_eof()
        return response

    def _release_hangs(self) -> None:
        """On the loop: wake every hanging request (it then closes its connection)."""
        if self._released is not None:
            self._released.set()
            self._released = asyncio.Event()


class _Sent:
    """How far a streamed answer got: pieces sent, and when the first went out."""

    __slots__ = ("chunks", "first")

    def __init__(self) -> None:
        self.chunks = 0
        self.first: float | None = None


def _answer(parsed: Parsed, scripted: ScriptedAnswer | None) -> Answer:
    """The scripted output, else a value valid for the requested schema (native, or embedded in
    the prompt), else the example object the prompt closes with, else plain text.

    Raises SchemaError for an unusable native schema (the provider would reject it); an
    unusable schema found in the prompt is ignored.
    """
    if scripted is not None:
        return scripted.output
    if parsed.schema is not None:
        return _as_answer(generate_value(parsed.schema, seed=parsed.text))
    prompt_value = _from_prompt_schema(parsed.text, generate_value)
    if prompt_value is not None:
        return prompt_value
    example = find_prompt_example(parsed.text)
    if example is not None:
        return json.dumps(example)
    snippet = " ".join(parsed.text.split())[-60:]
    if parsed.json_mode:
        return json.dumps({"answer": f"Simulated answer to: {snippet}"})
    return f"Simulated answer to: {snippet}"


def _invalid_answer(parsed: Parsed) -> Answer:
    """A well-formed answer that does not satisfy what the request asked for."""
    if parsed.schema is not None:
        return _as_answer(invalid_value(parsed.schema, seed=parsed.text))
    prompt_value = _from_prompt_schema(parsed.text, invalid_value)
    if prompt_value is not None:
        return prompt_value
    if find_prompt_example(parsed.text) is not None:
        return "{}"  # an object, but with none of the keys the example shows
    return "Sorry, I cannot answer that in the format you asked for."


def _as_answer(value: Any) -> Answer:
    """Objects stay objects (tool input for Anthropic); anything else is sent as JSON text."""
    return value if isinstance(value, dict) else json.dumps(value)


def _from_prompt_schema(text: str, make: Callable[..., Any]) -> str | None:
    """JSON text made by ``make`` from a schema embedded in the prompt, if there is one."""
    schema = find_prompt_schema(text)
    if schema is None:
        return None
    try:
        return json.dumps(make(schema, seed=text))
    except SchemaError:
        return None


def _rate_limited(wire: Wire, wait: float, headers: Mapping[str, str]) -> Reply:
    """The provider's 429 for a request that would fit in `wait` seconds."""
    after = {"retry-after": str(max(1, math.ceil(wait)))}
    if wire.provider == "openai":
        after["retry-after-ms"] = str(max(1, math.ceil(wait * 1000)))
    return _with_headers(wire.error(429), {**headers, **after})


def _with_headers(reply: Reply, headers: Mapping[str, str]) -> Reply:
    return Reply(reply.status, reply.body, reply.content_type, {**reply.headers, **headers})


def _response(reply: Reply) -> web.Response:
    return web.Response(
        status=reply.status,
        body=reply.body,
        content_type=reply.content_type,
        headers=reply.headers,
    )


async def _truncated(request: web.Request, reply: Reply) -> web.StreamResponse:
    """Promise the whole body in Content-Length, send half of it, then close."""
    response = web.StreamResponse(status=reply.status, headers=reply.headers)
    response.content_type = reply.content_type
    response.content_length = len(reply.body)
    await response.prepare(request)
    await response.write(reply.body[: len(reply.body) // 2])
    request.protocol.force_close()
    return response


def _check_tool_call(call: Mapping[str, Any]) -> dict[str, Any]:
    if (
        not isinstance(call, Mapping)
        or set(call) != {"name", "args"}
        or not isinstance(call["name"], str)
        or not isinstance(call["args"], Mapping)
    ):
        raise ValueError(f"a tool call is {{'name': str, 'args': {{...}}}}, got {call!r}")
    return {"name": call["name"], "args": dict(call["args"])}


def _check_times(times: int | None) -> None:
    if times is not None and times < 1:
        raise ValueError(f"times must be a positive count or None, got {times}")


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Thread body: run the simulator's loop until stopped, then close it cleanly."""
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()


def _raise_open_file_limit() -> None:
    """Raise the soft RLIMIT_NOFILE towards the hard limit, so thousands of sockets fit."""
    try:
        import resource
    except ImportError:  # not on POSIX: nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= _WANTED_OPEN_FILES:
        return
    target = _WANTED_OPEN_FILES if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return
