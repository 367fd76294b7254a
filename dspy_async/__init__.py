"""dspy-async: program LLMs the DSPy way, with a plain sync API over one hidden asyncio runtime.

Layout, following a call from the caller down:
    predict.py, module.py      Predict, ChainOfThought, Module (sync, async, batch, submit);
                               a program's predictors, copies, save/load (state.py, JSON)
    example.py, prediction.py  Example records (data, demos); Prediction, an Example of outputs
    batch.py, _limits.py       many inputs at once; slots held per request, not per backoff
    signatures.py              typed Signatures and string signatures
    adapters/                  Signature + inputs -> messages; output -> validated values
    lm.py, retry.py            LM: limits, the retry policy, usage; events.py to observe it
    pipeline/, ratelimit/      the gates of each call and attempt; rate-limit budgets (RateLimit)
    cache/                     the response cache: configure_cache(), memory, SQLite, Redis
    providers/                 OpenAI, Anthropic and Ollama wire formats over _http.py
    streaming/                 lm.stream(), predict.stream(): text and fields as they arrive
    _runtime.py                the hidden event-loop thread every call runs on
    errors.py, records.py      the exception hierarchy; usage and attempt records
    settings.py                configure() and context()
    testing/                   ProviderSimulator, DummyLM, pytest plugin
    integrations/              dspy_lm(): DSPy's own programs on this runtime, DSPy imported on use;
                               otel.py: OpenTelemetry spans and metrics, on with instrument()
    usage.py                   track_usage(): tokens per program run; Price for cost estimates
    callbacks.py, history.py   dspy.configure(callbacks=[...]) with DSPy's handlers; lm.history,
                               inspect_history()
    types.py, tools.py         History and Image inputs; Tool, for ReAct (react.py)
    evaluate.py, teleprompt.py Evaluate over a dev set; LabeledFewShot and BootstrapFewShot
"""

import logging as _logging
import typing as _typing

from . import events
from .cache import configure_cache
from .callbacks import BaseCallback
from .errors import (
    AuthenticationError,
    BadRequestError,
    BatchError,
    ConfigurationError,
    ContextWindowExceededError,
    DSPyAsyncError,
    LMError,
    OutputValidationError,
    ProviderConnectionError,
    ProviderResponseError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
    RuntimeClosedError,
    RuntimeReentryError,
    SignatureError,
    StateError,
    UnsupportedParameterError,
)
from .evaluate import Evaluate, EvaluationResult
from .example import Example
from .history import inspect_history
from .lm import LM, BaseLM, LMResponse, OutputSchema
from .module import Module
from .pipeline.trace import instrument, uninstrument
from .predict import ChainOfThought, Predict
from .prediction import Completions, Prediction
from .ratelimit import RateLimit
from .react import ReAct
from .records import Attempt, Usage
from .retry import RetryPolicy
from .settings import StructuredOutputSettings, configure, context, settings
from .signatures import InputField, OutputField, Signature, make_signature
from .streaming import StreamChunk
from .teleprompt import BootstrapFewShot, LabeledFewShot
from .tools import Tool
from .types import History, Image
from .usage import Price, UsageTracker, track_usage

if _typing.TYPE_CHECKING:  # names for the annotations below only: none of them is public
    from typing import Any

    from .integrations.dspy import DSPyAsyncLM

__version__ = "0.1.0"

# A library logs, the application decides where that goes (retries are logged at WARNING).
_logging.getLogger("dspy_async").addHandler(_logging.NullHandler())


def dspy_lm(lm: BaseLM | str, /, **options: "Any") -> "DSPyAsyncLM":
    """A `dspy.LM` that runs a DSPy program's calls on this runtime (needs the `dspy` extra).

    See `dspy_async.integrations.dspy.dspy_lm`; DSPy is imported on the first call, never by
    `import dspy_async`.
    """
    from .integrations.dspy import dspy_lm as build

    return build(lm, **options)


__all__ = [
    "LM",
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "BaseCallback",
    "BaseLM",
    "BatchError",
    "BootstrapFewShot",
    "ChainOfThought",
    "Completions",
    "ConfigurationError",
    "ContextWindowExceededError",
    "DSPyAsyncError",
    "Evaluate",
    "EvaluationResult",
    "Example",
    "History",
    "Image",
    "InputField",
    "LMError",
    "LMResponse",
    "LabeledFewShot",
    "Module",
    "OutputField",
    "OutputSchema",
    "OutputValidationError",
    "Predict",
    "Prediction",
    "Price",
    "ProviderConnectionError",
    "ProviderResponseError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "RateLimit",
    "RateLimitError",
    "ReAct",
    "RetryPolicy",
    "RuntimeClosedError",
    "RuntimeReentryError",
    "Signature",
    "SignatureError",
    "StateError",
    "StreamChunk",
    "StructuredOutputSettings",
    "Tool",
    "UnsupportedParameterError",
    "Usage",
    "UsageTracker",
    "__version__",
    "configure",
    "configure_cache",
    "context",
    "dspy_lm",
    "events",
    "inspect_history",
    "instrument",
    "make_signature",
    "settings",
    "track_usage",
    "uninstrument",
]
