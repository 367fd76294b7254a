"""ReAct: an agent that reasons, calls tools and answers, over any signature, as DSPy's does.

Each step asks the model for its next thought, tool and arguments, given the inputs and the
trajectory so far (`thought_0`, `tool_name_0`, `tool_args_0`, `observation_0`, ...); the tool
runs and its result (or error) is the observation. The built-in `finish` tool ends the loop,
as do `max_iters` steps or a step that names no valid tool; then `extract` (a ChainOfThought)
answers the signature's outputs from the trajectory.

The step is asked for in one of two ways. Where the provider has native tool calling (OpenAI
`tools`/`tool_calls`, Anthropic `tool_use`), the tools are offered natively and the model
must call one: the tool call is the step's tool and arguments, schema-checked by the
provider, and any text beside it the thought (often none). Elsewhere (Ollama, OpenAI-
compatible servers that ignore tools, DummyLM) the step is a prompt-JSON Predict of
`next_thought`, `next_tool_name` and `next_tool_args`, exactly DSPy's. A server that ignores
the tools or refuses them is remembered, and its later steps use the prompt.
"""

from __future__ import annotations

import dataclasses
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from . import _checks, callbacks
from .adapters.messages import build_messages, format_value
from .errors import (
    BadRequestError,
    ConfigurationError,
    ContextWindowExceededError,
    OutputValidationError,
    UnsupportedParameterError,
)
from .lm import LM, BaseLM
from .module import Module
from .predict import ChainOfThought, Predict
from .prediction import Prediction
from .providers import get_provider
from .records import Attempt, Usage
from .settings import settings
from .signatures import InputField, OutputField, Signature, ensure_signature, make_signature
from .tools import Tool

__all__ = ["ReAct"]

logger = logging.getLogger("dspy_async")

# LMs whose server ignored or refused native tools: their steps are asked in the prompt.
_NO_NATIVE_TOOLS: weakref.WeakSet[BaseLM] = weakref.WeakSet()
_TRUNCATIONS = 3  # trajectory truncations tried when the prompt no longer fits


