"""A single-file Django project: a sync view calling Predict and an async view awaiting acall.

Sync, under a threaded WSGI server:
    gunicorn -k gthread --threads 8 -b 127.0.0.1:8000 examples.django_app:application
Async, on uvicorn's own loop: uvicorn --port 8001 examples.django_app:asgi_application
(or Django's dev server: python -m examples.django_app runserver 8000)
Then POST {"message": "..."} to /triage (sync view) or /atriage (async view).
"""

from __future__ import annotations

import json
import os
import sys

from django.conf import settings
from django.core.asgi import get_asgi_application
from django.core.management import execute_from_command_line
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path

from examples.triage import triage

settings.configure(
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret"),
)


def triage_view(request: HttpRequest) -> JsonResponse:
    prediction = triage(message=json.loads(request.body)["message"])
    return JsonResponse({"team": prediction.team, "pid": os.getpid()})


async def atriage_view(request: HttpRequest) -> JsonResponse:
    prediction = await triage.acall(message=json.loads(request.body)["message"])
    return JsonResponse({"team": prediction.team, "pid": os.getpid()})


urlpatterns = [path("triage", triage_view), path("atriage", atriage_view)]
application = get_wsgi_application()
asgi_application = get_asgi_application()

if __name__ == "__main__":
    execute_from_command_line(sys.argv)
