"""Module: the base class of programs built from Predict steps, DSPy style.

Define `forward` (sync), `aforward` (async), or both. Calling the module runs `forward`;
`acall` awaits `aforward`. Whichever one is missing is derived from the other: a sync call of
an async-only module runs `aforward` on the hidden runtime loop, and an async call of a
sync-only module runs `forward` in a worker thread, so it never blocks the caller's loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import _runtime

__all__ = ["Module"]


class Module:
    """Subclass and define `forward` and/or `aforward`; call it like a function."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The program, run synchronously. By default: `aforward` on the runtime loop."""
        if type(self).aforward is Module.aforward:
            raise NotImplementedError(f"{type(self).__name__} must define forward() or aforward()")
        return _runtime.run(self.aforward(*args, **kwargs))

    async def aforward(self, *args: Any, **kwargs: Any) -> Any:
        """The program, as a coroutine. By default: `forward` in a worker thread."""
        if type(self).forward is Module.forward:
            raise NotImplementedError(f"{type(self).__name__} must define forward() or aforward()")
        return await asyncio.to_thread(self.forward, *args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Alias of calling the module, for DSPy.rb habits: `Predict(Sig).call(text=...)`."""
        return self(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Run the module from async code."""
        return await self.aforward(*args, **kwargs)
