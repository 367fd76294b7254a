"""`python -m dspy_async demo`: classify emails through faults, then race the blocking design.

With no `--model`, it starts the provider simulator, which injects 429s with Retry-After, 503s,
a dropped connection and an invalid structured output into a batch of emails. The same batch
then runs the blocking way (a thread pool that sleeps through each backoff) against the same
faults, and two tables compare them: the attempts, faults and retries each design counted, and
when the tickets that needed no retry finished, which is where a backoff holding a worker
shows.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import pydantic

from .errors import ConfigurationError
from .lm import LM
from .predict import Predict
from .signatures import InputField, OutputField, Signature
from .testing import ProviderSimulator, RecordedRequest
from .testing._baseline import BlockingClassifier

SUBJECTS = {
    "meeting": "Can we meet on {day} at {hour}:00 to review the {topic} plan?",
    "spam": "You have WON a free {topic} cruise! Click now, offer ends {day}.",
    "other": "Thanks for the {topic} notes you sent on {day}; nothing needed from you.",
}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
TOPICS = ["budget", "hiring", "roadmap", "launch", "security", "travel", "pricing"]
TICKET = re.compile(r"\[ticket (\d+)\]")


@dataclass(frozen=True)
class Fault:
    """One kind of injected fault: how it is described, and how many replies it spoils."""

    name: str
    description: str
    times: int
    options: Mapping[str, Any]


FAULTS = {
    fault.name: fault
    for fault in (
        Fault("rate_limit", "429 + Retry-After: 1", 1, {"status": 429, "retry_after": 1}),
        Fault("server_error", "503 twice", 2, {"status": 503}),
        Fault("drop", "connection dropped", 1, {"kind": "drop"}),
        Fault("invalid_output", "answer off the schema", 1, {"kind": "invalid_output"}),
    )
}
# Every fourth ticket gets the next fault of this rotation.
FAULT_ROTATION = ("rate_limit", "server_error", "rate_limit", "drop", "invalid_output")


class EmailClassifier(Signature):
    """Classify an email by intent."""

    email_content: str = InputField(desc="raw email text")
    category: Literal["meeting", "spam", "other"] = OutputField()
    confidence: float = OutputField(ge=0, le=1)


class EmailLabel(pydantic.BaseModel):
    """The same output, as the blocking baseline validates it."""

    category: Literal["meeting", "spam", "other"]
    confidence: float = pydantic.Field(ge=0, le=1)


@dataclass(frozen=True)
class Outcome:
    """One design's run: counts, wall time, and when each clean ticket finished."""

    name: str
    items: int
    succeeded: int
    attempts: int
    faults: int
    seconds: float
    clean_finished: Sequence[float] = ()  # seconds from the start, tickets with no fault
    first_error: str | None = None

    @property
    def retries(self) -> int:
        return self.attempts - self.items

    def row(self) -> str:
        return (
            f"{self.name:<30}{self.items:>6}{self.succeeded:>6}{self.items - self.succeeded:>8}"
            f"{self.attempts:>10}{self.faults:>8}{self.retries:>9}{self.seconds:>9.2f}"
        )


def sample_emails(count: int) -> list[str]:
    kinds = list(SUBJECTS)
    return [
        f"[ticket {index:03d}] "
        + SUBJECTS[kinds[index % 3]].format(
            day=DAYS[index % 5], hour=9 + index % 8, topic=TOPICS[index % 7]
        )
        for index in range(count)
    ]


