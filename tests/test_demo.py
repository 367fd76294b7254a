"""The README's first command: `python -m dspy_async demo`, run as a user would."""

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_the_batch_through_faults_and_beats_the_blocking_design() -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error", "-m", "dspy_async", "demo", "--items", "30"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split("  ")[0]: line.split() for line in result.stdout.splitlines()}
    ours = rows["dspy-async batch"]
    blocking = rows["blocking threads + time.sleep"]
    # name (two words), items, ok, failed, attempts, retries, wall seconds
    assert ours[2:5] == ["30", "30", "0"]
    assert int(ours[5]) == 30 + int(ours[6])
    assert int(ours[6]) >= 6  # every injected fault cost at least one retry
    assert float(ours[7]) < float(blocking[-1])
    assert "faster than the blocking design" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_usage_without_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dspy_async"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "usage: python -m dspy_async demo" in result.stderr
