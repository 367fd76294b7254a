"""Streaming: a call's text, or a step's output fields, as they arrive, through the same
pipeline as every call (cache, retries, budget, limiter, slots, trace) up to the first chunk.

    lm.stream(...) / lm.astream(...)            TextStream / AsyncTextStream of str deltas
    predict.stream(...) / predict.astream(...)  PredictionStream / AsyncPredictionStream of
                                                StreamChunk(field, text)

Layout, from the wire up:
    lines.py, sse.py, ndjson.py   the body's bytes into events, every line and event bounded
    deltas.py                     each provider's events into text deltas, usage, the end
    faults.py                     what can be wrong with a stream (typed in exchange.py)
    reader.py                     one attempt's streamed 200, read into a sink, re-arming the
                                  attempt's timer at each event; nothing retried once any text
                                  was handed on (the error carries it as `partial_text`)
    fields.py                     a structured reply's output fields as they stream
    channel.py                    the bounded handoff from the runtime loop to the consumer
    stream.py                     the sync and async streams the caller iterates
"""

from .fields import StreamChunk
from .stream import (
    AsyncPredictionStream,
    AsyncStream,
    AsyncTextStream,
    PredictionStream,
    Stream,
    TextStream,
)

__all__ = [
    "AsyncPredictionStream",
    "AsyncStream",
    "AsyncTextStream",
    "PredictionStream",
    "Stream",
    "StreamChunk",
    "TextStream",
]
