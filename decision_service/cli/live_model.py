"""Which model version `batch` and `backtest` use: the one live in the model registry (the
record in the audit database, as the servers follow it), unless the command names one."""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec

from decision_service.settings import Settings


def live_version(settings: Settings) -> str | None:
    """The registry's live version, or None when there is no database to read (a SQLite file
    not created yet, a server down): then the settings' default serves, as it would live."""
    import sqlalchemy as sa

    from decision_service.audit.engine import make_engine
    from decision_service.scoring.registry import read_state

    url = sa.engine.make_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or ":memory:").is_file():
        return None  # no registry record can exist; reading must not create the file
    default = settings.model_dir.name
    try:
        engine = make_engine(settings.database_url, connect_timeout_s=2)
        try:
            return read_state(engine, settings.model_name, default).live
        finally:
            engine.dispose()
    except sa.exc.SQLAlchemyError as exc:
        print(
            f"decision-service: the model registry cannot be read ({exc.__class__.__name__}); "
            f"using the default version {default}",
            file=sys.stderr,
        )
        return None


def with_live_model(settings: Settings, version: str | None) -> Settings:
    """`settings` whose model_dir is `version` if given, else the registry's live version."""
    chosen = version or live_version(settings)
    if chosen is None:
        return settings
    return msgspec.structs.replace(settings, model_version=chosen)
