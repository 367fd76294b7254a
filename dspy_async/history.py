"""The calls an LM made, as DSPy keeps them: `lm.history`, `lm.inspect_history(n)` and
`dspy.inspect_history(n)` (every LM's calls, in the order they ended).

Each successful call adds one entry, a dict with DSPy's keys: `prompt`, `messages` (as sent,
checked), `kwargs` (the call's own parameters), `response` (the `LMResponse`), `outputs` (a
list of one completion: its text, or `{"text", "tool_calls"}`), `usage`, `cost` (None: no
price list is bundled, see `Price`), `timestamp`, `uuid`, `model` (`provider/model`),
`response_model` and `model_type`. No entry holds an API key: keys live in the LM's endpoint,
never in a call's parameters. Each history keeps the last `settings.max_history_size` calls
(1,000 by default); `dspy.configure(disable_history=True)` keeps none.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from . import _forksafe
from .records import ContentPart, text_of
from .settings import settings

if TYPE_CHECKING:
    from .lm import BaseLM, LMResponse
    from .records import Message

__all__ = ["Recorded", "entry_outputs", "inspect_history", "pretty_print", "record"]

Entry = dict[str, Any]


class Recorded:
    """One call as recorded: its entry, made when first read. Most calls' entries are never
    read, and making one (a timestamp, a uuid, dicts of usage and parameters) costs a call
    more than keeping what it is made of. An LM's history and the global one hold the same
    Recorded, so both read the same entry."""

    __slots__ = ("_entry", "_parts")

    def __init__(
        self,
        prompt: str | None,
        messages: list[Message],
        params: Mapping[str, Any],
        response: LMResponse,
        outputs: list[Any],
    ) -> None:
        self._parts: tuple[Any, ...] | None = (
            prompt,
            messages,
            params,
            response,
            outputs,
            time.time(),
        )
        self._entry: Entry | None = None

    def entry(self) -> Entry:
        """DSPy's history entry of the call (see the module's docstring)."""
        parts = self._parts
        # Read under its LM's lock or the global history's: two readers of the two histories
        # may both make it, and the first stored is the one both keep.
        if parts is not None:
            prompt, messages, params, response, outputs, when = parts
            entry = {
                "prompt": prompt,
                "messages": messages,
                "kwargs": {k: v for k, v in params.items() if not k.startswith("api_")},
                "response": response,
                "outputs": outputs,
                "usage": response.usage.to_dict(),
                "cost": None,
                "timestamp": datetime.datetime.fromtimestamp(when).isoformat(),
                "uuid": str(uuid.uuid4()),
                "model": f"{response.provider}/{response.model}",
                "response_model": response.model,
                "model_type": "chat",
            }
            if self._entry is None:
                self._entry, self._parts = entry, None
        assert self._entry is not None
        return self._entry


# Every LM's calls, oldest first, trimmed to the setting's size; the lock guards it.
_lock = _forksafe.lock()
_global: deque[Recorded] = deque()


def entry_outputs(response: LMResponse) -> list[Any]:
    """DSPy's `outputs` of a call: `[text]`, or `[{"text", "tool_calls"}]` with tool calls."""
    if not response.tool_calls:
        return [response.text]
    calls = [{"id": c.id, "name": c.name, "args": dict(c.args)} for c in response.tool_calls]
    return [{"text": response.text, "tool_calls": calls}]


def record(
    lm: BaseLM,
    prompt: str | None,
    messages: list[Message],
    params: Mapping[str, Any],
    response: LMResponse,
    outputs: list[Any],
) -> None:
    """Add one call to `lm`'s history and the global one, unless history is off."""
    if settings.disable_history:
        return
    recorded = Recorded(prompt, messages, params, response, outputs)
    limit = settings.max_history_size
    with _lock:
        _append(_global, recorded, limit)
    lm._remember(recorded, limit)


def _append(entries: deque[Recorded], entry: Recorded, limit: int) -> None:
    entries.append(entry)
    while len(entries) > limit:
        entries.popleft()


def inspect_history(n: int = 1, file: TextIO | None = None) -> None:
    """Print the last `n` calls of every LM: messages, then the response (DSPy's form)."""
    with _lock:
        entries = [recorded.entry() for recorded in _global]
    pretty_print(entries, n, file)


def pretty_print(entries: Sequence[Entry], n: int = 1, file: TextIO | None = None) -> None:
    """Print the last `n` of `entries`; in colour on the terminal, plain into a `file`."""
    out = file or sys.stdout
    colour = file is None and out.isatty()

    def paint(code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if colour else text

    for entry in entries[-n:] if n > 0 else ():
        print(f"\n\n{paint('34', '[' + str(entry.get('timestamp', '?')) + ']')}\n", file=out)
        messages = entry["messages"] or [{"role": "user", "content": entry["prompt"]}]
        for message in messages:
            print(paint("31", f"{message['role'].capitalize()} message:"), file=out)
            for line in _content_lines(message["content"]):
                print(line, file=out)
            print(file=out)
        outputs = entry["outputs"]
        first = outputs[0] if outputs else ""
        text = first.get("text", "") if isinstance(first, dict) else str(first)
        print(paint("31", "Response:"), file=out)
        if text:
            print(paint("32", text.strip()), file=out)
        for call in first.get("tool_calls", []) if isinstance(first, dict) else []:
            print(paint("32", f"{call['name']}: {json.dumps(call['args'])}"), file=out)
        if len(outputs) > 1:
            print(paint("31", f"\t(and {len(outputs) - 1} other completions)"), file=out)
    print("\n", file=out)


def _content_lines(content: str | list[ContentPart]) -> list[str]:
    """A message's text, with each image shown as its kind and size, not its data."""
    if isinstance(content, str):
        return [content.strip()]
    lines = []
    for part in content:
        if part["type"] == "text":
            lines.append(text_of([part]).strip())
        else:
            url = part["image_url"]["url"]
            head, _, data = url.partition("base64,")
            lines.append(f"<{head}base64, {len(data)} characters>" if data else f"<image {url}>")
    return lines
