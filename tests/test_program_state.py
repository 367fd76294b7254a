"""Walking a program's parts, copying it, and saving and loading its state (JSON, versioned)."""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import dspy_async as dspy
from dspy_async.errors import ConfigurationError, StateError
from dspy_async.state import FORMAT_VERSION
from dspy_async.testing import DummyLM, ProviderSimulator

KEY = "sk-secret-key-never-saved"


class Pipeline(dspy.Module):
    def __init__(self) -> None:
        self.draft = dspy.ChainOfThought("question -> answer")
        self.checks = [dspy.Predict("answer -> ok: bool"), dspy.Predict("answer -> why")]
        self.by_name = {"short": dspy.Predict("text -> summary")}
        self.pair = (dspy.Predict("a -> b"),)
        self.label = "not a module"

    def forward(self, question: str) -> dspy.Prediction:
        answer = self.draft(question=question).answer
        return self.by_name["short"](text=answer)


PATHS = ["draft.predict", "checks[0]", "checks[1]", "by_name['short']", "pair[0]"]


def test_named_predictors_and_parameters_follow_dspy_paths() -> None:
    program = Pipeline()
    assert [name for name, _ in program.named_predictors()] == PATHS
    assert [name for name, _ in program.named_parameters()] == PATHS
    assert program.predictors()[0] is program.draft.predict
    assert program.parameters() == program.predictors()
    single = dspy.Predict("q -> a")
    assert single.named_predictors() == [("self", single)]
    assert [name for name, _ in dspy.ChainOfThought("q -> a").named_predictors()] == ["predict"]


def test_a_shared_predictor_is_listed_once_and_compiled_modules_are_frozen() -> None:
    program = Pipeline()
    program.again = program.checks[0]
    assert [name for name, _ in program.named_predictors()] == PATHS
    program.draft._compiled = True
    assert "draft.predict" not in [name for name, _ in program.named_predictors()]


def test_named_sub_modules_breadth_first_through_containers() -> None:
    program = Pipeline()
    program.nested = {"deep": [{"x": dspy.Predict("p -> q")}]}
    names = [name for name, _ in program.named_sub_modules()]
    assert names == [  # what DSPy 3.4 lists for the same program
        "self",
        "self.draft",
        "self.draft.predict",
        "self.checks[0]",
        "self.checks[1]",
        "self.by_name[short]",
        "self.pair[0]",
        "self.nested[deep][0][x]",
    ]
    cots = list(program.named_sub_modules(dspy.ChainOfThought))
    assert cots == [("self.draft", program.draft)]
    program.draft._compiled = True
    skipped = [name for name, _ in program.named_sub_modules(skip_compiled=True)]
    assert "self.draft" in skipped and "self.draft.predict" not in skipped


def test_set_lm_and_get_lm() -> None:
    program = Pipeline()
    assert program.get_lm() is None  # every predictor falls back to dspy.configure
    lm = DummyLM()
    program.set_lm(lm)
    assert all(p.lm is lm for p in program.predictors()) and program.get_lm() is lm
    program.checks[1].lm = DummyLM()
    with pytest.raises(ConfigurationError, match="several LMs"):
        program.get_lm()
    with pytest.raises(ConfigurationError, match="lm must be an LM object"):
        program.set_lm("openai/gpt-4o-mini")  # type: ignore[arg-type]

    class Empty(dspy.Module):
        def forward(self) -> None:
            return None

    with pytest.raises(ConfigurationError, match="no predictors"):
        Empty().get_lm()


def test_deepcopy_owns_predictors_and_demos_and_shares_lms() -> None:
    lm = DummyLM()
    program = Pipeline()
    program.set_lm(lm)
    program.draft.predict.demos = [dspy.Example(question="q", answer="a")]
    clone = program.deepcopy()
    assert type(clone) is Pipeline and clone is not program
    assert clone.draft.predict is not program.draft.predict
    assert clone.draft.predict.demos == program.draft.predict.demos
    assert clone.draft.predict.demos[0] is not program.draft.predict.demos[0]
    assert all(p.lm is lm for p in clone.predictors())  # one LM: its limits and usage
    clone.draft.predict.demos.append(dspy.Example(question="q2", answer="a2"))
    assert len(program.draft.predict.demos) == 1
    fresh = program.reset_copy()
    assert all(p.demos == [] for p in fresh.predictors())
    assert fresh.get_lm() is lm and len(program.draft.predict.demos) == 1


def test_deepcopy_falls_back_for_attributes_that_refuse(caplog: pytest.LogCaptureFixture) -> None:
    class Refuses:
        def __deepcopy__(self, memo: dict[int, Any]) -> "Refuses":
            raise TypeError("no")

    program = Pipeline()
    program.handle = Refuses()
    clone = program.deepcopy()
    assert clone.draft is not program.draft and isinstance(clone.handle, Refuses)
    assert "attribute 'handle' cannot be deep-copied" in caplog.text


