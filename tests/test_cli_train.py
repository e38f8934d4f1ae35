"""`decision-service train` never overwrites an existing model version unless --force."""

from __future__ import annotations

from pathlib import Path

import pytest

from decision_service.cli import main


def test_train_refuses_an_existing_version_directory_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    version = tmp_path / "underwriting" / "9.9.9"
    version.mkdir(parents=True)
    card = version / "model_card.yaml"
    card.write_text("version: 9.9.9\n")  # a card alone is a release too
    examples = tmp_path / "examples.jsonl"
    argv = ["train", "--models", str(tmp_path), "--version", "9.9.9", "--examples", str(examples)]
    assert main(argv) == 1
    assert "already exists" in capsys.readouterr().err
    assert card.read_text() == "version: 9.9.9\n" and not examples.exists()
    # --force gets past the guard: here it stops at the next check (9.9.9 has no feature set),
    # which shows the refusal above was the guard and nothing else.
    assert main([*argv, "--force"]) == 2
    assert "has no feature set" in capsys.readouterr().err


def test_an_empty_version_directory_is_not_a_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "underwriting" / "9.9.9").mkdir(parents=True)
    assert main(["train", "--models", str(tmp_path), "--version", "9.9.9"]) == 2
    assert "has no feature set" in capsys.readouterr().err
