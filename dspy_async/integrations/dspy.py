"""DSPy programs on the dspy-async runtime: `dspy_lm(...)` is a `dspy.LM` whose engine is ours.

DSPy 3.4 runs every LM call through an engine: it turns the adapter's chat messages into a
canonical `dspy.lm15.Request`, hands it to `engine.complete(request)` and keeps for itself
what surrounds one attempt: history, callbacks, usage tracking, its response cache, `n`
candidates and its own retries. `DSPyAsyncLM` is a `dspy.LM` with a sync and an async engine
that send each request through a dspy-async `LM`, so the attempts, the retry policy,
`Retry-After`, the shared connection pool and `max_concurrency` are dspy-async's. DSPy's
retries are pinned at zero so that the two never stack. DSPy's response cache is the one
DSPy's calls use (on by default, as on `dspy.LM`): the dspy-async LM's own cache is skipped
for them, so that each answer is cached once, as DSPy's `cache=` says.

A DSPy worker thread waiting on a call blocks only itself: the call runs on the runtime loop,
and while it waits out a backoff it holds no slot of `max_concurrency`. So
`Module.batch(num_threads=64)` over `max_concurrency=16` keeps 16 requests in flight while
other threads' calls wait out their 429s.

Copies of a program (DSPy optimizers deep-copy them) share the one dspy-async LM: one pool,
one limit. Pickled or saved, the LM is rebuilt from its settings without its API key, which
the loading process reads from its environment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

try:
    import dspy
    from dspy import lm15
    from dspy.clients.base_lm import LM_CLASS_STATE_KEY
except ModuleNotFoundError as exc:
    if exc.name != "dspy":
        raise
    raise ImportError(
        "dspy_async.dspy_lm needs DSPy: pip install 'dspy-async[dspy]'", name="dspy"
    ) from None

from .. import _runtime
from ..errors import (
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ContextWindowExceededError,
    DSPyAsyncError,
    LMError,
    ProviderConnectionError,
    ProviderServerError,
    ProviderTimeoutError,
    RateLimitError,
    UnsupportedParameterError,
)
from ..lm import LM, BaseLM, LMResponse
from ..records import Attempt, Message, OutputSchema
from ..retry import RetryPolicy
from ..state import lm_from_state, lm_state

__all__ = ["DSPyAsyncLM", "dspy_lm"]

# The engine interface appeared in DSPy 3.4 and its 3.4 transition shims go in 3.5: the
# range this module is tested against, as the `dspy` extra pins it.
SUPPORTED = ((3, 4), (3, 5))
_found = tuple(int(part) for part in dspy.__version__.split(".")[:2] if part.isdigit())
if not SUPPORTED[0] <= _found < SUPPORTED[1]:
    raise ImportError(
        f"dspy_async.dspy_lm supports DSPy 3.4.x, not {dspy.__version__}: "
        "pip install 'dspy-async[dspy]'",
        name="dspy",
    )


def dspy_lm(
    lm: BaseLM | str,
    /,
    *,
    cache: bool = True,
    callbacks: Sequence[Any] | None = None,
    num_retries: int | None = None,
    **lm_options: Any,
) -> DSPyAsyncLM:
    """A `dspy.LM` whose calls run on the dspy-async runtime: `dspy.configure(lm=dspy_lm(...))`.

    `lm` is a model id, built into `dspy_async.LM(lm, **lm_options)` (`max_concurrency`,
    `retry`, `api_base`, `temperature`, ...), or a dspy-async LM, used as is and shared with
    whatever else uses it. `num_retries`, as `dspy.LM` takes it, means
    `retry=RetryPolicy(max_attempts=num_retries + 1)`. `cache` (DSPy's response cache) and
    `callbacks` are DSPy's own, with `dspy.LM`'s defaults.
    """
    if isinstance(lm, str):
        if num_retries is not None:
            if "retry" in lm_options:
                raise ConfigurationError("pass num_retries or retry=RetryPolicy(...), not both")
            lm_options["retry"] = RetryPolicy(max_attempts=num_retries + 1)
        lm = LM(lm, **lm_options)
    elif lm_options or num_retries is not None:
        given = sorted([*lm_options, *(["num_retries"] if num_retries is not None else [])])
        raise ConfigurationError(
            f"{', '.join(given)}: an existing LM keeps its own settings; build it with them, "
            "or pass a model id to dspy_lm(...)"
        )
    return DSPyAsyncLM(lm, cache=cache, callbacks=callbacks)


class DSPyAsyncLM(dspy.LM):  # type: ignore[misc]  # dspy has no type information
    """A `dspy.LM` that sends every request through a dspy-async LM (see the module docstring).

    `kwargs` are DSPy's per-call defaults, as on `dspy.LM`; the LM's own `temperature` and
    `max_tokens` are shown there too, because DSPy modules read them.
    """

    def __init__(
        self,
        lm: BaseLM,
        *,
        cache: bool = True,
        callbacks: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(lm, BaseLM):
            raise ConfigurationError(
                f"DSPyAsyncLM wraps a dspy_async LM, not {type(lm).__name__}: use "
                "dspy_async.dspy_lm('provider/model', ...) to build one"
            )
        self._link = _Link(lm)
        defaults = getattr(lm, "params", {})
        kwargs.setdefault("temperature", defaults.get("temperature"))
        kwargs.setdefault("max_tokens", defaults.get("max_tokens"))
        super().__init__(
            f"{lm.provider}/{lm.model}",
            engine=_Engine(self._link),
            async_engine=_AsyncEngine(self._link),
            cache=cache,
            callbacks=list(callbacks or []),
            num_retries=0,
            **kwargs,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dspy_async_lm!r})"

    @property
    def dspy_async_lm(self) -> BaseLM:
        """The dspy-async LM every call goes through; its `usage` counts them all."""
        return self._link.lm

    @property
    def num_retries(self) -> int:
        """Always 0: the dspy-async LM retries (its `retry` policy), DSPy adds none on top."""
        return 0

    @num_retries.setter
    def num_retries(self, value: int) -> None:
        if value:
            raise ConfigurationError(
                "DSPy's retries stay off on a dspy_lm(...): the dspy-async LM retries; "
                "build it with retry=RetryPolicy(max_attempts=...)"
            )

    def dump_state(self) -> dict[str, Any]:
        """What `program.save(...)` writes: DSPy's settings and the LM's, never its API key.

        Loading it takes `allow_unsafe_lm_state=True`, DSPy's rule for every LM class but its
        own; the key then comes from the loading process's environment.
        """
        kwargs = {key: value for key, value in self.kwargs.items() if key != "api_key"}
        cls = type(self)
        return {
            LM_CLASS_STATE_KEY: f"{cls.__module__}.{cls.__qualname__}",
            **kwargs,
            "cache": self.cache,
            "lm": self._link.recipe(),
        }

    @classmethod
    def load_state(
        cls, state: Mapping[str, Any], *, allow_custom_lm_class: bool = False
    ) -> DSPyAsyncLM:
        """Rebuild from `dump_state` (DSPy checks `allow_custom_lm_class` before calling)."""
        state = dict(state)
        state.pop(LM_CLASS_STATE_KEY, None)
        return cls(_rebuild(state.pop("lm")).lm, **state)


class _Link:
    """The dspy-async LM behind both engines, and one DSPy request made into its call.

    Copies share it, so that every copy of a program uses the one LM, its pool and its
    `max_concurrency`. Pickled, it is rebuilt from the LM's settings, without the key.
    """

    __slots__ = ("lm",)

    def __init__(self, lm: BaseLM) -> None:
        self.lm = lm

    def __copy__(self) -> _Link:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Link:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        if isinstance(self.lm, LM):
            return (_rebuild, (self.recipe(),))
        return (_Link, (self.lm,))  # another BaseLM (a test double) pickles itself

    def recipe(self) -> dict[str, Any]:
        """The LM's settings as JSON-ready values, without its API key (see state.py)."""
        if not isinstance(self.lm, LM):
            raise TypeError(f"only a dspy_async.LM can be saved, not a {type(self.lm).__name__}")
        return lm_state(self.lm)

    async def complete(self, request: lm15.Request) -> lm15.Response:
        """Send `request` through the LM; failures become the dspy.lm15 errors DSPy maps."""
        messages = _chat_messages(request)
        schema, params = _call_options(self.lm.provider, request.config)
        if getattr(self.lm, "cache", False):
            # DSPy's response cache, around this engine, answers DSPy's calls: the LM's own is
            # skipped for them, so that no answer is cached twice.
            params["cache"] = False
        try:
            response = await self._ask(messages, schema, params)
        except (LMError, ConfigurationError) as error:
            raise _engine_error(error) from error
        return _response(response)

    async def _ask(
        self, messages: list[Message], schema: OutputSchema | None, params: dict[str, Any]
    ) -> LMResponse:
        try:
            return await self.lm.acall(messages=messages, output_schema=schema, **params)
        except UnsupportedParameterError:
            if schema is None:
                raise
        # The provider refused its native structured-output parameter. As dspy-async's own
        # adapter does, remember that and ask in plain chat: JSONAdapter's prompt already
        # describes the object it wants.
        self.lm.supports_native_structured = False
        return await self.lm.acall(messages=messages, **params)


def _rebuild(recipe: Mapping[str, Any]) -> _Link:
    """The LM `recipe` describes, with the API key its provider finds in the environment."""
    # DSPy asks for allow_unsafe_lm_state before it loads this class: consent to the api_base.
    lm = lm_from_state(recipe, allow_unsafe=True)
    if recipe["keyed"] and lm._endpoint.secret is None:
        raise ConfigurationError(
            f"{lm!r} was saved with an API key, and dspy-async never writes keys down: set the "
            "provider's API key environment variable (e.g. OPENAI_API_KEY) where it is loaded"
        )
    return _Link(lm)


class _Capabilities:
    """What DSPy's adapters may ask of the engines (DSPy reads it from the sync one)."""

    # Replies are text: ReAct and the adapters then pick tools in text, as they do for any
    # LM without function calling.
    supports_function_calling = False
    supports_reasoning = False
    # JSONAdapter's schema goes out natively: OpenAI json_schema, an Anthropic forced tool,
    # Ollama's format.
    supports_response_schema = True
    supported_params = frozenset({"max_tokens", "temperature", "top_p", "stop", "response_format"})

    def __init__(self, link: _Link) -> None:
        self._link = link


class _Engine(_Capabilities):
    """DSPy's sync engine: the calling thread (a DSPy worker, say) waits; the call's attempts
    and the backoffs between them run on the runtime loop."""

    def complete(self, request: lm15.Request) -> lm15.Response:
        return _runtime.run(self._link.complete(request))

    def stream(self, request: lm15.Request) -> Iterator[Any]:
        yield from _events(self.complete(request))

    def close(self) -> None:
        """Nothing to close: the LM's pool is shared and outlives any one engine."""


class _AsyncEngine(_Capabilities):
    """DSPy's async engine: the caller's loop awaits the call running on the runtime loop."""

    async def complete(self, request: lm15.Request) -> lm15.Response:
        return await self._link.complete(request)

    async def stream(self, request: lm15.Request) -> AsyncIterator[Any]:
        for event in _events(await self.complete(request)):
            yield event

    async def aclose(self) -> None:
        """Nothing to close: the LM's pool is shared and outlives any one engine."""


def _events(response: lm15.Response) -> Iterator[Any]:
    """The reply as stream events, a text delta per line. dspy-async reads replies whole, so
    they all come at its end; line by line, DSPy's stream listeners still find each field's
    `[[ ## name ## ]]` marker and its value."""
    for event in lm15.response_to_events(response):
        if event.type != "delta" or event.delta.type != "text":
            yield event
            continue
        for line in event.delta.text.splitlines(keepends=True) or [""]:
            delta = lm15.TextDelta(text=line, part_index=event.delta.part_index)
            yield lm15.StreamDeltaEvent(delta=delta)


# How DSPy's message roles map to the LM's. Tool messages have no text form there.
_ROLES = {"user": "user", "assistant": "assistant", "developer": "system"}


def _chat_messages(request: lm15.Request) -> list[Message]:
    """The request as `{"role", "content": str}` messages, or the feature that has no such form."""
    if request.tools:
        raise _unsupported("tools", "native tool calling")
    messages: list[Message] = []
    if request.system is not None:
        messages.append({"role": "system", "content": _text(request.system, "system")})
    for index, message in enumerate(request.messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise _unsupported(f"messages[{index}]", f"{message.role} messages")
        messages.append({"role": role, "content": _text(message.parts, f"messages[{index}]")})
    return messages


def _text(content: str | tuple[Any, ...], where: str) -> str:
    """A message's text: its text parts joined by newlines, as `lm15.Message.text` joins them."""
    if isinstance(content, str):
        return content
    for index, part in enumerate(content):
        if not isinstance(part, lm15.TextPart):
            raise _unsupported(f"{where}.parts[{index}]", f"{part.type} content")
    return "\n".join(part.text for part in content)


# Config fields that are call parameters of the same name for every dspy-async provider that
# takes them (the LM refuses, naming it, one its provider does not).
_PARAMS = frozenset(
    {"max_tokens", "temperature", "top_p", "top_k", "seed", "frequency_penalty", "presence_penalty"}
)
_STOP = {"anthropic": "stop_sequences"}  # how providers spell `stop`, where not "stop"


def _call_options(provider: str, config: lm15.Config) -> tuple[OutputSchema | None, dict[str, Any]]:
    """The request's structured-output schema and call parameters."""
    params: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None or value == ():
            continue
        if field.name in _PARAMS:
            params[field.name] = value
        elif field.name == "stop":
            params[_STOP.get(provider, "stop")] = list(value)
        elif field.name == "extensions":  # provider fields DSPy passes through as they are
            params.update(value)
        elif field.name != "response_format":
            raise _unsupported(f"config.{field.name}", f"the {field.name} setting")
    return _output_schema(config.response_format), params


def _output_schema(response_format: Mapping[str, Any] | None) -> OutputSchema | None:
    """JSONAdapter's json_schema as the LM's native structured output. JSON mode (json_object)
    is not sent natively: the adapter's prompt already asks for a JSON object."""
    if response_format is None or response_format["type"] != "json_schema":
        return None
    return OutputSchema(
        name=response_format.get("name", "output"),
        schema=response_format["schema"],
        strict=response_format.get("strict", False),
    )


def _unsupported(feature: str, what: str) -> lm15.UnsupportedFeatureError:
    return lm15.UnsupportedFeatureError(
        f"dspy-async's LM sends text chat messages and cannot carry {what} ({feature})",
        feature=feature,
    )


# Provider-verbatim finish reasons and DSPy's canonical ones; anything else is a normal stop.
_FINISH = {"length": "length", "max_tokens": "length", "content_filter": "content_filter"}


def _response(response: LMResponse) -> lm15.Response:
    usage = response.usage
    return lm15.Response(
        id=None,
        model=response.model,
        message=lm15.Message.assistant(response.text),
        finish_reason=_FINISH.get(response.finish_reason or "", "stop"),
        usage=lm15.Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens),
        # In DSPy's history (lm.history[-1]["response"].provider_data): every attempt.
        provider_data={"dspy_async": {"attempts": [_attempt(a) for a in response.attempts]}},
    )


def _attempt(attempt: Attempt) -> dict[str, Any]:
    return {
        "outcome": attempt.outcome,
        "status_code": attempt.status_code,
        "waited": round(attempt.waited, 3),
    }


# dspy-async's errors, most specific first, and the dspy.lm15 errors that DSPy projects onto
# its own (dspy/clients/errors.py): lm15.RateLimitError -> dspy's LMRateLimitError,
# lm15.ContextLengthError -> ContextWindowExceededError (which ReAct catches to shorten its
# trajectory), ... Anything else is a ProviderError: LMProviderError.
_ERRORS: tuple[tuple[type[DSPyAsyncError], type[lm15.LM15Error]], ...] = (
    (RateLimitError, lm15.RateLimitError),
    (ProviderTimeoutError, lm15.TimeoutError),
    (ProviderServerError, lm15.ServerError),
    (ProviderConnectionError, lm15.TransportError),
    (AuthenticationError, lm15.AuthError),
    (ContextWindowExceededError, lm15.ContextLengthError),
    (BadRequestError, lm15.InvalidRequestError),
    (ConfigurationError, lm15.ConfigurationError),
)


def _engine_error(error: LMError | ConfigurationError) -> lm15.LM15Error:
    """The dspy.lm15 error for `error`, raised from it so that it stays the cause."""
    kind = next((theirs for ours, theirs in _ERRORS if isinstance(error, ours)), lm15.ProviderError)
    if not isinstance(error, LMError):
        return kind(str(error))
    return kind(
        str(error),
        provider=error.provider,
        status=error.status_code,
        retry_after=getattr(error, "retry_after", None),
    )
