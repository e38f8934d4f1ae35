"""Who is calling, and which roles a route admits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ROLES: Final = ("decider", "analyst", "auditor", "admin")
PUBLIC: Final = "public"  # a route anyone may call (health, schema)
ADMIN: Final = "admin"  # may call every route


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller: the API key's name and role (what `scope["user"]` holds)."""

    name: str
    role: str


def allowed(principal: Principal, roles: tuple[str, ...] | list[str]) -> bool:
    """May this caller use a route that declares `roles`? (admin may use every route)."""
    return principal.role == ADMIN or principal.role in roles
