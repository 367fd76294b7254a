"""The clients `run_scenarios.py` races, each turned into a workload for `worker.py` to time.

Every implementation classifies the same documents with the same one-field signature against
the provider simulator, with its own retry logic. A factory builds the clients (outside the
timing) and returns the workload, which returns one success flag per document. Peers are
imported inside their factory, so one that is not installed fails alone, with ImportError.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
from scenarios import (
    BLOCKING,
    DSPY_ACALL,
    DSPY_ASYNC_BATCH,
    DSPY_ASYNC_THREADS,
    DSPY_BATCH,
    DSPY_THREADS,
    OPENAI_ASYNC,
    OPENAI_THREADS,
    PLAIN_HTTPX,
    RAW_AIOHTTP,
)

import dspy_async

LABELS = ("positive", "negative", "neutral")
Label = Literal["positive", "negative", "neutral"]
MARKER = "@@DOCUMENT@@"  # stands for the document in the captured request body
API_KEY = "sk-bench"
MODEL = "gpt-4o-mini"

Workload = Callable[[], list[bool]]


class Doc(dspy_async.Signature):
    """Summarise."""

    text: str = dspy_async.InputField()
    label: Label = dspy_async.OutputField()


class DocLabel(pydantic.BaseModel):
    """Doc's output, as the blocking baseline validates it."""

    label: Label


@dataclass(frozen=True)
class Job:
    """What a worker runs: the documents, how many at once, and where to send them.

    `template` is the request body dspy-async sends for `MARKER`; the SDK and raw-HTTP clients
    send it with the document in place of the marker, so every client sends the same request.
    `callers`, when set, is a number of threads, each calling its share in sequence.
    """

    base_url: str
    texts: list[str]
    concurrency: int
    template: dict[str, Any]
    callers: int | None = None

    def body(self, text: str) -> dict[str, Any]:
        messages = [
            {**message, "content": message["content"].replace(MARKER, text)}
            for message in self.template["messages"]
        ]
        return {**self.template, "messages": messages}


def valid_answer(content: str | None) -> bool:
    """Whether a raw chat completion's content is the JSON object Doc asks for."""
    try:
        return json.loads(content or "").get("label") in LABELS
    except (ValueError, AttributeError):
        return False


def threaded(job: Job, call: Callable[[str], bool]) -> Workload:
    """Run blocking `call`s from a pool of `concurrency` threads, or from `callers` threads
    each making its share of the calls in sequence."""

    def guarded(text: str) -> bool:
        try:
            return call(text)
        except Exception:
            return False

    def in_sequence(texts: list[str]) -> list[bool]:
        return [guarded(text) for text in texts]

    def workload() -> list[bool]:
        if job.callers is None:
            with ThreadPoolExecutor(job.concurrency) as pool:
                return list(pool.map(guarded, job.texts))
        share = len(job.texts) // job.callers
        shares = [job.texts[start : start + share] for start in range(0, len(job.texts), share)]
        with ThreadPoolExecutor(job.callers) as pool:
            return [ok for outcome in pool.map(in_sequence, shares) for ok in outcome]

    return workload


def gathered(job: Job, call: Callable[[str], Awaitable[bool]]) -> Workload:
    """Run `call`s as tasks of a fresh event loop, at most `concurrency` at once."""

    async def everything() -> list[bool]:
        slots = asyncio.Semaphore(job.concurrency)

        async def limited(text: str) -> bool:
            async with slots:
                try:
                    return await call(text)
                except Exception:
                    return False

        return list(await asyncio.gather(*(limited(text) for text in job.texts)))

    return lambda: asyncio.run(everything())


def labelled(predictions: Iterable[Any]) -> list[bool]:
    return [getattr(prediction, "label", None) in LABELS for prediction in predictions]


# -- dspy-async ------------------------------------------------------------------------


def _dspy_async_predict(job: Job) -> dspy_async.Predict:
    # No response cache: every run must reach the simulator, as DSPy's does with cache=False.
    lm = dspy_async.LM(f"openai/{MODEL}", api_base=job.base_url, api_key=API_KEY, cache=False)
    return dspy_async.Predict(Doc, lm=lm)


def dspy_async_batch(job: Job) -> Workload:
    predict = _dspy_async_predict(job)
    items = [{"text": text} for text in job.texts]
    return lambda: labelled(
        predict.batch(
            items, max_concurrency=job.concurrency, return_exceptions=True, progress=False
        )
    )


def dspy_async_threads(job: Job) -> Workload:
    predict = _dspy_async_predict(job)
    return threaded(job, lambda text: predict(text=text).label in LABELS)


# -- the blocking design ---------------------------------------------------------------


