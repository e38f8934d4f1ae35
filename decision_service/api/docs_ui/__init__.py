"""The API docs pages under /schema, served offline: Swagger UI's files come from the
`swagger-ui-bundle-v2` wheel and are answered by this app (no CDN, no inline script), so the
pages render on a network without internet access and under a CSP of 'self' only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import swagger_ui_bundle
from litestar import Request, Response, get
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromPath

from decision_service.api.errors import error

BASE = "/schema/assets"
_DIST = Path(swagger_ui_bundle.swagger_ui_path)
_HERE = Path(__file__).parent
# The only files served: name → (path, media type).
ASSETS: dict[str, tuple[Path, str]] = {
    "swagger-ui-bundle.js": (_DIST / "swagger-ui-bundle.js", "text/javascript"),
    "swagger-ui-standalone-preset.js": (
        _DIST / "swagger-ui-standalone-preset.js",
        "text/javascript",
    ),
    "swagger-ui.css": (_DIST / "swagger-ui.css", "text/css"),
    "favicon-32x32.png": (_DIST / "favicon-32x32.png", "image/png"),
    "swagger-init.js": (_HERE / "swagger-init.js", "text/javascript"),
}


class OfflineSwagger(SwaggerRenderPlugin):
    """Swagger UI from this app's own /schema/assets (the plugin's asset-URL options), and a
    page with no inline script or style: the document is fetched from /schema/openapi.json."""

    def __init__(self) -> None:
        super().__init__(
            js_url=f"{BASE}/swagger-ui-bundle.js",
            css_url=f"{BASE}/swagger-ui.css",
            standalone_preset_js_url=f"{BASE}/swagger-ui-standalone-preset.js",
            path=["/", "/swagger"],
            favicon=f"<link rel='icon' type='image/png' href='{BASE}/favicon-32x32.png'>",
            style="",
        )

    def render(self, request: Request, openapi_schema: dict[str, Any]) -> bytes:
        title = str(openapi_schema["info"]["title"]).replace("<", "&lt;")
        return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
{self.favicon}
<link rel="stylesheet" href="{self.css_url}">
</head>
<body data-openapi="{self.get_openapi_json_route(request)}">
<div id="swagger-ui"></div>
<script src="{self.js_url}"></script>
<script src="{self.standalone_preset_js_url}"></script>
<script src="{BASE}/swagger-init.js"></script>
</body>
</html>
""".encode()

    def receive_router(self, router: Any) -> None:
        """No OAuth2 redirect page: this API uses bearer keys."""


@get(f"{BASE.removeprefix('/schema')}/{{name:str}}", include_in_schema=False, sync_to_thread=False)
def docs_asset(name: FromPath[str]) -> Response:
    found = ASSETS.get(name)
    if found is None:
        return error(404, f"no docs asset {name}")
    path, media_type = found
    return Response(path.read_bytes(), media_type=media_type)
