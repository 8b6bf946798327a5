"""The listener process: Stripe webhooks in, the Finance API out.

Routes stay thin: read, verify, hand over to `finance_core`, map the outcome to a status code.
Settings are read when the app starts (lifespan), never at import.
"""

import gc
import logging
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from finance_core.settings import Settings, SettingsError, get_settings
from finance_core.store import statements as hot
from finance_core.store.db import make_engine, statement_reads
from webhook_listener.api import install_finance_api
from webhook_listener.background import BackgroundWorker
from webhook_listener.background_process import JOBS
from webhook_listener.metrics import ListenerMetrics, gauge_reader, install_metrics
from webhook_listener.ratelimit import RateLimits
from webhook_listener.startup import StoreOpening, StoreRefused
from webhook_listener.supervisor import GaveUp, stop_this_process
from webhook_listener.webhook import WEBHOOK_PATH, Receive, Scope, Send, handle_webhook
from webhook_listener.writer import BatchWriter

log = logging.getLogger("webhook_listener")


class ListenerApp(FastAPI):
    """FastAPI for the Finance API and /healthz; the webhook path goes straight to its handler."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == WEBHOOK_PATH:
            await _guarded(handle_webhook, self.state, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


async def _guarded(handler: Any, state: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """A bug answers 500 (Stripe retries) and is logged, as the framework would do."""
    started = False

    async def tracking_send(message: MutableMapping[str, Any]) -> None:
        nonlocal started
        started = True
        await send(message)

    try:
        await handler(state, scope, receive, tracking_send)
    except Exception:
        log.exception("unexpected error on %s", WEBHOOK_PATH)
        if not started:
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                }
            )
            await send({"type": "http.response.body", "body": b"Internal Server Error"})


def create_app(
    settings: Settings | None = None,
    engine: Engine | None = None,
    jobs: Sequence[str] | None = None,
    *,
    on_refused: Callable[[StoreRefused], None] | None = None,
    on_give_up: Callable[[GaveUp], None] = stop_this_process,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the listener app; settings and engine default to the process's own.

    `jobs` names the background jobs its worker process runs (default: all of them).
    `on_refused` is called when the database refuses DATABASE_URL's credentials or database
    (`python -m webhook_listener` then exits); without it that is raised at start.
    `on_give_up` is called when the writer or the background worker failed to start
    several times in a row (the listener must end; by default it stops itself).
    `freeze_heap` (for the process that serves, not a test's app) moves what start-up built
    out of the garbage collector's way once started: a full collection then walks only what
    requests made. Over 300 in-process 365-day trend answers with the listener's modules
    loaded, the slowest went from 94 ms (a full collection of 130,000 objects) to 15 ms.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        current = settings or get_settings()
        current.webhook_secrets()  # refuse to start without a signing secret
        app.state.settings = current
        app.state.engine = engine or make_engine(current.database_url)
        _check_shareable(app.state.engine)
        app.state.rate_limits = RateLimits.from_settings(current)
        app.state.metrics = ListenerMetrics(gauge_reader(app.state.engine, current))
        # One writer process with group commit (see writer.py), on SQLite and PostgreSQL alike.
        app.state.writer = BatchWriter(
            app.state.engine.url.render_as_string(hide_password=False),
            log_level=log.getEffectiveLevel(),
            on_give_up=on_give_up,
        )
        app.state.background = BackgroundWorker(
            current,
            list(JOBS) if jobs is None else jobs,
            log_level=log.getEffectiveLevel(),
            on_give_up=on_give_up,
            on_round=app.state.metrics.background_round,
        )

        async def store_opened() -> None:
            """What needs the schema, started once migrations ran."""
            await app.state.writer.start()
            await app.state.background.start()

        # Migrations, then store_opened: now, or once the database answers (startup.py).
        app.state.store = StoreOpening(
            app.state.engine, on_open=store_opened, on_refused=on_refused
        )
        await app.state.store.begin()
        if freeze_heap:
            gc.collect()
            gc.freeze()
        yield
        await app.state.store.close()
        await app.state.background.stop()
        await app.state.writer.stop()
        app.state.rate_limits.close()
        if engine is None:
            app.state.engine.dispose()

    app = ListenerApp(
        title="PenguinMails Finance",
        version="1.0.0",
        description="Stripe webhook listener and the read-only Finance API.",
        lifespan=lifespan,
        # FastAPI's /docs and /redoc load their scripts from a CDN: off, so that the
        # listener's pages load nothing from another site. /openapi.json stays.
        docs_url=None,
        redoc_url=None,
        # A trailing slash is a 404, never a redirect to http://<Host header>/...
        redirect_slashes=False,
    )
    install_finance_api(app)
    install_metrics(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz(request: Request) -> JSONResponse:
        reachable = await run_in_threadpool(_database_reachable, request.app.state.engine)
        # Without its writer the listener can only answer webhooks 503: route elsewhere.
        # It is started once the store is open (migrated), and replaced should it die.
        writer: BatchWriter = request.app.state.writer
        writing = writer.running
        return JSONResponse(
            {
                "status": "ok" if reachable and writing else "degraded",
                "database": "reachable" if reachable else "unreachable",
                "writer": "running" if writing else "restarting" if writer.started else "starting",
            },
            status_code=200 if reachable and writing else 503,
        )

    return app


def _check_shareable(db: Engine) -> None:
    """The writer process opens the store itself: a private in-memory database cannot work."""
    if db.url.get_backend_name() == "sqlite" and db.url.database in (None, "", ":memory:"):
        raise SettingsError(
            "DATABASE_URL is an in-memory SQLite database, which the listener's writer process "
            "cannot share: use a file (sqlite:///path/to/finance.db) or PostgreSQL"
        )


def _database_reachable(db: Engine) -> bool:
    """One statement on a pooled connection, outside a transaction.

    A transaction would end in ROLLBACK, after which psycopg forgets the statements it has
    prepared on that connection (and deallocates them): a load balancer's polling would
    then have the Finance API's answers planned again on every run.
    """
    try:
        with statement_reads(db) as conn:
            hot.run(conn, hot.SELECT_ONE, {}).fetchall()
        return True
    except SQLAlchemyError:
        return False


app = create_app()
