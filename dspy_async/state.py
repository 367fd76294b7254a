"""Program state on disk: what `Module.save` writes and `Module.load` reads back.

A state is JSON, never a pickle: loading one cannot run code. It holds, per predictor, the
signature's instructions and field descriptions, the demos, and the settings of the
predictor's own LM (model, api_base, timeout, limits, parameters; never the API key, which
the loading process finds in its environment; `lm_state` is also what a `dspy_lm` bridge
pickles). The file names its format version; a file of
another version, or of DSPy's own format, is refused with a clear error rather than read
half-right. The program itself is rebuilt in code, and the state loaded into it.

    {"dspy_async_state": 1, "dspy_async_version": "0.1.0",
     "predictors": {"qa": {"signature": {...}, "demos": [...], "lm": null}}}
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pydantic_core

from .errors import ConfigurationError, SignatureError, StateError
from .example import Example
from .lm import LM, BaseLM
from .providers import get_provider
from .retry import RetryPolicy

if TYPE_CHECKING:
    from .module import Module
    from .predict import Predict

__all__ = [
    "FORMAT_VERSION",
    "apply_predictor_state",
    "apply_program_state",
    "lm_from_state",
    "lm_state",
    "load_state_file",
    "predictor_state",
    "save_state",
]

logger = logging.getLogger("dspy_async")

FORMAT_VERSION = 1
"""Bumped whenever a state written by this version would be read wrong by an older one."""
_FORMAT_KEY = "dspy_async_state"


# -- one predictor ----------------------------------------------------------------------


def predictor_state(predictor: Predict) -> dict[str, Any]:
    """A Predict's state as JSON values (StateError for a demo value JSON cannot hold)."""
    return {
        "signature": predictor.signature.dump_state(),
        "demos": [_demo_state(demo, index) for index, demo in enumerate(predictor.demos)],
        "lm": lm_state(predictor.lm) if isinstance(predictor.lm, LM) else None,
    }


def _demo_state(demo: Example | Mapping[str, Any], index: int) -> dict[str, Any]:
    values = demo.toDict() if isinstance(demo, Example) else dict(demo)
    try:
        jsonable = pydantic_core.to_jsonable_python(values)
    except pydantic_core.PydanticSerializationError as exc:
        raise StateError(f"demos[{index}] holds a value JSON cannot hold: {exc}") from None
    if not isinstance(jsonable, dict):
        raise StateError(f"demos[{index}] must be a mapping of fields")
    return jsonable


class _Planned:
    """What loading a predictor's state will set, worked out before anything is set."""

    def __init__(
        self, predictor: Predict, state: object, lms: dict[str, LM], *, allow_unsafe: bool
    ) -> None:
        if not isinstance(state, Mapping) or not {"signature", "demos"} <= state.keys():
            raise StateError("a predictor's state needs 'signature' and 'demos'")
        try:
            self.signature = predictor.signature.load_state(state["signature"])
        except SignatureError as exc:
            raise StateError(str(exc)) from None
        demos = state["demos"]
        if not isinstance(demos, list) or not all(isinstance(d, Mapping) for d in demos):
            raise StateError("'demos' must be a list of objects")
        self.demos = [Example(demo) for demo in demos]
        saved_lm = state.get("lm")
        self.lm: BaseLM | None = predictor.lm
        if saved_lm is not None:
            # One LM per distinct saved setting: predictors that shared an LM share it again.
            key = json.dumps(saved_lm, sort_keys=True)
            if key not in lms:
                lms[key] = lm_from_state(saved_lm, allow_unsafe=allow_unsafe)
            self.lm = lms[key]

    def apply(self, predictor: Predict) -> None:
        predictor.signature = self.signature
        predictor.demos = self.demos
        predictor.lm = self.lm


def apply_predictor_state(
    predictor: Predict, state: Mapping[str, Any], *, allow_unsafe_lm_state: bool
) -> None:
    """Load one predictor's state (its `dump_state()`), all of it or none."""
    _Planned(predictor, state, {}, allow_unsafe=allow_unsafe_lm_state).apply(predictor)


def apply_program_state(
    program: Module, state: Mapping[str, Any], *, allow_unsafe_lm_state: bool
) -> None:
    """Load `state` (a `dump_state()`) into `program`'s predictors: every one checked first,
    then all set, so a state that does not fit leaves the program as it was."""
    if not isinstance(state, Mapping):
        raise StateError(f"a program state is a mapping, not {type(state).__name__}")
    predictors = dict(program.named_parameters())
    missing = sorted(predictors.keys() - state.keys())
    unknown = sorted(state.keys() - predictors.keys())
    if missing or unknown:
        raise StateError(
            f"the state does not fit {type(program).__name__}: "
            + "; ".join(
                f"{what} {', '.join(names)}"
                for what, names in (
                    ("no state for its predictor(s)", missing),
                    ("state for predictor(s) it does not have:", unknown),
                )
                if names
            )
        )
    lms: dict[str, LM] = {}
    plans = {}
    for name, predictor in predictors.items():
        try:
            plans[name] = _Planned(predictor, state[name], lms, allow_unsafe=allow_unsafe_lm_state)
        except StateError as exc:
            raise StateError(f"predictor {name!r}: {exc}") from None
    for name, plan in plans.items():
        plan.apply(predictors[name])


