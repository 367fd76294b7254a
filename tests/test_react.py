"""Tool and ReAct: tools described from their functions, native tool calling on OpenAI and
Anthropic (scripted tool calls in the simulator), the prompt-JSON step elsewhere, and the
loop's ends (finish, max_iters, a tool error, an invalid tool, a server that ignores tools)."""

import asyncio
import json
from typing import Any

import httpx
import pydantic
import pytest

import dspy_async as dspy
from dspy_async.providers import anthropic, get_provider, openai
from dspy_async.testing import DummyLM, ProviderSimulator

# Distinct texts in each request kind, for the simulator's `match`.
EXTRACT = "Think step by step"  # only the extract step (a ChainOfThought) asks for reasoning
AFTER_ADD = "observation_0: 5"


class Where(pydantic.BaseModel):
    city: str


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def weather(where: Where, days: int = 1) -> str:
    """The weather forecast."""
    return f"sunny in {where.city} for {days} day(s)"


def lm_for(sim: ProviderSimulator, provider: str) -> dspy.LM:
    return dspy.LM(f"{provider}/test-model", api_base=sim.api_base(provider), api_key="k")


# -- Tool ---------------------------------------------------------------------------------------


def test_a_tool_is_described_by_its_function() -> None:
    tool = dspy.Tool(weather)
    assert (tool.name, tool.desc) == ("weather", "The weather forecast.")
    assert tool.args == {
        "where": {
            "properties": {"city": {"title": "City", "type": "string"}},
            "required": ["city"],
            "type": "object",
        },
        "days": {"default": 1, "type": "integer"},
    }
    spec = tool.spec()
    assert spec.parameters["required"] == ["where"]
    assert tool.format_as_litellm_function_call()["function"]["name"] == "weather"
    assert "whose description is <desc>The weather forecast.</desc>" in str(tool)


def test_a_tool_checks_and_converts_its_arguments() -> None:
    tool = dspy.Tool(weather)
    assert tool(where={"city": "Oslo"}, days=2) == "sunny in Oslo for 2 day(s)"
    with pytest.raises(ValueError, match=r"where\.city"):
        tool(where={})
    with pytest.raises(ValueError, match="Extra inputs"):
        tool(where={"city": "Oslo"}, hours=3)