class ReAct(Module):
    """`ReAct("question -> answer", tools=[search, add], max_iters=10)`; the Prediction has
    the signature's outputs and the `trajectory` dict. `tools` are functions or `Tool`s."""

    def __init__(
        self,
        signature: type[Signature] | str,
        tools: Sequence[Callable[..., Any] | Tool],
        max_iters: int = 20,
    ) -> None:
        self.signature = signature = ensure_signature(signature)
        self.max_iters = _checks.positive_int("ReAct max_iters", max_iters)
        named: dict[str, Tool] = {}
        for tool in (t if isinstance(t, Tool) else Tool(t) for t in tools):
            if tool.name in named or tool.name == "finish":
                raise ConfigurationError(f"ReAct: two tools are named {tool.name!r}")
            named[tool.name] = tool
        inputs = ", ".join(f"`{k}`" for k in signature.input_fields)
        outputs = ", ".join(f"`{k}`" for k in signature.output_fields)
        named["finish"] = Tool(
            lambda: "Completed.",
            name="finish",
            desc="Marks the task as complete. That is, signals that all information for "
            f"producing the outputs, i.e. {outputs}, are now available to be extracted.",
            args={},
        )
        lines = [f"{signature.instructions}\n"] if signature.instructions else []
        lines += [
            f"You are an Agent. In each episode, you will be given the fields {inputs} as "
            "input. And you can see your past trajectory so far.",
            "Your goal is to use one or more of the supplied tools to collect any necessary "
            f"information for producing {outputs}.\n",
            "To do this, you will interleave next_thought, next_tool_name, and next_tool_args "
            "in each turn, and also when finishing the task.",
            "After each tool call, you receive a resulting observation, which gets appended "
            "to your trajectory.\n",
            "When writing next_thought, you may reason about the current situation and plan "
            "for future steps.",
            "When selecting the next_tool_name and its next_tool_args, the tool must be one of:\n",
            *(f"({i + 1}) {tool}" for i, tool in enumerate(named.values())),
            "When providing `next_tool_args`, the value inside the field must be in JSON format",
        ]
        react_signature = make_signature(
            {
                **signature.input_fields,
                "trajectory": InputField(),
                "next_thought": OutputField(),
                "next_tool_name": (Literal[tuple(named)], OutputField()),
                "next_tool_args": (dict[str, Any], OutputField()),
            },
            "\n".join(lines),
        )
        fallback = make_signature(
            {**signature.input_fields, "trajectory": InputField(), **signature.output_fields},
            signature.instructions,
        )
        self.tools = named
        self.react = Predict(react_signature)
        self.extract = ChainOfThought(fallback)

    async def aforward(self, **input_args: Any) -> Prediction:
        max_iters = _checks.positive_int("max_iters", input_args.pop("max_iters", self.max_iters))
        self.signature.validate_inputs(input_args)  # SignatureError now, before any request
        trajectory: dict[str, Any] = {}
        spent = _Spent()
        for index in range(max_iters):
            try:
                step = await self._truncating(self._step, trajectory, input_args, spent)
            except ContextWindowExceededError as error:
                logger.warning("ReAct: ending the trajectory: %s", error)
                break
            except (OutputValidationError, ValueError) as error:
                logger.warning("ReAct: the agent failed to select a valid tool: %s", error)
                break
            name, args = step.next_tool_name, step.next_tool_args
            trajectory[f"thought_{index}"] = step.next_thought
            trajectory[f"tool_name_{index}"] = name
            trajectory[f"tool_args_{index}"] = args
            try:
                observation = await self.tools[name].acall(**args)
            except Exception as error:
                observation = f"Execution error in {name}: {type(error).__name__}: {error}"
            trajectory[f"observation_{index}"] = observation
            if name == "finish":
                break
        extract = await self._truncating(self._extract, trajectory, input_args, spent)
        return Prediction(extract, trajectory=trajectory, usage=spent.usage, attempts=spent.all)

    async def _truncating(
        self,
        ask: Callable[[dict[str, Any]], Awaitable[Prediction]],
        trajectory: dict[str, Any],
        inputs: dict[str, Any],
        spent: _Spent,
    ) -> Prediction:
        """`ask` with the trajectory; when the prompt no longer fits, again without the
        oldest tool call, as DSPy does."""
        for _ in range(_TRUNCATIONS):
            try:
                prediction = await ask({**inputs, "trajectory": _shown(trajectory)})
            except ContextWindowExceededError:
                logger.warning("ReAct: the trajectory outgrew the context window; truncating")
                trajectory = self.truncate_trajectory(trajectory)
                continue
            spent.add(prediction.usage, prediction.attempts)
            return prediction
        raise ContextWindowExceededError(
            f"the context window was exceeded even after {_TRUNCATIONS} truncations of the "
            "trajectory"
        )

    def truncate_trajectory(self, trajectory: dict[str, Any]) -> dict[str, Any]:
        """Drop the oldest tool call (its four keys); override for your own rule."""
        keys = list(trajectory)
        if len(keys) <= 4:
            raise ContextWindowExceededError(
                "the trajectory is too long for the context window, and cannot be truncated "
                "because it only has one tool call"
            )
        for key in keys[:4]:
            trajectory.pop(key)
        return trajectory

    async def _extract(self, inputs: dict[str, Any]) -> Prediction:
        prediction: Prediction = await self.extract.acall(**inputs)
        return prediction

    async def _step(self, inputs: dict[str, Any]) -> Prediction:
        """The next thought, tool and arguments: natively where the provider can, else
        through the prompt-JSON Predict."""
        lm = self.react.lm if self.react.lm is not None else settings.lm
        if isinstance(lm, LM) and lm not in _NO_NATIVE_TOOLS:
            offered = get_provider(lm.provider).tool_params([t.spec() for t in self.tools.values()])
            if offered is not None:
                native = await self._native_step(lm, offered, inputs)
                if native is not None:
                    return native
        step = await self.react.acall(**inputs)
        if step.next_tool_name not in self.tools:  # the Literal type should rule this out
            raise ValueError(f"no tool named {step.next_tool_name!r}")
        return step

    async def _native_step(
        self, lm: LM, offered: dict[str, Any], inputs: dict[str, Any]
    ) -> Prediction | None:
        """The step as a native tool call, observed as a call of `react`; None (and the LM
        remembered) if the server refused or ignored the tools."""
        signature = self.react.signature
        checked = signature.validate_inputs(inputs)
        messages = build_messages(signature, checked, json_format=False, demos=self.react.demos)
        params = {k: v for k, v in self.react.config.items() if k != "n"} | offered
        with callbacks.module_call(self.react, (), inputs) as seen:
            try:
                response = await lm.acall(messages=messages, **params)
            except ContextWindowExceededError:
                raise
            except (UnsupportedParameterError, BadRequestError) as error:
                logger.warning("ReAct: %s refused native tools (%s); using the prompt", lm, error)
                _NO_NATIVE_TOOLS.add(lm)
                return None
            if not response.tool_calls:
                logger.warning("ReAct: %s ignored native tools; using the prompt", lm)
                _NO_NATIVE_TOOLS.add(lm)
                return None
            call = response.tool_calls[0]
            if call.name not in self.tools:
                raise ValueError(f"the model called {call.name!r}, which is not a tool here")
            prediction = Prediction(
                usage=response.usage,
                attempts=response.attempts,
                next_thought=response.text,
                next_tool_name=call.name,
                next_tool_args=dict(call.args),
            )
            seen.returned(prediction)
            return prediction


def _shown(trajectory: dict[str, Any]) -> str:
    """The trajectory as the model reads it: `name: value` paragraphs."""
    return "\n\n".join(f"{key}: {format_value(value)}" for key, value in trajectory.items())


class _Spent:
    """Tokens and attempts of every LM call of one ReAct run, renumbered in order."""

    def __init__(self) -> None:
        self.usage = Usage()
        self.all: list[Attempt] = []

    def add(self, usage: Usage, attempts: Sequence[Attempt]) -> None:
        self.usage += usage
        start = len(self.all) + 1
        self.all += [dataclasses.replace(a, number=start + i) for i, a in enumerate(attempts)]
