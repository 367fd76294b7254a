"""Signatures: class and string forms, safe type parsing, input validation, output models."""

import enum
from typing import Any, Literal, Optional

import pydantic
import pytest

from dspy_async.errors import SignatureError
from dspy_async.signatures import (
    InputField,
    OutputField,
    Signature,
    ensure_signature,
    make_signature,
)


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Address(pydantic.BaseModel):
    city: str
    zip_code: str


class Opaque:
    """A plain class: fine as an input, but no JSON schema describes it as an output."""


class EmailClassifier(Signature):
    """Classify an email by intent."""

    email_content: str = InputField(desc="raw email text")
    category: Literal["meeting", "spam", "other"] = OutputField()
    confidence: float = OutputField(ge=0, le=1, desc="how sure")


def test_class_signature_collects_fields_in_order_with_docstring_as_instructions() -> None:
    assert EmailClassifier.instructions == "Classify an email by intent."
    assert list(EmailClassifier.input_fields) == ["email_content"]
    assert list(EmailClassifier.output_fields) == ["category", "confidence"]
    assert EmailClassifier.input_fields["email_content"].desc == "raw email text"
    assert EmailClassifier.output_fields["confidence"].constraints == {"ge": 0, "le": 1}
    assert list(EmailClassifier.fields) == ["email_content", "category", "confidence"]
    assert repr(EmailClassifier) == (
        "EmailClassifier(email_content: str -> "
        "category: Literal['meeting', 'spam', 'other'], confidence: float)"
    )


def test_output_model_enforces_types_and_constraints() -> None:
    model = EmailClassifier.output_model
    assert model.model_validate({"category": "spam", "confidence": 0.5}).confidence == 0.5
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({"category": "spam", "confidence": 1.5})
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({"category": "urgent", "confidence": 0.5})
    schema = model.model_json_schema()
    assert schema["properties"]["confidence"]["description"] == "how sure"
    assert schema["properties"]["confidence"]["maximum"] == 1


def test_subclass_inherits_fields_and_may_add_more() -> None:
    class WithReason(EmailClassifier):
        """Classify, and say why."""

        why: str = OutputField()

    assert list(WithReason.fields) == ["email_content", "category", "confidence", "why"]
    assert WithReason.instructions == "Classify, and say why."


def test_missing_docstring_gets_generated_instructions() -> None:
    class NoDoc(Signature):
        question: str = InputField()
        answer: str = OutputField()

    assert NoDoc.instructions == "Given the fields `question`, produce the fields `answer`."


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("question -> answer", {"question": str, "answer": str}),
        ("text -> score: float, toxic: bool", {"text": str, "score": float, "toxic": bool}),
        ("a: int, b: list[str] -> c: dict[str, int]", {"a": int, "b": list[str]}),
        ("q -> tags: List[str], n: Optional[int]", {"tags": list[str], "n": Optional[int]}),  # noqa: UP045
        ("q -> n: int | None", {"n": Optional[int]}),  # noqa: UP045
        ("q -> label: Literal['a', \"b, c\", 3, True]", {"label": Literal["a", "b, c", 3, True]}),
        ("q -> pair: tuple[int, ...], x: Any", {"pair": tuple[int, ...], "x": Any}),
        ("-> joke", {"joke": str}),
    ],
)
def test_string_signatures_parse_types(spec: str, expected: dict[str, Any]) -> None:
    signature = make_signature(spec)
    for name, annotation in expected.items():
        assert signature.fields[name].annotation == annotation


def test_string_signature_with_custom_types_and_instructions() -> None:
    signature = make_signature(
        "name -> color: Color, address: Optional[Address]",
        "Guess things.",
        custom_types={"Color": Color, "Address": Address},
    )
    assert signature.instructions == "Guess things."
    values = signature.output_model.model_validate(
        {"color": "red", "address": {"city": "Oslo", "zip_code": "0150"}}
    )
    assert values.color is Color.RED  # type: ignore[attr-defined]


