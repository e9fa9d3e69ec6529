"""API keys: who is calling, and what they may see.

With SCRATCHNET_API_KEYS (and SCRATCHNET_ADMIN_API_KEYS) set, every /v1 route needs a key, as
`Authorization: Bearer <key>` or `X-API-Key: <key>`; a missing or wrong one is a 401 with
`WWW-Authenticate: Bearer`. A key is compared with every configured key in constant time, so
neither which key nor how much of one matched can be timed. Each dataset, model, job and sweep
belongs to the key that created it (its name is the record's `owner`): another key sees nothing
of it, exactly as if it did not exist; admin keys see and manage everything. Without keys the
service behaves as if everyone were one admin. Keys never appear in logs, errors or responses;
their names do.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from service.errors import Unauthorized
from service.settings import Settings
from service.state.callers import EVERYONE, Caller

NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
MIN_KEY_CHARS = 16  # a guessable key is no key: 16 characters of a random token at the least


@dataclass(frozen=True)
class _Key:
    name: str
    secret: bytes
    admin: bool


class KeyRing:
    """The configured keys. Raises ValueError, naming the setting and the entry, for a
    malformed list (no key is ever repeated in the message)."""

    def __init__(self, settings: Settings) -> None:
        self._keys: list[_Key] = []
        for setting, admin in (("api_keys", False), ("admin_api_keys", True)):
            value = getattr(settings, setting)
            if value is None or not value.strip():
                continue
            for number, entry in enumerate(value.split(","), start=1):
                self._keys.append(_parse(f"SCRATCHNET_{setting.upper()}", number, entry, admin))
        names = [key.name for key in self._keys]
        if len(set(names)) != len(names):
            repeated = next(name for name in names if names.count(name) > 1)
            raise ValueError(f"the key name {repeated!r} is given twice; each key needs its own")
        if len({key.secret for key in self._keys}) != len(self._keys):
            raise ValueError("two API keys are the same; each name needs its own key")

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def identify(self, presented: str | None) -> Caller | None:
        """The caller whose key this is, or None. Every configured key is compared, in
        constant time, whatever matches."""
        if not self._keys:
            return EVERYONE
        if not presented:
            return None
        given = presented.encode()
        found: _Key | None = None
        for key in self._keys:
            if hmac.compare_digest(given, key.secret):
                found = key
        return None if found is None else Caller(found.name, found.admin)


def _parse(setting: str, number: int, entry: str, admin: bool) -> _Key:
    name, separator, secret = entry.strip().partition(":")
    where = f"{setting}, entry {number}"
    if not separator:
        raise ValueError(f"{where} is not name:key")
    if not NAME.fullmatch(name):
        raise ValueError(f"{where}: the name {name!r} must be 1 to 64 letters, digits or _ . @ -")
    if len(secret) < MIN_KEY_CHARS or any(c.isspace() or c == "," for c in secret):
        raise ValueError(
            f"{where} (name {name!r}): the key must be at least {MIN_KEY_CHARS} characters "
            "without spaces or commas (for example: python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))')"
        )
    return _Key(name, secret.encode(), admin)


_bearer = HTTPBearer(
    auto_error=False,
    description="An API key as `Authorization: Bearer <key>` (when the service has keys).",
)
_api_key = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="An API key as `X-API-Key: <key>` (when the service has keys).",
)


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key a request carries: a Bearer token, else X-API-Key."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return api_key or None


async def authenticate(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> Caller:
    """The caller of this request; 401 when the service has keys and this one has none that
    matches. The rate limiter may have identified it already (request.state.caller)."""
    known: Caller | None = getattr(request.state, "caller", None)
    if known is not None:
        return known
    ring: KeyRing = request.app.state.scratchnet.keys
    token = bearer.credentials if bearer is not None else None
    caller = ring.identify(token or api_key)
    if caller is None:
        raise Unauthorized(
            "this service needs an API key: send it as `Authorization: Bearer <key>` or "
            "`X-API-Key: <key>`"
            if not (token or api_key)
            else "the API key is not valid for this service"
        )
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(authenticate)]


async def authenticate_docs(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    api_key: Annotated[str | None, Security(_api_key)],
) -> Caller:
    """/metrics, /docs, /redoc and /openapi.json: open unless SCRATCHNET_PROTECT_DOCS."""
    settings: Settings = request.app.state.scratchnet.settings
    if not settings.protect_docs:
        return EVERYONE
    return await authenticate(request, bearer, api_key)
