"""Token usage as a real server reports it."""

from __future__ import annotations

import pytest

from .support import lm_for

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

PROMPT = "Tell me about the history of the city of Paris in one sentence."


def test_anthropic_prompt_tokens_include_cached_ones(caching_llama_server: str) -> None:
    prompt_tokens = lm_for(caching_llama_server, "openai")(PROMPT).usage.prompt_tokens
    anthropic = lm_for(caching_llama_server, "anthropic")
    anthropic(PROMPT)
    repeated = anthropic(PROMPT)  # the whole prompt but its last token comes from the cache
    assert repeated.usage.prompt_tokens == prompt_tokens
