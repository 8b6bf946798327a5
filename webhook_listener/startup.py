"""Opening the store at start: migrate once the database answers, and keep trying until it does.

systemd may start the listener before PostgreSQL on boot. Instead of a traceback and an exit,
the listener says once that the database does not answer yet and tries again with a capped
backoff; meanwhile /healthz answers 503 (a load balancer routes elsewhere) and so do webhooks
(Stripe retries) and the API. A database that answers but refuses these settings (bad
credentials, no such database) is a settings error instead: retrying cannot fix it.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from finance_core.demo import DEMO_EVENT_PREFIX
from finance_core.settings import SettingsError
from finance_core.store import migrate
from finance_core.store.db import is_unavailable, read_transaction, refuses_connection
from finance_core.views.queries import stripe_sync_status

log = logging.getLogger("webhook_listener")
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 30.0


class StoreRefused(SettingsError):
    """The database answered but refuses DATABASE_URL's credentials or database name."""


class StoreOpening:
    """Opens the store (migrations, then `on_open`) now or, once it answers, in the background.

    `on_refused` is told when the database refuses us (the listener then exits); without it
    a refusal at the first attempt is raised, and a later one ends the retries.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        on_open: Callable[[], Awaitable[None]],
        on_refused: Callable[[StoreRefused], None] | None = None,
    ) -> None:
        self.engine = engine
        self.ready = False
        self._on_open = on_open
        self._on_refused = on_refused
        self._retrying: asyncio.Task[None] | None = None
        self._store = engine.url.render_as_string(hide_password=True)

    async def begin(self) -> None:
        """Open the store if the database answers; otherwise say so once and keep trying."""
        try:
            await self._attempt()
        except StoreRefused as refusal:
            if self._on_refused is None:
                raise
            self._on_refused(refusal)
        except _NotAnswering as exc:
            log.warning(
                "the database does not answer yet (%s: %s); answering 503 and retrying every "
                "%.0f s, doubling up to %.0f s",
                self._store,
                exc,
                FIRST_RETRY_S,
                MAX_RETRY_S,
            )
            self._retrying = asyncio.create_task(self._retry())

    async def close(self) -> None:
        """Stop retrying (the listener is stopping)."""
        if self._retrying is not None:
            self._retrying.cancel()
            await asyncio.gather(self._retrying, return_exceptions=True)

    async def _retry(self) -> None:
        delay, waited = FIRST_RETRY_S, 0.0
        while True:
            await asyncio.sleep(delay)
            waited += delay
            try:
                await self._attempt()
            except _NotAnswering as exc:
                log.debug("the database still does not answer: %s", exc)
                delay = min(delay * 2, MAX_RETRY_S)
                continue
            except StoreRefused as refusal:
                if self._on_refused is None:
                    log.error("%s; not retrying", refusal)
                else:
                    self._on_refused(refusal)
                return
            except Exception:
                log.exception("the store could not be opened; answering 503 until a restart")
                return
            log.info("the database answers now, after about %.0f s", waited)
            return

    async def _attempt(self) -> None:
        try:
            await asyncio.to_thread(migrate.upgrade, self.engine)
        except SQLAlchemyError as exc:
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
            if refuses_connection(exc):
                raise StoreRefused(
                    f"the database at DATABASE_URL {self._store} refuses the listener: {reason}"
                ) from None
            if is_unavailable(exc):
                raise _NotAnswering(reason) from None
            raise
        await self._on_open()
        self.ready = True
        mode = await asyncio.to_thread(store_mode, self.engine)
        log.info("store open (%s), %s; taking webhooks", self._store, mode)


class _NotAnswering(Exception):
    """The database cannot be reached (yet)."""


def store_mode(engine: Engine) -> str:
    """What the store holds, in the words of SPEC 5: test or live data (or demo data, or none)."""
    with read_transaction(engine) as conn:
        last = stripe_sync_status(conn=conn, delayed_after=1, now=datetime.now(UTC)).last_event
    if last is None:
        return "no events yet"
    if last.id.startswith(DEMO_EVENT_PREFIX):
        return "demo data"
    return f"{'live' if last.livemode else 'test'} mode (the latest event's)"
