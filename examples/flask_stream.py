"""A Flask view that streams an answer as the model writes it, as server-sent events.

Run: python -m examples.flask_stream   (werkzeug's threaded server on PORT, default 5000)
Try: curl -N 'localhost:5000/answer?question=Why+is+the+sky+blue'

Each piece of the answer is a `data:` event (its text, JSON-encoded), then an `event: done`
with the tokens spent. The LM call runs on dspy-async's loop, not in the request's thread,
which only waits for the next piece; a client that goes away closes the LM's connection too.
DSPY_ASYNC_MODEL and DSPY_ASYNC_API_BASE pick the model, as in examples/triage.py.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

from flask import Flask, Response, request

import dspy_async as dspy


class Answer(dspy.Signature):
    """Answer the question in a few sentences."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


dspy.configure(
    lm=dspy.LM(
        os.environ.get("DSPY_ASYNC_MODEL", "openai/gpt-4o-mini"),
        api_base=os.environ.get("DSPY_ASYNC_API_BASE", "http://127.0.0.1:8765/v1"),
    )
)
answer = dspy.Predict(Answer)
app = Flask(__name__)


def sse(data: object, event: str | None = None) -> str:
    named = f"event: {event}\n" if event else ""
    return f"{named}data: {json.dumps(data)}\n\n"


@app.get("/answer")
def answer_view() -> Response:
    stream = answer.stream(question=request.args["question"])  # the request starts now

    def events() -> Iterator[str]:
        # The server closes this generator when the client goes away; leaving the `with`
        # block then closes the stream, and with it the connection to the LM.
        with stream:
            reply = 1
            try:
                for chunk in stream:
                    if chunk.reply != reply:  # the first reply was invalid and re-asked
                        reply = chunk.reply
                        yield sse(None, "restart")
                    if chunk.field == "answer":
                        yield sse(chunk.text)
                tokens = stream.prediction.usage.total_tokens
            except (dspy.LMError, dspy.OutputValidationError) as error:
                yield sse(type(error).__name__, "error")
                return
            yield sse({"tokens": tokens}, "done")

    return Response(events(), mimetype="text/event-stream", headers={"Cache-Control": "no-cache"})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), threaded=True)
