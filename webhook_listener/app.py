"""The listener process: Stripe webhooks in, the Finance API out.

Routes stay thin: read, verify, hand over to `finance_core`, map the outcome to a status code.
Settings are read when the app starts (lifespan), never at import.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from finance_core import migrate
from finance_core.db import make_engine
from finance_core.ingest import DeliveryResult, Outcome, StripeEvent, ingest_event
from finance_core.rejections import record_rejection
from finance_core.settings import Settings, get_settings
from webhook_listener.api import install_finance_api
from webhook_listener.ratelimit import RateLimits
from webhook_listener.verify import Rejected, verify_delivery
from webhook_listener.writer import BatchWriter

log = logging.getLogger("webhook_listener")


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    """Build the listener app; settings and engine default to the process's own."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        current = settings or get_settings()
        current.webhook_secrets()  # refuse to start without a signing secret
        app.state.settings = current
        app.state.engine = engine or make_engine(current.database_url)
        migrate.upgrade(app.state.engine)
        app.state.rate_limits = RateLimits.from_settings(current)
        # SQLite: one writer thread with group commit (see writer.py); PostgreSQL: the pool.
        app.state.writer = (
            BatchWriter(app.state.engine) if app.state.engine.dialect.name == "sqlite" else None
        )
        if app.state.writer is not None:
            app.state.writer.start()
        log.info("listener ready on %s", app.state.engine.url.render_as_string(hide_password=True))
        yield
        if app.state.writer is not None:
            app.state.writer.stop()
        app.state.rate_limits.close()
        if engine is None:
            app.state.engine.dispose()

    app = FastAPI(
        title="PenguinMails Finance",
        version="1.0.0",
        description="Stripe webhook listener and the read-only Finance API.",
        lifespan=lifespan,
    )
    install_finance_api(app)

    @app.post("/webhooks/stripe", include_in_schema=False)
    async def stripe_webhook(request: Request) -> JSONResponse:
        current: Settings = request.app.state.settings
        db: Engine = request.app.state.engine
        received_at = datetime.now(UTC)
        client = request.client.host if request.client else None
        try:
            body = await _read_body(request, current.webhook_max_body_bytes)
            event, raw = verify_delivery(
                body,
                request.headers.get("stripe-signature"),
                secrets=current.webhook_secrets(),
                tolerance=current.stripe_webhook_tolerance,
            )
        except Rejected as rejection:
            await run_in_threadpool(_count_rejection, db, rejection.reason, client, received_at)
            return JSONResponse(
                {"received": False, "error": rejection.reason, "message": rejection.message},
                status_code=rejection.status_code,
            )
        try:
            writer: BatchWriter | None = request.app.state.writer
            if writer is not None:
                result = await writer.ingest(event, received_at, raw)
            else:
                result = await run_in_threadpool(_ingest, db, event, received_at, raw)
        except SQLAlchemyError:
            log.exception("database error while storing event %s (%s)", event.id, event.type)
            return JSONResponse(
                {"received": False, "error": "database_unavailable", "event_id": event.id},
                status_code=503,
            )
        if result.outcome is Outcome.FAILED:
            return JSONResponse(
                {
                    "received": False,
                    "error": "apply_failed",
                    "message": "the event could not be applied; it is kept for retry and replay",
                    "event_id": event.id,
                },
                status_code=500,
            )
        return JSONResponse({"received": True, "outcome": result.outcome.value})

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        reachable = await run_in_threadpool(_database_reachable, request.app.state.engine)
        return JSONResponse(
            {
                "status": "ok" if reachable else "degraded",
                "database": "reachable" if reachable else "unreachable",
            },
            status_code=200 if reachable else 503,
        )

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Rejected("body_too_large", f"the body exceeds {limit} bytes", status_code=413)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Rejected("body_too_large", f"the body exceeds {limit} bytes", status_code=413)
    return bytes(body)


def _ingest(db: Engine, event: StripeEvent, received_at: datetime, raw: str) -> DeliveryResult:
    return ingest_event(engine=db, event=event, received_at=received_at, raw_payload=raw)


def _count_rejection(db: Engine, reason: str, client: str | None, now: datetime) -> None:
    try:
        record_rejection(engine=db, reason=reason, client_address=client, now=now)
    except SQLAlchemyError:
        # The answer is a 4xx either way; a failing count must not turn it into a 5xx.
        log.exception("could not count a rejected delivery (%s)", reason)


def _database_reachable(db: Engine) -> bool:
    try:
        with db.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except SQLAlchemyError:
        return False


app = create_app()
