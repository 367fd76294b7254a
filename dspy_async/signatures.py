"""Signatures: the typed inputs and outputs of one LM step, and the instructions for it.

A signature is a class whose docstring is the instructions and whose attributes are
`InputField()`s and `OutputField()`s, in order (a field without an annotation is a `str`); a
string such as `"text -> score: float, toxic: bool"`, whose types are parsed (never
evaluated); or a dict of fields. Each signature carries two pydantic models: one validates the
caller's inputs, the other the model's outputs. Signatures are immutable: `append`, `insert`,
`delete`, `with_updated_fields`, `with_instructions`... return new ones, as in DSPy.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import functools
import inspect
import keyword
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, Union

import pydantic
from pydantic import BaseModel, ConfigDict, ValidationError

from . import _checks
from ._type_expressions import TYPE_NAMES, CallerScope, parse_type, split_outside_brackets
from .errors import SignatureError
from .prediction import PREDICTION_API

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
# Field options that are not pydantic constraints.
_OPTIONS = frozenset({"desc", "prefix", "format", "default"})
# Per-call keywords of Predict, so they cannot name an input.
RESERVED_INPUTS = frozenset({"lm", "config"})
# Prediction's own API (usage, completions, ...), so they cannot name an output.
RESERVED_OUTPUTS = PREDICTION_API


class _NoDefault(enum.Enum):
    NO_DEFAULT = "NO_DEFAULT"

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT = _NoDefault.NO_DEFAULT
"""The `default` of a field that has none (None is a default like any other)."""


@dataclass(frozen=True)
class SignatureField:
    """One field of a signature: its name, type, role, description and pydantic constraints.

    `prefix` is DSPy's label for the field, kept in saved state (DSPy 3 does not show it to
    the model either); `format` turns an input's value into the text the model reads;
    `default` is used when the caller (or, for an output, the model) leaves the field out.
    """

    name: str
    annotation: Any
    kind: FieldKind
    desc: str | None = None
    constraints: Mapping[str, Any] = field(default_factory=dict)
    prefix: str | None = None
    format: Callable[[Any], str] | None = None
    default: Any = NO_DEFAULT

    @property
    def optional(self) -> bool:
        """True if the field may be left out: it has a default, or its type admits None."""
        return self.default is not NO_DEFAULT or _admits_none(self.annotation)

    @property
    def type_name(self) -> str:
        """The annotation written the way a user would write it."""
        return _type_name(self.annotation)


@dataclass(frozen=True)
class _Marker:
    """What InputField()/OutputField() put in a class body until the metaclass collects it:
    a field without its name and type."""

    kind: FieldKind
    desc: str | None = None
    constraints: Mapping[str, Any] = field(default_factory=dict)
    prefix: str | None = None
    format: Callable[[Any], str] | None = None
    default: Any = NO_DEFAULT

    def named(self, name: str, annotation: Any) -> SignatureField:
        return SignatureField(
            name,
            annotation,
            self.kind,
            self.desc,
            self.constraints,
            self.prefix,
            self.format,
            self.default,
        )


def InputField(
    *,
    desc: str | None = None,
    prefix: str | None = None,
    format: Callable[[Any], str] | None = None,  # DSPy's name
    default: Any = NO_DEFAULT,
    **constraints: Any,
) -> Any:
    """Declare an input field: `text: str = InputField(desc="raw email", max_length=10_000)`.

    `format` (a function of the value) writes the value for the model; `default` fills it in
    when the caller leaves it out. `description=` is taken for `desc=`, as in DSPy.
    """
    return _marker("input", desc, prefix, format, default, constraints)


def OutputField(
    *,
    desc: str | None = None,
    prefix: str | None = None,
    default: Any = NO_DEFAULT,
    **constraints: Any,
) -> Any:
    """Declare an output field: `score: float = OutputField(ge=0, le=1)`; constraints enforced.

    `default` is the value when the model leaves the field out."""
    return _marker("output", desc, prefix, constraints.pop("format", None), default, constraints)


def _marker(
    kind: FieldKind,
    desc: str | None,
    prefix: str | None,
    format: Any,
    default: Any,
    constraints: dict[str, Any],
) -> _Marker:
    if "description" in constraints:
        described = constraints.pop("description")
        desc = described if desc is None else desc
    for option, value in (("desc", desc), ("prefix", prefix)):
        if value is not None and not isinstance(value, str):
            raise SignatureError(f"{option}= must be a str, not {type(value).__name__}")
    if format is not None:
        if kind == "output":
            raise SignatureError("format= applies to input fields (it writes the value down)")
        if not callable(format):
            raise SignatureError(f"format= must be a function, not {type(format).__name__}")
    return _Marker(kind, desc, _check_constraints(constraints), prefix, format, default)


def _check_constraints(constraints: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(constraints.keys() - _CONSTRAINTS.keys())
    if unknown:
        raise SignatureError(
            f"unknown field option(s) {', '.join(unknown)}; use "
            f"{', '.join(f'{o}=' for o in sorted(_OPTIONS))} or one of: "
            f"{', '.join(sorted(_CONSTRAINTS))}"
        )
    return dict(constraints)


FieldSpec = Any
"""A value of the dict form: `InputField(...)`, `(type, OutputField(...))`, or a
`SignatureField` (from another signature's `fields`)."""


def make_signature(
    spec: str | Mapping[str, FieldSpec],
    instructions: str | None = None,
    signature_name: str = "StringSignature",
    *,
    custom_types: Mapping[str, Any] | None = None,
) -> type[Signature]:
    """Build a signature from `"inputs -> outputs"`, e.g. `"text -> score: float, toxic: bool"`,
    or from a dict of fields, `{"text": InputField(), "score": (float, OutputField())}`.

    A field without a type is a `str`. Types may use str, int, float, bool, list, dict, tuple,
    Literal, Optional, Union, Any, `X | None`, the names given in `custom_types`, and else the
    types (your enums, pydantic models, `module.Type`) that the calling code sees by those
    names, looked up in its frames as DSPy does. Nothing in the string is evaluated.
    """
    if isinstance(spec, Mapping):
        fields = _dict_fields(spec)
        if not any(f.kind == "output" for f in fields):
            raise SignatureError(f"signature {', '.join(spec) or '{}'} has no output field")
        return _build(signature_name, fields, instructions)
    if not isinstance(spec, str):
        raise SignatureError(
            f"a signature must be a str like 'question -> answer' or a dict of fields, "
            f"not {type(spec).__name__}"
        )
    sides = split_outside_brackets(spec, "->")
    if len(sides) != 2:
        raise SignatureError(f"signature {spec!r} must contain '->' exactly once")
    known = CallerScope({**TYPE_NAMES, **(custom_types or {})}, skip=_PACKAGE)
    fields = []
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
    return _build(signature_name, fields, instructions)


# Frames of this package are skipped when looking up the caller's types.
_PACKAGE = __name__.rpartition(".")[0]


def _dict_fields(spec: Mapping[str, FieldSpec]) -> list[SignatureField]:
    fields = []
    for name, value in spec.items():
        if not isinstance(name, str):
            raise SignatureError(f"field names must be strings, not {name!r}")
        annotation: Any = None
        if isinstance(value, tuple) and len(value) == 2:
            annotation, value = value
        if isinstance(value, SignatureField):
            kept = value.annotation if annotation is None else annotation
            fields.append(replace(value, name=name, annotation=kept))
        elif isinstance(value, _Marker):
            fields.append(value.named(name, str if annotation is None else annotation))
        else:
            raise SignatureError(
                f"field {name!r} must be InputField(...), OutputField(...) or "
                f"(type, OutputField(...)), not {value!r}"
            )
    return fields


def ensure_signature(signature: type[Signature] | str) -> type[Signature]:
    """Accept a Signature class or a string signature; reject anything else clearly."""
    if isinstance(signature, str | Mapping):
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
        namespace[f.name] = _Marker(f.kind, f.desc, f.constraints, f.prefix, f.format, f.default)
    namespace["__annotations__"] = annotations
    return typing.cast(type[Signature], SignatureMeta(name, (Signature,), namespace))


def _own_fields(cls: type, namespace: Mapping[str, Any]) -> Iterator[SignatureField]:
    """The fields a class body declares, in the order it declares them; a field without an
    annotation is a `str`, as in DSPy."""
    own = inspect.get_annotations(cls)
    try:
        hints = typing.get_type_hints(cls, include_extras=True) if own else {}
    except Exception as exc:  # NameError and friends from unresolvable string annotations
        raise SignatureError(
            f"cannot resolve the annotations of {cls.__name__}: {exc} "
            "(define the types it uses at module level)"
        ) from exc
    for name in own:
        if typing.get_origin(hints[name]) is not ClassVar and not isinstance(
            namespace.get(name), _Marker
        ):
            raise SignatureError(
                f"{cls.__name__}.{name} must be declared with InputField() or OutputField()"
            )
    for name, value in namespace.items():
        if isinstance(value, _Marker):
            yield value.named(name, hints.get(name, str))


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
        has_default = f.default is not NO_DEFAULT
        default: Any = f.default if has_default else None if f.optional else ...
        definitions[f.name] = (
            f.annotation if inputs else _enums_by_name(f.annotation),
            pydantic.Field(
                default,
                description=f.desc,
                validate_default=has_default,  # a default of the wrong type fails here
                **f.constraints,
            ),
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
        model.model_validate({})  # defaults are checked now, not at the first call
    except ValidationError as exc:
        defaults = [e for e in exc.errors(include_url=False) if e["type"] != "missing"]
        if defaults:
            raise SignatureError(
                f"{name}: a default does not fit its field:\n{format_validation_error(exc)}"
            ) from None
    except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError) as exc:
        raise SignatureError(f"{name}: unsupported field type or option: {exc}") from exc
    return model


def _enums_by_name(annotation: Any) -> Any:
    """`annotation` with each Enum in it also taking its members' names (`"HIGH"` for
    `Level.HIGH = 3`), as DSPy's parser does: values first, then names."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return typing.Annotated[
            annotation, pydantic.BeforeValidator(functools.partial(_enum_member, annotation))
        ]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return typing.Annotated[(_enums_by_name(args[0]), *annotation.__metadata__)]
    if origin in (Union, types.UnionType):
        return Union[tuple(_enums_by_name(a) for a in args)]  # noqa: UP007
    if origin in (list, set, frozenset, tuple, dict) and args:
        return origin[tuple(a if a is Ellipsis else _enums_by_name(a) for a in args)]
    return annotation


def _enum_member(kind: type[enum.Enum], value: Any) -> Any:
    by_name = isinstance(value, str) and value in kind.__members__
    if by_name and not any(member.value == value for member in kind):
        return kind[value]
    return value


def field_values(model: BaseModel) -> dict[str, Any]:
    """A validated model's fields by name, in order. Not `dict(model)`, which takes a field
    named `keys` for the mapping protocol's method and fails."""
    values = dict(model.__dict__)  # what iterating the model gives, without its generator
    if model.__pydantic_extra__:
        values.update(model.__pydantic_extra__)
    return values


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

    def __call__(
        cls,
        spec: str | Mapping[str, FieldSpec],
        instructions: str | None = None,
        signature_name: str = "StringSignature",
        *,
        custom_types: Mapping[str, Any] | None = None,
    ) -> type[Signature]:
        """`Signature("question -> answer")` (or a dict of fields) builds a signature class,
        as in DSPy."""
        if cls is not Signature:
            raise SignatureError(f"{cls.__name__} is a signature class: pass it to Predict()")
        return make_signature(spec, instructions, signature_name, custom_types=custom_types)

    def __repr__(cls) -> str:
        return f"{cls.__name__}({cls.spec})"

    @property
    def spec(cls) -> str:
        """The fields as a string signature: `"email: str -> category: Literal['a', 'b']"`."""

        def side(fields: Mapping[str, SignatureField]) -> str:
            return ", ".join(f"{f.name}: {f.type_name}" for f in fields.values())

        return f"{side(cls.input_fields)} -> {side(cls.output_fields)}".strip()

    @property
    def signature(cls) -> str:
        """The field names as a string signature, DSPy's form: `"question -> answer"`."""
        return f"{', '.join(cls.input_fields)} -> {', '.join(cls.output_fields)}".strip()

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

    # Derived signatures keep the class's own docstring: generated instructions (None there)
    # are generated again for the new fields.

    @classmethod
    def with_instructions(cls, instructions: str) -> type[Signature]:
        """The same fields with other instructions."""
        return _build(cls.__name__, cls.fields.values(), _instructions(instructions))

    @classmethod
    def append_instructions(cls, instructions: str) -> type[Signature]:
        """The same fields, with `instructions` after the current ones (a blank line between)."""
        return cls.with_instructions(f"{cls.instructions}\n\n{_instructions(instructions)}")

    @classmethod
    def with_updated_fields(cls, name: str, type_: Any = None, **options: Any) -> type[Signature]:
        """The same signature with field `name` changed: its type (`type_`) and any of desc=,
        prefix=, format=, default= and the constraints (which replace the old ones)."""
        old = cls._field(name)
        unknown = sorted(options.keys() - _OPTIONS - _CONSTRAINTS.keys())
        if unknown:
            _check_constraints(dict.fromkeys(unknown))  # raises, naming the options
        marker = _marker(
            old.kind,
            options.pop("desc", old.desc),
            options.pop("prefix", old.prefix),
            options.pop("format", old.format),
            options.pop("default", old.default),
            options or dict(old.constraints),
        )
        updated = marker.named(name, old.annotation if type_ is None else type_)
        fields = [updated if f.name == name else f for f in cls.fields.values()]
        return _build(cls.__name__, fields, cls.__doc__)

    @classmethod
    def insert(cls, index: int, name: str, field: Any, type_: Any = None) -> type[Signature]:
        """A new signature with `field` (an InputField() or OutputField()) named `name` at
        `index` among the inputs or the outputs; a negative index counts from the end, so -1
        appends. The type is `type_`, else `str`."""
        if not isinstance(field, _Marker):
            raise SignatureError(
                f"insert a field made by InputField() or OutputField(), not {field!r}"
            )
        if name in cls.fields:
            raise SignatureError(f"{cls.__name__} already has a field named {name!r}")
        if not isinstance(index, int) or isinstance(index, bool):
            raise SignatureError(f"the index must be an int, not {type(index).__name__}")
        group = list((cls.input_fields if field.kind == "input" else cls.output_fields).values())
        position = index + len(group) + 1 if index < 0 else index
        if not 0 <= position <= len(group):
            raise SignatureError(
                f"index {index} is out of range for the {len(group)} {field.kind} field(s) of "
                f"{cls.__name__} (use {-len(group) - 1} to {len(group)})"
            )
        group.insert(position, field.named(name, str if type_ is None else type_))
        inputs = group if field.kind == "input" else list(cls.input_fields.values())
        outputs = group if field.kind == "output" else list(cls.output_fields.values())
        return _build(cls.__name__, [*inputs, *outputs], cls.__doc__)

    @classmethod
    def prepend(cls, name: str, field: Any, type_: Any = None) -> type[Signature]:
        """`insert` at 0: the first input or output, e.g. ChainOfThought's `reasoning`."""
        return cls.insert(0, name, field, type_)

    @classmethod
    def append(cls, name: str, field: Any, type_: Any = None) -> type[Signature]:
        """`insert` at -1: the last input or output."""
        return cls.insert(-1, name, field, type_)

    @classmethod
    def delete(cls, name: str) -> type[Signature]:
        """A new signature without field `name` (SignatureError if it has none: DSPy ignores
        a name it does not know, which hides a typo)."""
        cls._field(name)
        return _build(cls.__name__, [f for f in cls.fields.values() if f.name != name], cls.__doc__)

    @classmethod
    def equals(cls, other: object) -> bool:
        """Same instructions and the same fields (names, roles, types, descriptions, options),
        whatever the classes' names."""
        return (
            isinstance(other, SignatureMeta)
            and cls.instructions == other.instructions
            and dict(cls.fields) == dict(other.fields)
        )

    @classmethod
    def dump_state(cls) -> dict[str, Any]:
        """What an optimizer may change, as JSON: the instructions, and each field's prefix and
        description (named and typed, so a load can check it fits)."""
        return {
            "instructions": cls.instructions,
            "fields": [
                {
                    "name": f.name,
                    "kind": f.kind,
                    "type": f.type_name,
                    "prefix": f.prefix,
                    "description": f.desc,
                }
                for f in cls.fields.values()
            ],
        }

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> type[Signature]:
        """A new signature with the instructions, prefixes and descriptions of `state` (from
        `dump_state`); SignatureError if its fields are not this signature's."""
        try:
            instructions = state["instructions"]
            saved = {f["name"]: f for f in state["fields"]}
        except (KeyError, TypeError) as exc:
            raise SignatureError(f"not a saved signature state: missing {exc}") from None
        ours = {f.name: f.kind for f in cls.fields.values()}
        theirs = {name: f.get("kind") for name, f in saved.items()}
        if ours != theirs:
            raise SignatureError(
                f"the saved signature has the fields {_roles(theirs)}, but {cls.__name__} has "
                f"{_roles(ours)}: the state is for another program"
            )
        fields = [
            replace(f, prefix=saved[f.name].get("prefix"), desc=saved[f.name].get("description"))
            for f in cls.fields.values()
        ]
        return _build(cls.__name__, fields, _instructions(instructions))

    @classmethod
    def _field(cls, name: str) -> SignatureField:
        try:
            return cls.fields[name]
        except KeyError:
            raise SignatureError(
                f"{cls.__name__} has no field {name!r} (fields: {', '.join(cls.fields)})"
            ) from None


def _instructions(text: object) -> str:
    if not isinstance(text, str):
        raise SignatureError(f"instructions must be a str, not {type(text).__name__}")
    return text


def _roles(fields: Mapping[str, Any]) -> str:
    def side(kind: str) -> str:
        return ", ".join(name for name, k in fields.items() if k == kind)

    return f"({side('input')} -> {side('output')})"


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