# ---- state ----------------------------------------------------------------------------


def compiled_program() -> Pipeline:
    program = Pipeline()
    program.draft.predict.demos = [
        dspy.Example(question="2+2?", reasoning="add", answer="4", augmented=True),
        dspy.Example(question="Capital of France?", answer="Paris"),
    ]
    program.draft.predict.signature = program.draft.predict.signature.with_instructions(
        "Answer tersely."
    ).with_updated_fields("answer", desc="one word", prefix="Answer:")
    return program


def test_dump_state_is_json_by_predictor_path() -> None:
    state = compiled_program().dump_state()
    assert list(state) == PATHS
    draft = state["draft.predict"]
    assert draft["lm"] is None
    assert draft["signature"]["instructions"] == "Answer tersely."
    assert draft["signature"]["fields"][2] == {
        "name": "answer",
        "kind": "output",
        "type": "str",
        "prefix": "Answer:",
        "description": "one word",
    }
    assert draft["demos"][0] == {
        "question": "2+2?",
        "reasoning": "add",
        "answer": "4",
        "augmented": True,
    }
    assert json.loads(json.dumps(state)) == state


def test_load_state_restores_instructions_fields_and_demos() -> None:
    state = compiled_program().dump_state()
    fresh = Pipeline().load_state(state)
    predict = fresh.draft.predict
    assert predict.signature.instructions == "Answer tersely."
    assert predict.signature.fields["answer"].desc == "one word"
    assert [d.toDict() for d in predict.demos] == state["draft.predict"]["demos"]
    assert all(isinstance(d, dspy.Example) for d in predict.demos)
    assert fresh.dump_state() == state


def test_a_state_that_does_not_fit_changes_nothing() -> None:
    state = compiled_program().dump_state()
    broken = json.loads(json.dumps(state))
    broken["pair[0]"]["signature"]["fields"][0]["name"] = "renamed"
    fresh = Pipeline()
    with pytest.raises(StateError, match=r"predictor 'pair\[0\]': the saved signature has"):
        fresh.load_state(broken)
    assert fresh.draft.predict.demos == []  # checked before anything was set
    del broken["pair[0]"]
    broken["extra"] = state["pair[0]"]
    with pytest.raises(
        StateError,
        match=r"no state for its predictor\(s\) pair\[0\]; state for predictor\(s\) it does "
        r"not have: extra",
    ):
        fresh.load_state(broken)


def test_save_and_load_a_file(tmp_path: Path) -> None:
    path = tmp_path / "program.json"
    program = compiled_program()
    program.save(path)
    document = json.loads(path.read_text())
    assert document["dspy_async_state"] == FORMAT_VERSION
    assert document["dspy_async_version"] == dspy.__version__
    assert document["predictors"] == program.dump_state()
    loaded = Pipeline().load(path)
    assert loaded.dump_state() == program.dump_state()
    single = dspy.Predict("question -> answer")
    single.demos = [dspy.Example(question="q", answer="a")]
    single.save(tmp_path / "single.json")
    assert dspy.Predict("question -> answer").load(tmp_path / "single.json").demos == single.demos


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            {"dspy_async_state": 99, "dspy_async_version": "9.0", "predictors": {}},
            r"state format 99 \(written by dspy_async 9\.0\); this dspy_async .* reads format 1",
        ),
        ({"qa": {}, "metadata": {"dependency_versions": {"dspy": "3.0.4"}}}, "saved by DSPy 3.0.4"),
        ({"something": "else"}, "is not a dspy_async saved state"),
        ([1, 2], "is not a saved state"),
        ({"dspy_async_state": 1}, "has no 'predictors' object"),
    ],
    ids=["newer_format", "dspy", "foreign", "not_an_object", "no_predictors"],
)
def test_files_of_another_format_are_refused_clearly(
    tmp_path: Path, document: Any, message: str
) -> None:
    path = tmp_path / "state.json"
    path.write_text(json.dumps(document))
    with pytest.raises(StateError, match=message):
        dspy.Predict("q -> a").load(path)
    path.write_text("{not json")
    with pytest.raises(StateError, match="not JSON"):
        dspy.Predict("q -> a").load(path)


def test_what_save_refuses(tmp_path: Path) -> None:
    program = dspy.Predict("q -> a")
    with pytest.raises(StateError, match=r"save_program=True .* is not supported"):
        program.save(tmp_path / "dir", save_program=True)
    with pytest.raises(StateError, match=r"path ending in \.json"):
        program.save(tmp_path / "state.pkl")
    program.demos = [dspy.Example(q=object(), a="x")]
    with pytest.raises(StateError, match=r"demos\[0\] holds a value JSON cannot hold"):
        program.save(tmp_path / "state.json")
    assert not (tmp_path / "state.json").exists()


