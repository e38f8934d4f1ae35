"""Schemathesis against the real server's own OpenAPI document (SQLite): generated and mutated
requests for every operation (examples, coverage, fuzzing, stateful links), authenticated as
admin (who may call every route), must never get a 5xx, and every answer must conform to the
document: a documented status, a documented content type (problem+json, text/html, text/plain…)
and a body valid against its schema.

Bounded and deterministic: few examples per operation, hypothesis derandomized (schemathesis'
deterministic mode) with a fixed seed and no example database, one worker; a failure prints the
`curl` line that reproduces it. GET /audit/verify walks the log in a child process (seconds on
a busy machine), so it gets one generated example and no coverage phase. Revoking a key always
names one key made for it: a generated name (or one a link took from GET /keys) could revoke
the very key the run authenticates with, and every later answer would be a 401.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, start_server

pytestmark = pytest.mark.slow  # a soak: runs in the `pytest -m slow` pass (.ci/run)

SEED = 20261126
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)
REVOKED = "schemathesis-revokes-this"
ENABLED = "".join(f"{check}.enabled = true\n" for check in CHECKS)
CONFIG = f"""\
seed = {SEED}
request-timeout = 120
workers = 1

[generation]
max-examples = 5
deterministic = true
database = "none"

[checks]
enabled = false
{ENABLED}
[[operations]]
include-path = "/audit/verify"
generation.max-examples = 1
phases.coverage.enabled = false

[[operations]]
include-path = "/keys/{{name}}/revoke"
parameters = {{ name = "{REVOKED}" }}
"""


def _st() -> str:
    found = shutil.which("st", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail("schemathesis (`st`) is not installed in this environment")
    return found


@pytest.fixture(scope="module")
def sqlite_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    server = start_server(tmp, f"sqlite:///{tmp / 'decisions.db'}")
    yield server
    server.stop()


def test_every_operation_conforms_to_the_document(sqlite_server: Server, tmp_path: Path) -> None:
    with sqlite_server.client() as admin:
        paths = admin.get("/schema/openapi.json").json()["paths"]
        made = admin.post("/keys", json={"name": REVOKED, "role": "decider"})
        assert made.status_code == 201, made.text
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        _st(),
        "--config-file",
        str(config),
        "run",
        f"{sqlite_server.url}/schema/openapi.json",
        "-H",
        f"Authorization: Bearer {sqlite_server.admin_key}",
        "--report",
        "junit",
        "--report-junit-path",
        str(tmp_path / "schemathesis.xml"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
    total = sum(len(item) for item in paths.values())
    assert f"{total} selected / {total} total" in done.stdout, done.stdout[:2000]
    assert "decide_failed" not in sqlite_server.log.read_text()
    with sqlite_server.client() as admin:  # the run's own key still works: every answer counted
        assert admin.get("/keys").status_code == 200
