"""Every route of the app with the roles it declares (what the access tests walk)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from litestar import Litestar

from decision_service.settings import Settings, load_settings
from tests.conftest import ROOT


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # Litestar's template, e.g. /decisions/{decision_id:str}
    roles: tuple[str, ...] | None  # None: nothing declared
    automatic: bool  # Litestar's own OPTIONS answer (Allow header), not ours

    def url(self) -> str:
        """The path with every parameter filled with a value that names nothing."""
        parts = []
        for part in self.path.split("/"):
            if part.startswith("{"):
                kind = part.strip("{}").partition(":")[2]
                part = "0" if kind == "int" else "nothing-here"
            parts.append(part)
        return "/".join(parts)


def app_routes(app: Litestar) -> list[Route]:
    routes = []
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            roles = handler.opt.get("roles")
            automatic = handler.handler_name == "options_handler"
            for method in sorted(handler.http_methods):
                routes.append(Route(method, route.path, tuple(roles) if roles else None, automatic))
    return routes


def make_settings(tmp: Path, **overrides: object) -> Settings:
    return load_settings(
        environ={},
        database_url=f"sqlite:///{tmp / 'd.db'}",
        rules_watch=False,
        models_dir=ROOT / "models",
        rules_dir=ROOT / "rules",
        admin_key_file=tmp / "admin.key",
        **overrides,
    )
