"""Predict and ChainOfThought: one LM step that turns a signature's inputs into typed outputs.

Every keyword is an input field except two reserved ones: `lm=` (the LM for this call) and
`config=` (LM parameters such as temperature for this call). Inputs, and `config` against the
parameters the LM's provider takes, are checked before any request is made. The LM is, in
order: the call's `lm=`, the one given to Predict, then `dspy.context(lm=...)`, then
`dspy.configure(lm=...)`. A signature may have no inputs (`Predict("-> joke")()`), as in DSPy.

`demos` (Examples) are shown to the model as few-shot turns before the inputs. `n=` in the
config asks for n completions: n calls made at once, each validated (and re-asked) on its
own, so every provider supports it; the Prediction holds the first and `completions` all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import _checks, _runtime, callbacks
from .adapters import generate_structured
from .adapters.structured import StructuredResult
from .errors import ConfigurationError, SignatureError
from .example import Example
from .lm import LM, BaseLM
from .module import Module
from .pipeline import trace
from .pipeline.cache import nth_completion, split_options
from .prediction import Prediction
from .providers import get_provider
from .providers.base import request_params
from .settings import check_lm, settings
from .signatures import OutputField, Signature, ensure_signature
from .streaming.channel import Put
from .streaming.fields import FieldStream, StreamChunk
from .streaming.scope import streaming_to
from .streaming.stream import AsyncPredictionStream, PredictionStream

__all__ = ["ChainOfThought", "Predict"]

# Arguments of BaseLM.acall that Predict sets itself, so `config` cannot carry them.
_LM_ARGUMENTS = frozenset({"prompt", "messages", "output_schema"})

REASONING_DESC = "Think step by step to reach the answer; keep it short."
# With n > 1 and no temperature set anywhere, DSPy samples at 0.7 so the completions differ.
N_TEMPERATURE = 0.7


@dataclass(frozen=True, slots=True)
class _Call:
    """Everything one call needs, resolved in the caller's thread before any I/O."""

    lm: BaseLM
    inputs: dict[str, Any]
    params: dict[str, Any]
    max_retries: int
    demos: tuple[Example | Mapping[str, Any], ...]
    n: int


