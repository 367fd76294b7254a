"""Signatures: the typed inputs and outputs of one LM step, and the instructions for it.

A signature is a class whose docstring is the instructions and whose annotated attributes are
`InputField()`s and `OutputField()`s, in order; or a string such as
`"text -> score: float, toxic: bool"`, whose types are parsed (never evaluated). Each signature
carries two pydantic models: one validates the caller's inputs, the other the model's outputs.
"""

from __future__ import annotations

import datetime
import decimal
import inspect
import keyword
import types
import typing
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Union

import pydantic
from pydantic import BaseModel, ConfigDict, ValidationError

from . import _checks
from ._type_expressions import TYPE_NAMES, parse_type, split_outside_brackets
from .errors import SignatureError
from .prediction import Prediction

__all__ = [
    "InputField",
    "OutputField",
    "Signature",
    "SignatureField",
    "ensure_signature",
    "field_values",
    "format_validation_error",
    "make_signature",
]

FieldKind = Literal["input", "output"]

# Keywords a field may pass through to pydantic, and the types each one applies to.
_ORDERED = (int, float, decimal.Decimal, datetime.date, datetime.time, datetime.timedelta)
_SIZED = (str, bytes, list, tuple, set, frozenset, dict)
_CONSTRAINTS: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("gt", "ge", "lt", "le", "multiple_of", "allow_inf_nan"), _ORDERED),
    **dict.fromkeys(("min_length", "max_length"), _SIZED),
    "pattern": (str,),
    **dict.fromkeys(("max_digits", "decimal_places"), (decimal.Decimal,)),
}
# Per-call keywords of Predict, so they cannot name an input.
RESERVED_INPUTS = frozenset({"lm", "config"})
# Attributes of Prediction, so they cannot name an output.
RESERVED_OUTPUTS = frozenset(name for name in dir(Prediction) if not name.startswith("_"))


@dataclass(frozen=True)
class SignatureField:
    """One field of a signature: its name, type, role, description and pydantic constraints."""

    name: str
    annotation: Any
    kind: FieldKind
    desc: str | None = None
    constraints: Mapping[str, Any] = field(default_factory=dict)

    @property
    def optional(self) -> bool:
        """True if the type admits None (an optional input may then be left out)."""
        return _admits_none(self.annotation)

    @property
    def type_name(self) -> str:
        """The annotation written the way a user would write it."""
        return _type_name(self.annotation)


@dataclass(frozen=True)
class _Marker:
    """What InputField()/OutputField() put in a class body until the metaclass collects it."""

    kind: FieldKind
    desc: str | None
    constraints: Mapping[str, Any]


def InputField(*, desc: str | None = None, **constraints: Any) -> Any:
    """Declare an input field: `text: str = InputField(desc="raw email", max_length=10_000)`."""
    return _Marker("input", desc, _check_constraints(constraints))


def OutputField(*, desc: str | None = None, **constraints: Any) -> Any:
    """Declare an output field: `score: float = OutputField(ge=0, le=1)`; constraints enforced."""
    return _Marker("output", desc, _check_constraints(constraints))