def fault_plan(count: int) -> dict[int, Fault]:
    """Which tickets get which fault: every fourth one, in rotation."""
    return {
        index: FAULTS[FAULT_ROTATION[index // 4 % len(FAULT_ROTATION)]]
        for index in range(0, count, 4)
    }


def inject_faults(sim: ProviderSimulator, plan: Mapping[int, Fault]) -> None:
    for index, fault in plan.items():
        sim.fault(f"[ticket {index:03d}]", times=fault.times, **fault.options)


def describe(plan: Mapping[int, Fault], items: int) -> str:
    """The fault list: how many tickets get each kind, and how many replies that spoils."""
    kinds = Counter(fault.name for fault in plan.values())
    spoiled = sum(fault.times for fault in plan.values())
    replies = "reply" if spoiled == 1 else "replies"
    lines = [f"Faults on {len(plan)} of {items} tickets, {spoiled} failed {replies} to retry:"]
    lines += [f"  {n:>3} {kind:<16}{FAULTS[kind].description}" for kind, n in kinds.items()]
    return "\n".join(lines)


def clean_finish_times(
    requests: Sequence[RecordedRequest], plan: Mapping[int, Fault], started: float
) -> list[float]:
    """When each unfaulted ticket's answer was sent, in seconds after `started`."""
    finished = {
        int(match[1]): record.finished - started
        for record in requests
        if record.outcome == "ok"
        and record.finished is not None
        and (match := TICKET.search(record.text))
    }
    return sorted(seconds for ticket, seconds in finished.items() if ticket not in plan)


def floor_finish_times(
    plan: Mapping[int, Fault], items: int, concurrency: int, latency: float
) -> list[float]:
    """When each unfaulted ticket would finish if nothing faulted: calls go out in input
    order, `concurrency` at a time, each taking `latency`."""
    return sorted(
        (index // concurrency + 1) * latency for index in range(items) if index not in plan
    )


def run_ours(lm: LM, emails: list[str], concurrency: int, progress: bool | None) -> Outcome:
    classifier = Predict(EmailClassifier, lm=lm)
    started = time.perf_counter()
    predictions = classifier.batch(
        [{"email_content": email} for email in emails],
        max_concurrency=concurrency,
        return_exceptions=True,
        progress=progress,
    )
    seconds = time.perf_counter() - started
    # Count from our own records: a failed item's exception carries its attempts too.
    attempts = [a for p in predictions for a in getattr(p, "attempts", ())]
    errors = [p for p in predictions if isinstance(p, Exception)]
    return Outcome(
        "dspy-async batch",
        len(emails),
        len(emails) - len(errors),
        len(attempts),
        sum(a.outcome != "ok" for a in attempts),
        seconds,
        first_error=f"{type(errors[0]).__name__}: {errors[0]}" if errors else None,
    )


def run_blocking(sim: ProviderSimulator, emails: list[str], concurrency: int) -> Outcome:
    classifier = BlockingClassifier(
        sim.openai_base_url, "sk-demo", "gpt-4o-mini", EmailLabel, workers=concurrency
    )
    started = time.perf_counter()
    results = classifier.run(emails)
    seconds = time.perf_counter() - started
    # It keeps no records: count what the simulator saw.
    requests = sim.requests
    return Outcome(
        "blocking threads + time.sleep",
        len(emails),
        sum(not isinstance(r, Exception) for r in results),
        len(requests),
        sum(r.outcome != "ok" for r in requests),
        seconds,
    )


def race(args: argparse.Namespace, emails: list[str]) -> list[Outcome]:
    """Both designs on the simulator, each against a fresh copy of the same faults."""
    plan = fault_plan(len(emails))
    outcomes = []
    with ProviderSimulator(latency=args.latency) as sim:
        print(
            f"Simulator at {sim.base_url}: {args.latency:g} s per call, "
            f"{args.concurrency} requests at a time.\n{describe(plan, len(emails))}",
            flush=True,
        )
        # No response cache: every run must meet the faults, not replay an earlier run's answers.
        lm = LM("openai/gpt-4o-mini", api_base=sim.openai_base_url, api_key="sk-demo", cache=False)
        designs: tuple[Callable[[], Outcome], ...] = (
            functools.partial(run_ours, lm, emails, args.concurrency, args.progress),
            functools.partial(run_blocking, sim, emails, args.concurrency),
        )
        for design in designs:
            sim.reset()
            inject_faults(sim, plan)
            started = time.monotonic()  # the simulator's clock
            outcome = design()
            clean = clean_finish_times(sim.requests, plan, started)
            outcomes.append(replace(outcome, clean_finished=clean))
    return outcomes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        help="run against a real provider instead, e.g. openai/gpt-4o-mini (its API key must "
        "be set, e.g. OPENAI_API_KEY); no faults, no race (default: the simulator)",
    )
    parser.add_argument(
        "--items", type=_positive_int, default=50, help="emails to classify (default: 50)"
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=16,
        help="requests in flight at once, and the blocking design's threads (default: 16)",
    )
    parser.add_argument(
        "--latency",
        type=_seconds,
        default=0.2,
        help="simulated seconds per call (default: 0.2)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a tqdm progress bar for our batch (default: when stderr is a terminal)",
    )


def run(args: argparse.Namespace) -> int:
    """The demo, from parsed arguments; 0 when every item of our batch succeeded."""
    emails = sample_emails(args.items)
    if args.model:
        lm = LM(args.model, cache=False)
        if lm.missing_key is not None:  # say so once, not once per item of the batch
            raise ConfigurationError(lm.missing_key)
        outcome = run_ours(lm, emails, args.concurrency, args.progress)
        print(_table([outcome]))
        if outcome.first_error:
            print(f"first failure: {outcome.first_error}")
        return 0 if outcome.succeeded == outcome.items else 1

    ours, blocking = race(args, emails)
    print(_table([ours, blocking]))
    floor = floor_finish_times(fault_plan(args.items), args.items, args.concurrency, args.latency)
    rows = [(ours.name, ours.clean_finished), (blocking.name, blocking.clean_finished)]
    print(_finish_table([*rows, (f"no faults, {args.concurrency} at a time", floor)], args.latency))
    speedup = blocking.seconds / ours.seconds if ours.seconds else math.inf
    print(f"\ndspy-async finished {speedup:.2f}x faster than the blocking design.")
    if ours.first_error:
        print(f"first failure: {ours.first_error}")
    return 0 if ours.succeeded == ours.items else 1


def _table(outcomes: list[Outcome]) -> str:
    header = (
        f"{'':<30}{'items':>6}{'ok':>6}{'failed':>8}{'attempts':>10}{'faults':>8}"
        f"{'retries':>9}{'wall s':>9}"
    )
    return "\n".join(["", header, *(outcome.row() for outcome in outcomes)])


def _finish_table(rows: list[tuple[str, Sequence[float]]], latency: float) -> str:
    """Median and p95 of when the tickets that needed no retry finished, per design."""
    lines = [
        f"\n{len(rows[0][1])} tickets needed no retry. They finished, in seconds after the start "
        f"(one call takes {latency:g} s):",
        f"{'':<30}{'median':>10}{'p95':>10}",
    ]
    for name, times in rows:
        median, p95 = (_quantile(times, 0.5), _quantile(times, 0.95)) if times else (0.0, 0.0)
        lines.append(f"{name:<30}{median:>10.2f}{p95:>10.2f}")
    return "\n".join(lines)


def _quantile(values: Sequence[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected seconds, 0 or more, got {text!r}")
    return value
