"""What each route answers, for the OpenAPI document: success types, the problem type and the
statuses that apply (the Gate's on every authenticated route). The handlers build their bodies
themselves (msgspec, no framework models per request); these types describe those bodies and a
test validates real answers against them (tests/e2e/test_openapi_conformance.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example, SecurityRequirement, SecurityScheme

from decision_service.api.errors import PROBLEM, error_body
from decision_service.decision import Decision
from decision_service.scoring.registry import ModelEvent

BEARER = "bearer"
SECURITY_SCHEMES: dict[str, Any] = {
    BEARER: SecurityScheme(
        type="http",
        scheme="bearer",
        description="An API key made by `decision-service keys create --role ROLE --name NAME` "
        "(or POST /keys): `Authorization: Bearer <key>`.",
    )
}
SECURED: list[SecurityRequirement] = [{BEARER: []}]


class FieldProblem(msgspec.Struct):
    field: str  # a JSON path into the body ($.age) or a parameter's name (from)
    message: str


class ProblemDetails(msgspec.Struct, kw_only=True):
    """RFC 9457 problem details (application/problem+json)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldProblem] | None = None


class RecordLinks(msgspec.Struct):
    chain_id: str
    seq: int
    prev_hash: str
    record_hash: str
    code_version: str


class ChallengerResult(msgspec.Struct):
    """What a challenger would have decided on this application (recorded, never answered)."""

    challenger: str
    version: str
    ruleset_sha256: str
    engine: str
    model_version: str
    model_sha256: str  # "" if the challenger's model could not be loaded
    outcome: str | None  # null: the challenger raised (error says what)
    approved_amount: float | None
    risk_band: str | None
    pd: float | None
    error: str | None
    fired: list[str]  # rule ids
    reasons: list[Any]  # reason codes as recorded


class RecordView(msgspec.Struct, kw_only=True):
    """A stored decision exactly as answered, the request exactly as received, its chain links;
    GET /decisions/{decision_id} adds what the challengers would have decided."""

    decision: Any  # the Decision (schema: Decision), byte for byte as answered
    request: dict[str, Any]
    record: RecordLinks
    challengers: list[ChallengerResult] | None = None


class DecisionPage(msgspec.Struct):
    items: list[RecordView]
    next_cursor: str | None


class ActiveRule(msgspec.Struct):
    id: str
    stage: int
    priority: int
    when: str


class ChallengerRules(msgspec.Struct):
    name: str
    version: str
    sha256: str
    file: str
    sample: float | None
    model_version: str | None
    effective_from: str | None
    effective_to: str | None


class RulesStatus(msgspec.Struct):
    name: str
    version: str
    sha256: str
    engine: str
    file: str
    loaded_at: str
    rules: list[ActiveRule]
    versions: list[dict[str, Any]]  # every version in rules/: active, scheduled or past
    watch_errors: int  # failed file-watcher reloads since start
    challengers: list[ChallengerRules]  # run after the champion, recorded, never answered


class Live(msgspec.Struct):
    status: str


class Ready(msgspec.Struct):
    status: str  # "ready" | "not ready"
    checks: dict[str, bool]


class KeyView(msgspec.Struct):
    name: str
    role: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class MadeKey(msgspec.Struct):
    name: str
    role: str
    key: str  # shown this once; stored only as a hash


class ItemErrors(msgspec.Struct):
    index: int  # the item's place in the batch, from 0
    errors: list[FieldProblem]


class BatchAnswer(msgspec.Struct):
    decisions: list[Decision]  # the valid items' decisions, in order
    errors: list[ItemErrors]  # one per invalid item (nothing decided for it)


class GateSummary(msgspec.Struct):
    passed: bool
    failed: list[str]
    warnings: list[str]


class ModelVersionView(msgspec.Struct):
    version: str
    status: str  # live | retired | available | invalid
    sha256: str | None
    test_auc: float | None
    features: int | None
    created: str | None
    error: str | None
    gate: GateSummary | None  # the promotion gate's result (null for an invalid version)


class ModelListing(msgspec.Struct):
    model: str
    live: str
    default: str
    rollback_to: str | None
    retired: list[str]
    versions: list[ModelVersionView]
    events: list[ModelEvent]


class ModelSwitch(msgspec.Struct):
    event: ModelEvent
    live: str
    change_log: bool  # false: switched, but the change_log row could not be written


