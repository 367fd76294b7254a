"""The examples that are scripts: a fork-context process pool whose jobs call Predict after the
parent did, and the sync API called inside a running event loop (a Jupyter cell)."""

from __future__ import annotations

import re

import pytest

from dspy_async.testing import ProviderSimulator

from .harness import run_example


@pytest.mark.slow
def test_prefork_pool_jobs_call_predict_after_the_parent_did(
    example_env: dict[str, str], simulator: ProviderSimulator
) -> None:
    output = run_example("examples.prefork_worker", example_env).stdout

    lines = re.findall(r"^(parent|worker) (\d+): (\w+)$", output, re.MULTILINE)
    assert [kind for kind, _, _ in lines] == ["parent"] + ["worker"] * 6 + ["parent"], output
    parent = {pid for kind, pid, _ in lines if kind == "parent"}
    workers = {pid for kind, pid, _ in lines if kind == "worker"}
    assert len(parent) == 1
    assert workers
    assert not workers & parent
    assert [request.outcome for request in simulator.requests] == ["ok"] * 8


@pytest.mark.slow
def test_sync_call_inside_a_running_event_loop(
    example_env: dict[str, str], simulator: ProviderSimulator
) -> None:
    output = run_example("examples.jupyter_cell", example_env).stdout

    assert re.fullmatch(r"sync: \w+\nasync: \w+\n", output), output
    assert len(simulator.requests) == 2
