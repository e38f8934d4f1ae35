"""Start-up checks for `serve` (and the database for every command): each configuration, model,
rules or database problem becomes ONE line saying what is wrong and what exists, plus a hint,
and a non-zero exit; never a traceback (DECISION_LOG_LEVEL=debug adds it, for developers).

The database is brought to the code's schema here, once, before any worker starts: an empty
database (a fresh clone's first run) is created; a database behind the code's schema is refused
with a line naming `decision-service db upgrade`, or upgraded when DECISION_DB_AUTO_UPGRADE=true.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from decision_service.settings import Settings, SettingsError

EXIT_CODE = 2


class StartupError(Exception):
    """What is wrong (one line) and what to do about it (one line)."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


def report(exc: BaseException, *, debug: bool = False) -> int:
    """Print the one-line error (and its hint) to stderr; the exit code."""
    if isinstance(exc, StartupError | SettingsError):
        message, hint = exc.message, exc.hint
    else:
        message, hint = _first_line(exc), "DECISION_LOG_LEVEL=debug prints the traceback"
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"decision-service: error: {message}", file=sys.stderr)
    if hint:
        print(f"  hint: {hint}", file=sys.stderr)
    return EXIT_CODE


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# -- model ---------------------------------------------------------------------------------


def _versions(base: Path) -> list[str]:
    def key(name: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in name.split("."))
        except ValueError:
            return (-1,)

    names = [p.name for p in base.iterdir() if p.is_dir()] if base.is_dir() else []
    return sorted(names, key=key)


def check_model(settings: Settings) -> Path:
    """The model directory the settings name exists; else say which versions do."""
    base = settings.models_dir / settings.model_name
    if not base.is_dir():
        names = (
            [p.name for p in settings.models_dir.iterdir() if p.is_dir()]
            if (settings.models_dir.is_dir())
            else []
        )
        where = f"models on disk: {', '.join(names)}" if names else "no models there"
        raise StartupError(
            f"model {settings.model_name!r} not found: {base} is not a directory ({where})",
            "set DECISION_MODELS_DIR / DECISION_MODEL_NAME, or train one: decision-service train",
        )
    versions = _versions(base)
    if not versions:
        raise StartupError(
            f"no model versions under {base}",
            "train one: decision-service train --version 1.0.0",
        )
    named = settings.model_version
    if named == "default" and (base / "DEFAULT").is_file():
        named = (base / "DEFAULT").read_text().strip()  # the version the DEFAULT file names
    if named not in ("latest", "default") and named not in versions:
        raise StartupError(
            f"model version {named!r} not found under {base} "
            f"(versions on disk: {', '.join(versions)})",
            "set DECISION_MODEL_VERSION to one of them, or to default or latest",
        )
    try:
        model_dir = settings.model_dir
    except ValueError:
        bad = [v for v in versions if not all(x.isdigit() for x in v.split("."))]
        raise StartupError(
            f"cannot pick the latest model under {base}: "
            f"{', '.join(bad)} is not a version X.Y.Z (versions on disk: {', '.join(versions)})",
            "remove or rename that directory, or set DECISION_MODEL_VERSION",
        ) from None
    from decision_service.scoring.card import ModelCardError, load_card

    try:
        load_card(model_dir)
    except ModelCardError as exc:
        raise StartupError(_first_line(exc).removeprefix("ModelCardError: "), _MODEL_HINT) from None
    return model_dir


_MODEL_HINT = "the model directory must hold model_card.yaml and the model file it names"


# -- rules ---------------------------------------------------------------------------------


def check_rules(settings: Settings) -> None:
    path = settings.rules_dir
    if not path.exists():
        raise StartupError(f"rules directory {path} not found", "set DECISION_RULES_DIR")
    try:
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            with file.open("rb"):
                pass
    except OSError as exc:
        raise StartupError(
            f"rules {path} cannot be read: {exc.strerror}: {exc.filename or path}",
            "check the permissions of the rules directory and its files",
        ) from None
    if not files:
        raise StartupError(
            f"no rule files (*.yaml) in {path}", "set DECISION_RULES_DIR to the rules directory"
        )


def check_rules_build(settings: Settings) -> None:
    """Parse, compile and test the rule files as every worker will (without loading the app)."""
    from decision_service.rules.registry import RuleRegistry
    from decision_service.scoring.card import load_card
    from decision_service.service import card_schema

    schema = card_schema(load_card(settings.model_dir))
    RuleRegistry(settings.rules_dir, schema, engine=settings.rules_engine).close()


def explain(exc: Exception, settings: Settings) -> StartupError | Exception:
    """An error from building the service (model, rules, store) as one line where we know it."""
    from decision_service.rules.snapshot import RulesetInvalid
    from decision_service.scoring.card import ModelCardError

    if isinstance(exc, StartupError | SettingsError):
        return exc
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return explain_database(exc, settings.database_url)
    if isinstance(exc, ModelCardError):
        return StartupError(_first_line(exc).removeprefix("ModelCardError: "), _MODEL_HINT)
    if isinstance(exc, RulesetInvalid):
        first = exc.errors[0] if exc.errors else exc.file
        more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
        return StartupError(
            f"rules rejected: {first}{more}", "decision-service rules check lists every error"
        )
    return exc


