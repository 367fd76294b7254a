"""The program the optimizer tests compile, save and load (in a fresh process too), and the
simulator script it runs against: a model that answers right only when shown demos."""

from typing import Any

import dspy_async as dspy
from dspy_async.testing import ProviderSimulator

CAPITALS = {
    "France": "Paris",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Peru": "Lima",
    "Chile": "Santiago",
    "Japan": "Tokyo",
}
TRAIN = ["France", "Italy", "Spain"]
DEV = ["Peru", "Chile", "Japan", "Atlantis"]


class QA(dspy.Module):
    def __init__(self) -> None:
        self.solve = dspy.ChainOfThought("question -> answer")

    def forward(self, question: str) -> dspy.Prediction:
        return self.solve(question=question)


def examples(countries: list[str]) -> list[dspy.Example]:
    return [
        dspy.Example(question=f"Capital of {c}?", answer=CAPITALS.get(c, "none")).with_inputs(
            "question"
        )
        for c in countries
    ]


def exact(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> bool:
    return bool(prediction.answer == example.answer)


def script(sim: ProviderSimulator) -> None:
    """Right answers only after a demo: a demo's assistant turn (JSON, ending in `"}`) comes
    straight before the question. Without demos, a wrong guess; Atlantis always fails.

    A complete demo's user turn also follows an assistant turn (an incomplete demo's starts
    with a note), so the dev questions, asked with the trainset's demos, are matched first.
    """
    sim.fault("Capital of Atlantis?", kind="status", status=400, times=None)
    for country in [c for c in DEV + TRAIN if c in CAPITALS]:
        city = CAPITALS[country]
        reasoning = f"{city} is the capital of {country}"
        sim.respond(
            f'"}}\nquestion: Capital of {country}?',
            output={"reasoning": reasoning, "answer": city},
        )
    sim.respond(output={"reasoning": "a guess", "answer": "Springfield"})


def lm_for(sim_url: str) -> dspy.LM:
    return dspy.LM("openai/test-model", api_base=sim_url, api_key="k")