def test_tool_options_and_refusals() -> None:
    tool = dspy.Tool(add, name="plus", desc="Sum.", arg_desc={"a": "the first"})
    assert (tool.name, tool.desc, tool.args["a"]["description"]) == ("plus", "Sum.", "the first")
    with pytest.raises(dspy.ConfigurationError, match="pass name="):
        dspy.Tool(lambda: 1)
    with pytest.raises(dspy.ConfigurationError, match="positional-only"):
        dspy.Tool(lambda a, /: a, name="f")

    def anything(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    assert dspy.Tool(anything)(x=1) == {"x": 1}


async def test_async_and_sync_tools_from_async_code() -> None:
    async def slow_add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    assert await dspy.Tool(slow_add).acall(a=1, b=2) == 3
    assert await dspy.Tool(add).acall(a=2, b=2) == 4  # in a worker thread
    assert dspy.Tool(slow_add)(a=3, b=3) == 6  # run to completion on the runtime loop


# -- ReAct: native tool calls -----------------------------------------------------------------


def script_add_then_finish(sim: ProviderSimulator) -> None:
    sim.respond(EXTRACT, output={"reasoning": "2 and 3 make 5", "answer": 5})
    sim.respond(AFTER_ADD, tool_calls=[{"name": "finish", "args": {}}])
    sim.respond(tool_calls=[{"name": "add", "args": {"a": 2, "b": 3}}], output="I will add.")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_native_tool_calls(provider_simulator: ProviderSimulator, provider: str) -> None:
    script_add_then_finish(provider_simulator)
    agent = dspy.ReAct("question -> answer: int", tools=[add], max_iters=5)
    with dspy.context(lm=lm_for(provider_simulator, provider)):
        result = agent(question="What is 2 + 3?")
    assert result.answer == 5
    assert result.reasoning == "2 and 3 make 5"
    assert result.trajectory == {
        "thought_0": "I will add.",
        "tool_name_0": "add",
        "tool_args_0": {"a": 2, "b": 3},
        "observation_0": 5,
        "thought_1": "",
        "tool_name_1": "finish",
        "tool_args_1": {},
        "observation_1": "Completed.",
    }
    first, second, extract = (r.body for r in provider_simulator.requests)
    names = (
        [t["function"]["name"] for t in first["tools"]]
        if provider == "openai"
        else [t["name"] for t in first["tools"]]
    )
    assert names == ["add", "finish"]
    forced = {"openai": "required", "anthropic": {"type": "any", "disable_parallel_tool_use": True}}
    assert first["tool_choice"] == second["tool_choice"] == forced[provider]
    assert "observation_0: 5" in json.dumps(second)  # the trajectory is in the prompt
    assert "tools" not in extract or extract["tool_choice"].get("type") == "tool"
    assert result.usage.total_tokens == sum(
        r.prompt_tokens + r.completion_tokens for r in provider_simulator.requests
    )
    assert [a.number for a in result.attempts] == [1, 2, 3]


def test_a_tool_error_is_an_observation(provider_simulator: ProviderSimulator) -> None:
    def fail(x: int) -> int:
        raise RuntimeError("disk on fire")

    provider_simulator.respond(EXTRACT, output={"reasoning": "r", "answer": "gave up"})
    provider_simulator.respond("observation_0", tool_calls=[{"name": "finish", "args": {}}])
    provider_simulator.respond(tool_calls=[{"name": "fail", "args": {"x": 1}}])
    agent = dspy.ReAct("question -> answer", tools=[fail])
    with dspy.context(lm=lm_for(provider_simulator, "openai")):
        result = agent(question="q")
    assert result.trajectory["observation_0"] == (
        "Execution error in fail: RuntimeError: disk on fire"
    )
    assert result.answer == "gave up"


def test_max_iters_ends_the_loop(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond(EXTRACT, output={"reasoning": "r", "answer": 9})
    provider_simulator.respond(tool_calls=[{"name": "add", "args": {"a": 1, "b": 1}}])
    agent = dspy.ReAct("question -> answer: int", tools=[add], max_iters=3)
    with dspy.context(lm=lm_for(provider_simulator, "anthropic")):
        result = agent(question="q")
        assert len(result.trajectory) == 12  # three tool calls of four keys
        result = agent(question="q", max_iters=1)  # per call, as in DSPy
        assert len(result.trajectory) == 4


def test_calling_a_tool_that_is_not_offered_ends_the_trajectory(
    provider_simulator: ProviderSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    provider_simulator.respond(EXTRACT, output={"reasoning": "r", "answer": 0})
    provider_simulator.respond(tool_calls=[{"name": "rm_rf", "args": {}}])
    agent = dspy.ReAct("question -> answer: int", tools=[add])
    with dspy.context(lm=lm_for(provider_simulator, "openai")):
        result = agent(question="q")
    assert result.trajectory == {} and result.answer == 0
    assert "failed to select a valid tool" in caplog.text


def test_a_server_that_ignores_tools_is_asked_through_the_prompt(
    provider_simulator: ProviderSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    # An OpenAI-compatible server that ignores `tools` answers in prose; the step is asked
    # again through the prompt, and so is every later step on that LM.
    provider_simulator.respond(EXTRACT, output={"reasoning": "r", "answer": 5})
    provider_simulator.respond(
        AFTER_ADD,
        output={"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
    )
    provider_simulator.respond("tools", output="I cannot call tools.", times=1)
    provider_simulator.respond(
        output={"next_thought": "add", "next_tool_name": "add", "next_tool_args": {"a": 2, "b": 3}}
    )
    lm = lm_for(provider_simulator, "openai")
    agent = dspy.ReAct("question -> answer: int", tools=[add])
    with dspy.context(lm=lm):
        result = agent(question="What is 2 + 3?")
    assert result.answer == 5
    assert result.trajectory["thought_0"] == "add"
    bodies = [r.body for r in provider_simulator.requests]
    assert "tools" in bodies[0] and all("tools" not in body for body in bodies[1:])
    assert "ignored native tools" in caplog.text


# -- ReAct: the prompt-JSON step ---------------------------------------------------------------


def test_the_prompt_step_on_ollama(provider_simulator: ProviderSimulator) -> None:
    provider_simulator.respond(EXTRACT, output={"reasoning": "r", "answer": 5})
    provider_simulator.respond(
        AFTER_ADD,
        output={"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
    )
    provider_simulator.respond(
        output={"next_thought": "add", "next_tool_name": "add", "next_tool_args": {"a": 2, "b": 3}}
    )
    agent = dspy.ReAct("question -> answer: int", tools=[add])
    with dspy.context(lm=lm_for(provider_simulator, "ollama")):
        result = agent(question="What is 2 + 3?")
    assert result.answer == 5
    assert list(result.trajectory.values())[:4] == ["add", "add", {"a": 2, "b": 3}, 5]
    first = provider_simulator.requests[0].body
    assert "tools" not in first
    schema = first["format"]["properties"]["next_tool_name"]
    assert schema["enum"] == ["add", "finish"]  # only the tools are valid names


def test_dspy_names_and_a_dummy_lm() -> None:
    lm = DummyLM(
        [
            {"next_thought": "add", "next_tool_name": "add", "next_tool_args": {"a": 1, "b": 2}},
            {"next_thought": "done", "next_tool_name": "finish", "next_tool_args": {}},
            {"reasoning": "r", "answer": 3},
        ]
    )
    agent = dspy.ReAct("question -> answer: int", tools=[dspy.Tool(add)])
    assert [name for name, _ in agent.named_predictors()] == ["react", "extract.predict"]
    assert set(agent.tools) == {"add", "finish"}
    with dspy.context(lm=lm):
        assert agent(question="1 + 2?").answer == 3
    instructions = agent.react.signature.instructions
    assert "You are an Agent." in instructions and "(1) add, whose description" in instructions


def test_inputs_are_checked_before_any_request() -> None:
    lm = DummyLM()
    agent = dspy.ReAct("question -> answer", tools=[add])
    with dspy.context(lm=lm), pytest.raises(dspy.SignatureError, match="question"):
        agent(query="1 + 2?")
    assert lm.calls == []


def test_react_refuses_duplicate_or_reserved_tool_names() -> None:
    with pytest.raises(dspy.ConfigurationError, match="two tools"):
        dspy.ReAct("q -> a", tools=[add, add])
    with pytest.raises(dspy.ConfigurationError, match="finish"):
        dspy.ReAct("q -> a", tools=[dspy.Tool(add, name="finish")])


def test_a_full_context_window_truncates_the_trajectory(
    provider_simulator: ProviderSimulator,
) -> None:
    # Third step: the prompt "no longer fits" once, so the oldest tool call is dropped.
    provider_simulator.respond(EXTRACT, output={"reasoning": "r", "answer": 4})
    provider_simulator.fault("observation_1", kind="context_window", times=1)
    provider_simulator.respond("observation_1", tool_calls=[{"name": "finish", "args": {}}])
    provider_simulator.respond(tool_calls=[{"name": "add", "args": {"a": 2, "b": 2}}])
    agent = dspy.ReAct("question -> answer: int", tools=[add], max_iters=3)
    with dspy.context(lm=lm_for(provider_simulator, "openai")):
        result = agent(question="q")
    assert result.answer == 4
    assert "thought_0" not in result.trajectory and result.trajectory["tool_name_2"] == "finish"


# -- tool calls on the wire, in the LM and in the cache ------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_lm_responses_carry_tool_calls(
    provider_simulator: ProviderSimulator, provider: str
) -> None:
    provider_simulator.respond(tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}}])
    lm = lm_for(provider_simulator, provider)
    offered = get_provider(provider).tool_params([dspy.Tool(add).spec()])
    assert offered is not None
    response = lm("1 + 2?", **offered)
    ((call),) = response.tool_calls
    assert (call.name, dict(call.args)) == ("add", {"a": 1, "b": 2}) and call.id
    assert response.text == ""
    assert lm.history[-1]["outputs"] == [
        {"text": "", "tool_calls": [{"id": call.id, "name": "add", "args": {"a": 1, "b": 2}}]}
    ]


def test_an_unscripted_forced_tool_gets_arguments_that_fit_its_schema(
    provider_simulator: ProviderSimulator,
) -> None:
    lm = lm_for(provider_simulator, "openai")
    (call,) = lm("weather?", **openai.tool_params([dspy.Tool(weather).spec()])).tool_calls
    assert call.name == "weather" and isinstance(call.args["where"]["city"], str)


def test_tool_calls_survive_a_cache_hit(
    provider_simulator: ProviderSimulator, response_cache: Any
) -> None:
    provider_simulator.respond(tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}}], output="ok")
    lm = lm_for(provider_simulator, "anthropic")
    offered = anthropic.tool_params([dspy.Tool(add).spec()])
    first, second = lm("1 + 2?", **offered), lm("1 + 2?", **offered)
    assert second.cached and len(provider_simulator.requests) == 1
    assert second.tool_calls == first.tool_calls and second.text == first.text == "ok"


def test_the_simulator_scripts_ollama_tool_calls_and_checks_scripts(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.respond(tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}}])
    body = {"model": "m", "stream": False, "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(provider_simulator.ollama_base_url + "/api/chat", json=body).json()
    assert reply["message"]["tool_calls"] == [
        {"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}
    ]
    with pytest.raises(ValueError, match="a tool call is"):
        provider_simulator.respond(tool_calls=[{"name": "add"}])
    with pytest.raises(ValueError, match="needs an output"):
        provider_simulator.respond()
