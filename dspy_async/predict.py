"""Predict and ChainOfThought: one LM step that turns a signature's inputs into typed outputs.

Every keyword is an input field except two reserved ones: `lm=` (the LM for this call) and
`config=` (LM parameters such as temperature for this call). Inputs, and `config` against the
parameters the LM's provider takes, are checked before any request is made. The LM is, in
order: the call's `lm=`, the one given to Predict, then `dspy.context(lm=...)`, then
`dspy.configure(lm=...)`. A signature may have no inputs (`Predict("-> joke")()`), as in DSPy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import _runtime
from .adapters import generate_structured
from .errors import ConfigurationError, SignatureError
from .lm import LM, BaseLM
from .module import Module
from .pipeline import trace
from .prediction import Prediction
from .providers import get_provider
from .providers.base import request_params
from .settings import check_lm, settings
from .signatures import Signature, ensure_signature

__all__ = ["ChainOfThought", "Predict"]

# Arguments of BaseLM.acall that Predict sets itself, so `config` cannot carry them.
_LM_ARGUMENTS = frozenset({"prompt", "messages", "output_schema"})

REASONING_DESC = "Think step by step to reach the answer; keep it short."


@dataclass(frozen=True, slots=True)
class _Call:
    """Everything one call needs, resolved in the caller's thread before any I/O."""

    lm: BaseLM
    inputs: dict[str, Any]
    params: dict[str, Any]
    max_retries: int


class Predict(Module):
    """Ask an LM for a signature's outputs: `Predict("question -> answer")(question="...")`."""

    def __init__(
        self,
        signature: type[Signature] | str,
        *,
        lm: BaseLM | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.signature = ensure_signature(signature)
        if not self.signature.output_fields:
            raise SignatureError(f"{self.signature.__name__} has no output field")
        check_lm(lm)
        self.lm = lm
        self.config = _check_config(config)
        _check_params(lm, self.config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.signature!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Prediction:
        return self.forward(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Prediction:
        return await self.aforward(*args, **kwargs)

    def forward(self, *args: Any, **kwargs: Any) -> Prediction:
        """Run the step and block until its Prediction is ready."""
        call = self._prepare(args, kwargs)
        return _runtime.run(self._predict(call))

    async def aforward(self, *args: Any, **kwargs: Any) -> Prediction:
        """Run the step from any event loop; the work happens on the runtime loop."""
        call = self._prepare(args, kwargs)
        return await _runtime.arun(self._predict(call))

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
        call = _Call(
            lm=self._resolve_lm(lm),
            inputs=inputs,
            params={**self.config, **config},
            max_retries=max(0, structured.max_retries) if structured.retry_enabled else 0,
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
            result = await generate_structured(
                call.lm,
                self.signature,
                call.inputs,
                params=call.params,
                max_retries=call.max_retries,
            )
        return Prediction(usage=result.usage, attempts=result.attempts, **result.values)


class ChainOfThought(Predict):
    """Predict with a `reasoning` output placed before the others, so the model thinks first."""

    def __init__(
        self,
        signature: type[Signature] | str,
        *,
        lm: BaseLM | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        extended = ensure_signature(signature).prepend_output("reasoning", str, desc=REASONING_DESC)
        super().__init__(extended, lm=lm, config=config)


def _check_config(config: object) -> dict[str, Any]:
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"config must be a mapping of LM parameters, not {config!r}")
    clashes = sorted(_LM_ARGUMENTS & set(config))
    if clashes:
        raise ConfigurationError(f"config cannot set {', '.join(clashes)}: Predict sets them")
    return dict(config)


def _check_params(lm: BaseLM | None, params: Mapping[str, Any]) -> None:
    """Refuse parameters the provider of `lm` does not take (a misspelt `temprature`), here
    rather than inside the call. Only an `LM` knows its provider's parameters."""
    if isinstance(lm, LM) and params:
        request_params(lm.provider, get_provider(lm.provider).PARAMS, {**lm.params, **params})
