"""dspy-async: program LLMs the DSPy way, with a plain sync API over one hidden asyncio runtime.

Layout, following a call from the caller down:
    predict.py, module.py      Predict, ChainOfThought, Module (sync, async, batch, submit)
    signatures.py              typed Signatures and string signatures
    adapters/                  Signature + inputs -> messages; output -> validated values
    lm.py, retry.py            LM: limits, the retry policy, usage
    providers/                 OpenAI, Anthropic and Ollama wire formats over _http.py
    _runtime.py                the hidden event-loop thread every call runs on
    errors.py, records.py      the exception hierarchy; usage and attempt records
    settings.py                configure() and context()
    testing/                   ProviderSimulator, DummyLM, pytest plugin
"""

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
    RuntimeReentryError,
    SignatureError,
    UnsupportedParameterError,
)
from .records import Attempt, Usage
from .settings import configure, context, settings

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "AuthenticationError",
    "BadRequestError",
    "BatchError",
    "ConfigurationError",
    "ContextWindowExceededError",
    "DSPyAsyncError",
    "LMError",
    "OutputValidationError",
    "ProviderConnectionError",
    "ProviderResponseError",
    "ProviderServerError",
    "ProviderTimeoutError",
    "RateLimitError",
    "RuntimeReentryError",
    "SignatureError",
    "UnsupportedParameterError",
    "Usage",
    "__version__",
    "configure",
    "context",
    "settings",
]
