"""Every exception dspy-async raises, in one hierarchy.

    DSPyAsyncError
    ├── ConfigurationError            no LM configured, unknown provider, missing API key, ...
    ├── SignatureError                bad signature or bad inputs, raised before any network call
    ├── StateError                    a saved program state that cannot be saved, read or applied
    ├── RuntimeReentryError           a blocking call made from the runtime's own loop thread
    ├── RuntimeClosedError            a call after the runtime shut down at interpreter exit
    ├── LMError                       a provider call failed (carries .attempts)
    │   ├── RateLimitError            429 (carries .retry_after)
    │   ├── ProviderServerError       5xx, 408, 409, 529
    │   ├── ProviderTimeoutError      connect/read timeout, or max_elapsed spent
    │   ├── ProviderConnectionError   refused, dropped or reset connection
    │   ├── ProviderResponseError     a body that is truncated, not JSON, oversized or unexpected
    │   ├── AuthenticationError       401, 403
    │   └── BadRequestError           400, 404, 422
    │       ├── ContextWindowExceededError
    │       └── UnsupportedParameterError   the model rejected a native request parameter
    ├── OutputValidationError         the model's output stayed invalid after every re-ask
    └── BatchError                    (also an ExceptionGroup) some batch items failed

Messages never contain API keys: providers' error bodies are quoted, requests are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .records import Attempt

__all__ = [
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
    "RuntimeClosedError",
    "RuntimeReentryError",
    "SignatureError",
    "StateError",
    "UnsupportedParameterError",
]


class DSPyAsyncError(Exception):
    """Base class of every error raised by dspy-async."""


class ConfigurationError(DSPyAsyncError):
    """The library is not set up to make the call: the message says what to set."""


class SignatureError(DSPyAsyncError, ValueError):
    """A malformed signature, or inputs that do not match it."""


class StateError(DSPyAsyncError, ValueError):
    """A program state (`save`, `load`, `load_state`) that cannot be written, was written by
    another format version, or does not fit the program it is loaded into."""


class RuntimeReentryError(DSPyAsyncError, RuntimeError):
    """A blocking call was made from the runtime's loop thread, where it would deadlock."""


class RuntimeClosedError(DSPyAsyncError, RuntimeError):
    """The runtime that would run the call is gone: it shut down at interpreter exit (so an
    atexit handler registered before dspy_async was imported cannot call), or, for a future
    inherited through fork, it stayed in the parent process."""


class LMError(DSPyAsyncError):
    """A provider call failed. `attempts` holds every attempt made, the last one included.
    `partial_text` is what a stream had delivered when it failed ("" for other calls)."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        attempts: Sequence[Attempt] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status_code = status_code
        self.attempts: tuple[Attempt, ...] = tuple(attempts)
        self.partial_text = ""

    def __str__(self) -> str:
        if len(self.attempts) > 1:
            return f"{self.message} (after {len(self.attempts)} attempts)"
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only state survives pickling (multiprocessing pools send errors back).
        return (_rebuild_lm_error, (type(self), self.message, self.__dict__))


def _rebuild_lm_error(cls: type[LMError], message: str, state: dict[str, Any]) -> LMError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class RateLimitError(LMError):
    """The provider answered 429. `retry_after` is the wait it asked for, in seconds, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ProviderServerError(LMError):
    """The provider failed on its side (5xx, 408, 409, 529)."""


class ProviderTimeoutError(LMError):
    """An attempt timed out, or the call ran past its `max_elapsed` budget."""


class ProviderConnectionError(LMError):
    """The connection could not be made, or was dropped before a full response arrived."""


class ProviderResponseError(LMError):
    """The provider sent a body we cannot use: truncated, not JSON, oversized or unexpected."""


class AuthenticationError(LMError):
    """The API key was refused (401) or lacks permission (403). Never retried."""


class BadRequestError(LMError):
    """The provider rejected the request itself (400, 404, 422). Never retried."""


class ContextWindowExceededError(BadRequestError):
    """The prompt does not fit the model's context window."""


class UnsupportedParameterError(BadRequestError):
    """The provider or model rejected a native parameter (such as a JSON-schema response format)."""


class OutputValidationError(DSPyAsyncError):
    """The model's output failed parsing or validation on every attempt.

    `raw_outputs` and `errors` hold each attempt's text and what was wrong with it, in order.
    """

    def __init__(
        self,
        message: str,
        *,
        raw_outputs: Sequence[str],
        errors: Sequence[str],
        attempts: Sequence[Attempt] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.raw_outputs = list(raw_outputs)
        self.errors = list(errors)
        self.attempts: tuple[Attempt, ...] = tuple(attempts)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_output_error, (self.message, self.__dict__))


def _rebuild_output_error(message: str, state: dict[str, Any]) -> OutputValidationError:
    error = OutputValidationError.__new__(OutputValidationError)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class BatchError(ExceptionGroup[Exception], DSPyAsyncError):
    """Some items of a batch failed. `results` is aligned with the inputs: each slot holds the
    item's result or its exception, so finished work is never lost."""

    results: list[Any]

    def __new__(
        cls, message: str, exceptions: Sequence[Exception], results: Sequence[Any] = ()
    ) -> BatchError:
        self = super().__new__(cls, message, exceptions)
        self.results = list(results)
        return self

    def __init__(
        self, message: str, exceptions: Sequence[Exception], results: Sequence[Any] = ()
    ) -> None:
        super().__init__(message, exceptions)
