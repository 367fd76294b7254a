"""Tool: a function an agent (`ReAct`) may call, described to the model by its name, its
docstring and the JSON schema of its arguments, read from the type hints, as DSPy's Tool is.

    def search(query: str, limit: int = 3) -> list[str]:
        "Search the web."
        ...

    tool = dspy.Tool(search)
    tool.args      # {"query": {"type": "string"}, "limit": {"type": "integer", "default": 3}}
    tool(query="dspy")            # arguments checked and converted by pydantic first
    await tool.acall(query="dspy")

A sync function called through `acall` runs in a worker thread, so it never blocks the
runtime loop an agent runs on; an async one is awaited.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import typing
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import pydantic

from . import _runtime, callbacks
from .errors import ConfigurationError
from .records import ToolSpec
from .signatures import format_validation_error

__all__ = ["Tool"]

# The tool names every provider takes (OpenAI's and Anthropic's rule).
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Tool:
    """A callable tool. `name`, `desc` and `args` (each argument's JSON schema) are read from
    `func` unless given; `arg_desc` adds a description to named arguments."""

    def __init__(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        desc: str | None = None,
        args: Mapping[str, Any] | None = None,
        arg_types: Mapping[str, Any] | None = None,
        arg_desc: Mapping[str, str] | None = None,
    ) -> None:
        if not callable(func):
            raise ConfigurationError(f"a Tool wraps a callable, not {type(func).__name__}")
        target = func if inspect.isfunction(func) or inspect.ismethod(func) else func.__call__  # type: ignore[operator]
        self.func = func
        given = name or getattr(func, "__name__", type(func).__name__)
        if not isinstance(given, str) or not _NAME.fullmatch(given):
            raise ConfigurationError(
                f"tool name {given!r} must be 1 to 64 letters, digits, '_' or '-' "
                "(pass name=... for a lambda)"
            )
        self.name: str = given
        self.desc = desc if desc is not None else inspect.getdoc(func) or ""
        parameters = inspect.signature(target).parameters.values()
        if any(p.kind is p.POSITIONAL_ONLY for p in parameters):
            raise ConfigurationError(
                f"tool {self.name}: positional-only parameters cannot be passed by name"
            )
        self.has_kwargs = any(p.kind is p.VAR_KEYWORD for p in parameters)
        named = [p for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        try:
            hints = typing.get_type_hints(target)
        except Exception as exc:  # NameError and friends from unresolvable annotations
            raise ConfigurationError(
                f"tool {self.name}: cannot read its type hints: {exc}"
            ) from exc
        types = dict(arg_types) if arg_types else {p.name: hints.get(p.name, Any) for p in named}
        self.arg_types = types
        self._model, schema = _arguments_model(self.name, named, types, self.has_kwargs)
        properties = _inline_refs(schema.get("properties", {}), schema.get("$defs", {}))
        for prop in properties.values():
            prop.pop("title", None)
        for arg, text in (arg_desc or {}).items():
            if arg in properties:
                properties[arg]["description"] = text
        self.args: dict[str, Any] = dict(args) if args is not None else properties
        self.arg_desc = dict(arg_desc or {})

    def spec(self) -> ToolSpec:
        """The tool as offered to a provider: an object schema of its arguments."""
        required = [name for name, schema in self.args.items() if "default" not in schema]
        parameters = {"type": "object", "properties": self.args, "required": required}
        return ToolSpec(self.name, self.desc, parameters)

    def format_as_litellm_function_call(self) -> dict[str, Any]:
        """DSPy's name for the OpenAI function-tool form."""
        spec = self.spec()
        function = {"name": spec.name, "description": spec.description}
        return {"type": "function", "function": {**function, "parameters": spec.parameters}}

    def __call__(self, **kwargs: Any) -> Any:
        """Call the tool with checked arguments (ValueError if they do not fit)."""
        with callbacks.observe("tool", self, {"kwargs": kwargs}) as seen:
            result = self.func(**self._checked(kwargs))
            if inspect.isawaitable(result):
                result = _runtime.run(_awaited(result))
            return seen.returned(result)

    async def acall(self, **kwargs: Any) -> Any:
        """Call the tool from async code: an async function is awaited, a sync one runs in a
        worker thread."""
        with callbacks.observe("tool", self, {"kwargs": kwargs}) as seen:
            checked = self._checked(kwargs)
            if inspect.iscoroutinefunction(self.func):
                result = await self.func(**checked)
            else:
                result = await asyncio.to_thread(self.func, **checked)
                if inspect.isawaitable(result):
                    result = await result
            return seen.returned(result)

    def _checked(self, kwargs: Mapping[str, Any]) -> dict[str, Any]:
        try:
            model = self._model.model_validate(dict(kwargs))
        except pydantic.ValidationError as exc:
            raise ValueError(
                f"tool {self.name}: invalid arguments:\n{format_validation_error(exc)}"
            ) from None
        values = {name: getattr(model, name) for name in type(model).model_fields}
        return {**values, **(model.model_extra or {})}

    def __repr__(self) -> str:
        return f"Tool(name={self.name}, desc={self.desc}, args={self.args})"

    def __str__(self) -> str:
        desc = f", whose description is <desc>{self.desc}</desc>." if self.desc else "."
        return f"{self.name}{desc.replace(chr(10), '  ')} It takes arguments {self.args}."


async def _awaited(result: Any) -> Any:
    return await result


def _arguments_model(
    name: str, parameters: list[inspect.Parameter], types: Mapping[str, Any], extra: bool
) -> tuple[type[pydantic.BaseModel], dict[str, Any]]:
    """A pydantic model of the arguments, which checks and converts a call's, and its JSON
    schema, which the model sees."""
    fields: dict[str, Any] = {
        p.name: (types.get(p.name, Any), ... if p.default is p.empty else p.default)
        for p in parameters
    }
    config = pydantic.ConfigDict(extra="allow" if extra else "forbid", protected_namespaces=())
    try:
        with warnings.catch_warnings():
            # An argument named like a BaseModel method (json, copy, schema) is fine here.
            warnings.filterwarnings("ignore", ".*shadows an attribute", UserWarning)
            model = pydantic.create_model(f"{name}_arguments", __config__=config, **fields)
        return model, model.model_json_schema()
    except (pydantic.PydanticSchemaGenerationError, pydantic.PydanticUserError, TypeError) as exc:
        raise ConfigurationError(
            f"tool {name}: an argument type has no JSON schema: {exc}"
        ) from exc


def _inline_refs(node: Any, defs: Mapping[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """`node` with each `$ref` replaced by its definition, as DSPy shows arguments; a
    recursive reference is left as a plain object."""
    if isinstance(node, list):
        return [_inline_refs(item, defs, seen) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = ref.rsplit("/", 1)[-1]
        if target in seen or target not in defs:
            return {"type": "object"}
        return _inline_refs(defs[target], defs, (*seen, target))
    return {key: _inline_refs(value, defs, seen) for key, value in node.items()}