class Predict(Module):
    """Ask an LM for a signature's outputs: `Predict("question -> answer")(question="...")`."""

    def __init__(
        self,
        signature: type[Signature] | str,
        *,
        lm: BaseLM | None = None,
        config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        """`config` and keyword `options` (DSPy's `Predict(sig, n=3, temperature=1.0)`) are
        the LM parameters of every call; a call's `config=` overrides them."""
        self.signature = ensure_signature(signature)
        if not self.signature.output_fields:
            raise SignatureError(f"{self.signature.__name__} has no output field")
        check_lm(lm)
        self.lm = lm
        self.config = _check_config({**_check_config(config), **options})
        _check_params(lm, self.config)
        self.demos: list[Example] = []

    def reset(self) -> None:
        """Forget what was learned (the demos); the signature, LM and config stay."""
        self.demos = []

    def dump_state(self) -> dict[str, Any]:
        """Instructions, field descriptions, demos and this predictor's own LM settings (never
        its key), as JSON values; see state.py."""
        from .state import predictor_state

        return predictor_state(self)

    def load_state(
        self, state: Mapping[str, Any], *, allow_unsafe_lm_state: bool = False
    ) -> Predict:
        """Apply a `dump_state()`: all of it, or none of it if it does not fit (StateError)."""
        from .state import apply_predictor_state

        apply_predictor_state(self, state, allow_unsafe_lm_state=allow_unsafe_lm_state)
        return self

    def get_config(self) -> dict[str, Any]:
        """The LM parameters every call uses (a call's `config=` overrides them)."""
        return self.config

    def update_config(self, **options: Any) -> None:
        """Add or change LM parameters of every call, checked as at construction."""
        config = _check_config({**self.config, **options})
        _check_params(self.lm, config)
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Prediction:
        with callbacks.module_call(self, args, kwargs) as seen:  # a no-op unless configured
            prediction: Prediction = seen.returned(self.forward(*args, **kwargs))
            return prediction

    async def acall(self, *args: Any, **kwargs: Any) -> Prediction:
        with callbacks.module_call(self, args, kwargs) as seen:
            if type(self).aforward is Predict.aforward:
                # aforward's own body, inline: one frame less for every call in flight.
                work = _runtime.arun(self._predict(self._prepare(args, kwargs)))
            else:
                work = self.aforward(*args, **kwargs)
            prediction: Prediction = seen.returned(await work)
            return prediction

    def forward(self, *args: Any, **kwargs: Any) -> Prediction:
        """Run the step and block until its Prediction is ready."""
        call = self._prepare(args, kwargs)
        return _runtime.run(self._predict(call))

    async def aforward(self, *args: Any, **kwargs: Any) -> Prediction:
        """Run the step from any event loop; the work happens on the runtime loop."""
        call = self._prepare(args, kwargs)
        return await _runtime.arun(self._predict(call))

    def stream(self, *args: Any, **kwargs: Any) -> PredictionStream:
        """The step, streamed: iterate for StreamChunk(field, text) of its output fields as
        the model writes them; `.prediction` is the validated Prediction once it ended.
        Inputs are checked now, and the request starts at once (see `streaming/`)."""
        return PredictionStream(self._streamed(args, kwargs))

    def astream(self, *args: Any, **kwargs: Any) -> AsyncPredictionStream:
        """`stream`, for `async for` on any event loop."""
        return AsyncPredictionStream(self._streamed(args, kwargs))

    def _streamed(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Callable[[Put[StreamChunk]], Awaitable[Prediction]]:
        call = self._prepare(args, kwargs)
        if call.n != 1:
            raise ConfigurationError(
                f"stream() streams one completion, not n={call.n}: call the step for several"
            )

        async def produce(put: Put[StreamChunk]) -> Prediction:
            fields = FieldStream(self.signature.output_fields, put)
            with streaming_to(fields.reply):  # each reply (re-asks too) into its own sink
                return await self._predict(call)

        return produce

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call:
        if args:
            names = ", ".join(f"{name}=..." for name in self.signature.input_fields)
            raise SignatureError(
                f"{type(self).__name__} takes keyword arguments only ({names}); "
                f"got {len(args)} positional"
            )
        lm = kwargs.pop("lm", None)
        config = _check_config(kwargs.pop("config", None))
        inputs = self.signature.validate_inputs(kwargs)
        structured = settings.structured_outputs
        chosen = self._resolve_lm(lm)
        params = {**self.config, **config}
        n = _n_of(chosen, params)
        call = _Call(
            lm=chosen,
            inputs=inputs,
            params=params,
            max_retries=max(0, structured.max_retries) if structured.retry_enabled else 0,
            # A copy: demos changed while the call runs (an optimizer's) do not reach it.
            demos=_check_demos(self.demos),
            n=n,
        )
        _check_params(call.lm, call.params)
        return call

    def _resolve_lm(self, lm: BaseLM | None) -> BaseLM:
        check_lm(lm)
        chosen = lm if lm is not None else self.lm if self.lm is not None else settings.lm
        if chosen is None:
            raise ConfigurationError(
                "no LM configured: call dspy.configure(lm=...), "
                "or pass lm= to Predict or to the call"
            )
        return chosen

    async def _predict(self, call: _Call) -> Prediction:
        # On the runtime loop, in the caller's copied context: the step's span is the parent
        # of its LM calls, and its own parent is whatever span the caller had open.
        with trace.step(self):
            if call.n == 1:  # inline, not through _complete: one frame less per call
                with nth_completion(0):
                    result = await self._structured(call)
                return Prediction._of_one(
                    result.usage, result.attempts, self.signature, **result.values
                )
            # map, not a comprehension: one would make `self` and `call` closure cells of
            # this frame, two more objects for every call in flight.
            completions = await _all_or_none(
                list(map(self._complete, [call] * call.n, range(call.n)))
            )
        return Prediction.from_completions(completions, signature=self.signature)

    async def _complete(self, call: _Call, index: int) -> Prediction:
        with nth_completion(index):  # n identical requests: each its own cache entry
            return _completion(await self._structured(call))

    def _structured(self, call: _Call) -> Coroutine[Any, Any, StructuredResult]:
        return generate_structured(
            call.lm,
            self.signature,
            call.inputs,
            params=call.params,
            max_retries=call.max_retries,
            demos=call.demos,
        )


def _completion(result: StructuredResult) -> Prediction:
    return Prediction(usage=result.usage, attempts=result.attempts, **result.values)


class ChainOfThought(Module):
    """A Predict, `self.predict`, whose signature has a `reasoning` output placed before the
    others, so the model thinks first. As in DSPy 3, the inner Predict is what optimizers and
    `named_predictors()` see (named `predict`); arguments are passed on to it."""

    def __init__(
        self,
        signature: type[Signature] | str,
        *,
        lm: BaseLM | None = None,
        config: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        extended = ensure_signature(signature).prepend(
            "reasoning", OutputField(desc=REASONING_DESC), str
        )
        self.predict = Predict(extended, lm=lm, config=config, **options)

    @property
    def signature(self) -> type[Signature]:
        """The inner Predict's signature, `reasoning` included."""
        return self.predict.signature

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature!r})"

    def forward(self, *args: Any, **kwargs: Any) -> Prediction:
        return self.predict(*args, **kwargs)

    async def aforward(self, *args: Any, **kwargs: Any) -> Prediction:
        return await self.predict.acall(*args, **kwargs)

    def stream(self, *args: Any, **kwargs: Any) -> PredictionStream:
        """The inner Predict's `stream`: `reasoning` comes first, then the other outputs."""
        return self.predict.stream(*args, **kwargs)

    def astream(self, *args: Any, **kwargs: Any) -> AsyncPredictionStream:
        return self.predict.astream(*args, **kwargs)


def _check_config(config: object) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"config must be a mapping of LM parameters, not {config!r}")
    clashes = sorted(_LM_ARGUMENTS & set(config))
    if clashes:
        raise ConfigurationError(f"config cannot set {', '.join(clashes)}: Predict sets them")
    if "n" in config:
        _checks.positive_int("config n (the number of completions)", config["n"])
    return dict(config)