def _check_constraints(constraints: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(constraints.keys() - _CONSTRAINTS.keys())
    if unknown:
        raise SignatureError(
            f"unknown field option(s) {', '.join(unknown)}; "
            f"use desc= or one of: {', '.join(sorted(_CONSTRAINTS))}"
        )
    return constraints


def make_signature(
    spec: str, instructions: str | None = None, *, types: Mapping[str, Any] | None = None
) -> type[Signature]:
    """Build a signature from `"inputs -> outputs"`, e.g. `"text -> score: float, toxic: bool"`.

    A field without a type is a `str`. Types may use str, int, float, bool, list, dict, tuple,
    Literal, Optional, Union, Any, `X | None`, and the names given in `types` (your enums or
    pydantic models). Nothing in the string is evaluated.
    """
    if not isinstance(spec, str):
        raise SignatureError(f"a string signature must be a str, not {type(spec).__name__}")
    sides = split_outside_brackets(spec, "->")
    if len(sides) != 2:
        raise SignatureError(f"signature {spec!r} must contain '->' exactly once")
    known = {**TYPE_NAMES, **(types or {})}
    fields: list[SignatureField] = []
    kinds: tuple[FieldKind, FieldKind] = ("input", "output")
    for kind, side in zip(kinds, sides, strict=True):
        fields.extend(
            _parse_field(item, kind, known, spec)
            for item in split_outside_brackets(side, ",")
            if side
        )
    if not any(f.kind == "output" for f in fields):
        raise SignatureError(f"signature {spec!r} has no output field")
    names = [f.name for f in fields]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise SignatureError(f"signature {spec!r} repeats field(s) {', '.join(duplicates)}")
    return _build("StringSignature", fields, instructions)


def ensure_signature(signature: type[Signature] | str) -> type[Signature]:
    """Accept a Signature class or a string signature; reject anything else clearly."""
    if isinstance(signature, str):
        return make_signature(signature)
    if isinstance(signature, type) and issubclass(signature, Signature):
        if signature is Signature:
            raise SignatureError("subclass Signature (or pass a string) to describe a step")
        return signature
    raise SignatureError(
        f"expected a Signature subclass or a string like 'question -> answer', "
        f"not {type(signature).__name__}"
    )


def _build(
    name: str, fields: Iterable[SignatureField], instructions: str | None
) -> type[Signature]:
    namespace: dict[str, Any] = {"__doc__": instructions, "__module__": __name__}
    annotations: dict[str, Any] = {}
    for f in fields:
        annotations[f.name] = f.annotation
        namespace[f.name] = _Marker(f.kind, f.desc, f.constraints)
    namespace["__annotations__"] = annotations
    return typing.cast(type[Signature], SignatureMeta(name, (Signature,), namespace))


def _own_fields(cls: type, namespace: Mapping[str, Any]) -> Iterator[SignatureField]:
    own = inspect.get_annotations(cls)
    try:
        hints = typing.get_type_hints(cls, include_extras=True) if own else {}
    except Exception as exc:  # NameError and friends from unresolvable string annotations
        raise SignatureError(
            f"cannot resolve the annotations of {cls.__name__}: {exc} "
            "(define the types it uses at module level)"
        ) from exc
    for name in own:
        hint = hints[name]
        if typing.get_origin(hint) is ClassVar:
            continue
        marker = namespace.get(name)
        if not isinstance(marker, _Marker):
            raise SignatureError(
                f"{cls.__name__}.{name} must be declared with InputField() or OutputField()"
            )
        yield SignatureField(name, hint, marker.kind, marker.desc, marker.constraints)
    for name, value in namespace.items():
        if isinstance(value, _Marker) and name not in own:
            raise SignatureError(
                f"{cls.__name__}.{name} needs a type annotation, e.g. `{name}: str = ...`"
            )


def _check_fields(signature: str, fields: Iterable[SignatureField]) -> None:
    for f in fields:
        reserved = RESERVED_INPUTS if f.kind == "input" else RESERVED_OUTPUTS
        if f.name.startswith("_") or f.name in reserved or f.name in _MODEL_ATTRIBUTES:
            raise SignatureError(
                f"{signature}: {f.name!r} cannot name an {f.kind} field (reserved); rename it"
            )
        # pydantic accepts a constraint that cannot apply and fails at validation instead.
        for key in f.constraints:
            for target in _constrained_types(f.annotation):
                if target is bool or not issubclass(target, _CONSTRAINTS[key]):
                    raise SignatureError(
                        f"{signature}.{f.name}: {key}= does not apply to {f.type_name}"
                    )


def _constrained_types(annotation: Any) -> Iterator[type]:
    """The types a field constraint applies to: Optional and Annotated unwrapped."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from _constrained_types(args[0])
    elif origin in (Union, types.UnionType):
        for arg in args:
            if arg is not type(None):
                yield from _constrained_types(arg)
    else:
        target = origin or annotation
        yield target if isinstance(target, type) else object


def _default_instructions(fields: Mapping[str, SignatureField]) -> str:
    def names(kind: FieldKind) -> str:
        return ", ".join(f"`{f.name}`" for f in fields.values() if f.kind == kind)

    if not names("input"):
        return f"Produce the fields {names('output')}."
    return f"Given the fields {names('input')}, produce the fields {names('output')}."


_MODEL_ATTRIBUTES = frozenset(n for n in dir(BaseModel) if n.startswith("model_"))


def _model(name: str, fields: Iterable[SignatureField], *, inputs: bool) -> type[BaseModel]:
    definitions: dict[str, Any] = {}
    for f in fields:
        # Optional inputs may be left out; optional outputs may be left out by the model.
        default = None if f.optional else ...
        definitions[f.name] = (
            f.annotation,
            pydantic.Field(default, description=f.desc, **f.constraints),
        )
    # NaN and infinity are no answer a model means (json.loads reads them in replies), so an
    # output holding one is invalid and re-asked; a field may allow them with allow_inf_nan.
    config = ConfigDict(
        protected_namespaces=(), arbitrary_types_allowed=inputs, allow_inf_nan=inputs
    )
    try:
        with warnings.catch_warnings():
            # A field named like a deprecated BaseModel method (json, schema, copy) is fine here.
            warnings.filterwarnings("ignore", ".*shadows an attribute", UserWarning)
            model: type[BaseModel] = pydantic.create_model(name, __config__=config, **definitions)
        if not inputs:
            model.model_json_schema()  # outputs must be describable to the model
    except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError) as exc:
        raise SignatureError(f"{name}: unsupported field type or option: {exc}") from exc
    return model


def field_values(model: BaseModel) -> dict[str, Any]:
    """A validated model's fields by name, in order. Not `dict(model)`, which takes a field
    named `keys` for the mapping protocol's method and fails."""
    return dict(iter(model))


def format_validation_error(error: ValidationError, *, limit: int = 200) -> str:
    """One line per problem: `field.path: message (got value)`, values shortened."""
    lines = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "value"
        line = f"{where}: {item['msg']}"
        if item["type"] != "missing":
            got = repr(item.get("input"))
            line += f" (got {got[:limit] + '...' if len(got) > limit else got})"
        lines.append(line)
    return "\n".join(lines)


class SignatureMeta(type):
    """Collects the fields of each Signature subclass and builds its pydantic models."""

    instructions: str
    input_fields: Mapping[str, SignatureField]
    output_fields: Mapping[str, SignatureField]
    input_model: type[BaseModel]
    output_model: type[BaseModel]

    def __new__(
        mcs, name: str, bases: tuple[type, ...], namespace: dict[str, Any]
    ) -> SignatureMeta:
        # Field markers stay out of the class, where they would shadow Signature's methods.
        kept = {k: v for k, v in namespace.items() if not isinstance(v, _Marker)}
        return super().__new__(mcs, name, bases, kept)

    def __init__(cls, name: str, bases: tuple[type, ...], namespace: dict[str, Any]) -> None:
        super().__init__(name, bases, namespace)
        inherited = [
            f
            for base in reversed(cls.__mro__[1:])
            if isinstance(base, SignatureMeta)
            for f in (*base.input_fields.values(), *base.output_fields.values())
        ]
        own = _own_fields(cls, namespace)
        fields = {f.name: f for f in inherited} | {f.name: f for f in own}
        _check_fields(name, fields.values())
        doc = namespace.get("__doc__")
        cls.instructions = inspect.cleandoc(doc) if doc else _default_instructions(fields)
        cls.input_fields = types.MappingProxyType(
            {n: f for n, f in fields.items() if f.kind == "input"}
        )
        cls.output_fields = types.MappingProxyType(
            {n: f for n, f in fields.items() if f.kind == "output"}
        )
        cls.input_model = _model(f"{name}Input", cls.input_fields.values(), inputs=True)
        cls.output_model = _model(f"{name}Output", cls.output_fields.values(), inputs=False)

    def __call__(cls, spec: str, instructions: str | None = None) -> type[Signature]:
        """`Signature("question -> answer")` builds a signature class, as in DSPy."""
        if cls is not Signature:
            raise SignatureError(f"{cls.__name__} is a signature class: pass it to Predict()")
        return make_signature(spec, instructions)

    def __repr__(cls) -> str:
        return f"{cls.__name__}({cls.spec})"

    @property
    def spec(cls) -> str:
        """The fields as a string signature: `"email: str -> category: Literal['a', 'b']"`."""

        def side(fields: Mapping[str, SignatureField]) -> str:
            return ", ".join(f"{f.name}: {f.type_name}" for f in fields.values())

        return f"{side(cls.input_fields)} -> {side(cls.output_fields)}".strip()

    @property
    def fields(cls) -> Mapping[str, SignatureField]:
        """All fields in order: inputs, then outputs."""
        return types.MappingProxyType({**cls.input_fields, **cls.output_fields})


class Signature(metaclass=SignatureMeta):
    """Base class of signatures: subclass it with a docstring (the instructions) and fields such
    as `email: str = InputField(desc="raw email")`, `category: Literal["a", "b"] = OutputField()`.
    """

    @classmethod
    def validate_inputs(cls, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Check the caller's inputs by name and type; return them validated, in field order."""
        missing = [n for n, f in cls.input_fields.items() if n not in inputs and not f.optional]
        unknown = [n for n in inputs if n not in cls.input_fields]
        problems = []
        if missing:
            problems.append(f"missing input field(s): {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown input field(s): {', '.join(unknown)}")
        if problems:
            expected = ", ".join(cls.input_fields) or "none"
            raise SignatureError(f"{cls.__name__}: {'; '.join(problems)} (inputs: {expected})")
        try:
            validated = cls.input_model.model_validate(dict(inputs))
        except ValidationError as exc:
            raise SignatureError(
                f"{cls.__name__}: invalid input:\n{format_validation_error(exc)}"
            ) from None
        values = field_values(validated)
        for name, value in values.items():
            where = _checks.unencodable(value)
            if where is not None:
                raise SignatureError(
                    f"{cls.__name__}: input {name}{where} holds a lone surrogate (half of a "
                    "UTF-16 pair, as text decoded with errors='surrogateescape' can), which "
                    "UTF-8 cannot encode or send"
                )
        return values

    @classmethod
    def with_instructions(cls, instructions: str) -> type[Signature]:
        """The same fields with other instructions."""
        return _build(cls.__name__, cls.fields.values(), instructions)

    @classmethod
    def prepend_output(
        cls, name: str, annotation: Any = str, *, desc: str | None = None
    ) -> type[Signature]:
        """The same signature with one more output placed before the others (e.g. `reasoning`)."""
        if name in cls.fields:
            raise SignatureError(f"{cls.__name__} already has a field named {name!r}")
        added = SignatureField(name, annotation, "output", desc)
        # The class's own docstring: generated instructions are regenerated for the new fields.
        return _build(
            cls.__name__,
            [*cls.input_fields.values(), added, *cls.output_fields.values()],
            cls.__doc__,
        )


def _parse_field(item: str, kind: FieldKind, known: Mapping[str, Any], spec: str) -> SignatureField:
    name, colon, type_text = item.partition(":")
    name = name.strip()
    if not name.isidentifier() or keyword.iskeyword(name):
        raise SignatureError(f"signature {spec!r}: {name or item!r} is not a valid field name")
    if not colon:
        return SignatureField(name, str, kind)
    try:
        annotation = parse_type(type_text, known)
    except (SyntaxError, TypeError, ValueError) as exc:
        raise SignatureError(f"signature {spec!r}: bad type for {name!r}: {exc}") from exc
    return SignatureField(name, annotation, kind)


def _admits_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None):
        return True
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _admits_none(args[0])
    return origin in (Union, types.UnionType) and any(_admits_none(arg) for arg in args)


def _type_name(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is not None:
        return f"{_type_name(origin)}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is None or annotation is type(None):
        return "None"
    if annotation is Ellipsis:
        return "..."
    return str(getattr(annotation, "__name__", annotation))
