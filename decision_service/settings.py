"""One settings object for every command: defaults < TOML file < environment.

Environment: `DECISION_<FIELD>` (e.g. DECISION_RULES_ENGINE=compiled) and `DATABASE_URL`.
TOML: the file named by `DECISION_CONFIG` (or `--config`), keys as the field names.
Every default runs on a fresh clone: models/ and rules/ from the repo, SQLite under ./var/.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import msgspec

ENV_PREFIX = "DECISION_"


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    models_dir: Path = Path("models")
    model_name: str = "underwriting"
    # "default": the version named in models/<name>/DEFAULT (what serves until the model
    # registry records a promotion); "latest": the highest version; or an exact X.Y.Z.
    model_version: str = "default"
    model_poll_seconds: float = 1.0  # each worker re-reads the model registry's log this often
    rules_dir: Path = Path("rules")
    rules_engine: Literal["durable_rules", "compiled"] = "durable_rules"
    rules_watch: bool = True  # reload rule files when they change
    database_url: str = "sqlite:///var/decisions.db"
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    explain: Literal["adverse", "always"] = "adverse"  # when model reason codes are computed
    # Adverse-action notices: each lender's name, contact and rights paragraphs.
    notices_file: Path = Path("notices/lenders.yaml")
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_decisions: bool = True  # one JSON line per decision
    otel_exporter: Literal["none", "console", "otlp"] = "none"
    otel_endpoint: str = "http://127.0.0.1:4318/v1/traces"
    otel_sample_ratio: float = 1.0
    # How long an Idempotency-Key answers retries: seconds, or a number with s, m, h or d.
    idempotency_ttl: Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]*[smhd]?$")] = "24h"
    # Access control (decision_service/access/): API keys, roles, limits.
    admin_key_file: Path = Path("var/admin.key")  # first start with no keys writes one here
    key_refresh_seconds: float = 0.5  # each worker re-reads the keys: revocation takes ≤ 1 s
    key_last_used_seconds: float = 60.0  # "last used" written at most this often per key
    rate_limit: str = "200/second"  # per key, token bucket: N/second|minute|hour
    rate_limit_decider: str | None = None  # per-role overrides of rate_limit
    rate_limit_analyst: str | None = None
    rate_limit_auditor: str | None = None
    rate_limit_admin: str | None = None
    redis_url: str | None = None  # set: buckets shared by every worker and replica
    max_body_bytes: int = 65536  # 413 above this, on every route, before the body is read
    metrics_public: bool = True  # /metrics without a key (scrapers); false: analyst/auditor
    cors_origins: str = ""  # comma-separated allowed origins; empty: no CORS headers at all
    # The audit key (never in the database; made on first start, mode 0600) and the signed
    # checkpoints of the chain heads, also outside the database.
    audit_key_file: Path = Path("var/audit.key")
    audit_checkpoint_file: Path = Path("var/checkpoints.jsonl")
    audit_checkpoint_interval_s: float = 60.0

    @property
    def model_dir(self) -> Path:
        base = self.models_dir / self.model_name
        pointer = base / "DEFAULT"
        if self.model_version == "default" and pointer.is_file():
            return base / pointer.read_text().strip()
        if self.model_version not in ("latest", "default"):
            return base / self.model_version
        versions = [p for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
        if not versions:
            return base / "missing"
        return max(versions, key=lambda p: tuple(int(x) for x in p.name.split(".")))

    @property
    def idempotency_window(self) -> timedelta:
        value, unit = self.idempotency_ttl, "s"
        if value[-1] in "smhd":
            value, unit = value[:-1], value[-1]
        return timedelta(seconds=int(value) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit])


def load_settings(
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: object,
) -> Settings:
    """Settings from (in rising precedence) defaults, a TOML file, the environment, overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    config = config or (Path(env["DECISION_CONFIG"]) if env.get("DECISION_CONFIG") else None)
    if config is not None:
        values |= tomllib.loads(config.read_text())
    fields = {f.name: f for f in msgspec.structs.fields(Settings)}
    for name in fields:
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name] = env[key]
    if "DATABASE_URL" in env:
        values["database_url"] = env["DATABASE_URL"]
    values |= {k: v for k, v in overrides.items() if v is not None}
    return msgspec.convert(values, Settings, strict=False, dec_hook=_decode)


def _decode(tp: type, value: object) -> object:
    if tp is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError(f"cannot read {tp} from {value!r}")
