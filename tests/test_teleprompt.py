"""LabeledFewShot and BootstrapFewShot: demos from the teacher's accepted runs, DSPy's trace
for the metric, rounds past the cache; and a compiled program saved, loaded in a fresh
process and evaluated there with the same score."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import dspy_async as dspy
from dspy_async.testing import DummyLM, ProviderSimulator
from tests import qa_program
from tests.qa_program import QA, exact, examples

ROOT = Path(__file__).resolve().parent.parent


def test_labeled_few_shot_samples_examples_as_demos() -> None:
    program = QA()
    trainset = examples(qa_program.TRAIN)
    compiled = dspy.LabeledFewShot(k=2).compile(program, trainset=trainset)
    demos = compiled.solve.predict.demos
    assert len(demos) == 2 and all(demo in trainset for demo in demos)
    assert dspy.LabeledFewShot(k=2).compile(program, trainset=trainset).solve.predict.demos == demos
    first = dspy.LabeledFewShot(k=2).compile(program, trainset=trainset, sample=False)
    assert first.solve.predict.demos == trainset[:2]
    assert program.solve.predict.demos == []  # the student is not changed


def test_bootstrap_keeps_the_accepted_runs_as_demos(provider_simulator: ProviderSimulator) -> None:
    qa_program.script(provider_simulator)
    program = QA()
    traces: list[Any] = []

    def metric(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
        traces.append(trace)
        return exact(example, prediction)

    optimizer = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=2, max_labeled_demos=3)
    with dspy.context(lm=qa_program.lm_for(provider_simulator.openai_base_url)):
        compiled = optimizer.compile(program, trainset=examples(qa_program.TRAIN))
    demos = compiled.solve.predict.demos
    assert [demo.question for demo in demos] == [
        "Capital of France?",
        "Capital of Italy?",  # two bootstrapped, then labeled ones up to three in all
        "Capital of Spain?",
    ]
    assert demos[0].toDict() == {
        "augmented": True,
        "question": "Capital of France?",
        "reasoning": "Paris is the capital of France",
        "answer": "Paris",
    }
    assert "augmented" not in demos[2] and "reasoning" not in demos[2]
    # The metric got DSPy's trace: (predictor, inputs, prediction) per step of the run.
    ((predictor, inputs, prediction),) = traces[0]
    assert isinstance(predictor, dspy.Predict) and predictor is not program.solve.predict
    assert inputs == {"question": "Capital of France?"}
    assert prediction.answer == "Paris"
    assert compiled._compiled and not getattr(program, "_compiled", False)
    assert program.solve.predict.demos == []
    # The teacher showed each example every labeled demo but its own.
    france = provider_simulator.requests[0].text
    assert "question: Capital of Italy?" in france and france.count("Capital of France?") == 1
    with pytest.raises(dspy.ConfigurationError, match="already compiled"):
        optimizer.compile(compiled, trainset=examples(qa_program.TRAIN))


def test_later_rounds_sample_past_the_cache(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond(output={"reasoning": "r", "answer": "wrong"}, times=1)
    provider_simulator.respond(output={"reasoning": "r", "answer": "Paris"})
    program = QA()
    optimizer = dspy.BootstrapFewShot(
        metric=exact, max_rounds=2, max_bootstrapped_demos=1, max_labeled_demos=0
    )
    with dspy.context(lm=qa_program.lm_for(provider_simulator.openai_base_url)):
        compiled = optimizer.compile(program, trainset=examples(["France"]))
    assert [d.answer for d in compiled.solve.predict.demos] == ["Paris"]
    first, second = (r.body for r in provider_simulator.requests)
    assert "temperature" not in first and second["temperature"] == 1.0
    assert "rollout_id" not in second  # a cache key, never sent
    assert program.solve.predict.config == {}  # the round's settings were undone


def test_a_run_that_raises_is_skipped_until_max_errors() -> None:
    lm = DummyLM([RuntimeError("boom"), {"reasoning": "r", "answer": "Rome"}])
    optimizer = dspy.BootstrapFewShot(metric=exact, max_labeled_demos=0, max_errors=2)
    with dspy.context(lm=lm):
        compiled = optimizer.compile(QA(), trainset=examples(["France", "Italy"]))
    assert [d.question for d in compiled.solve.predict.demos] == ["Capital of Italy?"]
    lm = DummyLM([RuntimeError("boom")] * 2)
    with dspy.context(lm=lm), pytest.raises(RuntimeError, match="boom"):
        dspy.BootstrapFewShot(metric=exact, max_errors=2).compile(
            QA(), trainset=examples(["France", "Italy"])
        )


def test_a_teacher_must_match_the_student() -> None:
    class Other(dspy.Module):
        def __init__(self) -> None:
            self.step = dspy.Predict("question -> answer")

    with pytest.raises(dspy.ConfigurationError, match="same predictors"):
        dspy.BootstrapFewShot(metric=exact).compile(
            QA(), teacher=Other(), trainset=examples(["France"])
        )


def test_metric_threshold_and_no_metric() -> None:
    lm = DummyLM(respond=lambda messages: {"reasoning": "r", "answer": "Paris"})
    scored = dspy.BootstrapFewShot(
        metric=lambda ex, pred, trace=None: 0.4, metric_threshold=0.5, max_labeled_demos=0
    )
    anything = dspy.BootstrapFewShot(max_labeled_demos=0)
    with dspy.context(lm=lm):
        assert scored.compile(QA(), trainset=examples(["France"])).solve.predict.demos == []
        assert len(anything.compile(QA(), trainset=examples(["France"])).solve.predict.demos) == 1


def test_bootstrapping_a_react_agent_gives_its_step_and_extract_demos() -> None:
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    lm = DummyLM(
        [
            {"next_thought": "add", "next_tool_name": "add", "next_tool_args": {"a": 1, "b": 2}},
            {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "r", "answer": "3"},
        ]
    )
    agent = dspy.ReAct("question -> answer", tools=[add])
    trainset = [dspy.Example(question="1 + 2?", answer="3").with_inputs("question")]
    with dspy.context(lm=lm):
        compiled = dspy.BootstrapFewShot(metric=exact, max_labeled_demos=0).compile(
            agent, trainset=trainset
        )
    (step,) = compiled.react.demos  # the last of its two steps
    assert step.next_tool_name == "finish" and "observation_0: 3" in step.trajectory
    (extract,) = compiled.extract.predict.demos
    assert extract.answer == "3"


SUBPROCESS = textwrap.dedent(
    """
    import json, sys
    import dspy_async as dspy
    from tests import qa_program

    url, path = sys.argv[1], sys.argv[2]
    program = qa_program.QA().load(path)
    dspy.configure(lm=qa_program.lm_for(url))
    evaluate = dspy.Evaluate(devset=qa_program.examples(qa_program.DEV), metric=qa_program.exact)
    result = evaluate(program)
    print(json.dumps({
        "score": result.score,
        "answers": [prediction.get("answer") for _, prediction, _ in result.results],
        "failed": [index for index, _ in result.errors],
        "demos": [demo.toDict() for demo in program.solve.predict.demos],
    }))
    """
)


@pytest.mark.slow
def test_compiled_saved_loaded_in_a_fresh_process_and_evaluated_alike(
    provider_simulator: ProviderSimulator, tmp_path: Path
) -> None:
    qa_program.script(provider_simulator)
    url = provider_simulator.openai_base_url
    devset = examples(qa_program.DEV)
    evaluate = dspy.Evaluate(devset=devset, metric=exact, num_threads=4)
    with dspy.context(lm=qa_program.lm_for(url)):
        baseline = evaluate(QA())
        optimizer = dspy.BootstrapFewShot(
            metric=exact, max_bootstrapped_demos=2, max_labeled_demos=3
        )
        compiled = optimizer.compile(QA(), trainset=examples(qa_program.TRAIN))
        here = evaluate(compiled)
    assert baseline.score == 0.0
    assert here.score == 75.0  # three right, and Atlantis failed (scored 0, reported)
    assert [index for index, _ in here.errors] == [3]

    path = tmp_path / "qa.json"
    compiled.save(path)
    assert "sk-" not in path.read_text() and json.loads(path.read_text())

    env = {**os.environ, "DSPY_ASYNC_RESPONSE_CACHE": "off", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, url, str(path)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    there = json.loads(done.stdout.strip().splitlines()[-1])
    assert there["score"] == here.score
    assert there["answers"] == [prediction.get("answer") for _, prediction, _ in here.results]
    assert there["failed"] == [3]
    assert there["demos"] == [demo.toDict() for demo in compiled.solve.predict.demos]


def test_compile_is_observed_by_callbacks() -> None:
    seen: list[tuple[str, Any]] = []

    class Compiles(dspy.BaseCallback):
        def on_compile_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            seen.append(("start", instance))

        def on_compile_end(self, call_id: str, outputs: Any, exception: Any = None) -> None:
            seen.append(("end", outputs))

    bootstrap = dspy.BootstrapFewShot(max_labeled_demos=0)
    lm = DummyLM(respond=lambda messages: {"reasoning": "r", "answer": "Paris"})
    with dspy.context(lm=lm, callbacks=[Compiles()]):
        compiled = bootstrap.compile(QA(), trainset=examples(["France"]))
    assert seen == [("start", bootstrap), ("end", compiled)]
