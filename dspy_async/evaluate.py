"""Evaluate: a program's score over a dev set, as DSPy's `dspy.Evaluate`, on the batch engine.

    evaluate = dspy.Evaluate(devset=devset, metric=exact_match, num_threads=16)
    result = evaluate(program)
    result.score      # 83.33: the mean metric, in percent
    result.results    # [(example, prediction, score), ...] in devset order

Every example runs as one item of a batch (`Module.batch`'s engine): at most `num_threads`
requests are in flight, an example waiting out a backoff gives its slot to the others, and
every example's outcome is kept. An example whose program or metric raised scores
`failure_score` (0.0), has an empty Prediction, and is reported: logged, and listed with its
exception in `result.errors`. Nothing stops the run early. The metric runs in a worker
thread, so it may itself call an LM.
"""

from __future__ import annotations

import asyncio
import csv
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from . import _checks, _runtime, callbacks
from .batch import run_batch
from .errors import ConfigurationError
from .example import Example
from .module import Module
from .prediction import Prediction

__all__ = ["Evaluate", "EvaluationResult"]

logger = logging.getLogger("dspy_async")

Metric = Callable[..., Any]
Row = tuple[Example, Any, Any]

# DSPy's options not taken here, and where to look instead.
_NOT_TAKEN = {
    "return_outputs": "is no longer supported: the outputs are in result.results",
    "return_all_scores": "is no longer supported: every score is in result.results",
    "display_table": "is not there yet: the rows are in result.results (or save_as_csv=...)",
    "max_errors": "is not taken: every example runs, and failures are in result.errors",
    "provide_traceback": "is not taken: each failure's exception is in result.errors",
}
_OPTIONS = frozenset(
    {"devset", "metric", "num_threads", "display_progress", "failure_score"}
    | {"save_as_csv", "save_as_json"}
)
_DEFAULT_THREADS = 16


class EvaluationResult(Prediction):
    """`score`: the mean metric in percent (two decimals); `results`: an `(example,
    prediction, score)` tuple per example, in devset order; `errors`: `(index, exception)`
    of every example whose program or metric raised (scored `failure_score`)."""

    def __init__(
        self,
        score: float,
        results: list[Row],
        errors: list[tuple[int, BaseException]] | None = None,
    ) -> None:
        super().__init__(score=score, results=results, errors=errors or [])

    def __repr__(self) -> str:
        failed = f", {len(self.errors)} failed" if self.errors else ""
        return (
            f"EvaluationResult(score={self.score}, results=<{len(self.results)} results{failed}>)"
        )


