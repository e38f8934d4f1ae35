"""The API docs page in a real browser (Debian's chromium, headless) against the real server:
it renders the /decide operation from assets the app serves itself, under a CSP of 'self' only,
with the browser's network to the outside cut off (a proxy that does not exist), so a script
from a public CDN would leave the page blank and this test red."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, start_server


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required under CI (.ci/run installs it)")
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return found


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("docs")
    server = start_server(tmp, f"sqlite:///{tmp / 'decisions.db'}")
    yield server
    server.stop()


def render(url: str, profile: Path) -> subprocess.CompletedProcess[str]:
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # Everything but loopback (bypassed by default) goes to a proxy that is not there:
        # no CDN can answer, as on a bank's network.
        "--proxy-server=http://127.0.0.1:9",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=15000",
        "--dump-dom",
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def test_docs_page_renders_offline_in_a_browser(srv: Server, tmp_path: Path) -> None:
    with srv.anonymous() as c:
        page = c.get("/schema")
        assert page.status_code == 200
        # nothing on the page points off the app
        assert not re.search(r"(src|href)=['\"]?(https?:)?//", page.text), page.text
        for asset in re.findall(r"(?:src|href)=['\"](/schema/assets/[^'\"]+)", page.text):
            assert c.get(asset).status_code == 200, asset
        # only the listed files: not the rest of the wheel (its demo page points at a CDN)
        assert c.get("/schema/assets/index.html").status_code == 404
    done = render(f"{srv.url}/schema", tmp_path / "profile")
    assert done.returncode == 0, done.stderr[-3000:]
    dom = done.stdout
    # Swagger UI built the operation list from /schema/openapi.json
    assert "Decide one loan application" in dom, dom[-2000:]
    assert "/decisions/{decision_id}" in dom
    assert "Content Security Policy" not in done.stderr, done.stderr[-3000:]
    assert "Refused to" not in done.stderr, done.stderr[-3000:]


def test_the_browser_really_is_offline(tmp_path: Path) -> None:
    """The control: under the same flags, a page whose script comes from a public CDN does not
    get it (so the test above would fail on CDN assets, as the page did before)."""
    page = tmp_path / "cdn.html"
    page.write_text(
        '<html><body><script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5.18.2/'
        'swagger-ui-bundle.js"></script><div id="x"></div><script>'
        "document.getElementById('x').textContent = typeof SwaggerUIBundle;</script></body></html>"
    )
    done = render(page.as_uri(), tmp_path / "profile")
    assert '<div id="x">undefined</div>' in done.stdout, done.stdout[-2000:]
