"""The audit key lives in a file only its owner can read, is made once even when several
workers start together, and can be rotated without old records failing to verify."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from decision_service.audit import AuditKeyError, Keyring
from decision_service.audit.keys import key_id_of


def _load_or_create(path: str) -> str | None:
    return Keyring.load_or_create(Path(path)).current_id


def test_the_key_file_is_made_once_with_owner_only_access(tmp_path: Path) -> None:
    path = tmp_path / "var" / "audit.key"
    with ProcessPoolExecutor(4) as pool:  # four workers starting at the same moment
        ids = list(pool.map(_load_or_create, [str(path)] * 8))
    assert len(set(ids)) == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["audit.key"]  # no temp file left
    key_id, secret = path.read_text().split()
    assert key_id == ids[0] == key_id_of(bytes.fromhex(secret))


def test_a_rotated_key_signs_new_records_and_the_old_one_still_verifies(tmp_path: Path) -> None:
    ring = Keyring.load_or_create(tmp_path / "audit.key")
    mac = ring.mac(b"record")
    rotated = ring.rotate()
    assert rotated.current_id != ring.current_id
    assert set(rotated.keys) == {ring.current_id, rotated.current_id}
    assert rotated.check(b"record", ring.current_id, mac) is True
    assert rotated.check(b"edited", ring.current_id, mac) is False
    assert stat.S_IMODE((tmp_path / "audit.key").stat().st_mode) == 0o600


def test_an_unknown_key_is_not_a_wrong_mac(tmp_path: Path) -> None:
    ring = Keyring.load_or_create(tmp_path / "audit.key")
    assert ring.check(b"record", "k000000000000000", "00" * 32) is None


@pytest.mark.parametrize(
    "text",
    ["knotahexkey zz\n", "k0123 " + "ab" * 32 + "\n", "only-one-field\n"],
    ids=["not-hex", "id-does-not-match", "one-field"],
)
def test_a_malformed_key_file_is_refused_with_its_line(tmp_path: Path, text: str) -> None:
    path = tmp_path / "audit.key"
    path.write_text("# audit keys\n" + text)
    with pytest.raises(AuditKeyError, match=r"audit.key:2:"):
        Keyring.load(path)


def test_a_missing_key_file_is_an_empty_keyring_for_verify(tmp_path: Path) -> None:
    ring = Keyring.load(tmp_path / "absent.key")
    assert ring.keys == {} and ring.current_id is None
    assert not (tmp_path / "absent.key").exists()


def _cli(tmp_path: Path, *args: str, group: str = "audit") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DECISION_")}
    env |= {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'audit.db'}",
        "DECISION_AUDIT_KEY_FILE": str(tmp_path / "secrets" / "audit.key"),
        "DECISION_AUDIT_CHECKPOINT_FILE": str(tmp_path / "var" / "checkpoints.jsonl"),
    }
    return subprocess.run(
        [sys.executable, "-m", "decision_service", group, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_rotate_key_from_the_cli_is_recorded_and_verifies(tmp_path: Path) -> None:
    # audit commands never migrate: the operator makes the schema first
    upgraded = _cli(tmp_path, "upgrade", group="db")
    assert upgraded.returncode == 0, upgraded.stderr
    assert _cli(tmp_path, "export").returncode == 0  # makes the key, records the export
    first = Keyring.load(tmp_path / "secrets" / "audit.key").current_id
    done = _cli(tmp_path, "rotate-key")
    assert done.returncode == 0, done.stderr
    ring = Keyring.load(tmp_path / "secrets" / "audit.key")
    assert len(ring.keys) == 2 and ring.current_id in done.stdout and ring.current_id != first
    verified = _cli(tmp_path, "verify", "--format", "json")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    report = json.loads(verified.stdout)
    assert {(c["log"], c["records"]) for c in report["logs"]} == {
        ("access_log", 1),
        ("change_log", 2),  # audit.init (the database's id comes first), audit.key_rotated
    }
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'var' / 'audit.db'}")
    with engine.connect() as conn:
        rotated = conn.execute(
            sa.text("SELECT actor, before, after, key_id FROM change_log WHERE seq = 2")
        ).one()
    engine.dispose()
    assert rotated.actor.startswith("cli:")
    assert (json.loads(rotated.before), json.loads(rotated.after)) == (first, ring.current_id)
    assert rotated.key_id == ring.current_id  # the rotation itself is signed with the new key
