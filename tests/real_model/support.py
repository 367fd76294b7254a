"""How the real-model suite runs llama.cpp's `llama-server`: the script that builds and starts
it, the server's settings, and the settings of the LMs the tests point at it."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

import dspy_async as dspy

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "llama_server.py"
API_KEY = "sk-real-model-suite"
SLOTS = 4
# Tokens of context per slot, for prompt and reply together.
SLOT_CONTEXT = 512
SERVER_ARGS = (
    # Without the prompt cache, every request is evaluated from scratch, so a greedy reply
    # depends on its prompt only, not on what the slot served before.
    "--no-cache-prompt",
)
# Another process can take the free port before the server binds it.
START_TRIES = 3
# Short replies keep each call well under a second.
MAX_TOKENS = 64

LMFactory = Callable[..., dspy.LM]


def load_script() -> ModuleType:
    """`scripts/llama_server.py`, imported by path (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("llama_server", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start(
    script: ModuleType,
    log_dir: Path,
    *,
    parallel: int = SLOTS,
    extra_args: Sequence[str] = SERVER_ARGS,
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start a server on a free port, trying another one if a process took it first."""
    launch = functools.partial(
        script.start_server,
        api_key=API_KEY,
        parallel=parallel,
        ctx_size=parallel * SLOT_CONTEXT,
        extra_args=extra_args,
    )
    for attempt in range(1, START_TRIES):
        with contextlib.suppress(script.LlamaServerError):
            return launch(script.free_port(), log_path=log_dir / f"server-{attempt}.log")
    return launch(script.free_port(), log_path=log_dir / f"server-{START_TRIES}.log")


def lm_for(base_url: str, provider: str, *, api_key: str = API_KEY, native: bool = True) -> dspy.LM:
    """An LM on the server at `base_url`, decoding greedily (temperature 0), so that each reply
    is a function of its prompt. `native=False` sends no native schema: the adapter then puts
    the schema in the prompt instead."""
    # The OpenAI provider wants the URL ending in /v1; Anthropic's wants the host only.
    api_base = f"{base_url}/v1" if provider == "openai" else base_url
    lm = dspy.LM(
        f"{provider}/smollm2",
        api_base=api_base,
        api_key=api_key,
        temperature=0,
        max_tokens=MAX_TOKENS,
    )
    lm.supports_native_structured = native
    return lm
