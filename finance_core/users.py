"""Dashboard users: bcrypt hashes only, roles as in `finance_core.roles`."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bcrypt
from sqlalchemy import Connection, Engine, delete, select

from finance_core.db import write_transaction
from finance_core.models import dashboard_users
from finance_core.roles import format_roles, parse_roles

MIN_PASSWORD_LENGTH = 8


class UserError(ValueError):
    """A user operation was refused; the message says why."""


@dataclass(frozen=True, slots=True)
class DashboardUser:
    username: str
    name: str
    email: str | None
    roles: list[str]
    created_at: datetime


def hash_password(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode()


def add_user(
    *,
    engine: Engine,
    username: str,
    password: str,
    roles: list[str],
    now: datetime,
    name: str | None = None,
    email: str | None = None,
) -> None:
    username = username.strip().lower()
    if not username or len(username) > 255 or any(c.isspace() for c in username):
        raise UserError("a username needs 1 to 255 characters and no spaces")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode()) > 72:
        raise UserError("the password may have at most 72 bytes (a bcrypt limit)")
    with write_transaction(engine) as conn:
        taken = conn.execute(
            select(dashboard_users.c.username).where(dashboard_users.c.username == username)
        ).first()
        if taken:
            raise UserError(f"user {username!r} already exists")
        conn.execute(
            dashboard_users.insert().values(
                username=username,
                name=(name or username).strip(),
                email=email,
                password_hash=hash_password(password),
                roles=format_roles(roles),
                created_at=now,
            )
        )


def list_users(*, conn: Connection) -> list[DashboardUser]:
    rows = conn.execute(select(dashboard_users).order_by(dashboard_users.c.username))
    return [
        DashboardUser(row.username, row.name, row.email, parse_roles(row.roles), row.created_at)
        for row in rows
    ]


def remove_user(*, engine: Engine, username: str) -> None:
    with write_transaction(engine) as conn:
        removed = conn.execute(
            delete(dashboard_users).where(dashboard_users.c.username == username.strip().lower())
        ).rowcount
    if not removed:
        raise UserError(f"no user named {username!r}")


def authenticator_credentials(*, conn: Connection) -> dict[str, Any]:
    """Users in the plain-dict shape streamlit-authenticator takes, with bcrypt hashes."""
    rows = conn.execute(select(dashboard_users))
    return {
        "usernames": {
            row.username: {
                "name": row.name,
                "email": row.email or "",
                "password": row.password_hash,
                "roles": parse_roles(row.roles),
            }
            for row in rows
        }
    }
