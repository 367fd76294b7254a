"""Ray Data: run a Module over a Dataset on many machines, each Ray worker process with its
own dspy-async runtime (`pip install 'dspy-async[ray]'`).

    import ray
    from dspy_async.integrations.ray import ModuleMapper, portable

    ray.data.DataContext.get_current().execution_options.preserve_order = True  # rows in order
    results = ray.data.from_items(rows).map_batches(
        ModuleMapper,
        fn_constructor_args=(portable(program),),
        fn_constructor_kwargs={"max_concurrency": 32},
        compute=ray.data.ActorPoolStrategy(size=4),  # 4 worker processes, one runtime each
        batch_size=256,
    )

or `map_dataset(dataset, program, workers=4)`, which makes the same call. Each actor unpickles
the program once and runs every batch it is given through `program.batch(...)` on its own
runtime loop: one connection pool and one loop thread per worker, `max_concurrency` requests
in flight in each. An output row holds the input columns, the prediction's outputs as JSON
values (an enum as its value, a pydantic model as a dict) and `error`: None, or the type and
message of the item's failure, which fails that row only.

API keys stay out of the cluster: `portable(program)` pickles the program with every LM's key
left out, and each worker's LMs find theirs in its own environment (`OPENAI_API_KEY`, ...:
give it with `ray.init(runtime_env={"env_vars": {...}})` or the cluster's setup). Only
`portable(program, send_api_key=True)` sends them. `ModuleMapper` refuses a program passed
without `portable()`, which Ray would have pickled with its keys. An LM built with
`rate_limit=dspy.RateLimit(..., shared="redis://...")` keeps that setting, so every worker
draws on the one budget in Redis.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic_core
import ray
from ray import cloudpickle

from ..errors import ConfigurationError
from ..lm import LM
from ..module import Module
from ..prediction import Prediction
from ..providers import get_provider
from ..signatures import Signature
from ..state import _api_base, _default_api_base

__all__ = ["ModuleMapper", "Portable", "map_dataset", "portable"]


class Portable:
    """A program pickled for the cluster, its LMs' API keys left out unless asked for.
    `load()` rebuilds it in the process that runs it."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def load(self) -> Module:
        program: Module = cloudpickle.loads(self.data)
        return program


def portable(program: Module, *, send_api_key: bool = False) -> Portable:
    """`program`, pickled now (later changes to it are not sent) for `ModuleMapper`.

    Each LM is sent without its key (its workers read theirs from their environment), unless
    `send_api_key`. ConfigurationError if the key would still be sent: held by something
    other than an LM (a module attribute, say).
    """
    if not isinstance(program, Module):
        raise ConfigurationError(f"portable() takes a dspy_async Module, not {program!r}")
    buffer = io.BytesIO()
    pickler_class: Any = cloudpickle.CloudPickler if send_api_key else _Keyless  # untyped
    pickler_class(buffer).dump(program)
    data = buffer.getvalue()
    if not send_api_key:
        for secret in _secrets(program):
            if secret.encode() in data:
                raise ConfigurationError(
                    "the program holds an LM's API key outside the LM (in an attribute?), "
                    "so it would be sent to the cluster: remove it, or pass send_api_key=True"
                )
    return Portable(data)


