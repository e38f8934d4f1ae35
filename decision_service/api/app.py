"""The Litestar application, built from settings by the composition root."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.types import ASGIApp

from decision_service.api.decide import Decider, decide_handler, fast_path
from decision_service.api.decisions import decision_handlers
from decision_service.api.metrics import Metrics
from decision_service.api.operations import operation_handlers
from decision_service.observability import configure_logging
from decision_service.replay import Replayer
from decision_service.service import bootstrap
from decision_service.settings import Settings, load_settings


def create_server_app(settings: Settings | None = None) -> ASGIApp:
    """What `decision-service serve` runs: the Litestar app, with POST /decide served on the
    ASGI fast path (same Decider, no framework objects per request)."""
    app = create_app(settings)
    return fast_path(app, app.state["decider"])


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    configure_logging(settings)
    service = bootstrap(settings)
    metrics = Metrics()
    replayer = Replayer(settings.models_dir, service.store)
    decider = Decider(service, metrics)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await service.start()
        gc.collect()
        gc.freeze()  # long-lived start-up objects leave the GC's working set: shorter pauses
        try:
            yield
        finally:
            replayer.close()
            await service.stop()

    return Litestar(
        route_handlers=[
            decide_handler(decider),
            *decision_handlers(service, replayer),
            *operation_handlers(service, metrics),
        ],
        lifespan=[lifespan],
        openapi_config=OpenAPIConfig(
            title="decision-service",
            version="1.0.0",
            description="Real-time loan underwriting decisions with a tamper-evident audit log.",
            path="/schema",
        ),
        state={"service": service, "decider": decider},
        logging_config=None,  # ours (observability.py): JSON lines, no per-request access log
    )
