"""Values the simulator makes up from JSON schemas validate (or, on purpose, don't)."""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from dspy_async.testing._schema_values import find_prompt_schema, generate_value, invalid_value


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str = Field(min_length=12)
    zip_code: str = Field(max_length=5)


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=1, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Everything(BaseModel):
    name: str
    color: Color
    mood: Literal["happy", "sad"]
    score: float = Field(gt=0, lt=1)
    count: int = Field(ge=10, le=12)
    tenths: int = Field(gt=100, multiple_of=10)
    negative: int = Field(lt=-5)
    tags: list[str] = Field(min_length=3, max_length=4)
    unique: set[int]
    pair: tuple[int, str]
    address: Address
    previous: Address | None
    extra: dict[str, float]
    pet: Annotated[Cat | Dog, Field(discriminator="kind")]
    anything: Any
    when: dt.datetime
    day: dt.date
    ident: uuid.UUID
    maybe: int | str | None = None


class Tree(BaseModel):
    label: str
    children: list[Tree] = []
    parent: Tree | None = None


MODELS: list[type[BaseModel]] = [Everything, Tree, Address, Cat]


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
@pytest.mark.parametrize("seed", ["a", "b", "a longer prompt"])
def test_generated_values_validate(model: type[BaseModel], seed: str) -> None:
    value = generate_value(model.model_json_schema(), seed=seed)
    model.model_validate_json(json.dumps(value))  # as it travels: through JSON
    assert generate_value(model.model_json_schema(), seed=seed) == value


@pytest.mark.parametrize(
    "annotation",
    [
        list[int],
        Annotated[str, Field(min_length=50)],
        Annotated[float, Field(ge=2.5, le=2.5)],
        Literal["only"],
        bool,
        None,
        dict[str, list[Address]],
    ],
)
def test_non_object_roots_validate(annotation: Any) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    adapter.validate_json(json.dumps(generate_value(adapter.json_schema(), seed="x")))


def test_enum_choices_vary_with_the_prompt() -> None:
    schema = Everything.model_json_schema()
    colors = {generate_value(schema, seed=f"prompt {i}")["color"] for i in range(20)}
    assert colors == {"red", "green"}


def test_nullable_and_type_lists() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": ["null", "integer"], "minimum": 3, "maximum": 3},
            "b": {"type": "string", "nullable": True, "format": "email"},
        },
        "required": ["a", "b"],
    }
    assert generate_value(schema, seed="s") == {"a": 3, "b": "user@example.com"}


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_invalid_values_do_not_validate(model: type[BaseModel]) -> None:
    value = invalid_value(model.model_json_schema(), seed="s")
    with pytest.raises(ValidationError):
        model.model_validate_json(json.dumps(value))


def test_invalid_value_of_optional_only_object_has_a_wrong_type() -> None:
    class Loose(BaseModel):
        note: str | None = None

    value = invalid_value(Loose.model_json_schema(), seed="s")
    assert isinstance(value, dict)
    with pytest.raises(ValidationError):
        Loose.model_validate(value)


@pytest.mark.parametrize("annotation", [int, Literal["x", "y"], list[str]])
def test_invalid_non_object_values(annotation: Any) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    with pytest.raises(ValidationError):
        adapter.validate_json(json.dumps(invalid_value(adapter.json_schema(), seed="s")))


def test_prompt_schema_found_in_fenced_block_and_inline() -> None:
    schema = Address.model_json_schema()
    fenced = f"Reply in JSON.\n```json\n{json.dumps(schema, indent=2)}\n```\nThanks {{}}"
    inline = f'Wrapped: {{"name": "Address", "schema": {json.dumps(schema)}}} done'
    assert find_prompt_schema(fenced) == schema
    assert find_prompt_schema(inline) == schema
    assert find_prompt_schema('no schema here {"a": 1}') is None
    assert find_prompt_schema('"properties" but {broken') is None
