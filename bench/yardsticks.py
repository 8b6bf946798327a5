"""The yardsticks our listener is measured against, as bare ASGI apps.

`bare_app` only answers 200: the HTTP ceiling of uvicorn here. `minimal_app` does the least a
correct receiver must: verify the signature, parse the JSON, insert one row and commit, in
SQLite; `minimal_postgresql_app` does the same in PostgreSQL, for the listener on PostgreSQL.
"""

import json
import os
import sqlite3
from typing import Any

import psycopg
import stripe

SECRET = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
OK = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json")],
}
BODY = {"type": "http.response.body", "body": b'{"received":true}'}


async def _read(receive: Any) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await _read(receive)
    await send(OK)
    await send(BODY)


_db: sqlite3.Connection | None = None


def _connection() -> sqlite3.Connection:
    global _db
    if _db is None:
        _db = sqlite3.connect(os.environ["MINIMAL_DB"])
        _db.execute("PRAGMA journal_mode=WAL")
        _db.execute("PRAGMA synchronous=NORMAL")
        _db.execute(
            "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, type TEXT, created INT)"
        )
    return _db


async def _verified_event(receive: Any, scope: dict[str, Any]) -> dict[str, Any]:
    body = (await _read(receive)).decode()
    header = dict(scope["headers"]).get(b"stripe-signature", b"").decode()
    stripe.WebhookSignature.verify_header(body, header, SECRET, 300)
    event: dict[str, Any] = json.loads(body)
    return event


async def minimal_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    event = await _verified_event(receive, scope)
    db = _connection()
    with db:  # one transaction: commit, or roll back on error
        db.execute(
            "INSERT OR IGNORE INTO events VALUES (?, ?, ?)",
            (event["id"], event["type"], event["created"]),
        )
    await send(OK)
    await send(BODY)


_pg: psycopg.Connection | None = None


def _pg_connection() -> psycopg.Connection:
    global _pg
    if _pg is None:
        _pg = psycopg.connect(os.environ["MINIMAL_PG"])
        _pg.execute(
            "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, type TEXT, created INT)"
        )
        _pg.commit()
    return _pg


async def minimal_postgresql_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    event = await _verified_event(receive, scope)
    db = _pg_connection()
    with db.transaction():  # one transaction: commit, or roll back on error
        db.execute(
            "INSERT INTO events VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (event["id"], event["type"], event["created"]),
        )
    await send(OK)
    await send(BODY)