# -- LMs --------------------------------------------------------------------------------


def lm_state(lm: LM) -> dict[str, Any]:
    """An LM's settings as JSON values, without its API key (`keyed` says it had one)."""
    if lm._http_client is not None:
        raise StateError(
            f"{lm!r} has its own http_client, which belongs to this process: it cannot be saved"
        )
    return {
        "model": f"{lm.provider}/{lm.model}",
        "api_base": _api_base(lm),
        "keyed": lm._endpoint.secret is not None,
        "timeout": lm.timeout,
        "retry": dataclasses.asdict(lm.retry),
        "max_concurrency": lm.max_concurrency,
        "max_response_bytes": lm.max_response_bytes,
        "params": dict(lm.params),
        "cache": lm.cache,
        "rollout_id": lm.rollout_id,
    }


def lm_from_state(state: Mapping[str, Any], *, allow_unsafe: bool) -> LM:
    """The LM `state` (from `lm_state`) describes, with the key its provider finds in this
    process's environment. An `api_base` other than the provider's own is only followed with
    `allow_unsafe`: a file should not choose where requests, and the key, are sent."""
    try:
        settings = dict(state)
        model, api_base = settings.pop("model"), settings.pop("api_base")
        settings.pop("keyed")  # the key itself comes from this process's environment
        retry = RetryPolicy(**settings.pop("retry"))
        params = settings.pop("params")
        if api_base == _default_api_base(model) or not api_base:
            api_base = None
        elif not allow_unsafe:
            raise StateError(
                f"the saved LM {model!r} sends requests to {api_base}: pass "
                "allow_unsafe_lm_state=True to load() if you trust the file, or set the "
                "predictor's LM after loading a state saved without it"
            )
        return LM(model, api_base=api_base, retry=retry, **params, **settings)
    except (KeyError, TypeError, ConfigurationError) as exc:
        raise StateError(f"the saved LM settings cannot be used: {exc}") from None


def _api_base(lm: LM) -> str:
    """The `api_base` the LM was built with (it keeps only the resolved endpoint)."""
    return _base_of(lm.provider, lm._endpoint.url)


def _default_api_base(model: object) -> str:
    """The `api_base` an LM of `model` gets when it is given none, in this process."""
    provider = str(model).partition("/")[0]
    return _base_of(provider, get_provider(provider).endpoint("placeholder", None).url)


def _base_of(provider: str, url: object) -> str:
    """An endpoint URL less the path its provider adds to the `api_base`."""
    added = get_provider(provider).endpoint("placeholder", "http://localhost").url.path
    return str(url).removesuffix(added) if added != "/" else str(url)


# -- files ------------------------------------------------------------------------------


def save_state(program: Module, path: str | os.PathLike[str], *, save_program: bool) -> None:
    """Write `program`'s state to the `.json` file `path`."""
    from . import __version__

    if save_program:
        raise StateError(
            "save_program=True (DSPy's cloudpickle of the whole program) is not supported: "
            "a pickle runs code when loaded. Save the state to a .json file, rebuild the "
            "program in code, and load() the state into it"
        )
    if os.fspath(path)[-5:].lower() != ".json":
        raise StateError(f"save() writes JSON: give a path ending in .json, not {path!r}")
    document = {
        _FORMAT_KEY: FORMAT_VERSION,
        "dspy_async_version": __version__,
        "predictors": program.dump_state(),
    }
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False)
    with open(path, "w", encoding="utf-8") as file:
        file.write(text + "\n")


def load_state_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The predictors' state in the file `path`, after checking its format version."""
    from . import __version__

    try:
        with open(path, encoding="utf-8") as file:
            document = json.load(file)
    except json.JSONDecodeError as exc:
        raise StateError(f"{os.fspath(path)} is not a saved state (not JSON: {exc})") from None
    if not isinstance(document, dict):
        raise StateError(f"{os.fspath(path)} is not a saved state")
    if _FORMAT_KEY not in document:
        saved_by = document.get("metadata", {}).get("dependency_versions", {}).get("dspy")
        if saved_by is not None:
            raise StateError(
                f"{os.fspath(path)} was saved by DSPy {saved_by}: dspy_async reads the states "
                "it saves itself (see 'Coming from DSPy' in the README)"
            )
        raise StateError(f"{os.fspath(path)} is not a dspy_async saved state")
    version = document[_FORMAT_KEY]
    if version != FORMAT_VERSION:
        raise StateError(
            f"{os.fspath(path)} is in state format {version!r} (written by dspy_async "
            f"{document.get('dspy_async_version', '?')}); this dspy_async ({__version__}) "
            f"reads format {FORMAT_VERSION}: load it with the version that saved it"
        )
    predictors = document.get("predictors")
    if not isinstance(predictors, dict):
        raise StateError(f"{os.fspath(path)} has no 'predictors' object")
    return predictors
