"""Access control: API keys (hashed, in the audit database), roles, the per-worker key cache,
rate limits and the first-start admin key. The HTTP side (one middleware + one guard for every
route, and the /decide fast path) is in decision_service/api/gate.py.

Other modules read the caller from the ASGI scope: ``scope.get("user")`` is a ``Principal``
(name, role) on every authenticated route, absent on public ones.
"""

from typing import TYPE_CHECKING, Any

from decision_service.access.principal import ADMIN, PUBLIC, ROLES, Principal, allowed

if TYPE_CHECKING:
    from decision_service.access.tables import ApiKeyRow, api_key_table

__all__ = ["ADMIN", "PUBLIC", "ROLES", "ApiKeyRow", "Principal", "allowed", "api_key_table"]


def __getattr__(name: str) -> Any:
    # The tables (SQLModel) on first use: `decision-service --help` lists the roles without them.
    if name in ("ApiKeyRow", "api_key_table"):
        from decision_service.access import tables

        return getattr(tables, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
