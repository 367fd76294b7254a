"""Adapters: messages, the strict native schema, the prompt-JSON format, parsing, re-asks."""

import enum
import json
from typing import Any, Literal, Optional

import pydantic
import pytest

from dspy_async.adapters import (
    InvalidOutput,
    build_messages,
    extract_json,
    format_value,
    native_output_schema,
    output_json_schema,
    parse_output,
    reask_messages,
    strict_schema,
)
from dspy_async.adapters.json_prompt import describe, example_value
from dspy_async.signatures import InputField, OutputField, Signature, make_signature


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(pydantic.BaseModel):
    """Where someone lives."""

    city: str = pydantic.Field(description="city name")
    zip_code: str | None = None
    title: str = pydantic.Field("home", max_length=10)


class Tree(pydantic.BaseModel):
    name: str
    children: list["Tree"] = []


class Profile(Signature):
    """Extract a profile."""

    bio: str = InputField(desc="free text")
    name: str = OutputField(desc="full name", max_length=40)
    age: int = OutputField(ge=0, le=150)
    color: Color = OutputField()
    nickname: Optional[str] = OutputField()  # noqa: UP045
    address: Address = OutputField(desc="main address")
    tags: list[Literal["a", "b"]] = OutputField(min_length=1)
    tree: Tree = OutputField()


def walk(schema: Any) -> list[dict[str, Any]]:
    """Every dict inside a schema (subschemas and a few data values alike)."""
    found: list[dict[str, Any]] = []
    if isinstance(schema, dict):
        found.append(schema)
        for value in schema.values():
            found += walk(value)
    elif isinstance(schema, list):
        for value in schema:
            found += walk(value)
    return found


def test_messages_put_instructions_and_fields_in_system_and_inputs_in_user() -> None:
    system, user = build_messages(Profile, {"bio": "Ann, 31, likes red"}, json_format=False)
    assert system["role"] == "system"
    assert system["content"].startswith("Extract a profile.\n\nInputs:\n- bio (str): free text")
    assert "- name (str): full name" in system["content"]
    assert "- nickname (str | None)" in system["content"]
    assert "JSON schema" not in system["content"]
    assert user == {"role": "user", "content": "bio: Ann, 31, likes red"}


def test_json_prompt_describes_the_keys_and_ends_with_an_example() -> None:
    system, user = build_messages(Profile, {"bio": "x"}, json_format=True)
    *head, keys = system["content"].split("\n\n")
    assert head == ["Extract a profile.", "Inputs:\n- bio (str): free text"]
    assert keys == (
        "Your reply must be one JSON object with the keys "
        '"name" (full name: text at most 40 characters), '
        '"age" (a whole number at least 0 and at most 150), '
        '"color" (one of "red", "blue"), '
        '"nickname" (text or null), '
        '"address" (main address: an object), '
        '"tags" (a list of one of "a", "b" at least 1 items), '
        '"tree" (an object).'
    )
    assert '"properties"' not in system["content"] + user["content"]  # small models echo it
    inputs, request = user["content"].split("\n\n")
    assert inputs == "bio: x"
    instruction, example = request.splitlines()
    assert instruction == "Answer in JSON, exactly like this example but with your own values:"
    assert list(json.loads(example)) == list(Profile.output_fields)


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "boolean"}, "true or false"),
        (
            {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.5},
            "a number greater than 0 and a multiple of 0.5",
        ),
        ({"const": "x"}, '"x"'),
        (
            {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
            "a list of a whole number at most 3 items",
        ),
        ({"type": "object", "additionalProperties": {"type": "integer"}}, "an object"),
        ({"type": "string", "pattern": "^a"}, "text matching the regex ^a"),
        ({}, "a value"),
    ],
)
def test_describe_puts_a_schema_in_words(schema: dict[str, Any], words: str) -> None:
    assert describe(schema, schema) == words


@pytest.mark.parametrize(
    "spec",
    [
        "q -> answer",
        "q -> n: int, x: float, ok: bool, label: Literal['x', 'y']",
        "q -> items: list[int], maybe: Optional[str], pairs: dict[str, list[float]]",
        "q -> t: tuple[int, str], nested: list[dict[str, bool]]",
    ],
)
def test_the_prompt_example_is_itself_a_valid_reply(spec: str) -> None:
    signature = make_signature(spec)
    schema = output_json_schema(signature)
    parse_output(signature, json.dumps(example_value(schema, schema)))


def test_example_respects_numeric_bounds_and_enums() -> None:
    schema = output_json_schema(Profile)
    example = example_value(schema, schema)
    assert example["age"] == 75
    assert example["color"] == "red"
    assert example["tags"] == ["a"]
    assert example["tree"] == {"name": "...", "children": []}
    assert example["nickname"] == "..."


def test_output_schema_is_compact_inlined_and_keeps_constraints() -> None:
    schema = output_json_schema(Profile)
    assert not any(isinstance(node.get("title"), str) for node in walk(schema))
    address = schema["properties"]["address"]
    assert address["description"] == "main address"
    assert address["properties"]["city"] == {"description": "city name", "type": "string"}
    assert address["properties"]["title"]["maxLength"] == 10  # a field named "title" stays
    assert schema["properties"]["age"] == {"maximum": 150, "minimum": 0, "type": "integer"}
    assert schema["properties"]["color"] == {"enum": ["red", "blue"], "type": "string"}
    assert set(schema["$defs"]) == {"Tree"}  # only recursive models keep a reference