def blocking(job: Job) -> Workload:
    import httpx

    from dspy_async.testing._baseline import BlockingClassifier

    classifier = BlockingClassifier(job.base_url, API_KEY, MODEL, DocLabel, workers=job.concurrency)
    if job.callers is None:
        return lambda: [not isinstance(result, Exception) for result in classifier.run(job.texts)]
    # A threaded server: its request threads are the pool, sharing one client.
    client = httpx.Client(
        base_url=job.base_url, timeout=30, limits=httpx.Limits(max_connections=job.callers)
    )
    return threaded(job, lambda text: not isinstance(classifier._classify(client, text), Exception))


# -- DSPy ------------------------------------------------------------------------------


def _dspy_program(job: Job) -> Any:
    import dspy

    lm = dspy.LM(
        f"openai/{MODEL}", api_base=job.base_url, api_key=API_KEY, num_retries=3, cache=False
    )
    # The simulator answers the JSON schema in the request; ChatAdapter would fail first and
    # fall back to JSON, doubling the requests.
    dspy.configure(lm=lm, adapter=dspy.JSONAdapter())

    class DSPyDoc(dspy.Signature):  # type: ignore[misc]
        """Summarise."""

        text: str = dspy.InputField()
        label: Label = dspy.OutputField()

    return dspy.Predict(DSPyDoc)


def dspy_batch(job: Job) -> Workload:
    import dspy

    program = _dspy_program(job)
    examples = [dspy.Example(text=text).with_inputs("text") for text in job.texts]
    return lambda: labelled(
        program.batch(
            examples,
            num_threads=job.concurrency,
            max_errors=len(examples),
            disable_progress_bar=True,
        )
    )


def dspy_acall(job: Job) -> Workload:
    program = _dspy_program(job)

    async def call(text: str) -> bool:
        return (await program.acall(text=text)).label in LABELS

    return gathered(job, call)


def dspy_threads(job: Job) -> Workload:
    program = _dspy_program(job)
    return threaded(job, lambda text: program(text=text).label in LABELS)


# -- the openai SDK --------------------------------------------------------------------


def openai_threads(job: Job) -> Workload:
    import httpx
    import openai

    pool = httpx.Limits(max_connections=job.callers or job.concurrency)
    client = openai.OpenAI(
        base_url=job.base_url,
        api_key=API_KEY,
        max_retries=3,
        http_client=openai.DefaultHttpxClient(limits=pool),
    )

    def call(text: str) -> bool:
        completion = client.chat.completions.create(**job.body(text))
        return valid_answer(completion.choices[0].message.content)

    return threaded(job, call)


def openai_async(job: Job) -> Workload:
    import httpx
    import openai

    client = openai.AsyncOpenAI(
        base_url=job.base_url,
        api_key=API_KEY,
        max_retries=3,
        http_client=openai.DefaultAsyncHttpxClient(
            limits=httpx.Limits(max_connections=job.concurrency)
        ),
    )

    async def call(text: str) -> bool:
        completion = await client.chat.completions.create(**job.body(text))
        return valid_answer(completion.choices[0].message.content)

    return gathered(job, call)


# -- raw HTTP clients (S4) -------------------------------------------------------------


def raw_aiohttp(job: Job) -> Workload:
    import aiohttp

    url = job.base_url + "/chat/completions"
    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def everything() -> list[bool]:
        connector = aiohttp.TCPConnector(limit=job.concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def call(text: str) -> bool:
                try:
                    async with session.post(url, json=job.body(text), headers=headers) as reply:
                        answer = await reply.json()
                    return valid_answer(answer["choices"][0]["message"]["content"])
                except Exception:
                    return False

            return list(await asyncio.gather(*(call(text) for text in job.texts)))

    return lambda: asyncio.run(everything())


def plain_httpx(job: Job) -> Workload:
    """httpx as it comes: its default pool of 100 connections. Lifting that limit is no
    faster: httpcore's pool bookkeeping slows down as thousands of requests wait on it."""
    import httpx

    headers = {"Authorization": f"Bearer {API_KEY}"}

    async def everything() -> list[bool]:
        timeout = httpx.Timeout(60, pool=None)  # requests may queue for a connection
        async with httpx.AsyncClient(base_url=job.base_url, timeout=timeout) as client:

            async def call(text: str) -> bool:
                try:
                    reply = await client.post(
                        "/chat/completions", json=job.body(text), headers=headers
                    )
                    return valid_answer(reply.json()["choices"][0]["message"]["content"])
                except Exception:
                    return False

            return list(await asyncio.gather(*(call(text) for text in job.texts)))

    return lambda: asyncio.run(everything())


IMPLEMENTATIONS: dict[str, Callable[[Job], Workload]] = {
    DSPY_ASYNC_BATCH: dspy_async_batch,
    DSPY_ASYNC_THREADS: dspy_async_threads,
    BLOCKING: blocking,
    DSPY_BATCH: dspy_batch,
    DSPY_ACALL: dspy_acall,
    DSPY_THREADS: dspy_threads,
    OPENAI_THREADS: openai_threads,
    OPENAI_ASYNC: openai_async,
    RAW_AIOHTTP: raw_aiohttp,
    PLAIN_HTTPX: plain_httpx,
}
