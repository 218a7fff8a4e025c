"""The routes' dependencies as `Annotated` aliases: a store session, the settings, the
calling key (any, or admin), and the objects the app holds (job queue, model cache).

Everything comes from `request.app.state`, set up by `create_app`, so that two apps in
one process (tests) never share a database or a cache.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from jobs.settings import Settings
from jobs.store import repository as repo
from jobs.store.models import ApiKey
from server.job_queue import JobQueue
from server.model_cache import ModelCache

# auto_error=False: a missing or non-Bearer header is ours to answer, with a 401 that says
# what to send (HTTPBearer's own answer is a 403)
_READ_METHODS = frozenset(("GET", "HEAD"))
_bearer = HTTPBearer(auto_error=False, description="an API key: Authorization: Bearer dsk_...")


# FastAPI runs a sync dependency in a worker thread, a sync generator twice (enter and
# exit), and each hand-off costs ~0.1 ms on a 2-core machine (benchmarks/RESULTS.md,
# "Service load"). So what does no I/O is async, and the session hops once: a Session
# touches the database only at its first query (made in the routes' own threads), while
# closing it returns the connection to the pool with a rollback, a round trip on
# PostgreSQL, so that runs in a thread, shielded so a client's disconnect cannot skip it.
async def get_session(request: Request) -> AsyncIterator[Session]:
    # a GET only reads: on PostgreSQL its session needs no transaction (store.engine)
    reads = request.method in _READ_METHODS
    session = (request.app.state.read_sessions if reads else request.app.state.sessions)()
    try:
        yield session
    finally:
        with anyio.CancelScope(shield=True):
            await run_in_threadpool(session.close)


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_job_queue(request: Request) -> JobQueue:
    return request.app.state.job_queue


async def get_model_cache(request: Request) -> ModelCache:
    return request.app.state.model_cache


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
JobQueueDep = Annotated[JobQueue, Depends(get_job_queue)]
ModelCacheDep = Annotated[ModelCache, Depends(get_model_cache)]


def _unauthorized(reason: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, reason, headers={"WWW-Authenticate": "Bearer"}
    )


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def key_for(session: Session, credentials: HTTPAuthorizationCredentials | None) -> ApiKey:
    """The live key the request's bearer token names, or a 401."""
    if credentials is None:
        raise _unauthorized("no API key: send the header Authorization: Bearer <key>")
    key = repo.authenticate(session, credentials.credentials)
    if key is None:
        raise _unauthorized("the API key is not valid or was revoked")
    return key


def get_current_key(session: SessionDep, credentials: Credentials) -> ApiKey:
    return key_for(session, credentials)


CurrentKey = Annotated[ApiKey, Depends(get_current_key)]


def get_admin_key(key: CurrentKey) -> ApiKey:
    if not key.admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs an admin key")
    return key


AdminKey = Annotated[ApiKey, Depends(get_admin_key)]
