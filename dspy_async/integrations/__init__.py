"""Bridges that put dspy-async under other libraries. Each module imports its library, so none
is imported until asked for by name.

dspy.py     `dspy_lm(...)`: a `dspy.LM` whose calls run on the dspy-async runtime (DSPy 3.4)
"""
