"""`POST /webhooks/stripe` as a plain ASGI handler: read, verify, hand over, answer.

This is the listener's hot path, so it skips the framework's per-request machinery (routing,
dependency injection, Request and Response objects), which cost as much as verifying the
signature. The Finance API and /healthz stay on FastAPI. The rules live in `finance_core`.
"""

import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from finance_core.feed.ingest import Outcome
from finance_core.feed.rejections import record_rejection
from finance_core.log_text import loggable
from finance_core.settings import Settings
from webhook_listener.metrics import ListenerMetrics
from webhook_listener.verify import Rejected, verify_signature
from webhook_listener.writer import BatchWriter, WriterError, WriterUnavailable

WEBHOOK_PATH = "/webhooks/stripe"
# A refused body is read and dropped up to this many times the limit before answering 413.
DRAIN_FACTOR = 4
log = logging.getLogger("webhook_listener")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def handle_webhook(state: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one delivery; `state` is the app's state (settings, engine, writer)."""
    if scope["method"] != "POST":
        await _answer(
            send,
            405,
            {"received": False, "error": "method_not_allowed", "message": "use POST"},
            extra_headers=[(b"allow", b"POST")],
        )
        return
    settings: Settings = state.settings
    metrics: ListenerMetrics = state.metrics
    started, received_at = time.perf_counter(), datetime.now(UTC)
    try:
        body = await _read_body(scope, receive, settings.webhook_max_body_bytes)
        verify_signature(
            body,
            _header(scope, b"stripe-signature"),
            secrets=settings.webhook_secrets(),
            tolerance=settings.stripe_webhook_tolerance,
        )
        writer: BatchWriter = state.writer
        stored = await writer.store(received_at, body)  # parsed there, off this process
    except Rejected as rejection:
        client = scope["client"][0] if scope.get("client") else None
        await run_in_threadpool(
            _count_rejection, state.engine, rejection.reason, client, received_at
        )
        body_json = {"received": False, "error": rejection.reason, "message": rejection.message}
        await _answer(send, rejection.status_code, body_json)
        metrics.rejected(rejection.reason, started)
        return
    except WriterUnavailable as exc:
        log.warning("delivery not stored (event %s): %s", loggable(exc.event_id or "unknown"), exc)
        await _answer(
            send,
            503,
            {"received": False, "error": "database_unavailable", "event_id": exc.event_id},
        )
        metrics.delivered("database_unavailable", started)
        return
    except WriterError as exc:
        await _answer(
            send,
            500,
            {"received": False, "error": "internal_error", "event_id": exc.event_id},
        )
        metrics.delivered("internal_error", started)
        return
    if stored.outcome is Outcome.FAILED:
        await _answer(
            send,
            500,
            {
                "received": False,
                "error": "apply_failed",
                "message": "the event could not be applied; it is kept for retry and replay",
                "event_id": stored.event_id,
            },
        )
        metrics.delivered(stored.outcome.value, started)
        return
    await _answer(send, 200, {"received": True, "outcome": stored.outcome.value})
    metrics.delivered(stored.outcome.value, started)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    too_large = Rejected("body_too_large", f"the body exceeds {limit} bytes", status_code=413)
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await _drain(receive, DRAIN_FACTOR * limit)
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Rejected("client_disconnected", "the client went away mid-body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            if message.get("more_body", False):
                await _drain(receive, DRAIN_FACTOR * limit)
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _drain(receive: Receive, cap: int) -> None:
    """Read and drop the rest of a body we refuse, up to `cap` bytes, so that the 413 reaches
    the client: closing with its bytes unread resets the connection before it reads it."""
    drained = 0
    while drained <= cap:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body", False):
            return
        drained += len(message.get("body", b""))


async def _answer(
    send: Send,
    status: int,
    body: dict[str, Any],
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *(extra_headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def _count_rejection(db: Engine, reason: str, client: str | None, now: datetime) -> None:
    try:
        record_rejection(engine=db, reason=reason, client_address=client, now=now)
    except SQLAlchemyError:
        # The answer is a 4xx either way; a failing count must not turn it into a 5xx.
        log.exception("could not count a rejected delivery (%s)", reason)
