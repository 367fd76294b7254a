"""DSPy's signature operations: derived signatures, the dict form, field options, caller types."""

import enum
import json
from typing import Any, Literal

import pydantic
import pytest

import dspy_async as dspy
from dspy_async.errors import SignatureError
from dspy_async.testing import DummyLM, ProviderSimulator


class Priority(enum.Enum):
    LOW = "low"
    HIGH = "high"


class Level(enum.IntEnum):
    ONE = 1
    TWO = 2


class Ticket(pydantic.BaseModel):
    title: str
    priority: Priority


class QA(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField(desc="what is asked")
    answer: str = dspy.OutputField()


def test_unannotated_fields_are_strings_in_declaration_order() -> None:
    class Loose(dspy.Signature):
        question = dspy.InputField()
        context: list[str] = dspy.InputField()
        answer = dspy.OutputField(desc="short")

    assert list(Loose.fields) == ["question", "context", "answer"]
    assert Loose.fields["question"].annotation is str
    assert Loose.fields["answer"].annotation is str and Loose.fields["answer"].desc == "short"


def test_signature_string_and_spec() -> None:
    sig = dspy.Signature("question, k: int -> answer: list[str]")
    assert sig.signature == "question, k -> answer"
    assert sig.spec == "question: str, k: int -> answer: list[str]"
    assert dspy.Signature("-> joke").signature == "-> joke"


def test_insert_append_prepend_delete() -> None:
    with_context = QA.prepend("context", dspy.InputField(desc="background"), list[str])
    assert list(with_context.input_fields) == ["context", "question"]
    assert with_context.fields["context"].annotation == list[str]
    assert with_context.instructions == "Answer the question."
    scored = with_context.append("score", dspy.OutputField(ge=0, le=1), float)
    assert list(scored.output_fields) == ["answer", "score"]
    middle = scored.insert(1, "hint", dspy.InputField())
    assert list(middle.input_fields) == ["context", "hint", "question"]
    assert middle.fields["hint"].annotation is str
    assert list(middle.insert(-2, "why", dspy.OutputField()).output_fields) == [
        "answer",
        "why",
        "score",
    ]
    assert list(middle.delete("hint").input_fields) == ["context", "question"]
    assert list(QA.fields) == ["question", "answer"]  # nothing changed in place
    with pytest.raises(SignatureError, match=r"index 5 is out of range .* \(use -3 to 2\)"):
        middle.insert(5, "x", dspy.OutputField())
    with pytest.raises(SignatureError, match="already has a field named 'answer'"):
        QA.append("answer", dspy.OutputField())
    with pytest.raises(
        SignatureError, match=r"QA has no field 'nope' \(fields: question, answer\)"
    ):
        QA.delete("nope")
    with pytest.raises(SignatureError, match="made by InputField"):
        QA.append("x", str)


def test_generated_instructions_follow_the_fields() -> None:
    sig = dspy.Signature("q -> a").append("b", dspy.OutputField())
    assert sig.instructions == "Given the fields `q`, produce the fields `a`, `b`."


def test_with_updated_fields_and_instructions() -> None:
    updated = QA.with_updated_fields("answer", list[str], desc="all answers", prefix="Answers:")
    field = updated.fields["answer"]
    assert (field.annotation, field.desc, field.prefix) == (list[str], "all answers", "Answers:")
    assert QA.fields["answer"].desc is None
    capped = QA.with_updated_fields("question", max_length=5)
    with pytest.raises(SignatureError, match="at most 5 characters"):
        capped.validate_inputs({"question": "too long"})
    with pytest.raises(SignatureError, match="unknown field option"):
        QA.with_updated_fields("answer", colour="red")
    with pytest.raises(SignatureError, match="has no field 'nope'"):
        QA.with_updated_fields("nope", desc="x")
    assert QA.with_instructions("Be brief.").instructions == "Be brief."
    assert QA.append_instructions("Cite.").instructions == "Answer the question.\n\nCite."
    with pytest.raises(SignatureError, match="instructions must be a str"):
        QA.with_instructions(None)  # type: ignore[arg-type]


def test_equals_compares_instructions_and_fields_not_names() -> None:
    same = dspy.Signature(
        {"question": dspy.InputField(desc="what is asked"), "answer": dspy.OutputField()},
        "Answer the question.",
    )
    assert QA.equals(same) and same.equals(QA)
    assert QA is not same
    assert not QA.equals(QA.with_instructions("Other."))
    assert not QA.equals(QA.with_updated_fields("answer", desc="changed"))
    assert not QA.equals(QA.with_updated_fields("answer", int))
    assert not QA.equals(QA.append("extra", dspy.OutputField()))
    assert not QA.equals("question -> answer")


def test_dict_form_with_types_and_fields_of_another_signature() -> None:
    sig = dspy.make_signature(
        {
            "question": dspy.InputField(),
            "count": (int, dspy.OutputField(ge=0)),
            "answer": QA.fields["answer"],
        },
        "Count.",
        "Counter",
    )
    assert sig.__name__ == "Counter" and sig.instructions == "Count."
    assert sig.spec == "question: str -> count: int, answer: str"
    assert sig.fields["count"].constraints == {"ge": 0}
    with pytest.raises(SignatureError, match=r"field 'x' must be InputField\(...\)"):
        dspy.Signature({"x": str})
    with pytest.raises(SignatureError, match="no output field"):
        dspy.Signature({"x": dspy.InputField()})


def test_prefix_format_and_default() -> None:
    class Opts(dspy.Signature):
        items: list[str] = dspy.InputField(format=lambda items: " | ".join(items))
        style: str = dspy.InputField(default="plain", prefix="Style:")
        summary: str = dspy.OutputField()
        tone: Literal["calm", "loud"] = dspy.OutputField(default="calm")

    assert Opts.fields["style"].prefix == "Style:" and Opts.fields["style"].optional
    assert Opts.validate_inputs({"items": ["a"]}) == {"items": ["a"], "style": "plain"}
    assert Opts.output_model.model_validate({"summary": "s"}).tone == "calm"  # type: ignore[attr-defined]
    lm = DummyLM([{"summary": "s"}])
    result = dspy.Predict(Opts, lm=lm)(items=["a", "b"])
    assert result.toDict() == {"summary": "s", "tone": "calm"}
    assert lm.calls[0].messages[-1]["content"].startswith("items: a | b\n\nstyle: plain")
    with pytest.raises(SignatureError, match="format= applies to input fields"):
        dspy.OutputField(format=str)
    with pytest.raises(SignatureError, match="format= must be a function"):
        dspy.InputField(format="upper")
    with pytest.raises(SignatureError, match="prefix= must be a str"):
        dspy.InputField(prefix=3)
    with pytest.raises(SignatureError, match="a default does not fit its field"):
        dspy.Signature({"q": dspy.InputField(), "n": (int, dspy.OutputField(default="many"))})
    assert dspy.InputField(description="via pydantic's name") == dspy.InputField(
        desc="via pydantic's name"
    )


def test_custom_types_and_types_from_the_callers_scope() -> None:
    class Local(pydantic.BaseModel):
        name: str

    explicit = dspy.Signature("t -> p: Priority", custom_types={"Priority": Level})
    assert explicit.fields["p"].annotation is Level  # the given name wins over the scope
    found = dspy.Signature("t -> ticket: Ticket, tags: list[Local], level: Level | None")
    assert found.fields["ticket"].annotation is Ticket
    assert found.fields["tags"].annotation == list[Local]
    predict = dspy.Predict("t -> local: Local")  # through Predict and ensure_signature too
    assert predict.signature.fields["local"].annotation is Local
    assert dspy.make_signature("t -> kind: enum.Enum").fields["kind"].annotation is enum.Enum
    not_a_type = 3
    with pytest.raises(SignatureError, match="unknown type 'not_a_type'"):
        dspy.Signature("t -> x: not_a_type")
    assert not_a_type == 3
    with pytest.raises(SignatureError, match="json is a module, not a type"):
        dspy.Signature("t -> x: json")
    with pytest.raises(SignatureError, match=r"json\.loads does not name a type"):
        dspy.Signature("t -> x: json.loads")
    assert json  # the module is in this scope, as the test needs


@pytest.mark.parametrize("native", [True, False], ids=["native", "prompt_json"])
def test_enum_outputs_match_by_member_name_as_well_as_value(
    provider_simulator: ProviderSimulator, native: bool
) -> None:
    sig = dspy.Signature(
        "t -> priority: Priority, level: Level, many: list[Priority], ticket: Ticket"
    )
    lm = dspy.LM("openai/m", api_base=provider_simulator.api_base("openai"), api_key="k")
    lm.supports_native_structured = native
    provider_simulator.respond(
        output={
            "priority": "HIGH",
            "level": "TWO",
            "many": ["low", "HIGH"],
            "ticket": {"title": "x", "priority": "high"},
        }
    )
    result = dspy.Predict(sig, lm=lm)(t="x")
    assert result.priority is Priority.HIGH and result.level is Level.TWO
    assert result.many == [Priority.LOW, Priority.HIGH]
    assert result.ticket == Ticket(title="x", priority=Priority.HIGH)
    (request,) = provider_simulator.requests
    assert "HIGH" not in json.dumps(request.body)  # the schema still asks for the values


def test_a_value_that_is_also_a_member_name_means_the_value() -> None:
    class Tricky(enum.Enum):
        A = "B"
        B = "A"

    model = dspy.Signature("t -> x: Tricky", custom_types={"Tricky": Tricky}).output_model
    assert model.model_validate({"x": "A"}).x is Tricky.B  # type: ignore[attr-defined]
    with pytest.raises(pydantic.ValidationError):
        model.model_validate({"x": "C"})


def test_dump_and_load_state_of_a_signature() -> None:
    state = QA.dump_state()
    assert state == {
        "instructions": "Answer the question.",
        "fields": [
            {
                "name": "question",
                "kind": "input",
                "type": "str",
                "prefix": None,
                "description": "what is asked",
            },
            {
                "name": "answer",
                "kind": "output",
                "type": "str",
                "prefix": None,
                "description": None,
            },
        ],
    }
    changed: dict[str, Any] = json.loads(json.dumps(state))
    changed["instructions"] = "Answer briefly."
    changed["fields"][1]["description"] = "one word"
    loaded = QA.load_state(changed)
    assert loaded.instructions == "Answer briefly." and loaded.fields["answer"].desc == "one word"
    other = dspy.Signature("question -> reply").dump_state()
    with pytest.raises(SignatureError, match=r"fields \(question -> reply\), but QA has"):
        QA.load_state(other)