def test_native_schema_is_openai_strict_compatible() -> None:
    native = native_output_schema(Profile)
    assert native is not None
    assert native.name == "Profile"
    schema = native.schema
    for node in walk(schema):
        if node.get("type") == "object":
            assert node["additionalProperties"] is False
            assert node["required"] == list(node["properties"])
        assert "default" not in node
        assert not {"maxLength", "minLength"} & node.keys()
    properties = schema["properties"]
    assert properties["nickname"]["anyOf"] == [{"type": "string"}, {"type": "null"}]
    assert properties["name"]["description"] == "full name (maxLength 40)"
    assert properties["tags"]["minItems"] == 1  # supported by strict mode
    assert properties["age"]["minimum"] == 0  # supported keywords stay
    # Validation still enforces what moved into descriptions.
    with pytest.raises(InvalidOutput, match="name: String should have at most 40 characters"):
        parse_output(Profile, json.dumps({**valid_profile(), "name": "x" * 41}))


def valid_profile() -> dict[str, Any]:
    return {
        "name": "Ann",
        "age": 31,
        "color": "red",
        "nickname": None,
        "address": {"city": "Oslo", "zip_code": None, "title": "home"},
        "tags": ["a"],
        "tree": {"name": "root", "children": [{"name": "leaf", "children": []}]},
    }


@pytest.mark.parametrize(
    "spec", ["q -> d: dict[str, int]", "q -> x: Any", "q -> t: tuple[int, str]"]
)
def test_schemas_strict_mode_cannot_express_are_sent_natively_without_strict(spec: str) -> None:
    schema = native_output_schema(make_signature(spec))
    assert schema.strict is False
    assert list(schema.schema["properties"]) == [spec.split(" -> ")[1].split(":")[0]]


def test_strict_schema_rewrites_const_and_oneof() -> None:
    schema = {
        "type": "object",
        "properties": {
            "kind": {"const": "cat"},
            "pet": {"oneOf": [{"type": "string"}, {"type": "integer"}], "discriminator": {}},
        },
    }
    assert strict_schema(schema) == {
        "type": "object",
        "properties": {
            "kind": {"enum": ["cat"]},
            "pet": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
        "additionalProperties": False,
        "required": ["kind", "pet"],
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  {"a": 1}\n', {"a": 1}),
        ('Sure!\n```json\n{"a": 2}\n```\nDone.', {"a": 2}),
        ('```\n{"a": 3}\n```', {"a": 3}),
        ('Here it is: {"a": {"b": [1, "}"]}} and then {"c": 1}', {"a": {"b": [1, "}"]}}),
        ('[1, 2] then {"x": 1}', {"x": 1}),
        ('{not json} {"ok": true}', {"ok": True}),
    ],
)
def test_extract_json_finds_the_first_object(text: str, expected: dict[str, Any]) -> None:
    assert extract_json(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Paris", "no JSON object"),
        ("[1, 2]", "no JSON object"),
        ('{"a": 1,', "not valid JSON"),
        ("", "no JSON object"),
    ],
)
def test_extract_json_says_why_nothing_was_found(text: str, message: str) -> None:
    with pytest.raises(InvalidOutput, match=message):
        extract_json(text)


def test_parse_output_types_values_and_reports_each_problem() -> None:
    values = parse_output(Profile, json.dumps(valid_profile()))
    assert values["color"] is Color.RED
    assert isinstance(values["address"], Address)
    assert values["tree"].children[0].name == "leaf"
    bad = {**valid_profile(), "color": "green", "age": -1}
    del bad["tags"]
    with pytest.raises(InvalidOutput) as caught:
        parse_output(Profile, json.dumps(bad))
    assert str(caught.value).splitlines() == [
        "age: Input should be greater than or equal to 0 (got -1)",
        "color: Input should be 'red' or 'blue' (got 'green')",
        "tags: Field required",
    ]


def test_parse_output_ignores_extra_keys_and_accepts_lax_values() -> None:
    signature = make_signature("q -> n: int, ok: bool, x: float")
    values = parse_output(signature, '{"n": "3", "ok": "true", "x": 1, "extra": 0}')
    assert values == {"n": 3, "ok": True, "x": 1.0}


def test_reask_quotes_the_reply_and_the_error() -> None:
    assistant, user = reask_messages('{"a": 1}', "b: Field required")
    assert assistant == {"role": "assistant", "content": '{"a": 1}'}
    assert user["role"] == "user"
    assert "b: Field required" in user["content"]
    assert user["content"].endswith(
        "Write a corrected JSON object. Reply with the JSON object only."
    )
    empty, _ = reask_messages("  ", "no JSON object")
    assert empty["content"] == "(empty reply)"  # providers reject empty assistant turns


def test_format_value_sends_strings_as_is_and_the_rest_as_json() -> None:
    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    assert format_value("line one\nline two") == "line one\nline two"
    assert format_value(["a", 1]) == '["a",1]'
    assert format_value(Color.BLUE) == '"blue"'
    assert format_value(Address(city="Oslo")) == ('{"city":"Oslo","zip_code":null,"title":"home"}')
    assert format_value(Opaque()) == '"opaque!"'