# ---- LMs in the state -----------------------------------------------------------------


def test_an_lm_is_saved_without_its_key_and_shared_again_on_load(
    tmp_path: Path, provider_simulator: ProviderSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = dspy.LM(
        "openai/m",
        api_base=provider_simulator.api_base("openai"),
        api_key=KEY,
        temperature=0.2,
        max_concurrency=3,
    )
    program = Pipeline()
    program.set_lm(lm)
    path = tmp_path / "program.json"
    program.save(path)
    text = path.read_text()
    assert KEY not in text
    saved = json.loads(text)["predictors"]["pair[0]"]["lm"]
    assert saved["model"] == "openai/m" and saved["params"] == {"temperature": 0.2}
    assert saved["api_base"] == provider_simulator.api_base("openai")

    with pytest.raises(StateError, match=r"sends requests to http://127\.0\.0\.1.*allow_unsafe"):
        Pipeline().load(path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    loaded = Pipeline().load(path, allow_unsafe_lm_state=True)
    restored = loaded.get_lm()  # one LM again, for every predictor
    assert isinstance(restored, dspy.LM) and restored is not lm
    assert (restored.params, restored.max_concurrency) == ({"temperature": 0.2}, 3)
    provider_simulator.respond(output={"b": "done"})
    assert loaded.pair[0](a="x").b == "done"
    (request,) = provider_simulator.requests
    assert request.body["temperature"] == 0.2
    assert request.headers["authorization"] == "Bearer ***"  # a key was sent, not shown


def test_an_lm_of_the_providers_own_host_loads_without_the_flag(tmp_path: Path) -> None:
    program = dspy.Predict("q -> a", lm=dspy.LM("anthropic/claude-x", api_key=KEY))
    program.save(tmp_path / "state.json")
    loaded = dspy.Predict("q -> a").load(tmp_path / "state.json")
    assert isinstance(loaded.lm, dspy.LM) and loaded.lm.model == "claude-x"


def test_test_doubles_and_own_http_clients_are_not_saved_as_lms(tmp_path: Path) -> None:
    import httpx

    assert dspy.Predict("q -> a", lm=DummyLM()).dump_state()["lm"] is None
    client = httpx.AsyncClient()
    try:
        own = dspy.LM("openai/m", api_base="http://127.0.0.1:9/v1", http_client=client)
        with pytest.raises(StateError, match="own http_client"):
            dspy.Predict("q -> a", lm=own).save(tmp_path / "state.json")
    finally:
        asyncio.run(client.aclose())


# ---- LMs without credentials ----------------------------------------------------------


def test_an_lm_is_built_without_a_key_and_refuses_its_first_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    lm = dspy.LM("openai/gpt-4o-mini")  # at import time, in a settings module, say
    assert lm.missing_key is not None and "OPENAI_API_KEY" in lm.missing_key
    qa = dspy.Predict("question -> answer", lm=lm)
    with pytest.raises(ConfigurationError, match="set OPENAI_API_KEY in the environment") as caught:
        qa(question="q")
    assert not isinstance(caught.value, dspy.LMError)  # refused before any attempt
    assert lm.usage.total_tokens == 0
    keyed = dspy.LM("openai/gpt-4o-mini", api_key=KEY)
    assert keyed.missing_key is None and KEY not in repr(keyed)
    local = dspy.LM("openai/local", api_base="http://127.0.0.1:9/v1")
    assert local.missing_key is None  # local OpenAI-compatible servers need no key


# ---- a fresh process ------------------------------------------------------------------


@pytest.mark.slow
def test_a_state_loaded_in_a_fresh_process_gives_the_same_answers(
    tmp_path: Path, provider_simulator: ProviderSimulator
) -> None:
    """The saved demos and instructions reach the prompt unchanged in another interpreter."""
    program = compiled_program()
    lm = dspy.LM("openai/m", api_base=provider_simulator.api_base("openai"), api_key="k")
    lm.supports_native_structured = False
    path = tmp_path / "program.json"
    program.save(path)
    provider_simulator.respond(output={"reasoning": "r", "answer": "same"})
    with dspy.context(lm=lm):
        here = program.draft(question="What is 6*7?")
    script = textwrap.dedent(
        f"""
        import json, sys
        import dspy_async as dspy
        sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
        from tests.test_program_state import Pipeline
        program = Pipeline().load({str(path)!r})
        lm = dspy.LM("openai/m", api_base={provider_simulator.api_base("openai")!r}, api_key="k")
        lm.supports_native_structured = False
        with dspy.context(lm=lm):
            print(json.dumps(program.draft(question="What is 6*7?").toDict()))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == here.toDict() == {"reasoning": "r", "answer": "same"}
    first, second = provider_simulator.requests
    assert first.body["messages"] == second.body["messages"]
    assert "Answer tersely." in first.body["messages"][0]["content"]
