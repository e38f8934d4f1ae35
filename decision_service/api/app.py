"""The Litestar application, built from settings by the composition root."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from litestar import Litestar, Router
from litestar.config.cors import CORSConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from litestar.types import ASGIApp

from decision_service.access.bootstrap import ensure_first_key
from decision_service.access.cache import KeyCache
from decision_service.adverse_action import load_lenders
from decision_service.api.auth import AccessMiddleware, role_guard
from decision_service.api.challengers import challenger_handlers
from decision_service.api.decide import Decider
from decision_service.api.decide_batch import BatchDecider, decide_batch_handler
from decision_service.api.decide_route import decide_handler, fast_path
from decision_service.api.decisions import decision_handlers
from decision_service.api.docs_ui import OfflineSwagger, docs_asset
from decision_service.api.errors import EXCEPTION_HANDLERS
from decision_service.api.gate import build_gate
from decision_service.api.headers import add_security_headers
from decision_service.api.keys import key_handlers
from decision_service.api.metrics import Metrics
from decision_service.api.models import model_handlers
from decision_service.api.monitoring import drift_handlers
from decision_service.api.notice import notice_handlers
from decision_service.api.operations import operation_handlers
from decision_service.api.responses import SECURITY_SCHEMES
from decision_service.api.telemetry import log_started, watch_metrics
from decision_service.metrics_dir import worker_exited
from decision_service.monitoring.gauges import DriftGauges
from decision_service.observability import configure_logging
from decision_service.replay import Replayer
from decision_service.service import bootstrap
from decision_service.settings import Settings, load_settings

log = structlog.get_logger("decision_service.access")


def create_server_app(settings: Settings | None = None) -> ASGIApp:
    """What `decision-service serve` runs: the Litestar app, with POST /decide served on the
    ASGI fast path (same Decider, same Gate, no framework objects per request)."""
    app = create_app(settings)
    if app.cors_config is not None:
        return app  # CORS answers come from Litestar's middleware: keep /decide on the route
    return fast_path(app, app.state["decider"], app.state["gate"])


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or load_settings()
    configure_logging(settings)
    metrics = Metrics()
    service = bootstrap(settings, on_switch=metrics.model_switched)
    watch_metrics(service, metrics)
    drift_gauges = DriftGauges(metrics.registry)
    if service.deciding.shadow is not None:  # a challenger that raised: counted per name
        service.deciding.shadow.on_error = lambda name: metrics.challenger_errors.labels(name).inc()
    replayer = Replayer(settings.models_dir, service.store)
    decider = Decider(service, metrics)
    created = ensure_first_key(service.store.engine, settings.admin_key_file)
    if created is not None:
        log.warning(
            "first_admin_key_created",
            file=str(created.resolve()),
            hint="no API key existed: an admin key was written to this file (owner-only); "
            "make role keys with `decision-service keys create`",
        )
    keys = KeyCache(
        service.store.reader,
        service.store.engine,
        refresh=settings.key_refresh_seconds,
        last_used=settings.key_last_used_seconds,
    )
    gate = build_gate(settings, keys, lambda status: metrics.access_denied.labels(status).inc())
    origins = [o.strip() for o in settings.cors_origins.split(",") if o.strip()]

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        keys.start()
        await service.start()
        metrics.model_switched(service.scorer)  # the version serving from the start
        log_started(service)
        flusher = asyncio.create_task(metrics.flush_every()) if metrics.multiprocess else None
        gc.collect()
        gc.freeze()  # long-lived start-up objects leave the GC's working set: shorter pauses
        try:
            yield
        finally:
            replayer.close()
            keys.close()
            await gate.limiter.close()
            await service.stop()
            if flusher is not None:
                flusher.cancel()
            metrics.stage_latency.flush()
            worker_exited()

    return Litestar(
        route_handlers=[
            decide_handler(decider),
            decide_batch_handler(
                BatchDecider(decider, settings.batch_max), settings.batch_max_body_bytes
            ),
            *decision_handlers(service, replayer),
            *operation_handlers(service, metrics),
            *key_handlers(service.store.engine, service.store),
            *model_handlers(service.models, service.store),
            *drift_handlers(
                service.store.reader,
                settings.models_dir,
                settings.model_name,
                settings.model_dir.name,
                drift_gauges,
            ),
            *notice_handlers(service.store, load_lenders(settings.notices_file)),
            *challenger_handlers(service.store.reader),
        ],
        lifespan=[lifespan],
        # Access control: one middleware + one guard, both reading each route's opt["roles"].
        middleware=[AccessMiddleware(gate)],
        guards=[role_guard],
        before_send=[add_security_headers],
        request_max_body_size=settings.max_body_bytes,
        cors_config=CORSConfig(
            allow_origins=origins,
            allow_headers=["authorization", "content-type"],
            allow_methods=["GET", "POST"],
        )
        if origins
        else None,
        openapi_config=OpenAPIConfig(
            title="decision-service",
            version="1.0.0",
            description="Real-time loan underwriting decisions with a tamper-evident audit log.",
            # Offline docs: one Swagger UI page from assets this app serves (no CDN).
            render_plugins=[OfflineSwagger()],
            openapi_router=Router(
                path="/schema",
                route_handlers=[docs_asset],
                opt={"roles": ["public"]},
                include_in_schema=False,
            ),
            components=Components(security_schemes=SECURITY_SCHEMES),
        ),
        exception_handlers=EXCEPTION_HANDLERS,
        state={"service": service, "decider": decider, "gate": gate},
        logging_config=None,  # ours (observability.py): JSON lines, no per-request access log
    )