def _check_params(lm: BaseLM | None, params: Mapping[str, Any]) -> None:
    """Refuse parameters the provider of `lm` does not take (a misspelt `temprature`), here
    rather than inside the call. Only an `LM` knows its provider's parameters; the cache's
    options (`cache`, `rollout_id`) are its own, checked here too, and never sent; `n` is
    Predict's (it makes n calls), so any provider takes it."""
    params = {k: v for k, v in params.items() if k != "n"}
    if isinstance(lm, LM) and params:
        _, _, sent = split_options(params, cache=lm.cache, rollout_id=lm.rollout_id)
        request_params(lm.provider, get_provider(lm.provider).PARAMS, {**lm.params, **sent})


def _n_of(lm: BaseLM, params: dict[str, Any]) -> int:
    """Take `n` out of `params` (or the LM's defaults) and return it; each of the n calls
    then asks for one completion, at DSPy's sampling temperature unless one is set."""
    defaults = lm.params if isinstance(lm, LM) else {}
    n: int = params.pop("n", defaults.get("n", 1))
    if "n" in defaults:
        params["n"] = 1
    if n > 1 and "temperature" not in params and "temperature" not in defaults:
        params["temperature"] = N_TEMPERATURE
    return n


def _check_demos(demos: object) -> tuple[Example | Mapping[str, Any], ...]:
    if not isinstance(demos, list | tuple):
        raise ConfigurationError(
            f"demos must be a list of Examples (or dicts), not {type(demos).__name__}"
        )
    for index, demo in enumerate(demos):
        if not isinstance(demo, Example | Mapping):
            raise ConfigurationError(
                f"demos[{index}] must be an Example or a dict, not {type(demo).__name__}"
            )
    return tuple(demos)


async def _all_or_none(completions: Sequence[Coroutine[Any, Any, Prediction]]) -> list[Prediction]:
    """Every completion, or the first error: the others are then cancelled, so they spend no
    tokens on an answer nobody will read."""
    tasks = [asyncio.ensure_future(c) for c in completions]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
