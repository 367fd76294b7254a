"""A threaded Flask app whose view calls Predict; every request's LM call shares one runtime loop.

Run: python -m examples.flask_app   (werkzeug's threaded server on PORT, default 5000)
Try: curl -X POST localhost:5000/triage -H 'content-type: application/json' -d '{"message": "hi"}'
Under gunicorn, with the app loaded before the fork: see gunicorn_preload.md.
"""

from __future__ import annotations

import os

from flask import Flask, request

from examples.triage import triage

app = Flask(__name__)


@app.post("/triage")
def triage_view() -> dict[str, object]:
    prediction = triage(message=request.get_json()["message"])
    return {"team": prediction.team, "pid": os.getpid()}


if os.environ.get("DSPY_ASYNC_WARMUP") == "1":
    # One call at import time, so bad configuration fails at boot. Under `gunicorn --preload`
    # this runs in the master, before the workers fork; each worker then starts its own loop.
    triage(message="warm-up")

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")), threaded=True)