class Evaluate:
    """Score `program(**example.inputs())` with `metric(example, prediction)` over `devset`."""

    def __init__(
        self,
        *,
        devset: Sequence[Example],
        metric: Metric | None = None,
        num_threads: int | None = None,
        display_progress: bool = False,
        failure_score: float = 0.0,
        save_as_csv: str | None = None,
        save_as_json: str | None = None,
        **kwargs: Any,
    ) -> None:
        for name in kwargs:
            if name in _NOT_TAKEN:
                raise ConfigurationError(f"Evaluate option `{name}` {_NOT_TAKEN[name]}")
        _checks.known_names("Evaluate option", kwargs, _OPTIONS)
        self.devset = devset
        self.metric = metric
        self.num_threads = num_threads
        self.display_progress = display_progress
        self.failure_score = _checks.non_negative_number("Evaluate failure_score", failure_score)
        self.save_as_csv = save_as_csv
        self.save_as_json = save_as_json

    def __call__(
        self,
        program: Module,
        metric: Metric | None = None,
        devset: Sequence[Example] | None = None,
        num_threads: int | None = None,
        display_progress: bool | None = None,
        save_as_csv: str | None = None,
        save_as_json: str | None = None,
    ) -> EvaluationResult:
        """Run the evaluation; each argument overrides the one given to `Evaluate(...)`."""
        inputs = {
            "program": program,
            "metric": metric,
            "devset": devset,
            "num_threads": num_threads,
            "display_progress": display_progress,
        }
        with callbacks.observe("evaluate", self, inputs) as seen:
            metric = metric if metric is not None else self.metric
            devset = list(devset if devset is not None else self.devset)
            threads = num_threads if num_threads is not None else self.num_threads
            progress = display_progress if display_progress is not None else self.display_progress
            _check(program, metric, devset)
            assert metric is not None
            rows, errors = _runtime.run(
                self._run(program, metric, devset, threads or _DEFAULT_THREADS, progress)
            )
            total = sum(float(score) for _, _, score in rows)
            score = round(100 * total / len(rows), 2)
            logger.info(
                "Average Metric: %s / %d (%s%%)", round(total, 2), len(rows), round(score, 1)
            )
            _report(errors, len(rows), self.failure_score)
            name = getattr(metric, "__name__", type(metric).__name__)
            if save_as_csv or self.save_as_csv:
                _save_csv(save_as_csv or self.save_as_csv or "", rows, name)
            if save_as_json or self.save_as_json:
                _save_json(save_as_json or self.save_as_json or "", rows, name)
            result = EvaluationResult(score, rows, errors)
            seen.returned(result)
            return result

    async def _run(
        self,
        program: Module,
        metric: Metric,
        devset: list[Example],
        threads: int,
        progress: bool,
    ) -> tuple[list[Row], list[tuple[int, BaseException]]]:
        async def score_one(index: int) -> tuple[Any, Any]:
            example = devset[index]
            prediction = await program.acall(**example.inputs())
            # In a worker thread: a metric may block, or call an LM itself.
            score = await asyncio.to_thread(metric, example, prediction)
            float(score)  # a score that is no number fails this example, not the whole run
            return prediction, score

        outcomes = await run_batch(
            [{"index": i} for i in range(len(devset))],
            acall=score_one,
            max_concurrency=threads,
            return_exceptions=True,
            progress=progress,
        )
        rows: list[Row] = []
        errors: list[tuple[int, BaseException]] = []
        for index, (example, outcome) in enumerate(zip(devset, outcomes, strict=True)):
            if isinstance(outcome, BaseException):
                errors.append((index, outcome))
                rows.append((example, Prediction(), self.failure_score))
            else:
                rows.append((example, *outcome))
        return rows, errors


def _check(program: object, metric: object, devset: list[Example]) -> None:
    if not isinstance(program, Module):
        raise ConfigurationError(f"Evaluate needs a Module to run, not {_checks.shown(program)}")
    if not callable(metric):
        raise ConfigurationError("Evaluate needs a metric: metric(example, prediction) -> score")
    if not devset:
        raise ConfigurationError("devset must contain at least one example, got an empty devset")
    for index, example in enumerate(devset):
        if not isinstance(example, Example):
            raise ConfigurationError(
                f"devset[{index}] must be a dspy.Example, not {type(example).__name__}"
            )
        example.inputs()  # ValueError now, naming the fix, if with_inputs() was not called


def _report(errors: list[tuple[int, BaseException]], total: int, failure_score: float) -> None:
    if errors:
        index, first = errors[0]
        logger.warning(
            "Evaluate: %d of %d examples failed and scored %s; the first, devset[%d]: %s: %s",
            *(len(errors), total, failure_score, index, type(first).__name__, first),
        )


def _table(rows: list[Row], metric_name: str) -> list[dict[str, Any]]:
    """DSPy's rows: the example's fields, the prediction's, and the score under the metric's
    name."""
    table = []
    for example, prediction, score in rows:
        row = example.toDict()
        if isinstance(prediction, Example):
            row |= {f"pred_{k}" if k in row else k: v for k, v in prediction.toDict().items()}
        else:
            row["prediction"] = prediction
        row[metric_name] = score
        table.append(row)
    return table


def _save_csv(path: str, rows: list[Row], metric_name: str) -> None:
    table = _table(rows, metric_name)
    names = list(dict.fromkeys(key for row in table for key in row))
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=names)
        writer.writeheader()
        writer.writerows(table)


def _save_json(path: str, rows: list[Row], metric_name: str) -> None:
    with open(path, "w", encoding="utf-8") as file:
        json.dump(_table(rows, metric_name), file, default=str)
