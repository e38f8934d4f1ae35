"""Logs (structlog, JSON) and traces (OpenTelemetry SDK), set up once per process.

The framework plugins cost more than a whole decision (PERFORMANCE.md), so the decision path is
instrumented by hand: one JSON log line rendered by msgspec, and spans that are nearly free
when the request is not sampled (the trace id still exists and is recorded).

Streams: stdout carries JSON log lines only. Spans go to an OTLP/HTTP collector
(`DECISION_OTEL_EXPORTER=otlp`, the production setting) or, for a developer, to stderr as one
JSON line each (`console`); docs/operations.md says which to use where.
"""

from __future__ import annotations

import logging
import sys

import msgspec
import structlog
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

from decision_service.settings import Settings

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def _encode(obj: object, **_: object) -> bytes:
    return msgspec.json.encode(obj)


def configure_logging(settings: Settings) -> None:
    """JSON lines on stdout for our logs and for the stdlib (uvicorn, sqlalchemy) alike."""
    level = _LEVELS[settings.log_level]
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_encode),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.BytesLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # No access log: the decision line says more, and a second line per request costs ~60 µs.
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False


def _span_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


def configure_tracing(settings: Settings) -> TracerProvider:
    """A tracer for this process. With exporter `none` nothing is recorded, but every request
    still gets a trace id (or continues the caller's `traceparent`)."""
    if settings.otel_exporter == "none":
        sampler = ParentBased(ALWAYS_OFF)
    else:
        sampler = ParentBased(TraceIdRatioBased(settings.otel_sample_ratio))
    provider = TracerProvider(
        sampler=sampler, resource=Resource.create({"service.name": "decision-service"})
    )
    if settings.otel_exporter == "console":
        # stderr, one compact JSON object per span: stdout is the JSON log stream, and a span
        # must never pass there for a log line (or break a log shipper's line parsing).
        exporter = ConsoleSpanExporter(out=sys.stderr, formatter=_span_line)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    elif settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint))
        )
    return provider
