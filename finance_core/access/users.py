"""Dashboard users: bcrypt hashes only, roles as in `access.roles`, every change audited."""

import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import bcrypt
from sqlalchemy import Connection, Engine, delete, select, update

from finance_core.access.audit import record_action
from finance_core.access.roles import RoleError, describe_roles, format_roles, parse_roles
from finance_core.access.sessions import end_sessions, new_session_version
from finance_core.store.db import write_transaction
from finance_core.store.models import dashboard_users

MIN_PASSWORD_LENGTH = 8
# bcrypt's own default cost: about a quarter of a second per hash, to slow any guessing.
BCRYPT_ROUNDS = 12
# Tests only: a lower cost (bcrypt's minimum is 4) for the hashes made under pytest, which
# otherwise spend about 1.4 s per dashboard test hashing and checking. Honoured only while
# PYTEST_VERSION is set (pytest sets it for its run and the processes the tests start), so a
# stray variable in production cannot make the hashes cheap.
TEST_BCRYPT_ROUNDS_VARIABLE = "FINANCE_TEST_BCRYPT_ROUNDS"


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
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=bcrypt_rounds())).decode()


def bcrypt_rounds() -> int:
    """The cost of new hashes: BCRYPT_ROUNDS, or under pytest the tests' cheaper one."""
    rounds = os.environ.get(TEST_BCRYPT_ROUNDS_VARIABLE)
    if rounds is None or "PYTEST_VERSION" not in os.environ:
        return BCRYPT_ROUNDS
    return int(rounds)


# A throwaway hash per bcrypt cost: what an unknown username's password is checked against.
_decoys: dict[bytes, bytes] = {}


def check_no_password(password: str, *, like: str | None) -> bool:
    """Refuse a password for an unknown username, as slowly as a wrong one for a known username.

    Without this, a sign-in for a made-up username returns before bcrypt runs and so reveals
    which usernames exist. The password is checked against a throwaway hash of the same bcrypt
    cost as `like`, a stored hash (the store's own cost, whatever it is), or of the default cost
    when there is none. Always False.
    """
    salt = like.encode()[:29] if like and like.startswith("$2") else bcrypt.gensalt()
    cost = salt[:7]  # "$2b$12$": the algorithm and cost, not the salt itself
    decoy = _decoys.get(cost)
    if decoy is None:
        decoy = _decoys[cost] = bcrypt.hashpw(secrets.token_bytes(16).hex().encode(), salt)
    bcrypt.checkpw(password.encode()[:72], decoy)
    return False


def normalize_username(username: str) -> str:
    """Usernames are compared trimmed and in lower case, as streamlit-authenticator does."""
    return username.strip().lower()


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if len(password.encode()) > 72:
        raise UserError("the password may have at most 72 bytes (a bcrypt limit)")


def _stored_roles(roles: list[str]) -> str:
    try:
        return format_roles(roles)
    except RoleError as exc:
        raise UserError(str(exc)) from None


def add_user(
    *,
    engine: Engine,
    username: str,
    password: str,
    roles: list[str],
    actor: str,
    now: datetime,
    name: str | None = None,
    email: str | None = None,
) -> None:
    username = normalize_username(username)
    if not username or len(username) > 255 or any(c.isspace() for c in username):
        raise UserError("a username needs 1 to 255 characters and no spaces")
    _check_password(password)
    stored_roles = _stored_roles(roles)
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
                roles=stored_roles,
                created_at=now,
                session_version=new_session_version(),
            )
        )
        record_action(
            conn,
            actor=actor,
            action="user_added",
            target=username,
            detail=f"roles: {describe_roles(parse_roles(stored_roles))}",
            now=now,
        )


def list_users(*, conn: Connection) -> list[DashboardUser]:
    rows = conn.execute(select(dashboard_users).order_by(dashboard_users.c.username))
    return [
        DashboardUser(row.username, row.name, row.email, parse_roles(row.roles), row.created_at)
        for row in rows
    ]


def user_exists(*, conn: Connection, username: str) -> bool:
    wanted = normalize_username(username)
    found = conn.execute(
        select(dashboard_users.c.username).where(dashboard_users.c.username == wanted)
    ).first()
    return found is not None


def set_password(
    *, engine: Engine, username: str, password: str, actor: str, now: datetime
) -> None:
    """Give the user a new password and end their sessions."""
    username = normalize_username(username)
    _check_password(password)
    with write_transaction(engine) as conn:
        changed = conn.execute(
            update(dashboard_users)
            .where(dashboard_users.c.username == username)
            .values(password_hash=hash_password(password))
        ).rowcount
        if not changed:
            raise UserError(f"no user named {username!r}")
        end_sessions(conn, username=username)
        record_action(
            conn,
            actor=actor,
            action="user_password_set",
            target=username,
            detail="new password; sessions ended",
            now=now,
        )


def set_roles(
    *, engine: Engine, username: str, roles: list[str], actor: str, now: datetime
) -> None:
    """Replace the user's roles and end their sessions."""
    username = normalize_username(username)
    stored_roles = _stored_roles(roles)
    if not stored_roles:
        raise UserError("give at least one role (to take every role away, remove the user)")
    with write_transaction(engine) as conn:
        before = conn.execute(
            select(dashboard_users.c.roles).where(dashboard_users.c.username == username)
        ).scalar()
        if before is None:
            raise UserError(f"no user named {username!r}")
        conn.execute(
            update(dashboard_users)
            .where(dashboard_users.c.username == username)
            .values(roles=stored_roles)
        )
        end_sessions(conn, username=username)
        record_action(
            conn,
            actor=actor,
            action="user_roles_set",
            target=username,
            detail=(
                f"roles: {describe_roles(parse_roles(stored_roles))} "
                f"(were: {describe_roles(parse_roles(before))}); sessions ended"
            ),
            now=now,
        )


def remove_user(*, engine: Engine, username: str, actor: str, now: datetime) -> None:
    """Remove the user; with their row goes the session version, so their sessions end too."""
    username = normalize_username(username)
    with write_transaction(engine) as conn:
        removed = conn.execute(
            delete(dashboard_users).where(dashboard_users.c.username == username)
        ).rowcount
        if not removed:
            raise UserError(f"no user named {username!r}")
        record_action(conn, actor=actor, action="user_removed", target=username, now=now)


def sign_out_everywhere(*, engine: Engine, username: str) -> None:
    """End every session of the user (the dashboard's Log out)."""
    with write_transaction(engine) as conn:
        end_sessions(conn, username=normalize_username(username))


def authenticator_credentials(*, conn: Connection) -> dict[str, Any]:
    """Users in the plain-dict shape streamlit-authenticator takes, with bcrypt hashes.

    Each also carries its `session_version` (finance_core.access.sessions), which the library
    ignores.
    """
    rows = conn.execute(select(dashboard_users))
    return {
        "usernames": {
            row.username: {
                "name": row.name,
                "email": row.email or "",
                "password": row.password_hash,
                "roles": parse_roles(row.roles),
                "session_version": row.session_version,
            }
            for row in rows
        }
    }