def test_signature_call_builds_a_string_signature_like_dspy() -> None:
    signature = Signature("question -> answer")  # type: ignore[call-arg]
    assert list(signature.output_fields) == ["answer"]  # type: ignore[attr-defined]
    with pytest.raises(SignatureError, match="pass it to Predict"):
        EmailClassifier("q -> a")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("question", "exactly once"),
        ("a -> b -> c", "exactly once"),
        ("a -> ", "no output field"),
        ("a -> b: foo", "unknown type 'foo'"),
        ("a -> b: list[str", "bad type"),
        ("a -> b: list[int, str]", "takes 1 argument"),
        ("a -> b: Literal[str]", "Literal values"),
        ("a, a -> b", "repeats field"),
        ("a -> 1b", "not a valid field name"),
        ("a, -> b", "not a valid field name"),
        ("class -> b", "not a valid field name"),
        ("lm -> b", "'lm' cannot name an input"),
        ("config -> b", "'config' cannot name an input"),
        ("a -> usage", "'usage' cannot name an output"),
        ("a -> to_dict", "'to_dict' cannot name an output"),
        ("a -> _private", "cannot name an output"),
        ("a -> model_dump", "cannot name an output"),
    ],
)
def test_malformed_string_signatures_raise_signature_error(spec: str, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        make_signature(spec)


@pytest.mark.parametrize(
    "spec",
    [
        "a -> b: __import__('os').system('echo pwned')",
        "a -> b: str.__class__",
        "a -> b: (lambda: str)()",
        "a -> b: list[open('/etc/passwd')]",
        "a -> b: [str][0]",
    ],
)
def test_type_strings_are_parsed_never_evaluated(spec: str) -> None:
    with pytest.raises(SignatureError):
        make_signature(spec)


def test_fields_may_reuse_names_of_signature_methods() -> None:
    class Tricky(Signature):
        validate_inputs: str = InputField()
        fields: str = InputField()
        instructions: str = OutputField()

    assert list(Tricky.fields) == ["validate_inputs", "fields", "instructions"]
    assert Tricky.validate_inputs({"validate_inputs": "a", "fields": "b"}) == {
        "validate_inputs": "a",
        "fields": "b",
    }
    assert Tricky.instructions.startswith("Given the fields `validate_inputs`")


def test_field_names_that_shadow_basemodel_methods_still_work() -> None:
    signature = make_signature("a -> json: int, schema: str, copy: bool")
    values = signature.output_model.model_validate({"json": 1, "schema": "s", "copy": True})
    assert dict(values) == {"json": 1, "schema": "s", "copy": True}


def test_field_declaration_errors() -> None:
    with pytest.raises(SignatureError, match="InputField\\(\\) or OutputField\\(\\)"):

        class Bare(Signature):
            a: str

    with pytest.raises(SignatureError, match="unknown field option"):
        OutputField(colour="red")

    with pytest.raises(SignatureError, match="unsupported field type"):

        class NotDescribable(Signature):
            a: str = InputField()
            b: Opaque = OutputField()

    with pytest.raises(SignatureError, match="max_digits= does not apply to bool"):

        class BadConstraint(Signature):
            a: str = InputField()
            b: bool = OutputField(max_digits=3)

    with pytest.raises(SignatureError, match="ge= does not apply to str"):

        class StrGe(Signature):
            a: str = InputField(ge=0)
            b: int | None = OutputField(ge=0, le=9)


def test_validate_inputs_names_missing_unknown_and_mistyped_fields() -> None:
    signature = make_signature("question, context: list[str], hint: str | None -> answer")
    assert signature.validate_inputs({"question": "q", "context": ["c"]}) == {
        "question": "q",
        "context": ["c"],
        "hint": None,
    }
    with pytest.raises(SignatureError, match="missing input field\\(s\\): context"):
        signature.validate_inputs({"question": "q"})
    with pytest.raises(SignatureError, match="unknown input field\\(s\\): qestion"):
        signature.validate_inputs({"qestion": "q", "question": "q", "context": []})
    with pytest.raises(SignatureError, match=r"context\.0: Input should be a valid string"):
        signature.validate_inputs({"question": "q", "context": [1]})
    with pytest.raises(SignatureError, match="question: Input should be a valid string"):
        signature.validate_inputs({"question": 3, "context": []})


def test_input_constraints_and_arbitrary_input_types() -> None:
    class Thing:
        pass

    class WithThing(Signature):
        thing: Thing = InputField()
        text: str = InputField(max_length=5)
        out: str = OutputField()

    thing = Thing()
    assert WithThing.validate_inputs({"thing": thing, "text": "short"})["thing"] is thing
    with pytest.raises(SignatureError, match="text: String should have at most 5 characters"):
        WithThing.validate_inputs({"thing": thing, "text": "too long"})
    with pytest.raises(SignatureError, match=r"thing: Input should be an instance of .*Thing"):
        WithThing.validate_inputs({"thing": 1, "text": "x"})


def test_prepend_and_with_instructions() -> None:
    extended = EmailClassifier.prepend("reasoning", OutputField(desc="think"), str)
    assert list(extended.output_fields) == ["reasoning", "category", "confidence"]
    assert extended.instructions == EmailClassifier.instructions
    assert extended.output_fields["reasoning"].desc == "think"
    generated = make_signature("q -> a").prepend("reasoning", OutputField())
    assert generated.instructions == "Given the fields `q`, produce the fields `reasoning`, `a`."
    with pytest.raises(SignatureError, match="already has a field named 'category'"):
        EmailClassifier.prepend("category", OutputField())
    renamed = EmailClassifier.with_instructions("Be brief.")
    assert renamed.instructions == "Be brief."
    assert list(renamed.fields) == list(EmailClassifier.fields)


def test_ensure_signature_accepts_classes_and_strings_only() -> None:
    assert ensure_signature(EmailClassifier) is EmailClassifier
    assert list(ensure_signature("a -> b").fields) == ["a", "b"]
    with pytest.raises(SignatureError, match="subclass Signature"):
        ensure_signature(Signature)
    with pytest.raises(SignatureError, match="not int"):
        ensure_signature(3)  # type: ignore[arg-type]
