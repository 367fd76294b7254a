"""The providers an LM can talk to, by the name before the `/` in its model id."""

from __future__ import annotations

from ..errors import ConfigurationError
from . import anthropic, ollama, openai
from .base import Provider

__all__ = ["PROVIDERS", "get_provider"]

PROVIDERS: dict[str, Provider] = {"openai": openai, "anthropic": anthropic, "ollama": ollama}


def get_provider(name: str) -> Provider:
    """The provider module called `name`; ConfigurationError naming the known ones if none."""
    try:
        return PROVIDERS[name]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigurationError(
            f"unknown provider {name!r}: the model id must start with one of {known} "
            "(use openai/<model> with api_base=... for any OpenAI-compatible server)"
        ) from None
