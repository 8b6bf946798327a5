"""The Finance API as the tests call it: paths, tokens, reads and the error envelope."""

import itertools
import re
from datetime import UTC, datetime

import httpx
from sqlalchemy import Engine

from finance_core.access.tokens import create_token

SUMMARY = "/api/v1/platform/finance/subscription-summary"
SYNC_STATUS = "/api/v1/platform/finance/stripe-sync-status"
ENDPOINTS = [SUMMARY, SYNC_STATUS]
UTC_SECOND = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_names = itertools.count(1)


def make_token(engine: Engine, *roles: str) -> str:
    name = f"api-test-{next(_names)}"
    return create_token(
        engine=engine, name=name, roles=list(roles), actor="tests", now=datetime.now(UTC)
    )


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
