"""Optimizers that pick few-shot demos, as DSPy's: `LabeledFewShot` and `BootstrapFewShot`.

    optimizer = dspy.BootstrapFewShot(metric=exact_match, max_bootstrapped_demos=4)
    compiled = optimizer.compile(program, trainset=trainset)
    compiled.save("program.json")

`BootstrapFewShot` runs a teacher (the program itself, with labeled demos, unless one is
given) on the training examples, one at a time, and keeps the steps of every run the metric
accepts: each predictor's inputs and outputs become a demo of that predictor (an Example with
`augmented=True`). The compiled program is a copy of the student whose predictors hold those
demos, then labeled examples the bootstrap did not use, up to `max_labeled_demos`; the
student itself is not changed. Rounds after the first ask again at temperature 1.0 under a
new `rollout_id`, so the response cache gives a fresh answer.

The steps are recorded with a module callback (see callbacks.py), so the trace a metric gets
as its third argument is DSPy's: a list of `(predictor, inputs, prediction)` per step.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from . import _checks, callbacks
from .callbacks import BaseCallback
from .errors import ConfigurationError
from .example import Example
from .lm import LM
from .module import Module
from .predict import Predict
from .prediction import Prediction
from .settings import settings

__all__ = ["BootstrapFewShot", "LabeledFewShot"]

logger = logging.getLogger("dspy_async")

P = TypeVar("P", bound=Module)
Trace = list[tuple[Predict, dict[str, Any], Prediction]]
DEFAULT_MAX_ERRORS = 10  # DSPy's settings.max_errors


class LabeledFewShot:
    """Give every predictor `k` training examples as demos (a seeded sample, or the first k)."""

    def __init__(self, k: int = 16) -> None:
        self.k = _checks.non_negative_int("LabeledFewShot k", k)

    def compile(self, student: P, *, trainset: Sequence[Example], sample: bool = True) -> P:
        compiled = student.reset_copy()
        examples = _checked_trainset(trainset)
        rng = random.Random(0)
        for predictor in compiled.predictors():
            count = min(self.k, len(examples))
            predictor.demos = rng.sample(examples, count) if sample else examples[:count]
        return compiled


class BootstrapFewShot:
    """Demos bootstrapped from a teacher's successful runs, then labeled examples.

    `metric(example, prediction, trace)` accepts a run when true (or at least
    `metric_threshold`); with no metric every run that does not raise is accepted. Each
    training example is tried up to `max_rounds` times. A run that raises is logged and
    skipped, until `max_errors` of them have, when the error is raised.
    """

    def __init__(
        self,
        metric: Callable[..., Any] | None = None,
        metric_threshold: float | None = None,
        teacher_settings: Mapping[str, Any] | None = None,
        max_bootstrapped_demos: int = 4,
        max_labeled_demos: int = 16,
        max_rounds: int = 1,
        max_errors: int | None = None,
    ) -> None:
        if metric is not None and not callable(metric):
            raise ConfigurationError("metric must be a function (example, prediction, trace)")
        self.metric = metric
        self.metric_threshold = metric_threshold
        self.teacher_settings = dict(teacher_settings or {})
        self.max_bootstrapped_demos = _checks.non_negative_int(
            "max_bootstrapped_demos", max_bootstrapped_demos
        )
        self.max_labeled_demos = _checks.non_negative_int("max_labeled_demos", max_labeled_demos)
        self.max_rounds = _checks.positive_int("max_rounds", max_rounds)
        self.max_errors = _checks.positive_int(
            "max_errors", DEFAULT_MAX_ERRORS if max_errors is None else max_errors
        )
        self.error_count = 0  # runs are bootstrapped one at a time: no lock needed

    def compile(
        self, student: P, *, teacher: Module | None = None, trainset: Sequence[Example]
    ) -> P:
        """The student, compiled: a copy whose predictors hold the demos."""
        inputs = {"student": student, "teacher": teacher, "trainset": trainset}
        with callbacks.observe("compile", self, inputs) as seen:
            examples = _checked_trainset(trainset)
            if getattr(student, "_compiled", False):
                raise ConfigurationError("the student is already compiled: compile a fresh one")
            compiled = student.reset_copy()
            coach = self._teacher(student, teacher, examples)
            names = _predictor_names(compiled, coach)
            traces: dict[str, list[Example]] = {name: [] for name in names.values()}
            used: set[int] = set()
            for index, example in enumerate(examples):
                if len(used) >= self.max_bootstrapped_demos:
                    break
                for round_index in range(self.max_rounds):
                    found = self._bootstrap_one(coach, names, example, round_index)
                    if found is not None:
                        for name, demo in found.items():
                            traces[name].append(demo)
                        used.add(index)
                        break
            logger.info(
                "BootstrapFewShot: bootstrapped %d traces from %d examples",
                *(len(used), len(examples)),
            )
            unused = [example for i, example in enumerate(examples) if i not in used]
            random.Random(0).shuffle(unused)
            rng = random.Random(0)
            for name, predictor in compiled.named_predictors():
                augmented = traces[name][: self.max_bootstrapped_demos]
                count = max(0, min(self.max_labeled_demos - len(augmented), len(unused)))
                predictor.demos = [*augmented, *rng.sample(unused, count)]
            object.__setattr__(compiled, "_compiled", True)
            seen.returned(compiled)
            return compiled

    def _teacher(self, student: Module, teacher: Module | None, trainset: list[Example]) -> Module:
        coach = teacher.deepcopy() if teacher is not None else student.deepcopy()
        if self.max_labeled_demos and not getattr(coach, "_compiled", False):
            coach = LabeledFewShot(k=self.max_labeled_demos).compile(
                coach.reset_copy(), trainset=trainset
            )
        return coach

    def _bootstrap_one(
        self, teacher: Module, names: dict[int, str], example: Example, round_index: int
    ) -> dict[str, Example] | None:
        """Run the teacher on `example`; the demos of its steps if the metric accepts it."""
        predictors = teacher.predictors()
        kept = [(p, p.demos, p.config) for p in predictors]
        recorder = _TraceRecorder(names)
        try:
            for predictor in predictors:  # an example never shows itself as a demo
                predictor.demos = [demo for demo in predictor.demos if demo != example]
                if round_index > 0:
                    predictor.config = {**predictor.config, **_fresh(predictor, round_index)}
            overrides = {**self.teacher_settings}
            overrides["callbacks"] = (*overrides.get("callbacks", settings.callbacks), recorder)
            with settings.context(**overrides):
                prediction = teacher(**example.inputs())
            trace = recorder.trace()
            if self.metric is None:
                success = True
            else:
                value = self.metric(example, prediction, trace)
                threshold = self.metric_threshold
                success = bool(value >= threshold if threshold is not None else value)
        except Exception as error:
            self.error_count += 1
            if self.error_count >= self.max_errors:
                raise
            logger.error(
                "BootstrapFewShot: example %r failed: %s: %s", example, type(error).__name__, error
            )
            return None
        finally:
            for predictor, demos, config in kept:
                predictor.demos, predictor.config = demos, config
        if not success:
            return None
        found: dict[str, Example] = {}
        for predictor, step_inputs, outputs in trace:
            # One demo per predictor and example: the last step's (a ReAct calls its step
            # predictor many times).
            found[names[id(predictor)]] = Example(augmented=True, **step_inputs, **outputs)
        return found


class _TraceRecorder(BaseCallback):
    """Records each call of the teacher's predictors: DSPy's trace."""

    def __init__(self, names: dict[int, str]) -> None:
        self._names = names
        # Module events may come from several threads (a program batching inside forward).
        self._lock = threading.Lock()  # fork-safe: per call
        self._started: dict[str, tuple[Predict, dict[str, Any]]] = {}
        self._trace: Trace = []

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if isinstance(instance, Predict) and id(instance) in self._names:
            fields = instance.signature.input_fields
            given = {k: v for k, v in inputs["kwargs"].items() if k in fields}
            with self._lock:
                self._started[call_id] = (instance, given)

    def on_module_end(
        self, call_id: str, outputs: Any | None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            started = self._started.pop(call_id, None)
            if started is not None and isinstance(outputs, Prediction):
                self._trace.append((*started, outputs))

    def trace(self) -> Trace:
        with self._lock:
            return list(self._trace)


def _fresh(predictor: Predict, round_index: int) -> dict[str, Any]:
    """Settings that get a new answer in a later round: sampled, and past the cache."""
    lm = predictor.lm if predictor.lm is not None else settings.lm
    fresh: dict[str, Any] = {"temperature": 1.0}
    if isinstance(lm, LM):
        fresh["rollout_id"] = round_index
    return fresh


def _predictor_names(student: Module, teacher: Module) -> dict[int, str]:
    """The teacher's predictors by id, named as the student's; ConfigurationError unless
    both programs have the same predictors, with the same signatures."""
    ours, theirs = student.named_predictors(), teacher.named_predictors()
    if [n for n, _ in ours] != [n for n, _ in theirs]:
        raise ConfigurationError(
            "the student and the teacher must have the same predictors "
            f"(student: {[n for n, _ in ours]}, teacher: {[n for n, _ in theirs]})"
        )
    for (name, mine), (_, other) in zip(ours, theirs, strict=True):
        if not mine.signature.equals(other.signature):
            raise ConfigurationError(f"the student's and the teacher's {name} differ in signature")
    return {id(predictor): name for name, predictor in theirs}


def _checked_trainset(trainset: Sequence[Example]) -> list[Example]:
    examples = list(trainset)
    for index, example in enumerate(examples):
        if not isinstance(example, Example):
            raise ConfigurationError(
                f"trainset[{index}] must be a dspy.Example, not {type(example).__name__}"
            )
        example.inputs()  # ValueError now, naming the fix, if with_inputs() was not called
    return examples
