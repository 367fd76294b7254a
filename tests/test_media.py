"""History and Image inputs: the turns and image parts they become, and each provider's wire
format for images, against the simulator (which refuses the formats a provider refuses)."""

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

import dspy_async as dspy
from dspy_async.testing import DummyLM, ProviderSimulator

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
PROVIDERS = ["openai", "anthropic", "ollama"]


class Chat(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    history: dspy.History = dspy.InputField()
    answer: str = dspy.OutputField()


class Describe(dspy.Signature):
    """Describe the picture."""

    picture: dspy.Image = dspy.InputField()
    detail: str = dspy.InputField()
    caption: str = dspy.OutputField()


def lm_for(sim: ProviderSimulator, provider: str) -> dspy.LM:
    return dspy.LM(f"{provider}/test-model", api_base=sim.api_base(provider), api_key="k")


# -- History -------------------------------------------------------------------------------


def test_history_turns_come_after_the_demos_and_before_the_question() -> None:
    lm = DummyLM([{"answer": "Berlin"}])
    chat = dspy.Predict(Chat, lm=lm)
    chat.demos = [dspy.Example(question="1+1?", answer="2")]
    history = dspy.History(
        messages=[
            {"question": "Capital of France?", "answer": "Paris"},
            {"question": "And of Italy?"},  # no outputs: a user turn only
            {"answer": "Rome"},  # no inputs: an assistant turn only
        ]
    )
    assert chat(question="And of Germany?", history=history).answer == "Berlin"
    messages = lm.calls[0].messages
    assert [m["role"] for m in messages] == [
        "system",
        *("user", "assistant"),  # the demo
        *("user", "assistant", "user", "assistant"),  # the history
        "user",
    ]
    assert messages[3]["content"] == "question: Capital of France?"
    assert messages[4]["content"] == '{"answer":"Paris"}'
    assert messages[5]["content"] == "question: And of Italy?"
    assert messages[6]["content"] == '{"answer":"Rome"}'
    assert "history" not in messages[-1]["content"]
    assert messages[-1]["content"].startswith("question: And of Germany?")


def test_an_empty_or_missing_optional_history_adds_no_turns() -> None:
    class Optional(dspy.Signature):
        question: str = dspy.InputField()
        history: dspy.History | None = dspy.InputField()
        answer: str = dspy.OutputField()

    lm = DummyLM([{"answer": "a"}, {"answer": "b"}])
    step = dspy.Predict(Optional, lm=lm)
    step(question="q")
    step(question="q", history=dspy.History(messages=[]))
    assert [len(call.messages) for call in lm.calls] == [2, 2]


def test_history_is_checked_as_an_input() -> None:
    with pytest.raises(dspy.SignatureError, match="history"):
        dspy.Predict(Chat, lm=DummyLM())(question="q", history=[{"question": "x"}])
    with pytest.raises(ValueError):
        dspy.History(messages=[], extra=1)


# -- Image: construction ----------------------------------------------------------------------


def test_image_sources() -> None:
    assert dspy.Image(PNG).url == PNG_URL
    assert dspy.Image(PNG_URL).url == PNG_URL
    assert dspy.Image("https://example.com/cat.png").url == "https://example.com/cat.png"
    assert dspy.Image({"url": PNG_URL}) == dspy.Image(url=PNG_URL)
    assert "base64 characters" in repr(dspy.Image(PNG))  # the data is never printed whole
    with pytest.raises(ValueError, match="from_path"):
        dspy.Image("cat.png")  # a file is read only when asked
    with pytest.raises(ValueError, match="not a PNG"):
        dspy.Image(b"plain text")


def test_image_from_path(tmp_path: Path) -> None:
    path = tmp_path / "pixel.png"
    path.write_bytes(PNG)
    assert dspy.Image.from_path(path).url == PNG_URL
    odd = tmp_path / "pixel.data"  # no image type in the name: the bytes tell
    odd.write_bytes(PNG)
    assert dspy.Image.from_path(odd).url == PNG_URL


def test_an_image_field_takes_any_source_and_refuses_others_before_a_request() -> None:
    lm = DummyLM([{"caption": "a pixel"}])
    describe = dspy.Predict(Describe, lm=lm)
    assert describe(picture=PNG, detail="short").caption == "a pixel"
    with pytest.raises(dspy.SignatureError, match="picture"):
        describe(picture="not a url", detail="short")
    assert len(lm.calls) == 1


def test_images_become_parts_between_the_texts() -> None:
    lm = DummyLM([{"caption": "two pixels"}])

    class Compare(dspy.Signature):
        before: list[dspy.Image] = dspy.InputField()
        question: str = dspy.InputField()
        caption: str = dspy.OutputField()

    dspy.Predict(Compare, lm=lm)(before=[PNG, "https://example.com/b.png"], question="same?")
    parts = lm.calls[0].messages[-1]["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "image_url", "text"]
    assert parts[0]["text"] == "before:"
    assert parts[1]["image_url"]["url"] == PNG_URL
    assert parts[2]["image_url"]["url"] == "https://example.com/b.png"
    assert parts[3]["text"].startswith("question: same?")


# -- Image: on the wire -----------------------------------------------------------------------


def _image_of(body: dict[str, Any], provider: str) -> Any:
    user = body["messages"][-1]
    if provider == "ollama":
        return user["images"]
    return [part for part in user["content"] if part["type"] in ("image", "image_url")]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_each_provider_gets_images_in_its_own_format(
    provider_simulator: ProviderSimulator, provider: str
) -> None:
    provider_simulator.respond(output={"caption": "a pixel"})
    describe = dspy.Predict(Describe, lm=lm_for(provider_simulator, provider))
    assert describe(picture=PNG, detail="short").caption == "a pixel"
    (request,) = provider_simulator.requests
    assert request.outcome == "ok"
    encoded = base64.b64encode(PNG).decode()
    expected = {
        "openai": [{"type": "image_url", "image_url": {"url": PNG_URL}}],
        "anthropic": [
            {
                "type": "image",
                "source": {"type": "base64", "media_type": "image/png", "data": encoded},
            }
        ],
        "ollama": [encoded],
    }[provider]
    assert _image_of(request.body, provider) == expected
    assert "detail: short" in request.text  # the text parts still arrive


def test_anthropic_gets_a_remote_image_as_a_url_source(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.respond(output={"caption": "a cat"})
    describe = dspy.Predict(Describe, lm=lm_for(provider_simulator, "anthropic"))
    describe(picture="https://example.com/cat.png", detail="short")
    (image,) = _image_of(provider_simulator.requests[0].body, "anthropic")
    assert image == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.png"},
    }


def test_ollama_refuses_a_remote_image_before_any_request(
    provider_simulator: ProviderSimulator,
) -> None:
    describe = dspy.Predict(Describe, lm=lm_for(provider_simulator, "ollama"))
    with pytest.raises(dspy.ConfigurationError, match="ollama takes images as data"):
        describe(picture="https://example.com/cat.png", detail="short")
    assert provider_simulator.requests == []


@pytest.mark.parametrize(
    ("provider", "message", "error"),
    [
        # OpenAI's content parts sent as they are to Anthropic and Ollama
        (
            "anthropic",
            {"type": "image_url", "image_url": {"url": PNG_URL}},
            "does not match any of the expected tags",
        ),
        (
            "anthropic",
            {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": ""}},
            "media_type",
        ),
        ("openai", {"type": "image_url", "image_url": {"url": "cat.png"}}, "image_url.url"),
    ],
)
def test_the_simulator_refuses_image_formats_its_provider_refuses(
    provider_simulator: ProviderSimulator, provider: str, message: dict[str, Any], error: str
) -> None:
    content = [{"type": "text", "text": "hi"}, message]
    # Past the LM's own checks: the raw body, as a client that got the format wrong sends it.
    path = {"openai": "/chat/completions", "anthropic": "/v1/messages"}[provider]
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": content}]}
    headers = {"anthropic-version": "2023-06-01"}
    reply = httpx.post(provider_simulator.api_base(provider) + path, json=body, headers=headers)
    assert reply.status_code == 400
    assert error in reply.text


def test_the_simulator_refuses_ollama_images_as_data_urls(
    provider_simulator: ProviderSimulator,
) -> None:
    body = {
        "model": "m",
        "stream": False,
        "messages": [{"role": "user", "content": "hi", "images": [PNG_URL]}],
    }
    reply = httpx.post(provider_simulator.ollama_base_url + "/api/chat", json=body)
    assert reply.status_code == 400
    assert "illegal base64" in reply.text


# -- messages=[...] with content parts ----------------------------------------------------------


def test_lm_messages_take_content_parts_in_user_turns_only(
    provider_simulator: ProviderSimulator,
) -> None:
    provider_simulator.respond(output="a pixel")
    lm = lm_for(provider_simulator, "openai")
    parts = [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": PNG_URL}},
    ]
    assert lm(messages=[{"role": "user", "content": parts}]).text == "a pixel"
    with pytest.raises(TypeError, match="only a user message"):
        lm(messages=[{"role": "system", "content": parts}])
    with pytest.raises(TypeError, match="must not be an empty list"):
        lm(messages=[{"role": "user", "content": []}])
    with pytest.raises(TypeError, match=r"image_url"):
        lm(
            messages=[
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        )
    with pytest.raises(TypeError, match=r"\[0\] must be"):
        lm(messages=[{"role": "user", "content": [{"type": "audio", "data": "..."}]}])
    with pytest.raises(TypeError, match="lone surrogate"):
        lm(messages=[{"role": "user", "content": [{"type": "text", "text": "\ud800"}]}])
    assert len(provider_simulator.requests) == 1
