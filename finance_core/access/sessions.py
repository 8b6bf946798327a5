"""Dashboard sessions that end for real: a per-user session version, bound into the login cookie.

streamlit-authenticator's login cookie is a stateless JWT of `{username, exp_date}`, signed with
one key: on its own, a copy of it signs in until it expires, whatever happens on the server.
Each user row holds a random `session_version`, and the cookie of that user is signed not with
DASHBOARD_COOKIE_KEY itself but with `cookie_signing_key(cookie_key, username, version)`, an
HMAC of both. Ending a user's sessions (logout, a new password, new roles; removal deletes the
row) replaces the version, and every cookie signed before no longer verifies: a copied cookie
is refused, in any browser, at once. A session already open in a browser keeps the version it
signed in with and is signed out on its next run when the stored one differs.

Why this rather than "refuse cookies issued before sessions_valid_after": the cookie carries no
issue time, only `exp_date`, and deriving one from exp_date minus the configured expiry breaks
when DASHBOARD_COOKIE_EXPIRY_DAYS changes (a cookie issued under a longer expiry looks issued
later than it was) and with clocks that differ between replicas. A version that is random, not
a counter, also keeps a removed and re-added user's old cookies dead. The check costs nothing
per run: the version comes with the users the dashboard reads on every run anyway.
"""

import hashlib
import hmac
import secrets

from sqlalchemy import Connection, update

from finance_core.store.models import dashboard_users


def new_session_version() -> str:
    return secrets.token_hex(16)


def cookie_signing_key(*, cookie_key: str, username: str, session_version: str) -> str:
    """The key that signs and verifies this user's login cookie while their version lasts."""
    message = f"{username}\n{session_version}".encode()
    return hmac.new(cookie_key.encode(), message, hashlib.sha256).hexdigest()


def unverifiable_key() -> str:
    """A key no cookie was signed with, for a run that has no user to verify a cookie for."""
    return secrets.token_hex(32)


def end_sessions(conn: Connection, *, username: str) -> bool:
    """Replace the user's session version, in the caller's transaction: whether the user exists."""
    ended = conn.execute(
        update(dashboard_users)
        .where(dashboard_users.c.username == username)
        .values(session_version=new_session_version())
    ).rowcount
    return bool(ended)
