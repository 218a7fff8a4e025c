"""The app that `descent serve` runs: `uvicorn descent.asgi:create_app --factory`.

uvicorn starts several API processes only from an import string, each process calling
this factory for its own app. It lives here, not in server/, because it hands the app the
Celery queue, and server never imports workers (the two meet in jobs and the broker).
"""

from __future__ import annotations

from fastapi import FastAPI

from jobs.settings import get_settings
from server.app import create_app as create_server_app
from workers.queue import CeleryQueue


def create_app() -> FastAPI:
    """The API for the DESCENT_* environment, publishing jobs to its Celery broker."""
    return create_server_app(get_settings(), job_queue=CeleryQueue())
