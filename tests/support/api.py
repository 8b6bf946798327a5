"""The Finance API as the tests call it: paths, tokens, reads and the error envelope."""

import itertools
import re
from datetime import UTC, datetime

import httpx
from sqlalchemy import Engine, update

from finance_core.access.roles import READ_ROLES
from finance_core.access.tokens import create_token
from finance_core.store.db import write_transaction
from finance_core.store.models import api_tokens

SUMMARY = "/api/v1/platform/finance/subscription-summary"
SYNC_STATUS = "/api/v1/platform/finance/stripe-sync-status"
ENDPOINTS = [SUMMARY, SYNC_STATUS]
UTC_SECOND = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_names = itertools.count(1)


def make_token(engine: Engine, *roles: str) -> str:
    """A token with these roles; any other than finance and admin is written to its row, as a
    token made before roles were checked may hold one (the API must grant it nothing)."""
    name = f"api-test-{next(_names)}"
    granted = [role for role in roles if role in READ_ROLES]
    token = create_token(
        engine=engine, name=name, roles=granted, actor="tests", now=datetime.now(UTC)
    )
    if granted != list(roles):
        with write_transaction(engine) as conn:
            conn.execute(
                update(api_tokens)
                .where(api_tokens.c.name == name)
                .values(roles=",".join(sorted(set(roles))))
            )
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def read(http: httpx.Client, path: str, token: str) -> dict:
    response = http.get(path, headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["success"] is True
    return body["data"]


def parse_utc(value: str) -> datetime:
    assert UTC_SECOND.match(value), value
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body == {"success": False, "error": {"code": code, "message": body["error"]["message"]}}
    assert body["error"]["message"]


FAILED_PAYMENTS = "/api/v1/platform/finance/failed-payments"
