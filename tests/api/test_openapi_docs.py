"""docs/api.md's endpoint table and the OpenAPI document say the same thing: every operation has
a row, each row names the roles the route admits and exactly the statuses the document declares
for it (besides the gate's 401/403/413/415/429, which the page describes once)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from decision_service.api.app import create_app
from tests.api.routes import app_routes, make_settings
from tests.conftest import ROOT

GATE = {"401", "403", "413", "415", "429"}
ROW = re.compile(r"^\| `(GET|POST) (/[^`]*)` \|([^|\n]*)\|([^|\n]*)\|([^|\n]*)\|$", re.M)
STATUS = re.compile(r"\b([1-5]\d\d)\b")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[tuple, Any]]:
    app = create_app(make_settings(tmp_path_factory.mktemp("docs")))
    roles = {
        (r.method, re.sub(r":[a-z]+\}", "}", r.path)): r.roles
        for r in app_routes(app)
        if not r.automatic
    }
    return app.openapi_schema.to_schema(), roles


def _rows() -> dict[tuple[str, str], tuple[str, set[str]]]:
    text = (ROOT / "docs" / "api.md").read_text()
    return {
        (method, path): (role, set(STATUS.findall(success + errors)))
        for method, path, role, success, errors in ROW.findall(text)
    }


def test_every_operation_has_a_row_with_its_statuses_and_roles(
    built: tuple[dict[str, Any], dict[tuple, Any]],
) -> None:
    document, roles = built
    rows = _rows()
    for path, item in document["paths"].items():
        for method, op in item.items():
            key = (method.upper(), path)
            assert key in rows, f"docs/api.md has no row for {key}"
            role, statuses = rows[key]
            assert statuses == set(op["responses"]) - GATE, (key, statuses, set(op["responses"]))
            for admitted in roles[key] or ():
                assert admitted in role, (key, admitted, role)
    documented = {(m.upper(), p) for p, item in document["paths"].items() for m in item}
    assert set(rows) - documented <= {("GET", "/schema/openapi.json")}, set(rows) - documented


def test_the_table_is_what_the_test_reads() -> None:
    """The row pattern finds the table (a reformatted table must not pass vacuously)."""
    assert len(_rows()) >= 19
    assert _rows()[("POST", "/decide")][1] == {"200", "400", "422", "503"}
