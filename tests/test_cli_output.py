"""What scripts read: `--format json` bodies on stdout, nothing else there; no progress bar
when stderr is not a terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from decision_service.cli import main
from tests.conftest import APPLICATIONS, cli_env

N = 20


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cli_env(tmp_path, monkeypatch)
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(APPLICATIONS.read_bytes().splitlines(keepends=True)[:N]))
    out = str(tmp_path / "out.jsonl")
    assert main(["batch", str(source), "-o", out, "--audit", "--summary", "json"]) == 0
    return tmp_path


def test_replay_and_export_print_only_data(
    recorded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["audit", "replay", "--all", "--format", "json"]) == 0
    captured = capsys.readouterr()
    body = json.loads(captured.out)
    assert (body["replayed"], body["identical"], body["different"], body["failed"]) == (
        N,
        N,
        [],
        [],
    )
    assert "replaying" not in captured.err  # stderr is not a terminal: no bar
    assert main(["audit", "replay", "--id", "no-such-id", "--format", "json"]) == 1
    missing = json.loads(capsys.readouterr().out)
    assert missing["failed"] == [{"decision_id": None, "error": "not found"}]
    assert main(["audit", "export", "--outcome", "approve"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert lines and {line["decision"]["outcome"] for line in lines} == {"approve"}
    assert "exporting" not in captured.err
