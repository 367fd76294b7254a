"""Process-wide settings, with thread- and task-local overrides.

`configure(...)` changes the global defaults; `context(...)` overrides them for the current thread
or asyncio task only. Overrides live in a `ContextVar`, so the runtime (which copies the caller's
context into the coroutine it runs) carries them from a caller thread to the loop thread, and no
other thread ever sees them.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from . import _checks, _forksafe
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .lm import BaseLM

__all__ = ["Settings", "StructuredOutputSettings", "configure", "context", "settings"]


@dataclass
class StructuredOutputSettings:
    """How Predict handles output that fails parsing or validation."""

    retry_enabled: bool = True
    max_retries: int = 2


@dataclass
class _Values:
    lm: BaseLM | None = None
    retry_enabled: bool = True
    structured_outputs: StructuredOutputSettings = field(default_factory=StructuredOutputSettings)
    # DSPy's names: handlers of module, LM, tool and evaluation events (see callbacks.py);
    # usage on each top-level Prediction; how many calls each LM (and the process) keeps.
    callbacks: tuple[Any, ...] = ()
    track_usage: bool = False
    max_history_size: int = 1_000
    disable_history: bool = False


_overrides: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "dspy_async_overrides", default=None
)
_NAMES = frozenset(f.name for f in fields(_Values))


class Settings:
    """Attribute view of the settings in force here: context overrides first, then globals."""

    def __init__(self) -> None:
        object.__setattr__(self, "_globals", _Values())
        object.__setattr__(self, "_lock", _forksafe.lock())

    def __getattr__(self, name: str) -> Any:
        # Reached for names that are no setting: each setting is a property (below).
        raise AttributeError(f"dspy_async.settings has no setting {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        self.configure(**{name: value})

    def configure(self, **values: Any) -> None:
        """Set global defaults, seen by every thread that has no override."""
        _check(values)
        with self._lock:
            for name, value in values.items():
                setattr(self._globals, name, value)

    @contextmanager
    def context(self, **values: Any) -> Iterator[None]:
        """Override settings for the current thread or task, and the work it starts."""
        _check(values)
        token = _overrides.set({**(_overrides.get() or {}), **values})
        try:
            yield
        finally:
            _overrides.reset(token)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in sorted(_NAMES))
        return f"Settings({shown})"


def _setting(name: str) -> property:
    """The setting `name` as read here: the context's override if any, else the global. A
    property, not a `__getattr__` fallback, which runs only after a failed lookup: settings
    are read several times a call."""

    def read(self: Settings) -> Any:
        overrides = _overrides.get()
        if overrides is not None and name in overrides:
            return overrides[name]
        return getattr(self._globals, name)

    return property(read)


for _name in _NAMES:
    setattr(Settings, _name, _setting(_name))


def _check(values: dict[str, Any]) -> None:
    _checks.known_names("setting", sorted(values), _NAMES)
    if "callbacks" in values:
        callbacks = values["callbacks"]
        if not isinstance(callbacks, list | tuple):
            raise ConfigurationError(
                "setting callbacks must be a list of callback objects, "
                f"not {_checks.shown(callbacks)}"
            )
        values["callbacks"] = tuple(callbacks)  # a snapshot: appending later changes nothing
    for name in ("track_usage", "disable_history"):
        if name in values:
            _checks.boolean(f"setting {name}", values[name])
    if "max_history_size" in values:
        _checks.non_negative_int("setting max_history_size", values["max_history_size"])
    if "lm" in values:
        check_lm(values["lm"])
    if "retry_enabled" in values:
        _checks.boolean("setting retry_enabled", values["retry_enabled"])
    if "structured_outputs" in values:
        structured = values["structured_outputs"]
        if not isinstance(structured, StructuredOutputSettings):
            raise ConfigurationError(
                "setting structured_outputs must be a StructuredOutputSettings, "
                f"not {_checks.shown(structured)}"
            )
        _checks.boolean("structured_outputs.retry_enabled", structured.retry_enabled)
        _checks.non_negative_int("structured_outputs.max_retries", structured.max_retries)


def check_lm(lm: object) -> None:
    """Refuse anything but an LM object (or None), saying how to make one from a string."""
    from .lm import BaseLM

    if lm is None or isinstance(lm, BaseLM):
        return
    if isinstance(lm, str):
        raise ConfigurationError(
            f"lm must be an LM object, not the string {lm!r}: use dspy.LM({lm!r})"
        )
    raise ConfigurationError(f"lm must be an LM object, not {type(lm).__name__}")


settings = Settings()
configure = settings.configure
context = settings.context
