"""The Ray Data recipe on a real local Ray cluster (2 CPUs on 127.0.0.1, started once for the
module): 200 items over 2 worker processes against the provider simulator, with faults; API
keys stay out of the pickled program; the shared Redis budget reaches every worker."""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import dspy_async as dspy
from dspy_async.testing import ProviderSimulator
from tests.redis_server import RedisServer, command

ray = pytest.importorskip("ray")
ray_pickle = pytest.importorskip("ray.cloudpickle")
from dspy_async.integrations.ray import ModuleMapper, map_dataset, portable  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    # Ray's own deprecation notices (its pydantic and protobuf use) are not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

WORKER_KEY = "sk-worker-only-key"
DRIVER_KEY = "sk-driver-secret-key-never-sent"


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
        # The workers' environment is where their LMs find the key; no response cache.
        runtime_env={
            "env_vars": {"OPENAI_API_KEY": WORKER_KEY, "DSPY_ASYNC_RESPONSE_CACHE": "off"}
        },
    )
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    # The test's own module runs in the workers (WhereAmI): sent by value, not imported there.
    ray_pickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield
    finally:
        ray_pickle.unregister_pickle_by_value(sys.modules[__name__])
        ray.shutdown()


def driver_lm(sim: ProviderSimulator, **options: Any) -> dspy.LM:
    return dspy.LM(
        "openai/gpt-4o-mini",
        api_base=sim.openai_base_url,
        api_key=DRIVER_KEY,
        cache=False,
        retry=dspy.RetryPolicy(initial_delay=0.05, max_delay=0.2),
        **options,
    )


def test_portable_programs_leave_the_key_behind_unless_asked(
    provider_simulator: ProviderSimulator,
) -> None:
    program = dspy.ChainOfThought("email_content -> category", lm=driver_lm(provider_simulator))
    assert DRIVER_KEY.encode() not in portable(program).data
    assert DRIVER_KEY.encode() in portable(program, send_api_key=True).data
    with pytest.raises(dspy.ConfigurationError, match="portable"):
        ModuleMapper(program)  # type: ignore[arg-type]
    program.note = DRIVER_KEY  # a key kept elsewhere would still travel: refused
    with pytest.raises(dspy.ConfigurationError, match="outside the LM"):
        portable(program)


class WhereAmI(dspy.Module):
    """Which process and which runtime thread ran an item (there are no LM calls)."""

    async def aforward(self, n: int) -> dict[str, Any]:
        return {"pid": os.getpid(), "thread": threading.current_thread().name, "n": n}


def test_200_items_over_2_workers_with_faults_come_back_in_order(
    cluster: None, provider_simulator: ProviderSimulator
) -> None:
    sim = provider_simulator
    sim.api_key = WORKER_KEY  # a request with any other key gets a 401
    sim.latency = 0.02
    failing = {7, 50, 141}  # apart from the items faulted once below
    for index in failing:
        sim.fault(f"[doc {index:04d}]", kind="status", status=400, message="bad request")
    for index in range(3, 200, 10):
        sim.fault(f"[doc {index:04d}]", kind="status", status=503)  # once: retried
    for index in range(5, 200, 25):
        sim.fault(f"[doc {index:04d}]", kind="drop")  # once: retried
    program = dspy.Predict("email_content -> category, urgent: bool", lm=driver_lm(sim))
    rows = [{"id": i, "email_content": f"[doc {i:04d}] please read"} for i in range(200)]

    started = time.monotonic()
    results = map_dataset(
        ray.data.from_items(rows), program, workers=2, batch_size=25, max_concurrency=8
    ).take_all()
    elapsed = time.monotonic() - started

    assert [row["id"] for row in results] == list(range(200))
    for row in results:
        if row["id"] in failing:
            assert row["error"].startswith("BadRequestError:") and row["category"] is None
        else:
            assert row["error"] is None, row["error"]
            assert isinstance(row["category"], str) and isinstance(row["urgent"], bool)
    asked = [r for r in sim.requests if r.path.endswith("/chat/completions")]
    assert len(asked) == 200 + 20 + 8
    assert all(r.outcome != "unauthorized" for r in asked)
    assert elapsed < 60

    where = ray.data.from_items([{"n": n} for n in range(40)]).map_batches(
        ModuleMapper,
        fn_constructor_args=(portable(WhereAmI()),),
        compute=ray.data.ActorPoolStrategy(size=2),
        batch_size=5,
    )
    seen = where.take_all()
    assert [row["n"] for row in seen] == list(range(40))
    assert {row["thread"] for row in seen} == {"dspy-async-runtime"}
    assert len({row["pid"] for row in seen}) == 2  # two worker processes, one runtime each
    assert os.getpid() not in {row["pid"] for row in seen}


def test_workers_draw_on_one_shared_redis_budget(
    cluster: None, provider_simulator: ProviderSimulator, redis_server: RedisServer
) -> None:
    redis_server.flush()
    sim = provider_simulator
    sim.api_key = WORKER_KEY
    # 40 requests a second for the whole cluster. Apart, each worker would allow 40.
    budget = dspy.RateLimit(rpm=40, period=1.0, shared=redis_server.url)
    program = dspy.Predict("email_content -> category", lm=driver_lm(sim, rate_limit=budget))
    unpickled = pickle.loads(pickle.dumps(portable(program))).load()
    assert unpickled.lm._endpoint.secret == os.environ.get("OPENAI_API_KEY")  # not the driver's
    rows = [{"email_content": f"[doc {i:04d}] hello"} for i in range(120)]

    started = time.monotonic()
    results = map_dataset(ray.data.from_items(rows), program, workers=2, batch_size=30).take_all()
    elapsed = time.monotonic() - started

    assert all(row["error"] is None for row in results) and len(results) == 120
    # 120 requests at 40 a second after a first second's worth: at least 2 s for the cluster
    # (apart, the two workers would need 1 s); the budget's state is in Redis.
    first = min(r.arrived for r in sim.requests)
    last = max(r.arrived for r in sim.requests)
    assert last - first >= 1.6, f"120 requests in {last - first:.2f} s"
    assert command(redis_server.port, "KEYS", "dspy-async:ratelimit:*") != b"*0"
    assert elapsed < 60
