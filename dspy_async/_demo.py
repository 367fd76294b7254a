"""`python -m dspy_async demo`: classify emails through faults, then race the blocking design.

With no `--model`, it starts the provider simulator, which injects 429s with Retry-After, 503s,
a dropped connection and an invalid structured output into a batch of emails. The same batch
then runs the blocking way (a thread pool that sleeps through each backoff) against the same
faults, and a table compares the two.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass
from typing import Literal

import pydantic

from .lm import LM
from .predict import Predict
from .signatures import InputField, OutputField, Signature
from .testing import ProviderSimulator
from .testing._baseline import BlockingClassifier

SUBJECTS = {
    "meeting": "Can we meet on {day} at {hour}:00 to review the {topic} plan?",
    "spam": "You have WON a free {topic} cruise! Click now, offer ends {day}.",
    "other": "Thanks for the {topic} notes you sent on {day}; nothing needed from you.",
}
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
FAULT_ROTATION = ("rate_limit", "server_error", "rate_limit", "drop", "invalid_output")
TOPICS = ["budget", "hiring", "roadmap", "launch", "security", "travel", "pricing"]


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
    name: str
    items: int
    succeeded: int
    attempts: int | None
    seconds: float

    def row(self) -> str:
        attempts = "-" if self.attempts is None else str(self.attempts)
        retries = "-" if self.attempts is None else str(self.attempts - self.items)
        return (
            f"{self.name:<30}{self.items:>6}{self.succeeded:>6}{self.items - self.succeeded:>8}"
            f"{attempts:>10}{retries:>9}{self.seconds:>9.2f}"
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


def inject_faults(sim: ProviderSimulator, count: int) -> Counter[str]:
    """Fault roughly a quarter of the tickets, each kind on its own tickets."""
    plan: Counter[str] = Counter()
    for index in range(0, count, 4):
        ticket = f"[ticket {index:03d}]"
        kind = ("rate_limit", "server_error", "rate_limit", "drop", "invalid_output")[
            index // 4 % 5
        ]
        if kind == "rate_limit":
            sim.fault(ticket, kind="status", status=429, retry_after=1)
        elif kind == "server_error":
            sim.fault(ticket, kind="status", status=503, times=2)
        elif kind == "drop":
            sim.fault(ticket, kind="drop")
        else:
            sim.fault(ticket, kind="invalid_output")
        plan[kind] += 1
    return plan


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
    succeeded = sum(not isinstance(p, Exception) for p in predictions)
    attempts = sum(len(p.attempts) for p in predictions if not isinstance(p, Exception))
    return Outcome("dspy-async batch", len(emails), succeeded, attempts, seconds)


def run_blocking(sim: ProviderSimulator, emails: list[str], concurrency: int) -> Outcome:
    classifier = BlockingClassifier(
        sim.openai_base_url, "sk-demo", "gpt-4o-mini", EmailLabel, workers=concurrency
    )
    started = time.perf_counter()
    results = classifier.run(emails)
    seconds = time.perf_counter() - started
    succeeded = sum(not isinstance(r, Exception) for r in results)
    return Outcome("blocking threads + time.sleep", len(emails), succeeded, None, seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dspy_async demo", description=__doc__)
    parser.add_argument("--model", help="e.g. openai/gpt-4o-mini (needs its API key set)")
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2, help="simulated seconds per call")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None)
    args = parser.parse_args(argv)
    emails = sample_emails(args.items)

    if args.model:
        outcome = run_ours(LM(args.model), emails, args.concurrency, args.progress)
        print(_table([outcome]))
        return 0 if outcome.succeeded == outcome.items else 1

    with ProviderSimulator(latency=args.latency) as sim:
        lm = LM("openai/gpt-4o-mini", api_base=sim.openai_base_url, api_key="sk-demo")
        plan = inject_faults(sim, args.items)
        print(
            f"Simulator at {sim.base_url}, {args.latency:g} s per call; faults injected: "
            + ", ".join(f"{count} {kind}" for kind, count in plan.items())
        )
        ours = run_ours(lm, emails, args.concurrency, args.progress)
        sim.reset()
        inject_faults(sim, args.items)
        blocking = run_blocking(sim, emails, args.concurrency)
        blocking = Outcome(
            blocking.name, blocking.items, blocking.succeeded, len(sim.requests), blocking.seconds
        )
    print(_table([ours, blocking]))
    speedup = blocking.seconds / ours.seconds
    print(f"\ndspy-async finished {speedup:.2f}x faster than the blocking design.")
    return 0 if ours.succeeded == ours.items else 1


def _table(outcomes: list[Outcome]) -> str:
    header = (
        f"{'':<30}{'items':>6}{'ok':>6}{'failed':>8}{'attempts':>10}{'retries':>9}{'wall s':>9}"
    )
    return "\n".join([header, *(outcome.row() for outcome in outcomes)])
