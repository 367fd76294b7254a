"""The program every example calls, with its LM configured from the environment.

DSPY_ASYNC_MODEL (default openai/gpt-4o-mini) and DSPY_ASYNC_API_BASE (default: the simulator
at http://127.0.0.1:8765/v1) pick the model; the key comes from the provider's usual variable
(OPENAI_API_KEY, ANTHROPIC_API_KEY), which the simulator does not need.
"""

from __future__ import annotations

import os
from typing import Literal

import dspy_async as dspy


class Triage(dspy.Signature):
    """Route a customer message to the team that should answer it."""

    message: str = dspy.InputField()
    team: Literal["billing", "technical", "sales", "other"] = dspy.OutputField()


dspy.configure(
    lm=dspy.LM(
        os.environ.get("DSPY_ASYNC_MODEL", "openai/gpt-4o-mini"),
        api_base=os.environ.get("DSPY_ASYNC_API_BASE", "http://127.0.0.1:8765/v1"),
    )
)
triage = dspy.Predict(Triage)
