"""Dashboard users for the tests: each named after their username, added by the actor `tests`."""

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import Engine

from finance_core.access.users import add_user

PASSWORD = "correct horse battery"
# Finance only, admin only, and no role at all.
TEAM = [("fiona", ["finance"]), ("ada", ["admin"]), ("nora", [])]


def add_users(
    engine: Engine, users: Iterable[tuple[str, list[str]]] = TEAM, password: str = PASSWORD
) -> None:
    now = datetime.now(UTC)
    for username, roles in users:
        add_user(
            engine=engine,
            username=username,
            password=password,
            roles=roles,
            actor="tests",
            now=now,
            name=username.capitalize(),
        )
