"""Leases in the store: which of several processes does a job that must run in one place."""

import os
import secrets
import socket
from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, or_

from finance_core.store.db import insert_for, write_transaction
from finance_core.store.models import leases


def holder_name() -> str:
    """A name for this process that no other process, here or on another host, shares."""
    return f"{socket.gethostname()[:100]}:{os.getpid()}:{secrets.token_hex(4)}"


def acquire(*, engine: Engine, name: str, holder: str, ttl: timedelta, now: datetime) -> bool:
    """Take the lease, or renew it if `holder` has it; False while another holder's runs.

    One statement: on PostgreSQL a concurrent taker waits for this transaction and then
    sees the renewed expiry, so two processes never both hold an unexpired lease.
    """
    with write_transaction(engine) as conn:
        statement = insert_for(conn, leases).values(name=name, holder=holder, expires_at=now + ttl)
        taken = statement.on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": statement.excluded.holder, "expires_at": statement.excluded.expires_at},
            where=or_(leases.c.holder == holder, leases.c.expires_at <= now),
        ).returning(leases.c.name)
        return conn.execute(taken).first() is not None


def release(*, engine: Engine, name: str, holder: str) -> None:
    """Give the lease up, if `holder` has it, so that another process may take it at once."""
    with write_transaction(engine) as conn:
        conn.execute(delete(leases).where(leases.c.name == name, leases.c.holder == holder))
