"""The framework's own ceiling: a Litestar POST that decodes the application and replies.

Same request type as /decide (the model card's Application Struct, decoded and validated by
msgspec from the raw body, as decision_service/api/decide.py does), a small Struct back, run
under uvicorn exactly like `decision-service serve` (uvloop, httptools, no access log).

    uv run python benchmarks/bare_app.py --port 8001
"""

from __future__ import annotations

import argparse
from pathlib import Path

import msgspec
from litestar import Litestar, Request, get, post

from decision_service.cli import UVICORN_OPTIONS
from decision_service.scoring import application_type, load_card

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "models" / "underwriting" / "1.0.0"


class Ack(msgspec.Struct, frozen=True):
    application_id: str
    received: bool = True


def create_app(model_dir: Path = MODEL_DIR) -> Litestar:
    app_type = application_type(load_card(model_dir))
    decoder = msgspec.json.Decoder(app_type)

    @post("/decide", status_code=200)
    async def decide(request: Request) -> Ack:
        app = decoder.decode(await request.body())  # invalid input: 500, never sent here
        return Ack(application_id=app.application_id)

    @get("/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    return Litestar(route_handlers=[decide, ready], logging_config=None, openapi_config=None)


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        "bare_app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_level="warning",
        **UVICORN_OPTIONS,
        app_dir=str(Path(__file__).resolve().parent),
    )


if __name__ == "__main__":
    main()
