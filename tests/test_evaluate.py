"""Evaluate on the batch engine: DSPy 3's EvaluationResult, every example kept, failures scored
and reported, bounded concurrency with no slot held during a backoff."""

import csv
import json
import logging
from pathlib import Path
from typing import Any

import pytest

import dspy_async as dspy
from dspy_async.testing import DummyLM, ProviderSimulator

QUESTIONS = {"France": "Paris", "Italy": "Rome", "Spain": "Madrid", "Peru": "Lima"}


def devset() -> list[dspy.Example]:
    return [
        dspy.Example(question=f"Capital of {country}?", answer=city).with_inputs("question")
        for country, city in QUESTIONS.items()
    ]


def exact(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
    return bool(prediction.answer == example.answer)


def lm_for(sim: ProviderSimulator) -> dspy.LM:
    return dspy.LM("openai/test-model", api_base=sim.openai_base_url, api_key="k")


def script_answers(sim: ProviderSimulator, wrong: str = "Peru") -> None:
    for country, city in QUESTIONS.items():
        answer = "Quito" if country == wrong else city
        sim.respond(f"Capital of {country}?", output={"answer": answer})


def test_score_and_results_in_devset_order(provider_simulator: ProviderSimulator) -> None:
    script_answers(provider_simulator)
    program = dspy.Predict("question -> answer", lm=lm_for(provider_simulator))
    result = dspy.Evaluate(devset=devset(), metric=exact, num_threads=2)(program)
    assert isinstance(result, dspy.EvaluationResult) and isinstance(result, dspy.Prediction)
    assert result.score == 75.0
    assert [(ex.question, pred.answer, score) for ex, pred, score in result.results] == [
        ("Capital of France?", "Paris", True),
        ("Capital of Italy?", "Rome", True),
        ("Capital of Spain?", "Madrid", True),
        ("Capital of Peru?", "Quito", False),
    ]
    assert result.errors == []
    assert repr(result) == "EvaluationResult(score=75.0, results=<4 results>)"


def test_a_failed_example_scores_zero_and_is_reported(
    provider_simulator: ProviderSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    script_answers(provider_simulator, wrong="")
    provider_simulator.fault("Capital of Italy?", kind="status", status=400, times=None)
    program = dspy.Predict("question -> answer", lm=lm_for(provider_simulator))
    with caplog.at_level(logging.WARNING, "dspy_async"):
        result = dspy.Evaluate(devset=devset(), metric=exact)(program)
    assert result.score == 75.0
    assert len(result.results) == 4  # never lost
    example, prediction, score = result.results[1]
    assert example.question == "Capital of Italy?"
    assert (prediction.toDict(), score) == ({}, 0.0)
    ((index, error),) = result.errors
    assert index == 1 and isinstance(error, dspy.BadRequestError)
    assert "1 of 4 examples failed" in caplog.text and "devset[1]" in caplog.text


def test_a_metric_that_raises_or_gives_no_number_fails_that_example_only() -> None:
    def picky(example: dspy.Example, prediction: dspy.Prediction) -> Any:
        if "France" in example.question:
            raise KeyError("no such field")
        if "Spain" in example.question:
            return None
        return 0.5

    lm = DummyLM(respond=lambda messages: {"answer": "x"})
    evaluate = dspy.Evaluate(devset=devset(), metric=picky, failure_score=0.0)
    result = evaluate(dspy.Predict("question -> answer", lm=lm))
    assert [score for _, _, score in result.results] == [0.0, 0.5, 0.0, 0.5]
    assert [index for index, _ in result.errors] == [0, 2]
    assert result.score == 25.0


def test_num_threads_bounds_the_requests_in_flight(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.latency = 0.2
    provider_simulator.respond(output={"answer": "Paris"})
    program = dspy.Predict("question -> answer", lm=lm_for(provider_simulator))
    examples = devset() * 3
    dspy.Evaluate(devset=examples, metric=exact, num_threads=4)(program)
    records = provider_simulator.requests
    assert len(records) == 12
    peak = max(
        sum(1 for other in records if other.arrived <= r.arrived < (other.finished or 0))
        for r in records
    )
    assert 2 <= peak <= 4


@pytest.mark.slow
def test_an_example_backing_off_holds_no_slot(provider_simulator: ProviderSimulator) -> None:
    script_answers(provider_simulator)
    provider_simulator.fault("Capital of France?", kind="status", status=429, retry_after=1)
    program = dspy.Predict("question -> answer", lm=lm_for(provider_simulator))
    result = dspy.Evaluate(devset=devset(), metric=exact, num_threads=1)(program)
    assert result.score == 75.0
    order = [r.text.split("Capital of ")[1].split("?")[0] for r in provider_simulator.requests]
    # France waits out its Retry-After while the others use the one slot.
    assert order == ["France", "Italy", "Spain", "Peru", "France"]


def test_arguments_override_and_dspy_options_that_are_not_taken() -> None:
    lm = DummyLM(respond=lambda messages: {"answer": "Paris"})
    evaluate = dspy.Evaluate(devset=devset(), metric=exact)
    program = dspy.Predict("question -> answer", lm=lm)
    assert evaluate(program, devset=devset()[:1]).score == 100.0
    assert evaluate(program, metric=lambda ex, pred: 1.0).score == 100.0
    for option in ("return_outputs", "return_all_scores", "display_table", "max_errors"):
        with pytest.raises(dspy.ConfigurationError, match=option):
            dspy.Evaluate(devset=devset(), metric=exact, **{option: True})
    with pytest.raises(dspy.ConfigurationError, match="did you mean"):
        dspy.Evaluate(devset=devset(), metric=exact, num_thread=4)
    with pytest.raises(dspy.ConfigurationError, match="empty devset"):
        evaluate(program, devset=[])
    with pytest.raises(dspy.ConfigurationError, match=r"dspy\.Example"):
        evaluate(program, devset=[{"question": "q"}])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="with_inputs"):
        evaluate(program, devset=[dspy.Example(question="q", answer="a")])
    with pytest.raises(dspy.ConfigurationError, match="metric"):
        dspy.Evaluate(devset=devset())(program)
    assert len(lm.calls) == 5  # 1 + 4 calls; the refusals sent nothing


def test_results_saved_as_json_and_csv(tmp_path: Path) -> None:
    lm = DummyLM(respond=lambda messages: {"answer": "Paris"})
    json_path, csv_path = tmp_path / "out.json", tmp_path / "out.csv"
    dspy.Evaluate(
        devset=devset()[:2], metric=exact, save_as_json=str(json_path), save_as_csv=str(csv_path)
    )(dspy.Predict("question -> answer", lm=lm))
    rows = json.loads(json_path.read_text())
    assert rows[0] == {
        "question": "Capital of France?",
        "answer": "Paris",
        "pred_answer": "Paris",
        "exact": True,
    }
    with csv_path.open() as file:
        assert [row["exact"] for row in csv.DictReader(file)] == ["True", "False"]


def test_a_sync_only_program_and_a_metric_that_calls_an_lm() -> None:
    judge = dspy.Predict("answer -> correct: bool", lm=DummyLM(respond=lambda m: {"correct": True}))

    class Pipeline(dspy.Module):
        def __init__(self) -> None:
            self.step = dspy.Predict(
                "question -> answer", lm=DummyLM(respond=lambda m: {"answer": "x"})
            )

        def forward(self, question: str) -> dspy.Prediction:
            return self.step(question=question)

    def by_judge(example: dspy.Example, prediction: dspy.Prediction) -> bool:
        return bool(judge(answer=prediction.answer).correct)  # a blocking call, in a worker

    result = dspy.Evaluate(devset=devset(), metric=by_judge, num_threads=2)(Pipeline())
    assert result.score == 100.0
