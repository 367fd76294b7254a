"""Worker processes for the fleet tests (tests/test_ratelimit_fleet.py): each draws on one
rate-limit budget shared through Redis, as gunicorn or Celery workers of one app would.

A plain worker: `python -m tests.ratelimit_workers '<json config>'` makes `calls` calls at
once (under `concurrency`) when the wall clock reaches `start_at`, and prints one JSON line:
how many answered, the failures by type, its wall time and the warnings it logged. The
Celery app (`celery -A tests.ratelimit_workers worker`) reads the same config from the
FLEET_CONFIG environment variable; its task makes one sync call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

import dspy_async as dspy


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def make_lm(config: dict[str, Any]) -> dspy.LM:
    """The LM every worker of a run builds: same key, same budget."""
    rate_limit: dspy.RateLimit | bool | None = None
    if config.get("budget") == "off":
        rate_limit = False
    elif config.get("budget") == "local":
        rate_limit = dspy.RateLimit(rpm=config["rpm"], tpm=config["tpm"], period=config["period"])
    elif config.get("budget") == "shared":
        rate_limit = dspy.RateLimit(
            rpm=config.get("rpm"),
            tpm=config.get("tpm"),
            period=config["period"],
            shared=config["redis"],
        )
    return dspy.LM(
        "openai/fleet-model",
        api_key=config["key"],
        api_base=config["api_base"],
        max_tokens=config.get("max_tokens", 40),
        max_concurrency=config.get("concurrency", 16),
        retry=dspy.RetryPolicy(max_attempts=8, max_elapsed=config.get("max_elapsed", 120.0)),
        rate_limit=rate_limit,  # type: ignore[arg-type]
    )


def prompt(worker: str, index: int) -> str:
    return f"worker {worker} question {index}: classify this short support ticket please"


async def _run(config: dict[str, Any]) -> dict[str, Any]:
    lm = make_lm(config)
    wait = config.get("start_at", 0) - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
    started = time.monotonic()
    calls = [lm.acall(prompt(config["name"], i)) for i in range(config["calls"])]
    results = await asyncio.gather(*calls, return_exceptions=True)
    elapsed = time.monotonic() - started
    failures = Counter(type(r).__name__ for r in results if isinstance(r, BaseException))
    return {
        "answered": sum(not isinstance(r, BaseException) for r in results),
        "failures": dict(failures),
        "typed": all(isinstance(r, dspy.LMError) for r in results if isinstance(r, BaseException)),
        "elapsed": elapsed,
        "ended": time.time(),
    }


def main() -> None:
    config = json.loads(sys.argv[1])
    warnings = _Warnings()
    logging.getLogger("dspy_async").addHandler(warnings)
    report = asyncio.run(_run(config))
    report["warnings"] = [m for m in warnings.messages if "Redis" in m]
    print(json.dumps(report), flush=True)


# -- the Celery app ------------------------------------------------------------------

_lm: dspy.LM | None = None
_lm_lock = threading.Lock()


def _shared_lm() -> dspy.LM:
    global _lm
    with _lm_lock:
        if _lm is None:
            _lm = make_lm(json.loads(os.environ["FLEET_CONFIG"]))
        return _lm


def celery_app(broker: str) -> Any:
    """The Celery app of the fleet tests, on the Redis `broker` (results there too)."""
    from celery import Celery

    app = Celery("dspy_async_fleet", broker=broker, backend=broker)
    app.conf.update(
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_acks_late=False,
        result_expires=600,
    )

    @app.task(name="fleet.ask")  # type: ignore[untyped-decorator]
    def ask(worker: str, index: int) -> int:
        return len(_shared_lm()(prompt(worker, index)).attempts)

    return app


app = celery_app(os.environ["FLEET_BROKER"]) if "FLEET_BROKER" in os.environ else None

if __name__ == "__main__":
    main()
