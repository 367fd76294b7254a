"""Bridges between dspy-async and other libraries. Each module imports its library, so none
is imported until asked for by name.

dspy.py     `dspy_lm(...)`: a `dspy.LM` whose calls run on the dspy-async runtime (DSPy 3.4)
otel.py     OpenTelemetry spans and metrics, installed by `dspy_async.instrument()`
ray.py      Ray Data: `ModuleMapper` / `map_dataset` run a Module over a Dataset, one runtime
            per worker process, API keys left out of the pickled program
"""
