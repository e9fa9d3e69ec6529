"""Who is calling, as the state layer needs to know it: what they may see and whose they make.

`service.api.auth` turns a request's API key into a Caller; everything the service keeps has an
`owner` (the creating key's name, None when the service has no keys).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    """A key's name (None without keys) and whether it is an admin."""

    name: str | None
    admin: bool

    def sees(self, owner: str | None) -> bool:
        """Whether a resource of `owner` exists for this caller."""
        return self.admin or owner == self.name


EVERYONE = Caller(None, admin=True)  # the only caller of a service without keys
