"""The documentation in the repository: the README links only inside it, every relative link
resolves (pages other branches add are allowed in docs/README.md's index), and docs/api.md names
every field of the Decision, every problem type and every export column."""

from __future__ import annotations

import re

import msgspec

from decision_service.api.errors import TITLES
from decision_service.audit.queries import CSV_COLUMNS
from decision_service.decision import Decision, FiredRule, Reason, Trace
from tests.conftest import ROOT

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
# Pages the index lists before their branches merge (docs/README.md links them on purpose).
PENDING = {"batch.md", "operations.md"}


def test_readme_links_only_inside_the_repository() -> None:
    for target in LINK.findall((ROOT / "README.md").read_text()):
        if target.startswith(("http://", "https://")):
            continue
        resolved = (ROOT / target).resolve()
        assert resolved.is_relative_to(ROOT.resolve()), target
        assert resolved.exists(), target
    assert "docs/api.md" in (ROOT / "README.md").read_text()


def test_docs_links_resolve() -> None:
    for page in (ROOT / "docs").glob("*.md"):
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://")) or target in PENDING:
                continue
            assert (page.parent / target).resolve().exists(), f"{page.name}: {target}"


def test_api_reference_covers_every_field_error_and_column() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    for struct, prefix in (
        (Decision, ""),
        (Trace, "trace."),
        (Reason, "reasons[]."),
        (FiredRule, "trace.rules_fired[]."),
    ):
        for field in msgspec.structs.fields(struct):
            assert f"`{prefix}{field.encode_name}`" in text, prefix + field.encode_name
    for kind in TITLES:
        assert f"`{kind}`" in text, kind
    for column in CSV_COLUMNS:
        assert f"`{column}`" in text, column
    for stage in ("validate", "score", "rules", "explain", "audit"):
        assert f"`{stage}`" in text
