"""Example and Prediction as DSPy records: fields, inputs and labels, copies, equality, pickling."""

import copy
import pickle

import pydantic
import pytest

import dspy_async as dspy
from dspy_async.records import Attempt, Usage


class Point(pydantic.BaseModel):
    x: int
    y: int


def test_fields_by_attribute_key_and_get() -> None:
    ex = dspy.Example(question="2+2?", answer="4")
    assert ex.question == ex["question"] == "2+2?"
    assert ex.get("answer") == "4" and ex.get("source", "none") == "none"
    assert "question" in ex and "source" not in ex
    with pytest.raises(AttributeError, match=r"no field 'source' \(fields: question, answer\)"):
        _ = ex.source
    with pytest.raises(KeyError):
        _ = ex["source"]
    ex.source = "web"
    ex["lang"] = "en"
    assert list(ex) == ["question", "answer", "source", "lang"]
    del ex["lang"]
    del ex.source
    assert ex.keys() == ["question", "answer"] and ex.values() == ["2+2?", "4"]
    assert ex.items() == [("question", "2+2?"), ("answer", "4")]


def test_built_from_a_dict_or_an_example_with_overrides() -> None:
    record = {"question": "q", "answer": "a"}
    ex = dspy.Example(record, answer="b")
    assert ex.toDict() == {"question": "q", "answer": "b"}
    assert record == {"question": "q", "answer": "a"}  # the dict was copied
    based = dspy.Example(base=ex.with_inputs("question"), extra=1)
    assert based.inputs().toDict() == {"question": "q"}  # input keys kept from the base
    with pytest.raises(TypeError, match="takes a mapping or an Example, not list"):
        dspy.Example([("a", 1)])  # type: ignore[arg-type]


def test_inputs_and_labels() -> None:
    ex = dspy.Example(question="q", context="c", answer="a").with_inputs("question", "context")
    assert ex.inputs().toDict() == {"question": "q", "context": "c"}
    assert ex.labels().toDict() == {"answer": "a"}
    assert repr(ex.inputs()) == (
        "Example({'question': 'q', 'context': 'c'}) (input_keys={'context', 'question'})"
    )
    with pytest.raises(ValueError, match=r"call example\.with_inputs"):
        dspy.Example(question="q").inputs()
    with pytest.raises(ValueError, match="with_inputs"):
        dspy.Example(question="q").labels()


def test_copies_do_not_share_fields() -> None:
    ex = dspy.Example(question="q", answer="a", source="web").with_inputs("question")
    changed = ex.copy(answer="b")
    assert changed.answer == "b" and ex.answer == "a"
    assert changed.inputs().toDict() == {"question": "q"}
    trimmed = ex.without("source")
    assert trimmed.toDict() == {"question": "q", "answer": "a"} and "source" in ex
    assert trimmed.labels().toDict() == {"answer": "a"}
    with pytest.raises(KeyError):
        ex.without("missing")


def test_dspy_keys_are_bookkeeping() -> None:
    ex = dspy.Example(question="q", dspy_uuid="u", dspy_split="train")
    assert len(ex) == 1
    assert ex.keys() == ["question"]
    assert ex.keys(include_dspy=True) == ["question", "dspy_uuid", "dspy_split"]
    assert "dspy_uuid" not in repr(ex)
    assert ex.toDict()["dspy_uuid"] == "u"


def test_equality_hash_and_to_dict_of_nested_values() -> None:
    a = dspy.Example(q="x", n=1)
    assert a == dspy.Example(q="x", n=1) and a != dspy.Example(q="x", n=2)
    assert a == dspy.Example(q="x", n=1).with_inputs("q")  # by fields, as in DSPy
    assert a != {"q": "x", "n": 1}
    assert len({a, dspy.Example(q="x", n=1)}) == 1
    nested = dspy.Example(
        point=Point(x=1, y=2), inner=[dspy.Example(a=1)], d={"e": dspy.Example(b=2)}
    )
    assert nested.toDict() == {"point": {"x": 1, "y": 2}, "inner": [{"a": 1}], "d": {"e": {"b": 2}}}


def test_pickle_copy_and_deepcopy_keep_fields_and_input_keys() -> None:
    ex = dspy.Example(question="q", answer="a").with_inputs("question")
    for clone in (pickle.loads(pickle.dumps(ex)), copy.copy(ex), copy.deepcopy(ex)):
        assert clone == ex
        assert clone.inputs().toDict() == {"question": "q"}
    deep = copy.deepcopy(dspy.Example(tags=["a"]))
    deep.tags.append("b")


def test_a_prediction_is_an_example_of_outputs() -> None:
    attempts = (Attempt(1, "ok"),)
    pred = dspy.Prediction(answer="4", usage=Usage(3, 4), attempts=attempts)
    assert isinstance(pred, dspy.Example)
    assert pred == dspy.Example(answer="4")
    assert pred.toDict() == pred.to_dict() == {"answer": "4"}
    assert pred.usage.total_tokens == 7 and pred.attempts == attempts
    assert pred.completions is None
    copied = pred.copy(answer="5")
    assert isinstance(copied, dspy.Prediction) and copied.answer == "5"
    assert copied.usage == pred.usage and copied.attempts == attempts
    clone = pickle.loads(pickle.dumps(pred))
    assert clone == pred and clone.usage == pred.usage and clone.attempts == attempts


def test_outputs_named_like_example_methods_are_read_by_attribute() -> None:
    pred = dspy.Prediction(items=["a"], labels="x", copy="ad copy", keys="k")
    assert (pred.items, pred.labels, pred.copy, pred.keys) == (["a"], "x", "ad copy", "k")
    assert pred.toDict() == {"items": ["a"], "labels": "x", "copy": "ad copy", "keys": "k"}
    assert list(pred) == ["items", "labels", "copy", "keys"] and len(pred) == 4
    # An Example keeps DSPy's rule: methods first, fields by key.
    ex = dspy.Example(items=["a"])
    assert ex.items() == [("items", ["a"])] and ex["items"] == ["a"]


def test_completions_by_field_and_by_index() -> None:
    first = dspy.Prediction(answer="a", usage=Usage(1, 1), attempts=[Attempt(1, "ok")])
    second = dspy.Prediction(answer="b", usage=Usage(2, 2), attempts=[Attempt(1, "ok")])
    pred = dspy.Prediction.from_completions([first, second])
    assert pred.answer == "a"
    assert pred.completions is not None and len(pred.completions) == 2
    assert pred.completions.answer == pred.completions["answer"] == ["a", "b"]
    assert pred.completions[1] is second and [c.answer for c in pred.completions] == ["a", "b"]
    assert "answer" in pred.completions and pred.completions.items() == [("answer", ["a", "b"])]
    assert pred.usage == Usage(3, 3)
    assert [a.number for a in pred.attempts] == [1, 2]
    assert repr(pred) == "Prediction(answer='a') (+1 more completions)"
    by_column = dspy.Prediction.from_completions({"answer": ["x", "y"], "why": ["1", "2"]})
    assert by_column.toDict() == {"answer": "x", "why": "1"}
    assert by_column.completions is not None and by_column.completions[1].why == "2"
    with pytest.raises(ValueError, match="one value per completion"):
        dspy.Completions({"answer": ["x"], "why": []})
    with pytest.raises(ValueError, match="at least one completion"):
        dspy.Prediction.from_completions([])
    with pytest.raises(AttributeError, match="no field 'nope'"):
        _ = pred.completions.nope
