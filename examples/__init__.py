"""Runnable integrations of dspy-async, one per kind of host process.

Every example calls the same program (`triage.py`), configured from the environment and pointed
by default at the local provider simulator. Start that first, from the repository root:

    python -m dspy_async.testing serve --port 8765

then run an example as a module from the repository root (each one's docstring says how).
"""
