"""The model registry on the real audit database (SQLite and PostgreSQL): promotion through
the gate, rollback, retirement, and every process following the live version."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from decision_service.scoring.registry import ModelRegistry, RegistryError
from tests.models.conftest import add_version


def _registry(models_dir: Path, url: str, **kwargs) -> ModelRegistry:
    return ModelRegistry(models_dir, "underwriting", "1.0.0", url, **kwargs)


def _wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_promote_rollback_retire_are_recorded_with_who_when_and_from_to(
    models_dir: Path, database
) -> None:
    reg = _registry(models_dir, database.url)
    try:
        assert reg.state().live == "1.0.0" and reg.state().events == []  # the default
        event = reg.promote("1.1.0", "alice", "fair-lending review FL-7")
        assert (event.action, event.from_version, event.to_version) == ("promote", "1.0.0", "1.1.0")
        assert event.actor == "alice" and event.reason == "fair-lending review FL-7"
        assert reg.active().card.version == "1.1.0"
        back = reg.rollback("bob", "incident 42")
        assert (back.from_version, back.to_version) == ("1.1.0", "1.0.0")
        assert reg.active().card.version == "1.0.0"
        with pytest.raises(RegistryError, match="nothing to roll back to"):
            reg.rollback("bob")
        with pytest.raises(RegistryError, match="is live"):
            reg.retire("1.0.0", "carol")
        reg.retire("1.1.0", "carol", "superseded")
        with pytest.raises(RegistryError, match="retired") as refused:
            reg.promote("1.1.0", "alice")
        assert refused.value.status == 409
        with pytest.raises(RegistryError) as unknown:
            reg.promote("7.0.0", "alice")
        assert unknown.value.status == 404
        # A second process reading the same database sees the same log and state.
        other = _registry(models_dir, database.url)
        assert [e.action for e in other.state().events] == ["promote", "rollback", "retire"]
        assert other.state().live == "1.0.0" and other.state().retired == ["1.1.0"]
        assert other.state().events[0].at.endswith("Z")
        other.close()
    finally:
        reg.close()


def test_rollback_skips_retired_versions_and_walks_back_the_history(
    models_dir: Path, database
) -> None:
    add_version(models_dir, "1.2.0")
    add_version(models_dir, "1.3.0")
    reg = _registry(models_dir, database.url)
    try:
        for version in ("1.1.0", "1.2.0", "1.3.0"):
            reg.promote(version, "alice")
        reg.retire("1.2.0", "carol")
        assert reg.state().rollback_target() == "1.1.0"
        assert reg.rollback("bob").to_version == "1.1.0"
        assert reg.rollback("bob").to_version == "1.0.0"
        assert reg.state().live == "1.0.0"
    finally:
        reg.close()


def test_a_failed_gate_names_the_check_and_changes_nothing(models_dir: Path, database) -> None:
    reg = _registry(models_dir, database.url)
    try:
        with pytest.raises(RegistryError, match="prohibited_features: model uses marital") as e:
            reg.promote("1.0.0", "alice")  # 1.0.0 uses marital status
        assert e.value.status == 422 and e.value.gate is not None
        # A copy whose model file no longer matches its card.
        tampered = add_version(models_dir, "1.2.0")
        (tampered / "model.txt").write_text((tampered / "model.txt").read_text() + "\n")
        with pytest.raises(RegistryError, match="sha256"):
            reg.promote("1.2.0", "alice")
        # A copy whose card shows adverse impact on an enforced group.
        unfair = add_version(models_dir, "1.3.0")
        card = yaml.safe_load((unfair / "model_card.yaml").read_text())
        for row in card["fair_lending"]["groups"]["marital"]:
            if row["group"] == "single":
                row |= {"adverse_impact_ratio": 0.61, "p_value": 0.0001}
        (unfair / "model_card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
        with pytest.raises(RegistryError, match=r"fair_lending: marital=single: ratio 0\.610"):
            reg.promote("1.3.0", "alice")
        # A copy whose card lost a required section.
        bare = add_version(models_dir, "1.4.0")
        card = yaml.safe_load((bare / "model_card.yaml").read_text())
        card["intended_use"] = ""
        del card["reference_distributions"]["records"]
        (bare / "model_card.yaml").write_text(yaml.safe_dump(card, sort_keys=False))
        with pytest.raises(RegistryError, match="card_complete: card lacks intended_use, "):
            reg.promote("1.4.0", "alice")
        assert reg.state().events == [] and reg.state().live == "1.0.0"
        assert reg.active().card.version == "1.0.0"
    finally:
        reg.close()


def test_every_process_follows_the_live_version_and_in_flight_work_keeps_its_own(
    models_dir: Path, database
) -> None:
    """Two workers (two registries on one database): the one that did not make the change
    follows by polling; a decision that took the old scorer keeps it."""
    admin = _registry(models_dir, database.url)
    worker = _registry(models_dir, database.url, poll_interval=0.2)
    switches: list[tuple[str, str]] = []
    worker.on_switch = lambda new, old: switches.append((old.card.version, new.card.version))
    try:
        worker.start_polling()
        in_flight = worker.active()
        row = in_flight.features(_application(in_flight))
        before = in_flight.predict(row)
        admin.promote("1.1.0", "alice")
        assert _wait_for(lambda: worker.active().card.version == "1.1.0")
        assert in_flight.card.version == "1.0.0" and in_flight.predict(row) == before
        admin.rollback("bob")
        assert _wait_for(lambda: worker.active().card.version == "1.0.0")
        assert worker.active() is in_flight  # loaded once, reused
        assert switches == [("1.0.0", "1.1.0"), ("1.1.0", "1.0.0")]
    finally:
        worker.close()
        admin.close()


def test_retired_versions_still_load_for_replay(models_dir: Path, database) -> None:
    reg = _registry(models_dir, database.url)
    try:
        reg.promote("1.1.0", "alice")
        reg.rollback("bob")
        reg.retire("1.1.0", "carol")
        assert reg.scorer("1.1.0").card.version == "1.1.0"  # replay's path
        assert reg.active().card.version == "1.0.0"
        statuses = {v.version: v.status for v in reg.describe()}
        assert statuses == {"1.0.0": "live", "1.1.0": "retired"}
    finally:
        reg.close()


def _application(scorer):
    import msgspec

    from decision_service.scoring import application_type
    from tests.conftest import APPLICATIONS

    line = APPLICATIONS.read_bytes().splitlines()[0]
    return msgspec.json.decode(line, type=application_type(scorer.card))
