"""Finance API bearer tokens: shown once, stored as hashes, compared in constant time, audited."""

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from finance_core.access.audit import record_action
from finance_core.access.roles import RoleError, describe_roles, format_roles, parse_roles
from finance_core.store import statements as hot
from finance_core.store.db import read_transaction, write_transaction
from finance_core.store.models import api_tokens

TOKEN_PREFIX = "pmf"
# last_used_at is written at most this often per token, not on every request.
LAST_USED_RESOLUTION = timedelta(seconds=60)


class TokenError(ValueError):
    """A token operation was refused; the message says why."""


@dataclass(frozen=True, slots=True)
class TokenInfo:
    id: str
    name: str
    roles: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _info(row: Mapping[str, Any]) -> TokenInfo:
    return TokenInfo(
        id=row["id"],
        name=row["name"],
        roles=parse_roles(row["roles"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


def create_token(*, engine: Engine, name: str, roles: list[str], actor: str, now: datetime) -> str:
    """Create a token and return its only plaintext copy: pmf_<id>_<secret>."""
    name = name.strip()
    if not name or len(name) > 255:
        raise TokenError("a token needs a name of 1 to 255 characters")
    try:
        stored_roles = format_roles(roles)
    except RoleError as exc:
        raise TokenError(str(exc)) from None
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    with write_transaction(engine) as conn:
        taken = conn.execute(select(api_tokens.c.id).where(api_tokens.c.name == name)).first()
        if taken:
            raise TokenError(
                f"a token named {name!r} already exists; revoke it or pick another name"
            )
        conn.execute(
            api_tokens.insert().values(
                id=token_id,
                name=name,
                secret_hash=_hash(secret),
                roles=stored_roles,
                created_at=now,
            )
        )
        record_action(
            conn,
            actor=actor,
            action="token_created",
            target=name,
            detail=f"roles: {describe_roles(parse_roles(stored_roles))}",
            now=now,
        )
    return f"{TOKEN_PREFIX}_{token_id}_{secret}"


def list_tokens(*, conn: Connection) -> list[TokenInfo]:
    rows = conn.execute(select(api_tokens).order_by(api_tokens.c.created_at, api_tokens.c.name))
    return [_info(row._asdict()) for row in rows]


def revoke_token(*, engine: Engine, name: str, actor: str, now: datetime) -> None:
    """Revoke the token with this name; revoking twice is an error that says so."""
    with write_transaction(engine) as conn:
        row = conn.execute(select(api_tokens).where(api_tokens.c.name == name)).first()
        if row is None:
            raise TokenError(f"no token named {name!r}")
        if row.revoked_at is not None:
            raise TokenError(f"token {name!r} was already revoked")
        conn.execute(update(api_tokens).where(api_tokens.c.id == row.id).values(revoked_at=now))
        record_action(conn, actor=actor, action="token_revoked", target=name, now=now)


# Run on the driver (finance_core.store.statements): this lookup precedes every Finance API answer.
_TOKEN_BY_ID = select(api_tokens).where(api_tokens.c.id == bindparam("token_id"))


def authenticate_token(*, engine: Engine, token: str, now: datetime) -> TokenInfo | None:
    """The live token this plaintext belongs to, or None; its use is recorded."""
    with read_transaction(engine) as conn:
        info = find_token(conn=conn, token=token)
    if info is not None:
        record_use(engine=engine, token=info, now=now)
    return info


def find_token(*, conn: Connection, token: str) -> TokenInfo | None:
    """The live token this plaintext belongs to, or None (unknown, malformed or revoked).

    Only reads, in `conn`: the Finance API reads its answer on the same connection and
    records the use (`record_use`) once that connection is back in the pool.
    """
    prefix, _, rest = token.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != TOKEN_PREFIX or not token_id or not secret or len(token) > 200:
        return None
    row = hot.fetch_optional(conn, _TOKEN_BY_ID, {"token_id": token_id})
    # Compare hashes even for an unknown id, so timing says nothing about which ids exist.
    stored = row["secret_hash"] if row is not None else _hash("")
    if not hmac.compare_digest(_hash(secret), stored) or row is None or row["revoked_at"]:
        return None
    for column in ("created_at", "last_used_at", "revoked_at"):
        row[column] = hot.stored_time(row[column])
    return _info(row)


def record_use(*, engine: Engine, token: TokenInfo, now: datetime) -> None:
    """Write the token's last use, unless it was written within the last minute.

    A transaction of its own: a caller still holding a connection for its reads could wait
    for this one forever on a pool with no connection left.
    """
    last = token.last_used_at
    if last is None or now - last >= LAST_USED_RESOLUTION:
        with write_transaction(engine) as conn:
            conn.execute(
                update(api_tokens).where(api_tokens.c.id == token.id).values(last_used_at=now)
            )