# -- database ------------------------------------------------------------------------------


def database_label(url: str) -> str:
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparsable URL>"


def explain_database(exc: BaseException, url: str) -> StartupError:
    """A database error as one line: which database, what is wrong, what to do."""
    label = database_label(url)
    if isinstance(exc, sa.exc.ArgumentError | sa.exc.NoSuchModuleError):
        return StartupError(
            f"DATABASE_URL {url!r} is not a database URL: {exc}",
            "sqlite:///var/decisions.db or postgresql+psycopg://user@host:5432/name",
        )
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split())
    if "does not exist" in text and "database" in text:
        name = sa.make_url(url).database
        return StartupError(
            f"database {label}: database {name!r} does not exist",
            f"create it (createdb {name}, or CREATE DATABASE {name}) or fix DATABASE_URL",
        )
    if "Connection refused" in text or "could not translate host name" in text:
        why = "connection refused" if "Connection refused" in text else "unknown host"
        return StartupError(
            f"database {label}: server not reachable ({why})",
            "is PostgreSQL running and listening there? check DATABASE_URL",
        )
    if "password authentication failed" in text or "no pg_hba.conf entry" in text:
        return StartupError(
            f"database {label}: access denied ({_short(text)})",
            "check the user and password in DATABASE_URL",
        )
    if "unable to open database file" in text:
        return StartupError(
            f"database {label}: SQLite cannot open the file",
            "check that its directory exists or can be created, and is writable",
        )
    return StartupError(f"database {label}: {_short(text)}", "check DATABASE_URL")


def _short(text: str) -> str:
    for marker in ("FATAL:", "failed:"):
        if marker in text:
            text = text.rsplit(marker, 1)[1].strip()
    return text.split("(Background on this error")[0].strip()[:300]


def prepare_database(settings: Settings) -> str:
    """Connect, then bring the schema to head where that is the expected thing to do."""
    from decision_service.audit import make_engine, migrations

    url, label = settings.database_url, database_label(settings.database_url)
    try:
        engine = make_engine(url, writer=True, sqlite_synchronous=settings.sqlite_synchronous)
    except Exception as exc:
        raise explain_database(exc, url) from None
    try:
        status = migrations.status(engine)
        if status.state == "current":
            _check_writable(engine, label)
            return f"database {label}: schema {status.head}"
        if status.state == "empty" or (
            status.state in ("behind", "release") and settings.db_auto_upgrade
        ):
            before, after = migrations.upgrade(engine)
            verb = "created" if before.state == "empty" else "upgraded"
            return f"database {label}: {verb} schema {after.current} (was {before.describe()})"
        if status.state in ("behind", "release"):
            raise StartupError(
                f"database {label} is behind the code's schema ({status.describe()}): "
                "run `decision-service db upgrade`",
                "or set DECISION_DB_AUTO_UPGRADE=true to let serve upgrade it at start",
            )
        raise StartupError(
            f"database {label} {status.describe()}",
            "use the release that created it, or a new empty database",
        )
    except StartupError:
        raise
    except migrations.SchemaError as exc:
        raise StartupError(f"database {label}: {exc}") from None
    except sa.exc.SQLAlchemyError as exc:
        raise explain_database(exc, url) from None
    finally:
        engine.dispose()


class _RolledBack(Exception):
    pass


def _check_writable(engine: sa.Engine, label: str) -> None:
    """A write that is rolled back: a read-only database (a failover replica, a read-only file)
    is refused at start rather than failing in the middle of the application's start-up."""
    from decision_service.audit.tables import writer_heartbeat_table

    try:
        with engine.begin() as conn:
            row = {"chain_id": "start-up-check", "beat_at": datetime.now(UTC)}
            conn.execute(sa.insert(writer_heartbeat_table), [row])
            raise _RolledBack
    except _RolledBack:
        return
    except sa.exc.SQLAlchemyError as exc:
        text = " ".join(str(getattr(exc, "orig", exc)).split())
        if "read-only" in text or "readonly" in text:
            raise StartupError(
                f"database {label} is read-only: decisions could not be recorded",
                "point DATABASE_URL at the writable primary (or fix the file's permissions)",
            ) from None
        raise


# -- the port ------------------------------------------------------------------------------


def check_port(settings: Settings) -> None:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    try:
        with socket.socket(family) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((settings.host, settings.port))
    except OSError as exc:
        raise StartupError(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}",
            "another process uses that port? set DECISION_PORT (or --port)",
        ) from None


def check_all(settings: Settings) -> list[str]:
    """Everything `serve` needs before it starts workers; notes to print on success."""
    check_port(settings)
    model_dir = check_model(settings)
    check_rules(settings)
    notes = [f"model {model_dir}", prepare_database(settings)]
    return notes


def debug_requested(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("DECISION_LOG_LEVEL", "").lower() == "debug"
