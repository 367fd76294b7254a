"""Running the examples for real: server subprocesses on free ports, their output, and bursts of
concurrent HTTP requests. Fixtures wrapping these live in conftest.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import httpx

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
SCRIPT_TIMEOUT = 60.0
# Output meaning something went wrong, even if every request was served: errors, hung
# workers, and what an unclean exit of the runtime would print (asyncio's and aiohttp's
# warnings about unfinished tasks and unclosed transports, sessions and connectors).
TROUBLE = (
    "Traceback",
    "Exception ignored",
    "WORKER TIMEOUT",
    "was never awaited",
    "Task was destroyed",
    "unclosed transport",
    "unclosed event loop",
    "Unclosed",
)
# Warnings are errors in the example scripts too, except the one Python 3.12+ gives for a fork
# in a multithreaded process (the runtime's loop thread is running when the pool forks).
PYTHON = [sys.executable, "-W", "error", "-W", "ignore:This process:DeprecationWarning"]
# Servers run third-party code whose own warnings are not ours to fail on, but unclosed
# resources are reported: `assert_clean` fails on those that are ours.
SERVER_PYTHON = [sys.executable, "-W", "default::ResourceWarning"]


@dataclass(frozen=True)
class Reply:
    """One request of a burst: what was sent, what came back and how long it took."""

    message: str
    status: int
    body: dict[str, Any]
    elapsed: float


@dataclass
class Server:
    """A server subprocess (the leader of its own session) and its combined output."""

    process: subprocess.Popen[bytes]
    url: str
    output: IO[bytes]

    def log(self) -> str:
        self.output.seek(0)
        return self.output.read().decode("utf-8", "replace")

    def stop(self) -> tuple[bool, str]:
        """Send SIGTERM, as a service manager would, and kill the whole session if it does not
        end; close the output. Returns whether it ended by itself, and its output.

        (Not SIGINT: a shell without job control starts background jobs ignoring it.)
        """
        graceful = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                graceful = False
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
        log = self.log()
        self.output.close()
        return graceful, log


class StartServer(Protocol):
    """The `start_server` fixture: start `python <args>`, `{port}` in args a free port."""

    def __call__(self, args: Sequence[str], env: Mapping[str, str] | None = None) -> Server: ...


def launch(args: Sequence[str], env: Mapping[str, str], home: Path) -> Server:
    """Start a server from the repo root on a free port ($PORT, and `{port}` in args).

    `home` is its $HOME and $XDG_RUNTIME_DIR, where gunicorn puts its control socket.
    """
    port = free_port()
    output = (home / f"server-{port}.log").open("w+b")
    process = subprocess.Popen(
        [*SERVER_PYTHON, *(arg.format(port=port) for arg in args)],
        cwd=REPO,
        env={**env, "PORT": str(port), "HOME": str(home), "XDG_RUNTIME_DIR": str(home)},
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Server(process, f"http://127.0.0.1:{port}", output)


def wait_until_ready(server: Server, client: httpx.Client) -> None:
    """Poll until the server answers any HTTP request (a 404 will do), for a bounded time."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            client.get(server.url + "/", timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"server not ready within {READY_TIMEOUT} s:\n{server.log()}")


def run_example(module: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `python -m <module>` from the repo root; it must exit 0 with clean output."""
    done = subprocess.run(
        [*PYTHON, "-m", module],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert_clean(done.stdout + done.stderr)
    return done


def assert_clean(output: str, provider_port: int | None = None) -> None:
    """No traceback, unclosed resource or similar noise in a subprocess's output.

    Servers leave some of their own sockets unclosed at exit (gunicorn does); a socket still
    connected to the provider on `provider_port`, though, would be the runtime's.
    """
    markers = [*TROUBLE]
    if provider_port is not None:
        markers.append(f"raddr=('127.0.0.1', {provider_port})")
    found = [marker for marker in markers if marker in output]
    assert not found, f"{found} in the output:\n{output}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def post_concurrently(client: httpx.Client, url: str, messages: Sequence[str]) -> list[Reply]:
    """POST every message at once, each from its own thread; replies in message order."""

    def post(message: str) -> Reply:
        started = time.monotonic()
        response = client.post(url, json={"message": message})
        return Reply(message, response.status_code, response.json(), time.monotonic() - started)

    with ThreadPoolExecutor(max_workers=len(messages)) as pool:
        return list(pool.map(post, messages))
