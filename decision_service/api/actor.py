"""Who is calling: the name the access and change logs record for a request."""

from __future__ import annotations

from typing import Any


def actor_name(request: Any) -> str:
    """The authenticated principal's name (the auth layer puts it in ``scope["user"]``), or
    ``anonymous`` when no one authenticated the request."""
    user = request.scope.get("user")
    name = getattr(user, "name", None)
    return name if isinstance(name, str) and name else "anonymous"