class _Keyless(cloudpickle.CloudPickler):
    """Pickles every LM without its endpoint, which holds the key and its headers."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, LM):
            state = obj.__getstate__()
            del state["_endpoint"]
            return _rebuilt, (type(obj), state, obj.provider, _given_api_base(obj))
        cloudpickler: Any = super()  # untyped: classes and functions by value, as Ray does
        return cloudpickler.reducer_override(obj)


def _given_api_base(lm: LM) -> str | None:
    """The LM's `api_base`, or None for its provider's own (so the worker's provider decides)."""
    base = _api_base(lm)
    return None if base == _default_api_base(lm.provider) else base


def _rebuilt(kind: type[LM], state: dict[str, Any], provider: str, api_base: str | None) -> LM:
    """An LM unpickled in a worker: its endpoint, and key, resolved in that process."""
    lm = kind.__new__(kind)
    lm.__setstate__(state)
    lm._endpoint = get_provider(provider).endpoint(None, api_base)
    return lm


def _secrets(program: Module) -> list[str]:
    seen: list[str] = []
    for _, module in program.named_sub_modules(Module):
        for value in vars(module).values():
            if isinstance(value, LM) and value._endpoint.secret:
                seen.append(value._endpoint.secret)
    for predictor in program.predictors():
        lm = predictor.lm
        if isinstance(lm, LM) and lm._endpoint.secret:
            seen.append(lm._endpoint.secret)
    return seen


class ModuleMapper:
    """The callable class for `Dataset.map_batches`: each instance (a Ray actor) holds one
    program and runs each batch of rows through `program.batch`.

    `inputs` names the columns given to the program (default: its signature's input fields,
    else every column); `max_concurrency` and `timeout` are `batch`'s, per worker.
    """

    def __init__(
        self,
        program: Portable,
        *,
        max_concurrency: int = 16,
        timeout: float | None = None,
        inputs: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(program, Portable):
            raise ConfigurationError(
                "ModuleMapper takes portable(program): a program passed as is is pickled with "
                "its LMs' API keys"
            )
        self.program = program.load()
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.inputs = list(inputs) if inputs is not None else None
        signature = getattr(self.program, "signature", None)
        self.signature = (
            signature if isinstance(signature, type) and issubclass(signature, Signature) else None
        )

    def __call__(self, batch: Any) -> dict[str, list[Any]]:
        columns = _columns(batch)
        size = len(next(iter(columns.values()), []))
        names = self._input_names(columns)
        rows = [{name: columns[name][i] for name in names} for i in range(size)]
        outcomes = self.program.batch(
            rows,
            max_concurrency=self.max_concurrency,
            timeout=self.timeout,
            return_exceptions=True,
            progress=False,
        )
        output: dict[str, list[Any]] = dict(columns)
        for name in self._output_names(outcomes):
            output[name] = [_output(outcome, name) for outcome in outcomes]
        output["error"] = [
            f"{type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else None
            for outcome in outcomes
        ]
        return output

    def _input_names(self, columns: Mapping[str, list[Any]]) -> list[str]:
        if self.inputs is not None:
            missing = [name for name in self.inputs if name not in columns]
            if missing:
                raise ConfigurationError(f"ModuleMapper inputs {missing} are no column")
            return self.inputs
        if self.signature is not None:
            return [name for name in self.signature.input_fields if name in columns]
        return list(columns)

    def _output_names(self, outcomes: list[Any]) -> list[str]:
        if self.signature is not None:
            return list(self.signature.output_fields)
        names: dict[str, None] = {}
        for outcome in outcomes:
            if isinstance(outcome, Mapping | Prediction):
                names.update(dict.fromkeys(outcome.keys()))
            elif not isinstance(outcome, BaseException):
                names["result"] = None
        return list(names)


def _columns(batch: Any) -> dict[str, list[Any]]:
    """A batch (numpy or pyarrow dict of columns, or a pandas DataFrame) as lists of plain
    Python values."""
    if hasattr(batch, "columns") and hasattr(batch, "to_dict"):  # a DataFrame
        return {str(name): batch[name].tolist() for name in batch.columns}
    return {
        str(name): values.tolist() if hasattr(values, "tolist") else list(values)
        for name, values in batch.items()
    }


def _output(outcome: Any, name: str) -> Any:
    if isinstance(outcome, BaseException):
        return None
    if isinstance(outcome, Mapping | Prediction):
        value = outcome.get(name)
    else:
        value = outcome if name == "result" else None
    return pydantic_core.to_jsonable_python(value, fallback=repr)


def map_dataset(
    dataset: ray.data.Dataset,
    program: Module,
    *,
    workers: int = 2,
    batch_size: int = 256,
    max_concurrency: int = 16,
    timeout: float | None = None,
    send_api_key: bool = False,
    **options: Any,
) -> ray.data.Dataset:
    """`dataset.map_batches` with a `ModuleMapper` of `portable(program)` on a pool of
    `workers` actors; `options` go to `map_batches` (e.g. `num_cpus=0.5`: the workers mostly
    wait on the network)."""
    return dataset.map_batches(
        ModuleMapper,
        fn_constructor_args=(portable(program, send_api_key=send_api_key),),
        fn_constructor_kwargs={"max_concurrency": max_concurrency, "timeout": timeout},
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=batch_size,
        **options,
    )
