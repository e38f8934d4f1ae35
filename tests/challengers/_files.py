"""Challenger rule files for tests, made from the shipped policy (real rules, real tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.conftest import ROOT

POLICY = (ROOT / "rules" / "risk_appetite.yaml").read_text()


def challenger(
    name: str = "tighter-pd",
    *,
    sample: float | None = None,
    model: str | None = None,
    extra: str = "",
) -> str:
    """The shipped policy as a challenger that declines adverse records from pd 0.25 (not
    0.30): a real difference on real traffic, and its own file tests still pass."""
    head = f"ruleset: {name}\nrole: challenger"
    if sample is not None:
        head += f"\nsample: {sample}"
    if model is not None:
        head += f"\nmodel: {model}"
    return (
        POLICY.replace("ruleset: risk-appetite", head + extra)
        .replace("when: records and pd > 0.30", "when: records and pd > 0.25")
        .replace("when: records and not pd > 0.30", "when: records and not pd > 0.25")
    )


def rules_dir(tmp: Path, **files: str) -> Path:
    """A rules directory with the shipped champion and the given extra files."""
    d = tmp / "rules"
    d.mkdir(exist_ok=True)
    shutil.copy(ROOT / "rules" / "risk_appetite.yaml", d / "risk_appetite.yaml")
    for name, text in files.items():
        (d / f"{name}.yaml").write_text(text)
    return d


def models_dir(tmp: Path, corrupt: str | None = None) -> Path:
    """models/underwriting/ with the shipped versions, plus a corrupt version if asked (its card
    is 1.1.0's, its model file is garbage: loading it raises, for real)."""
    root = tmp / "models"
    base = root / "underwriting"
    base.mkdir(parents=True, exist_ok=True)
    for v in ("1.0.0", "1.1.0"):
        (base / v).symlink_to(ROOT / "models" / "underwriting" / v)
    (base / "DEFAULT").write_text("1.0.0\n")
    if corrupt:
        (base / corrupt).mkdir()
        shutil.copy(ROOT / "models/underwriting/1.1.0/model_card.yaml", base / corrupt)
        (base / corrupt / "model.txt").write_text("this is not a LightGBM model\n")
    return root
