"""The public surface: `__all__` is exactly what the package exports, errors form one tree."""

import inspect
import types

import dspy_async as dspy
from dspy_async import errors, testing


def test_all_lists_every_public_name_and_only_those() -> None:
    public = {
        name
        for name, value in vars(dspy).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public | {"__version__", "events"} == set(dspy.__all__)
    assert all(hasattr(dspy, name) for name in dspy.__all__)


def test_the_only_public_modules_on_the_package_are_its_own() -> None:
    # `import logging` in __init__ once made `dspy_async.logging` look like part of the API.
    foreign = {
        name
        for name, value in vars(dspy).items()
        if isinstance(value, types.ModuleType)
        and name.isidentifier()  # not pytest's assertion-rewriting helpers
        and not name.startswith("_")
        and not value.__name__.startswith("dspy_async.")
    }
    assert foreign == set()


def test_every_error_is_defined_in_errors_and_derives_from_the_base() -> None:
    classes = [value for value in vars(errors).values() if inspect.isclass(value)]
    library_errors = [c for c in classes if issubclass(c, BaseException)]
    assert set(errors.__all__) == {
        c.__name__ for c in library_errors if c.__module__ == errors.__name__
    }
    for error in library_errors:
        assert issubclass(error, dspy.DSPyAsyncError), error
        assert getattr(dspy, error.__name__) is error
    assert issubclass(dspy.BatchError, ExceptionGroup)
    assert issubclass(dspy.ContextWindowExceededError, dspy.BadRequestError)


def test_testing_namespace() -> None:
    assert set(testing.__all__) == {
        "DummyLM",
        "ProviderSimulator",
        "RecordedRequest",
        "VirtualClock",
        "peak_in_flight",
        "virtual_clock",
    }
    assert all(getattr(testing, name) for name in testing.__all__)
