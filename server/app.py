"""The FastAPI application: `create_app(settings)`.

The app owns one engine and session factory for its settings' database, applies the
migrations when it starts (so the app on an empty database just works; `descent serve`
migrates before it starts its API processes, so theirs find the schema current), and
makes DESCENT_API_KEY the first admin key. Routes live under /api/v1, one router a resource;
health, readiness and Prometheus metrics sit at the root, where load balancers and
scrapers look for them.

Every error is JSON {"detail": ...} with a 4xx a client can act on: the jobs package's
SpecError and DataError become 422 naming the spec path or data source, FastAPI's own
validation errors 422 naming the parameter. Anything else is a bug, answered 500 as JSON.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy.exc
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from jobs.errors import DataError, SpecError
from jobs.settings import Settings, get_settings
from jobs.store import make_engine, make_read_session_factory, make_session_factory, migrate
from jobs.store import repository as repo
from jobs.store.repository import IdempotencyKeyReused
from server.job_queue import JobQueue, StoreQueue
from server.model_cache import ModelCache
from server.routes import datasets, health, jobs, keys
from server.telemetry import RequestMetrics, Telemetry

FIRST_KEY_NAME = "DESCENT_API_KEY"
# A multipart upload carries its form fields and part headers besides the file itself;
# the file's own size is checked exactly by POST /datasets.
MULTIPART_OVERHEAD_BYTES = 1 << 20


def _ensure_first_key(app: FastAPI) -> None:
    """DESCENT_API_KEY as an admin key, once: a restart with the same key finds it, and
    of several API processes starting at once (`descent serve --api-workers`) one inserts
    it while the others' inserts fail on the unique prefix and find it inserted."""
    settings: Settings = app.state.settings
    if settings.api_key is None:
        return
    token = settings.api_key.get_secret_value()
    with app.state.sessions() as session:
        if repo.authenticate(session, token) is not None:
            return
        try:
            repo.create_key(session, FIRST_KEY_NAME, admin=True, secret=token)
        except ValueError:
            # a process beside this one inserted it first; anything else is still an error
            if repo.authenticate(session, token) is None:
                raise


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    migrate(app.state.settings.database_url)
    _ensure_first_key(app)
    # what start-up made (modules, the engine, SQLAlchemy's mappers) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks it all in
    # the middle of a request
    gc.freeze()
    yield
    app.state.engine.dispose()


class BodySizeLimit:
    """Refuses a request whose Content-Length is over the limit before its body is read,
    so an oversized upload is not first spooled to disk by the multipart parser."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            length = dict(scope["headers"]).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_bytes:
                response = JSONResponse(
                    {"detail": f"the request body is over {self.max_bytes:,} bytes"},
                    status.HTTP_413_CONTENT_TOO_LARGE,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _location(loc: Sequence[int | str]) -> str:
    """("body", "inputs", 0) as body.inputs[0], the way spec paths read."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _json_error(status_code: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code)


async def _spec_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecError)
    return _json_error(422, str(exc), path=exc.path)


async def _data_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DataError)
    return _json_error(422, str(exc), source=exc.source)


async def _idempotency_key_reused(_request: Request, exc: Exception) -> JSONResponse:
    return _json_error(422, str(exc))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # only loc, msg and type: FastAPI's default also echoes the input, which for a junk
    # upload is bytes that JSON cannot carry (a 500 instead of the 422)
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    detail = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in errors)
    return _json_error(422, detail or "invalid request", errors=errors)


async def _unstorable_value(_request: Request, exc: Exception) -> JSONResponse:
    # e.g. a NUL character, which PostgreSQL text cannot hold: the client's value, not us
    return _json_error(422, "a value in the request cannot be stored (a NUL character?)")


async def _internal_error(_request: Request, _exc: Exception) -> JSONResponse:
    # Starlette raises the exception again after this answer, so the server logs it
    return _json_error(500, "internal error; the server's log has the details")


def create_app(settings: Settings | None = None, *, job_queue: JobQueue | None = None) -> FastAPI:
    """The API for `settings` (default: the DESCENT_* environment). `job_queue` is how
    created jobs reach workers (server.job_queue); by default they wait in the store."""
    settings = settings or get_settings()
    app = FastAPI(
        title="Descent",
        summary="Training as a service on Descent's own tensor engine.",
        version="1",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.engine = make_engine(settings.database_url)
    app.state.sessions = make_session_factory(app.state.engine)
    app.state.read_sessions = make_read_session_factory(app.state.engine)
    app.state.job_queue = job_queue or StoreQueue()
    app.state.model_cache = ModelCache()
    app.state.telemetry = Telemetry()

    app.add_exception_handler(SpecError, _spec_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(IdempotencyKeyReused, _idempotency_key_reused)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(sqlalchemy.exc.DataError, _unstorable_value)
    app.add_exception_handler(Exception, _internal_error)

    # added last, so outermost: the metrics count the 413s the size limit answers
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.max_upload_mb * 2**20 + MULTIPART_OVERHEAD_BYTES
    )
    app.add_middleware(RequestMetrics, telemetry=app.state.telemetry)

    for router in (keys.router, datasets.router, jobs.router, health.router):
        app.include_router(router)
    return app
