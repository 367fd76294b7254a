"""One structured step: ask, parse and validate, and re-ask on invalid output.

Everything runs in one coroutine on the runtime loop, so a re-ask blocks nothing. The native
strategy is used while the LM supports it; when a provider rejects the native parameter, the
LM is marked and this call (and every later one on that LM) falls back to prompt JSON.

Replies are asked for with their commit deferred (`defer_commit()`): the response cache
keeps one only once it validated (`response.accept()`), and one that did not
(`response.reject()`) is never served again, even if it came from the cache, so the re-ask
and every later call get a fresh answer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .. import callbacks
from ..errors import LMError, OutputValidationError, UnsupportedParameterError
from ..example import Example
from ..lm import BaseLM, Message
from ..pipeline.cache import defer_commit, restore_commit
from ..records import NO_USAGE, Attempt, Usage, spent
from ..signatures import Signature
from .messages import build_messages
from .native import native_output_schema
from .parsing import InvalidOutput, aparse_output
from .reask import reask_messages

__all__ = ["StructuredResult", "generate_structured"]


@dataclass(frozen=True, slots=True)
class StructuredResult:
    """Validated output values, with the tokens and attempts spent getting them."""

    values: dict[str, Any]
    usage: Usage
    attempts: tuple[Attempt, ...]


async def generate_structured(
    lm: BaseLM,
    signature: type[Signature],
    inputs: Mapping[str, Any],
    *,
    params: Mapping[str, Any],
    max_retries: int,
    demos: Sequence[Mapping[str, Any] | Example] = (),
) -> StructuredResult:
    """Call `lm` until its reply validates, re-asking at most `max_retries` times.

    Raises OutputValidationError with every reply and error once the re-asks are spent;
    provider errors (after the LM's own retries) propagate with the step's whole history.
    """
    schema = native_output_schema(signature) if lm.supports_native_structured else None
    base = _format(signature, inputs, demos, json_format=schema is None)
    # Tuples, grown only by a re-ask: a step that validates first time makes none of them.
    turns: tuple[Message, ...] = ()
    attempts: tuple[Attempt, ...] = ()  # every LM call's, renumbered in order
    usage = NO_USAGE
    replies: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    while True:
        deferred = defer_commit()
        try:
            response = await lm.acall(messages=[*base, *turns], output_schema=schema, **params)
        except LMError as exc:
            attempts = _renumbered(attempts, exc.attempts)
            usage += spent(exc.attempts)  # a refused 200 is billed
            if schema is None or not isinstance(exc, UnsupportedParameterError):
                exc.attempts = attempts  # the whole step's history, re-asks included
                raise
            lm.supports_native_structured = False
            schema = None
            base = _format(signature, inputs, demos, json_format=True)
            continue
        finally:
            restore_commit(deferred)
        try:
            with callbacks.observe(
                "adapter_parse", signature, {"signature": signature, "completion": response.text}
            ) as seen:
                values = seen.returned(await aparse_output(signature, response.text))
        except InvalidOutput as exc:
            response.reject()
            error = str(exc)
            attempts = _renumbered(attempts, response.attempts, invalid=error)
            usage += response.usage
            replies += (response.text,)
            errors += (error,)
            if len(errors) > max_retries:
                raise OutputValidationError(
                    f"{signature.__name__}: the output was still invalid after "
                    f"{len(errors)} {'reply' if len(errors) == 1 else 'replies'}; "
                    f"last error:\n{error}",
                    raw_outputs=replies,
                    errors=errors,
                    attempts=attempts,
                ) from None
            turns += tuple(reask_messages(response.text, error))
            continue
        response.accept()
        attempts = _renumbered(attempts, response.attempts)
        return StructuredResult(values, usage + response.usage, attempts)


def _format(
    signature: type[Signature],
    inputs: Mapping[str, Any],
    demos: Sequence[Mapping[str, Any] | Example],
    *,
    json_format: bool,
) -> list[Message]:
    """The step's messages, observed as DSPy's adapter format event."""
    event = {"signature": signature, "demos": demos, "inputs": inputs}
    with callbacks.observe("adapter_format", signature, event) as seen:
        messages: list[Message] = seen.returned(
            build_messages(signature, inputs, json_format=json_format, demos=demos)
        )
        return messages


def _renumbered(
    earlier: tuple[Attempt, ...], attempts: tuple[Attempt, ...], *, invalid: str | None = None
) -> tuple[Attempt, ...]:
    """`earlier` with one LM call's `attempts` after them, numbered on; the last marked as
    an invalid output if `invalid` says why. The first call's are already 1, 2, ...: when
    nothing changes they are handed back as they are."""
    if not earlier and invalid is None:
        return attempts
    added = [
        a if a.number == number else dataclasses.replace(a, number=number)
        for number, a in enumerate(attempts, start=len(earlier) + 1)
    ]
    if invalid is not None and added:
        added[-1] = dataclasses.replace(added[-1], outcome="invalid_output", error=invalid)
    return (*earlier, *added)
