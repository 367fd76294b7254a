"""The re-ask: after an invalid reply, show the model its reply and what was wrong with it."""

from __future__ import annotations

from ..records import Message

__all__ = ["reask_messages"]

# Providers reject an empty assistant turn, so an empty reply is shown as this.
EMPTY_REPLY = "(empty reply)"


def reask_messages(reply: str, error: str) -> list[Message]:
    """The assistant's invalid reply, then a user turn quoting the validation error."""
    return [
        {"role": "assistant", "content": reply if reply.strip() else EMPTY_REPLY},
        {
            "role": "user",
            "content": (
                "Your reply was invalid:\n"
                f"{error}\n\n"
                "Write a corrected JSON object. Reply with the JSON object only."
            ),
        },
    ]
