"""One settings object for every command: defaults < TOML file < environment.

Environment: `DECISION_<FIELD>` (e.g. DECISION_RULES_ENGINE=compiled) and `DATABASE_URL`.
TOML: the file named by `DECISION_CONFIG` (or `--config`), keys as the field names.
Every default runs on a fresh clone: models/ and rules/ from the repo, SQLite under ./var/.

A mistake is a `SettingsError`: one line naming the setting, where its value came from and, for
a misspelt name, the closest valid one. `unknown_environment` finds `DECISION_*` variables that
are no setting (warned about at start, never silently ignored).
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import msgspec

ENV_PREFIX = "DECISION_"
# DECISION_* variables read by something other than a Settings field.
OTHER_ENV = frozenset({"DECISION_CONFIG"})


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
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8000
    workers: Annotated[int, msgspec.Meta(ge=1)] = 1
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
    batch_max: Annotated[int, msgspec.Meta(ge=1)] = 1000  # applications per POST /decide/batch
    batch_max_body_bytes: Annotated[int, msgspec.Meta(ge=1)] = 4 * 1024 * 1024  # its body limit
    max_body_bytes: int = 65536  # 413 above this, on every route, before the body is read
    metrics_public: bool = True  # /metrics without a key (scrapers); false: analyst/auditor
    cors_origins: str = ""  # comma-separated allowed origins; empty: no CORS headers at all
    # The audit key (never in the database; made on first start, mode 0600) and the signed
    # checkpoints of the chain heads, also outside the database.
    audit_key_file: Path = Path("var/audit.key")
    audit_checkpoint_file: Path = Path("var/checkpoints.jsonl")
    audit_checkpoint_interval_s: float = 60.0
    # How long a group commit may wait for the requests expected in it (audit/writer.py).
    audit_commit_wait_ms: Annotated[float, msgspec.Meta(ge=0, le=1000)] = 2.0
    db_auto_upgrade: bool = False  # `serve` migrates a database behind the code's schema itself
    # Incomplete requests and overload (per worker, seconds): a client that sends part of a
    # request and goes silent is disconnected; beyond max_concurrency connections or requests,
    # 503. Headers: from connecting (or the first byte of a keep-alive request) to their end;
    # body: from the end of the headers to the end of the body; keep-alive: idle between requests.
    request_header_timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    request_body_timeout: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    keep_alive_timeout: Annotated[float, msgspec.Meta(gt=0)] = 5.0
    max_concurrency: Annotated[int, msgspec.Meta(ge=1)] = 1000

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


class SettingsError(msgspec.ValidationError):
    """A setting is misspelt or has a bad value: one line, plus a hint."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def setting_names() -> list[str]:
    return [f.name for f in msgspec.structs.fields(Settings)]


def closest(name: str, candidates: list[str]) -> str | None:
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return match[0] if match else None


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per `DECISION_*` variable that is no setting, with the closest valid name."""
    env = os.environ if environ is None else environ
    valid = [ENV_PREFIX + name.upper() for name in setting_names()] + sorted(OTHER_ENV)
    warnings = []
    for key in sorted(env):
        if key.startswith(ENV_PREFIX) and key not in valid:
            suffixes = [v.removeprefix(ENV_PREFIX).lower() for v in valid]
            near = closest(key.removeprefix(ENV_PREFIX).lower(), suffixes)
            hint = f" (did you mean {ENV_PREFIX}{near.upper()}?)" if near else ""
            warnings.append(f"warning: unknown environment variable {key} ignored{hint}")
    return warnings


def _read_toml(config: Path) -> dict[str, object]:
    try:
        values = tomllib.loads(config.read_text())
    except FileNotFoundError:
        raise SettingsError(
            f"config file {config} not found", "check --config or DECISION_CONFIG"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"config file {config} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {config}: invalid TOML: {exc}") from None
    names = setting_names()
    for key in values:
        if key not in names:
            near = closest(key, names)
            raise SettingsError(
                f"config file {config}: unknown setting {key!r}"
                + (f" (did you mean {near!r}?)" if near else ""),
                "valid settings: " + ", ".join(names),
            )
    return values


_PATH = re.compile(r"(?P<what>.*) - at `\$\.(?P<field>\w+)`")


def load_settings(
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: object,
) -> Settings:
    """Settings from (in rising precedence) defaults, a TOML file, the environment, overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    source: dict[str, str] = {}
    config = config or (Path(env["DECISION_CONFIG"]) if env.get("DECISION_CONFIG") else None)
    if config is not None:
        values |= _read_toml(config)
        source |= {k: f"config file {config}" for k in values}
    for name in setting_names():
        key = ENV_PREFIX + name.upper()
        if key in env:
            values[name], source[name] = env[key], key
    if "DATABASE_URL" in env:
        values["database_url"], source["database_url"] = env["DATABASE_URL"], "DATABASE_URL"
    for name, value in overrides.items():
        if value is not None:
            values[name], source[name] = value, "command line"
    try:
        return msgspec.convert(values, Settings, strict=False, dec_hook=_decode)
    except msgspec.ValidationError as exc:
        match = _PATH.fullmatch(str(exc))
        if match is None:
            raise SettingsError(f"settings: {exc}") from None
        name = match["field"]
        raise SettingsError(
            f"setting {name} = {values.get(name)!r} (from {source.get(name, 'defaults')}): "
            f"{match['what'][0].lower()}{match['what'][1:]}",
            _allowed(name),
        ) from None


def _allowed(name: str) -> str:
    field = next(f for f in msgspec.structs.fields(Settings) if f.name == name)
    args = getattr(field.type, "__args__", None)
    if args and all(isinstance(a, str) for a in args):
        return f"{name} is one of: " + ", ".join(args)
    kind = _KINDS.get(getattr(field.type, "__origin__", field.type), "")
    return f"{name} is {kind or field.type}"


_KINDS: dict[object, str] = {
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    str: "text",
    Path: "a path",
}


def _decode(tp: type, value: object) -> object:
    if tp is Path and isinstance(value, str | Path):
        return Path(value)
    raise NotImplementedError(f"cannot read {tp} from {value!r}")
