"""API keys, for admin keys only: create (the secret shown once), list, revoke."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, status

from jobs.store import repository as repo
from jobs.store.models import ApiKey
from server.deps import AdminKey, SessionDep
from server.routes import API_PREFIX
from server.schemas import KeyCreate, KeyCreated, KeyPublic

router = APIRouter(prefix=f"{API_PREFIX}/keys", tags=["keys"])
# key ids are 32-bit integers on PostgreSQL: a larger one names no key, and would not bind
MAX_KEY_ID = 2**31 - 1


@router.post("", status_code=status.HTTP_201_CREATED)
def create_key(body: KeyCreate, session: SessionDep, _admin: AdminKey) -> KeyCreated:
    key, secret = repo.create_key(session, body.name, admin=body.admin)
    return KeyCreated(**KeyPublic.model_validate(key).model_dump(), secret=secret)


@router.get("", response_model=list[KeyPublic])
def list_keys(session: SessionDep, _admin: AdminKey) -> Sequence[ApiKey]:
    return repo.list_keys(session)


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_key(
    key_id: Annotated[int, Path(ge=1, le=MAX_KEY_ID)], session: SessionDep, _admin: AdminKey
) -> None:
    if not repo.revoke_key(session, key_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no live key with id {key_id}")
