"""Idempotency-Key bookkeeping shared by jobs and sweeps: key -> (fingerprint of the request
body, id of the resource it created; None while the request is still being processed).

Every method is called inside the store's `atomic()`, so a check and the reservation that
follows it are one step."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel

from service.errors import Conflict, InvalidRequest

Resource = TypeVar("Resource")


@dataclass(frozen=True)
class IdempotencyClaim:
    """A request's Idempotency-Key and what a retry must repeat: its body as validated."""

    key: str
    fingerprint: str

    @classmethod
    def of(cls, key: str | None, body: BaseModel) -> IdempotencyClaim | None:
        if key is None:
            return None
        return cls(key, hashlib.sha256(body.model_dump_json().encode()).hexdigest())


class IdempotencyKeys:
    """The keys used to create one kind of resource (`noun`: "job", "sweep")."""

    def __init__(self, noun: str, on_record: Callable[[str, str, str], None] | None = None) -> None:
        self.noun = noun
        self._keys: dict[str, tuple[str, str | None]] = {}
        self._on_record = on_record  # a durable store writes (key, fingerprint, resource id)

    def replay(
        self, claim: IdempotencyClaim | None, lookup: Callable[[str], Resource | None]
    ) -> Resource | None:
        """The resource a request with this key already created, or None for a new key. 422 for
        the same key with a different body; 409 while the first request is still in flight."""
        if claim is None or claim.key not in self._keys:
            return None
        used_fingerprint, resource_id = self._keys[claim.key]
        if used_fingerprint != claim.fingerprint:
            raise InvalidRequest.at(
                ["header", "Idempotency-Key"],
                "this key was already used with a different request body; "
                f"use a new key for a new {self.noun}",
                "idempotency_key_reused",
            )
        existing = lookup(resource_id) if resource_id is not None else None
        if existing is None:
            raise Conflict("a request with this Idempotency-Key is still being processed; retry")
        return existing

    def reserve(self, claim: IdempotencyClaim | None) -> None:
        """Mark the key in flight (its resource is being created)."""
        if claim is not None:
            self._keys[claim.key] = (claim.fingerprint, None)

    def release(self, claim: IdempotencyClaim | None) -> None:
        """Forget the key: creating its resource failed, a retry may use it again."""
        if claim is not None:
            self._keys.pop(claim.key, None)

    def record(self, claim: IdempotencyClaim | None, resource_id: str) -> None:
        """The key's resource exists: retries answer it."""
        if claim is not None:
            if self._on_record is not None:
                self._on_record(claim.key, claim.fingerprint, resource_id)
            self._keys[claim.key] = (claim.fingerprint, resource_id)

    def restore(self, key: str, fingerprint: str, resource_id: str) -> None:
        """A key recorded before a restart."""
        self._keys[key] = (fingerprint, resource_id)