# Examples for the document (tests/e2e/test_openapi_conformance.py validates each against its
# schema). The decision is a real one, kept beside the docs page that shows it. No null member:
# Litestar drops them from examples, which would then lack a required field.
DECISION_EXAMPLE: dict[str, Any] = json.loads(
    (Path(__file__).parent / "docs_ui" / "decision-example.json").read_text()
)
BATCH_EXAMPLE = {
    "decisions": [DECISION_EXAMPLE],
    "errors": [{"index": 1, "errors": [{"field": "$.age", "message": "Expected `int` >= 18"}]}],
}
KEY_EXAMPLE = {  # a revoked key (a live one has "revoked_at": null)
    "name": "los-2025",
    "role": "decider",
    "created_at": "2025-11-24T09:00:00.000000Z",
    "last_used_at": "2026-11-25T17:42:10.120000Z",
    "revoked_at": "2026-11-26T08:00:00.000000Z",
}
MADE_KEY_EXAMPLE = {"name": "los-prod", "role": "decider", "key": "dsk_8Jk…(43 characters)"}
MODEL_SWITCH_EXAMPLE = {
    "event": {
        "seq": 3,
        "at": "2026-11-25T10:00:00+00:00",
        "action": "promote",
        "from_version": "1.0.0",
        "to_version": "1.1.0",
        "actor": "ops-admin",
        "reason": "challenger won on Q3 traffic",
    },
    "live": "1.1.0",
    "change_log": True,
}


def problem(status: int, description: str, detail: str, **members: Any) -> ResponseSpec:
    example = error_body(status, detail, **members)
    return ResponseSpec(
        data_container=ProblemDetails,
        description=description,
        media_type=PROBLEM,
        generate_examples=False,
        examples=[Example(summary=example["title"], value=example)],
    )


def ok(
    data: Any, description: str, example: Any = None, media_type: str = "application/json"
) -> ResponseSpec:
    return ResponseSpec(
        data_container=data,
        description=description,
        media_type=media_type,
        generate_examples=False,
        examples=[Example(summary="example", value=example)] if example is not None else None,
    )


# The Gate (api/gate.py) on every route: 413 everywhere, the key's statuses where one is needed.
BODY_TOO_LARGE = problem(
    413,
    "The declared or streamed body passes DECISION_MAX_BODY_BYTES",
    "request body larger than 65536 bytes",
)
GATED: dict[int, ResponseSpec] = {
    401: problem(
        401,
        "No API key, or an unknown or revoked one (WWW-Authenticate: Bearer)",
        "an API key is required: Authorization: Bearer <key>",
    ),
    403: problem(
        403, "The key's role may not call this route", "role decider may not call this endpoint"
    ),
    413: BODY_TOO_LARGE,
    429: problem(
        429,
        "The key's rate limit is spent (Retry-After: seconds)",
        "rate limit 200/second exceeded",
    ),
}
UNSUPPORTED = problem(
    415, "A body that is not application/json", "request body must be application/json"
)
PUBLIC_RESPONSES: dict[int, ResponseSpec] = {413: BODY_TOO_LARGE}
BAD_PARAMETER = problem(
    400,
    "A query or path parameter is invalid; `errors` names each",
    "invalid filter from: expected a date (2026-11-24) or an RFC 3339 date-time "
    "(2026-11-24T21:00:00Z), got 'yesterday'",
    kind="invalid-parameter",
    errors=[
        {
            "field": "from",
            "message": "expected a date (2026-11-24) or an RFC 3339 "
            "date-time (2026-11-24T21:00:00Z), got 'yesterday'",
        }
    ],
)


AUDIT_UNAVAILABLE = problem(
    503,
    "The audit store cannot be read, or this read of personal data cannot be recorded in "
    "access_log, so nothing is answered (Retry-After)",
    "the read could not be recorded: audit store unavailable",
    kind="audit-unavailable",
)


def gated(own: dict[int, ResponseSpec], *, body: bool = False) -> dict[int, ResponseSpec]:
    """The Gate's statuses (+415 for routes with a JSON body), then the route's own."""
    return GATED | ({415: UNSUPPORTED} if body else {}) | own


def public(own: dict[int, ResponseSpec]) -> dict[int, ResponseSpec]:
    return PUBLIC_RESPONSES | own
