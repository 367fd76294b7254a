"""Small misbehaving HTTP servers on 127.0.0.1, on raw asyncio sockets.

Not the simulator and not aiohttp's server: these write whatever bytes a test asks for, so a
test can send what no well-behaved server would (stacked encodings, lying lengths, a key echoed
in the status line, a reset mid-body). Each server runs its own event loop on a daemon thread,
apart from the dspy_async runtime loop it is attacking.

    from tests.hostile.servers import RawServer, canned, openai_chat

    with RawServer(canned(200, {"content-type": "application/json"}, openai_chat("hi"))) as server:
        lm = LM("openai/m", api_base=f"{server.url}/v1", api_key="sk-test")
        ...
        assert server.requests[0].path == "/v1/chat/completions"

API
- `RawServer(handler)`: context manager; `.url` ("http://127.0.0.1:PORT"), `.port`,
  `.requests` (every `RawRequest` read with `read_request`, in arrival order) and
  `.connections` (connections accepted). `handler` is `async def(reader, writer)` and is
  called once per TCP connection; the server closes the connection when it returns.
- `read_request(reader) -> RawRequest | None`: read one request (line, headers, body by
  content-length or chunked); None if the client closed first. Records it on the server.
- `response_head(status, headers, reason=None) -> bytes`: a status line and headers, as is
  (no header is added, so a test controls every byte).
- Handlers (each reads one request, answers, and closes the connection):
  - `canned(status, headers=None, body=b"", *, reason=None, content_length=True)`: `body` is
    bytes, str, or a JSON-able dict/list (dumped); adds content-length unless told not to, or
    unless `headers` already sets it or transfer-encoding.
  - `chunked(status, headers, chunks)`: transfer-encoding chunked, one chunk per item.
  - `trickle(status, headers, body, *, step=1, delay=0.05)`: the body `step` bytes at a time.
  - `close_after(data)`: read the request, write `data` (maybe a partial response), close.
  - `reset_after(data=b"")`: the same, then abort with a TCP RST.
  - `hang()`: read the request and never answer (until the server shuts down).
  - `sequence(*handlers)`: the n-th connection gets the n-th handler, the last one repeats
    (e.g. a failure, then a success for the retry).
- Bodies: `openai_chat(content, **fields)`, `anthropic_message(text, **fields)`: minimal
  valid replies; keyword fields override top-level keys (e.g. `usage={...}`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import threading
import weakref
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any

__all__ = [
    "Handler",
    "RawRequest",
    "RawServer",
    "anthropic_message",
    "canned",
    "chunked",
    "close_after",
    "hang",
    "openai_chat",
    "read_request",
    "reset_after",
    "response_head",
    "sequence",
    "trickle",
]

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Body = bytes | str | Mapping[str, Any] | list[Any]

# Which server a connection's reader belongs to, so read_request can record on it without
# every handler having to carry the server around.
_owners: weakref.WeakKeyDictionary[asyncio.StreamReader, RawServer] = weakref.WeakKeyDictionary()


@dataclass
class RawRequest:
    """One request as it arrived; header names lower-cased."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 with its own loop thread, running `handler` per connection."""

    handler: Handler
    requests: list[RawRequest] = field(default_factory=list, init=False)
    connections: int = field(default=0, init=False)
    port: int = field(default=0, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)
    _server: asyncio.Server | None = field(default=None, init=False, repr=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RawServer:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="hostile-server", daemon=True)
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._start(), loop)
        started.result(timeout=10)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, thread = self._loop, self._thread
        assert loop is not None and thread is not None
        asyncio.run_coroutine_threadsafe(self._stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        assert self._server is not None
        # A connection the client just opened may still be mid-accept, and its handler task
        # may not have run its first step: closing the server under the first trips an
        # assertion in asyncio (3.11) and cancelling the second skips its `finally`, leaking
        # the socket either way. Let both settle first.
        await asyncio.sleep(0.05)
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        _owners[reader] = self
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away first: that is the client's business
        except asyncio.CancelledError:
            # Only _stop cancels these tasks. Ending normally matters: asyncio's stream
            # callback calls task.exception() on a cancelled task and fails, leaking the socket.
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> RawRequest | None:
    """Read one HTTP/1.1 request; None if the connection closed before a request line."""
    line = await reader.readline()
    if not line.strip():
        return None
    method, path, _version = line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while size := int((await reader.readline()).split(b";")[0], 16):
            parts.append(await reader.readexactly(size))
            await reader.readline()
        await reader.readline()
        body = b"".join(parts)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    request = RawRequest(method, path, headers, body)
    owner = _owners.get(reader)
    if owner is not None:
        owner.requests.append(request)
    return request


def response_head(
    status: int, headers: Mapping[str, str] | None = None, reason: str | None = None
) -> bytes:
    """The status line and headers, exactly as given (latin-1), ending with the blank line."""
    if reason is None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _bytes(body: Body) -> bytes:
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


def _has(headers: Mapping[str, str], name: str) -> bool:
    return any(key.lower() == name for key in headers)


def canned(
    status: int,
    headers: Mapping[str, str] | None = None,
    body: Body = b"",
    *,
    reason: str | None = None,
    content_length: bool = True,
) -> Handler:
    """Answer every connection's request with this response, then close."""
    data = _bytes(body)
    head = dict(headers or {})
    if isinstance(body, Mapping | list) and not _has(head, "content-type"):
        head["Content-Type"] = "application/json"
    if content_length and not (_has(head, "content-length") or _has(head, "transfer-encoding")):
        head["Content-Length"] = str(len(data))
    if not _has(head, "connection"):
        head["Connection"] = "close"

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is None:
            return
        writer.write(response_head(status, head, reason) + data)
        await writer.drain()

    return handler


def chunked(status: int, headers: Mapping[str, str] | None, chunks: Iterable[bytes]) -> Handler:
    """Answer with transfer-encoding chunked, one HTTP chunk per item of `chunks`."""
    head = {**(headers or {}), "Transfer-Encoding": "chunked", "Connection": "close"}
    parts = list(chunks)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is None:
            return
        writer.write(response_head(status, head))
        for part in parts:
            if part:
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    return handler


def trickle(
    status: int,
    headers: Mapping[str, str] | None,
    body: Body,
    *,
    step: int = 1,
    delay: float = 0.05,
) -> Handler:
    """Answer with a correct content-length, but send the body `step` bytes every `delay` s."""
    data = _bytes(body)
    head = {**(headers or {}), "Content-Length": str(len(data)), "Connection": "close"}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is None:
            return
        writer.write(response_head(status, head))
        for start in range(0, len(data), step):
            writer.write(data[start : start + step])
            await writer.drain()
            await asyncio.sleep(delay)

    return handler


def close_after(data: bytes = b"") -> Handler:
    """Read the request, write `data` (any bytes, e.g. half a response), close cleanly."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is None:
            return
        writer.write(data)
        await writer.drain()

    return handler


def reset_after(data: bytes = b"") -> Handler:
    """Read the request, write `data`, then abort the connection with a TCP RST."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is None:
            return
        writer.write(data)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        # SO_LINGER on with a zero timeout makes close() send RST instead of FIN.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    return handler


def hang() -> Handler:
    """Read the request and never answer; the server's shutdown ends the wait."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if await read_request(reader) is None:
            return
        await asyncio.Event().wait()

    return handler


def sequence(*handlers: Handler) -> Handler:
    """The n-th connection is served by the n-th handler; the last one serves the rest."""
    if not handlers:
        raise ValueError("sequence() needs at least one handler")
    count = 0
    lock = threading.Lock()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        with lock:  # connections are served on one loop, but keep the count exact regardless
            chosen = handlers[min(count, len(handlers) - 1)]
            count += 1
        await chosen(reader, writer)

    return handler


def openai_chat(content: str | None, **fields: Any) -> dict[str, Any]:
    """A minimal OpenAI chat completion whose one choice says `content`."""
    body: dict[str, Any] = {
        "id": "chatcmpl-hostile",
        "object": "chat.completion",
        "model": "hostile",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    body.update(fields)
    return body


def anthropic_message(text: str, **fields: Any) -> dict[str, Any]:
    """A minimal Anthropic Messages reply with one text block."""
    body: dict[str, Any] = {
        "id": "msg_hostile",
        "type": "message",
        "role": "assistant",
        "model": "hostile",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    body.update(fields)
    return body
