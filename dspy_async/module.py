"""Module: the base class of programs built from Predict steps, DSPy style.

Define `forward` (sync), `aforward` (async), or both. Calling the module runs `forward`;
`acall` awaits `aforward`. Whichever one is missing is derived from the other: a sync call of
an async-only module runs `aforward` on the hidden runtime loop, and an async call of a
sync-only module runs `forward` in a worker thread, so it never blocks the caller's loop.
Every module also gets `batch`/`abatch` (many inputs, bounded concurrency), `batch_iter`/
`abatch_iter` (the same, as items finish) and `submit`.

A program is walked as DSPy walks it: its predictors (the Predicts in its attributes, in
lists, tuples and dicts of them, and in its sub-modules) are what optimizers change and what
`save`/`load` keep (see state.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from os import PathLike
from typing import TYPE_CHECKING, Any, TypeVar

from . import _runtime, callbacks
from .batch import Work, aiterate, iterate, run_batch
from .pipeline import trace

if TYPE_CHECKING:
    from .lm import BaseLM
    from .predict import Predict

__all__ = ["Module"]

logger = logging.getLogger("dspy_async")

_M = TypeVar("_M", bound="Module")


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
        # Both no-ops unless instrumented, or callbacks or usage tracking are configured.
        with trace.step(self), callbacks.module_call(self, args, kwargs) as seen:
            return seen.returned(self.forward(*args, **kwargs))

    def call(self, *args: Any, **kwargs: Any) -> Any:
        """Alias of calling the module, for DSPy.rb habits: `Predict(Sig).call(text=...)`."""
        return self(*args, **kwargs)

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """Run the module from async code."""
        with trace.step(self), callbacks.module_call(self, args, kwargs) as seen:
            return seen.returned(await self.aforward(*args, **kwargs))

    def submit(self, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        """Start the call on the runtime loop and return at once; `cancel()` cancels it."""
        return _runtime.submit(self.acall(*args, **kwargs))

    def batch(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        max_concurrency: int = 16,
        return_exceptions: bool = False,
        progress: bool | None = None,
        timeout: float | None = None,
        journal: str | PathLike[str] | None = None,
    ) -> list[Any]:
        """Run the module once per item (a dict of inputs); results in input order.

        `items` may be any iterable, a generator included: it is read as room frees up, at
        most a few times `max_concurrency` items alive at once. At most `max_concurrency`
        provider requests are in flight; an item waiting out a backoff gives its slot to the
        others. A failed item's slot holds its exception with `return_exceptions`; otherwise
        every item still finishes, then `BatchError` is raised with `.results`. `timeout`
        bounds each item; `progress` shows a tqdm bar (default: when stderr is a terminal).
        `journal`, a SQLite file, records each item as it finishes: the same batch run
        again returns the recorded results without asking for them again (see journal.py).
        Ctrl-C cancels every item and re-raises.
        """
        work = self._work(max_concurrency, progress, timeout, journal, items)
        return _runtime.run(run_batch(items, return_exceptions=return_exceptions, work=work))

    async def abatch(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        max_concurrency: int = 16,
        return_exceptions: bool = False,
        progress: bool | None = None,
        timeout: float | None = None,
        journal: str | PathLike[str] | None = None,
    ) -> list[Any]:
        """`batch` for async code: the same engine, awaited on the caller's loop."""
        work = self._work(max_concurrency, progress, timeout, journal, items)
        return await _runtime.arun(run_batch(items, return_exceptions=return_exceptions, work=work))

    def batch_iter(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        max_concurrency: int = 16,
        progress: bool | None = None,
        timeout: float | None = None,
        journal: str | PathLike[str] | None = None,
    ) -> Iterator[tuple[int, Any]]:
        """`batch`, handing over `(index, result or exception)` as items finish, in the
        order they finish; memory stays flat however long `items` is. Closing the iterator
        (`.close()`, or `with contextlib.closing(...)`) cancels the items in flight and stops
        reading `items`."""
        return iterate(items, self._work(max_concurrency, progress, timeout, journal, items))

    def abatch_iter(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        max_concurrency: int = 16,
        progress: bool | None = None,
        timeout: float | None = None,
        journal: str | PathLike[str] | None = None,
    ) -> AsyncIterator[tuple[int, Any]]:
        """`batch_iter` for async code (`async for index, result in ...`); `aclose()`
        cancels the items in flight."""
        return aiterate(items, self._work(max_concurrency, progress, timeout, journal, items))

    def _work(
        self,
        max_concurrency: int,
        progress: bool | None,
        timeout: float | None,
        journal: str | PathLike[str] | None,
        items: object,
    ) -> Work:
        from .signatures import Signature

        # A module with only a sync forward runs it in the batch's bounded thread pool.
        sync_only = type(self).aforward is Module.aforward
        signature = getattr(self, "signature", None)
        if not (isinstance(signature, type) and issubclass(signature, Signature)):
            signature = None
        program = type(self).__qualname__ + (f"({signature.__name__})" if signature else "")
        return Work(
            acall=None if sync_only else self.acall,
            sync_call=self.__call__ if sync_only else None,
            max_concurrency=max_concurrency,
            progress=progress,
            timeout=timeout,
            journal=journal,
            program=program,
            signature=signature,
            # Opened once for the batch; each item starts from a copy of its context.
            around=(functools.partial(trace.batch, self, items),),
        )

    # -- the program's parts ------------------------------------------------------------

    def named_parameters(self) -> list[tuple[str, Predict]]:
        """The predictors to tune, by attribute path (`qa`, `steps[0]`, `tools['search']`,
        `inner.predict`), as DSPy lists them: attributes, items of lists, tuples and dicts
        (one level), and sub-modules, except those already compiled (`_compiled`)."""
        from .predict import Predict

        found: list[tuple[str, Predict]] = []
        seen: set[int] = set()

        def add(name: str, value: object) -> None:
            if isinstance(value, Predict):
                if id(value) not in seen:
                    seen.add(id(value))
                    found.append((name, value))
            elif isinstance(value, Module) and not getattr(value, "_compiled", False):
                for sub_name, param in value.named_parameters():
                    add(f"{name}.{sub_name}", param)

        if isinstance(self, Predict):
            add("self", self)
        for name, value in vars(self).items():
            if isinstance(value, list | tuple):
                for index, item in enumerate(value):
                    add(f"{name}[{index}]", item)
            elif isinstance(value, dict):
                for key, item in value.items():
                    add(f"{name}['{key}']", item)
            else:
                add(name, value)
        return found

    def parameters(self) -> list[Predict]:
        """The predictors of `named_parameters()`."""
        return [param for _, param in self.named_parameters()]

    def named_predictors(self) -> list[tuple[str, Predict]]:
        """Every Predict of the program with its path (ChainOfThought's is `predict`)."""
        return self.named_parameters()

    def predictors(self) -> list[Predict]:
        """Every Predict of the program, in `named_predictors()` order."""
        return [predictor for _, predictor in self.named_predictors()]

    def named_sub_modules(
        self, type_: type[_M] | None = None, skip_compiled: bool = False
    ) -> Iterator[tuple[str, _M]]:
        """Every module reachable from this one (itself first, as `self`), breadth first,
        through attributes, lists, tuples and dicts at any depth; each once, under the first
        path found. `type_` keeps only modules of that type; `skip_compiled` does not look
        inside compiled ones."""
        wanted: type[Any] = Module if type_ is None else type_
        queue: deque[tuple[str, object]] = deque([("self", self)])
        seen = {id(self)}
        while queue:
            name, item = queue.popleft()
            if isinstance(item, wanted):
                yield name, item
            children: Iterator[tuple[str, object]]
            if isinstance(item, Module):
                if skip_compiled and getattr(item, "_compiled", False):
                    continue
                children = ((f"{name}.{k}", v) for k, v in vars(item).items())
            elif isinstance(item, list | tuple):
                children = ((f"{name}[{i}]", v) for i, v in enumerate(item))
            elif isinstance(item, dict):
                children = ((f"{name}[{k}]", v) for k, v in item.items())
            else:
                continue
            for child in children:
                if id(child[1]) not in seen:
                    seen.add(id(child[1]))
                    queue.append(child)

    def set_lm(self, lm: BaseLM | None) -> None:
        """Give every predictor of the program this LM."""
        from .settings import check_lm

        check_lm(lm)
        for predictor in self.predictors():
            predictor.lm = lm

    def get_lm(self) -> BaseLM | None:
        """The one LM every predictor uses (None: each falls back to `dspy.configure`);
        ConfigurationError if they use different ones."""
        from .errors import ConfigurationError

        lms = {id(p.lm): p.lm for p in self.predictors()}
        if len(lms) != 1:
            raise ConfigurationError(
                f"{type(self).__name__} has {'no predictors' if not lms else 'several LMs'}: "
                "there is no one LM to return"
            )
        return next(iter(lms.values()))

    # -- copies ---------------------------------------------------------------------------

    def deepcopy(self: _M) -> _M:
        """A deep copy whose predictors, demos and state are its own, sharing the LMs: an LM
        holds connections, limits and usage that belong to every program using it.

        Attributes that cannot be deep-copied are copied shallowly, else shared, as in DSPy."""
        from .lm import BaseLM

        memo: dict[int, Any] = {}
        for _, module in self.named_sub_modules(Module):
            memo.update((id(v), v) for v in vars(module).values() if isinstance(v, BaseLM))
        try:
            return copy.deepcopy(self, memo)
        except Exception:  # an attribute that refuses: copy the others one by one
            pass
        clone = type(self).__new__(type(self))
        for name, value in vars(self).items():
            if isinstance(value, Module | BaseLM):
                copied = value if isinstance(value, BaseLM) else value.deepcopy()
            else:
                try:
                    copied = copy.deepcopy(value, memo)
                except Exception:
                    logger.warning(
                        "%s.deepcopy(): attribute %r cannot be deep-copied; sharing a shallow "
                        "copy of it",
                        type(self).__name__,
                        name,
                    )
                    try:
                        copied = copy.copy(value)
                    except Exception:
                        copied = value
            object.__setattr__(clone, name, copied)
        return clone

    def reset_copy(self: _M) -> _M:
        """A deep copy with every predictor reset (its demos forgotten), to compile afresh."""
        clone = self.deepcopy()
        for predictor in clone.predictors():
            predictor.reset()
        return clone

    # -- state ----------------------------------------------------------------------------

    def dump_state(self) -> dict[str, Any]:
        """Each predictor's state by its path: instructions, field descriptions, demos and
        its own LM's settings (never the API key), as JSON values."""
        return {name: predictor.dump_state() for name, predictor in self.named_parameters()}

    def load_state(
        self: _M, state: Mapping[str, Any], *, allow_unsafe_lm_state: bool = False
    ) -> _M:
        """Apply a `dump_state()`: all of it or, if any part does not fit (another program's
        predictors or fields), none of it (StateError)."""
        from .state import apply_program_state

        apply_program_state(self, state, allow_unsafe_lm_state=allow_unsafe_lm_state)
        return self

    def save(self, path: str | PathLike[str], save_program: bool = False) -> None:
        """Write the program's state to a `.json` file, with the format version that reads
        it back (see `load`)."""
        from .state import save_state

        save_state(self, path, save_program=save_program)

    def load(self: _M, path: str | PathLike[str], *, allow_unsafe_lm_state: bool = False) -> _M:
        """Read a state written by `save` into this program (built in code as it was saved).
        An LM saved with an `api_base` is only restored with `allow_unsafe_lm_state=True`:
        a file should not decide where your requests (and your key) go."""
        from .state import load_state_file

        state = load_state_file(path)
        return self.load_state(state, allow_unsafe_lm_state=allow_unsafe_lm_state)
