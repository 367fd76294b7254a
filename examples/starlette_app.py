"""An async Starlette endpoint awaiting Predict.acall on uvicorn's event loop.

Run: uvicorn --port 8002 examples.starlette_app:app
Try: curl -X POST localhost:8002/triage -H 'content-type: application/json' -d '{"message": "hi"}'
(FastAPI is Starlette underneath: an `async def` path operation looks the same.)
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from examples.triage import triage


async def triage_endpoint(request: Request) -> JSONResponse:
    body = await request.json()
    prediction = await triage.acall(message=body["message"])
    return JSONResponse({"team": prediction.team, "pid": os.getpid()})


app = Starlette(routes=[Route("/triage", triage_endpoint, methods=["POST"])])
