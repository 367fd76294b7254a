"""The README's first command, `python -m dspy_async demo`, and the command line around it."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import tomllib
from pathlib import Path

import pytest

from dspy_async.__main__ import main

OURS = "dspy-async batch"
BLOCKING = "blocking threads + time.sleep"
# Failed replies each fault kind causes, as the fault list describes it ("503 twice").
REPLIES_PER_FAULT = {"rate_limit": 1, "server_error": 2, "drop": 1, "invalid_output": 1}


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "dspy_async", *args],
        capture_output=True,
        text=True,
        timeout=110,
        env=env,
    )


def rows(text: str, name: str) -> list[list[str]]:
    """The numbers on each line starting with `name`, one list per table."""
    return [line[len(name) :].split() for line in text.splitlines() if line.startswith(name)]


@pytest.mark.slow
def test_demo_counts_agree_with_its_fault_list_and_clean_tickets_finish_sooner() -> None:
    # Eight at a time: backoffs that hold a thread show more than at the default 16.
    result = run_cli("demo", "--items", "40", "--concurrency", "8", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout

    header = re.search(r"Faults on (\d+) of 40 tickets, (\d+) failed replies to retry:", out)
    assert header is not None, out
    kinds = {kind: int(n) for n, kind in re.findall(r"^ +(\d+) (\w+) ", out, re.MULTILINE)}
    assert set(kinds) == set(REPLIES_PER_FAULT)
    faulted, failed_replies = int(header[1]), int(header[2])
    assert sum(kinds.values()) == faulted == 10  # every fourth ticket
    assert failed_replies == sum(REPLIES_PER_FAULT[kind] * n for kind, n in kinds.items())

    [ours, ours_finish] = rows(out, OURS)
    [blocking, blocking_finish] = rows(out, BLOCKING)
    for counts in (ours, blocking):
        items, ok, failed, attempts, faults, retries = map(int, counts[:6])
        assert (items, ok, failed) == (40, 40, 0)
        # Each design met every failed reply the list promises, and retried each once.
        assert faults == retries == failed_replies
        assert attempts == items + retries

    clean = re.search(r"^(\d+) tickets needed no retry", out, re.MULTILINE)
    assert clean is not None and int(clean[1]) == 40 - faulted
    [floor] = rows(out, "no faults, 8 at a time")
    ours_median, ours_p95 = map(float, ours_finish)
    blocking_median, blocking_p95 = map(float, blocking_finish)
    assert list(map(float, floor)) == [0.6, 1.0]  # in rounds of 8 calls of 0.2 s
    # A backoff holds no slot of ours, but holds a blocking worker for 0.5 s or more.
    assert ours_median < blocking_median
    assert ours_p95 < blocking_p95
    assert float(ours[6]) < float(blocking[6])  # wall time
    assert "faster than the blocking design" in out


@pytest.mark.slow
def test_the_quickstart_shows_a_progress_bar_on_a_terminal() -> None:
    # The README's quickstart installs the package alone: tqdm must come with it.
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert any(dep.startswith("tqdm") for dep in pyproject["project"]["dependencies"])
    controller, terminal = pty.openpty()
    # A terminal of 24x100: in a 0-column one tqdm draws nothing.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        demo = subprocess.Popen(
            [sys.executable, "-W", "error", "-m", "dspy_async", "demo", "--items", "5"],
            stdout=subprocess.DEVNULL,
            stderr=terminal,
        )
    finally:
        os.close(terminal)
    drawn = b""
    try:
        while chunk := _read(controller):  # until the demo closes its end
            drawn += chunk
        assert demo.wait(timeout=110) == 0
    finally:
        os.close(controller)
        demo.kill()
        demo.wait()
    assert re.search(rb"100%\|.*\| 5/5 ", drawn), drawn


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the terminal's other side is closed and everything was read
        return b""


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert re.search(r"^\s+demo\s+\S", result.stdout, re.MULTILINE), result.stdout


def test_demo_help_gives_every_flag_a_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--help"])
    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in [
        ("--model", "the simulator"),
        ("--items", "50"),
        ("--concurrency", "16"),
        ("--latency", "0.2"),
        ("--progress", "when stderr is a terminal"),
    ]:
        assert re.search(rf"{flag}\b.*?\(default: {re.escape(default)}\)", text), flag


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["demo", "--items", "0"], "--items: must be at least 1, got 0"),
        (["demo", "--items", "-3"], "--items: must be at least 1, got -3"),
        (["demo", "--items", "many"], "--items: expected a whole number, got 'many'"),
        (["demo", "--concurrency", "0"], "--concurrency: must be at least 1"),
        (["demo", "--latency", "-1"], "--latency: expected seconds, 0 or more"),
        (["demo", "--latency", "nan"], "--latency: expected seconds, 0 or more"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m dspy_async"), err
    assert says in err


def test_a_configuration_error_is_one_line_not_a_traceback() -> None:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    result = run_cli("demo", "--model", "openai/gpt-4o-mini", env=env)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("python -m dspy_async demo: error: ")
    assert "OPENAI_API_KEY" in result.stderr
    assert result.stdout == ""
