"""Access control: API keys (hashed, in the audit database), roles, the per-worker key cache,
rate limits and the first-start admin key. The HTTP side (one middleware + one guard for every
route, and the /decide fast path) is in decision_service/api/gate.py.

Other modules read the caller from the ASGI scope: ``scope.get("user")`` is a ``Principal``
(name, role) on every authenticated route, absent on public ones.
"""

from decision_service.access.principal import ADMIN, PUBLIC, ROLES, Principal, allowed
from decision_service.access.tables import ApiKeyRow, api_key_table

__all__ = ["ADMIN", "PUBLIC", "ROLES", "ApiKeyRow", "Principal", "allowed", "api_key_table"]
