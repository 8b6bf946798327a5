"""Who is looking: streamlit-authenticator against the store's users, or OpenID Connect.

Roles always come from the store (or, with OpenID Connect, from the configured email map)
on every run, never from the login cookie, so a role change or a removed user applies at
the next click. Sessions end for real (finance_core.access.sessions): the login cookie is
signed with a key bound to the user's session version, and a signed-in session is checked
against that version on every run, from the users read for the run anyway. The password form
is ours, not the authenticator's, so that finance_core.access.sign_in checks the lock before
the authenticator checks the password.
"""

import importlib.util
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
import streamlit as st
import streamlit_authenticator as stauth
from streamlit_authenticator.utilities import LoginError

from dashboard import charts, data
from dashboard.text import md
from finance_core.access import client_address, sessions, sso
from finance_core.access.roles import can_read, is_admin
from finance_core.access.sign_in import Outcome, SignInUnavailable
from finance_core.access.users import check_no_password, normalize_username

COOKIE_NAME = "penguinmails_finance_login"
VIEWER_KEY = "finance_viewer"
SET_COOKIE_KEY = "finance_set_login_cookie"
# The session version the viewer signed in with (finance_core.access.sessions).
SESSION_VERSION_KEY = "finance_session_version"
LOGGED_OUT = "You have logged out."
SESSION_ENDED = (
    "Your session has ended: you logged out elsewhere, or an admin changed your password or "
    "roles. Sign in again."
)
ACCOUNT_GONE = "Your account no longer exists. Ask an admin for a new one."
SSO_EXPIRED = "Your sign-in has expired. Sign in again with your company account."


@dataclass(frozen=True, slots=True)
class Viewer:
    username: str
    name: str
    roles: tuple[str, ...]

    @property
    def can_read(self) -> bool:
        return can_read(self.roles)

    @property
    def is_admin(self) -> bool:
        return is_admin(self.roles)


def oidc_configured() -> bool:
    """Whether the deployment configured OpenID Connect ([auth] in secrets.toml)."""
    return st.secrets.load_if_toml_exists() and "auth" in st.secrets


def sign_in() -> Viewer | None:
    """Show the login (or the identity provider's button); the signed-in viewer, if any."""
    viewer = _oidc_sign_in() if oidc_configured() else _password_sign_in()
    if viewer is None:
        st.session_state.pop(VIEWER_KEY, None)
    else:
        st.session_state[VIEWER_KEY] = viewer
    return viewer


def current_viewer() -> Viewer:
    """The viewer app.py signed in, or a stop with a forbidden message for anyone else."""
    viewer = st.session_state.get(VIEWER_KEY)
    if not isinstance(viewer, Viewer) or not viewer.can_read:
        st.error("You do not have access to the finance data.")
        st.stop()
    return viewer


def current_admin(refusal: str) -> Viewer:
    """The signed-in admin, or a stop with `refusal` for anyone else.

    app.py lists the admin pages for admins only; this is the second lock.
    """
    viewer = current_viewer()
    if not viewer.is_admin:
        st.error(refusal)
        st.stop()
    return viewer


def _password_sign_in() -> Viewer | None:
    cookie_key = data.settings().cookie_key()  # SettingsError: app.py shows it and stops
    users = data.credentials()
    # The one Authenticate of this run. login_sleep_time=0: 0.4.2 reads the cookie from
    # the request (st.context.cookies), so its default pause before the form waits for
    # nothing; bcrypt already makes each password guess slow.
    authenticator = stauth.Authenticate(
        users,
        cookie_name=COOKIE_NAME,
        cookie_key=_cookie_signing_key(cookie_key, users),
        cookie_expiry_days=data.settings().dashboard_cookie_expiry_days,
        auto_hash=False,
        login_sleep_time=0,
    )
    notice = None
    if st.session_state.get("authentication_status"):
        notice = _ended_session(authenticator, users)
        if notice is None:
            if st.session_state.pop(SET_COOKIE_KEY, False):
                authenticator.cookie_controller.set_cookie()
            _sidebar_logout(authenticator)
            notice = None if st.session_state.get("authentication_status") else LOGGED_OUT
    if not st.session_state.get("authentication_status"):
        _login_form(authenticator, users, notice=notice)
        if not st.session_state.get("authentication_status"):
            return None
        _sidebar_logout(authenticator)  # signed in from the remembered cookie

    username = st.session_state["username"]
    user = users["usernames"][username]
    viewer = Viewer(username, user["name"], tuple(user.get("roles") or ()))
    _sidebar_identity(viewer)
    return viewer


def _cookie_signing_key(cookie_key: str, users: Mapping[str, Any]) -> str:
    """This run's cookie key: for the signed-in user, else for the user the cookie names.

    The name is read from the cookie unverified, only to pick the key; the authenticator then
    verifies the cookie with it, which fails for a forged name or an ended session.
    """
    if st.session_state.get("authentication_status"):
        username = st.session_state.get("username")
    else:
        username = _cookie_username()
    user = users["usernames"].get(username or "")
    if username is None or user is None:
        return sessions.unverifiable_key()
    return sessions.cookie_signing_key(
        cookie_key=cookie_key, username=username, session_version=user["session_version"]
    )


def _cookie_username() -> str | None:
    token = st.context.cookies.get(COOKIE_NAME)
    if not token:
        return None
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    username = claims.get("username")
    return username if isinstance(username, str) else None


def _ended_session(authenticator: stauth.Authenticate, users: Mapping[str, Any]) -> str | None:
    """Why this signed-in session is over, after signing it out; None while it lasts."""
    user = users["usernames"].get(st.session_state.get("username") or "")
    if user is None:  # removed from the store since signing in
        notice = ACCOUNT_GONE
    elif st.session_state.get(SESSION_VERSION_KEY) != user["session_version"]:
        notice = SESSION_ENDED
    else:
        return None
    authenticator.logout(location="unrendered")  # also deletes the cookie in the browser
    st.session_state.pop(SESSION_VERSION_KEY, None)
    st.session_state.pop(SET_COOKIE_KEY, None)
    return notice


def _login_form(
    authenticator: stauth.Authenticate, users: Mapping[str, Any], *, notice: str | None
) -> None:
    st.title("PenguinMails Finance")
    if notice == LOGGED_OUT:
        st.info(notice)
    elif notice:
        st.warning(notice)
    try:
        authenticator.login(location="unrendered")  # the remembered login, if its cookie is good
    except LoginError as exc:
        st.error(f"Sign-in refused: {md(exc)}")
    if st.session_state.get("authentication_status"):
        _remember_version(users)
        return
    with st.form("finance_login"):
        st.subheader("Sign in")
        username = st.text_input("Username", autocomplete="off")
        password = st.text_input("Password", type="password", autocomplete="off")
        submitted = st.form_submit_button("Login")
    if submitted:
        _submit(authenticator, users, username, password)
    if not st.session_state.get("authentication_status"):
        st.caption(
            "Accounts are created by an admin, on the Users page or with "
            "`python -m finance_core user add`."
        )
        charts.load_plotly_early()


def _submit(
    authenticator: stauth.Authenticate, users: Mapping[str, Any], username: str, password: str
) -> None:
    """Throttled: the lock first, and only then the authenticator's password check."""
    if not username.strip() or not password:
        st.error("Enter your username and your password.")
        return

    def check_password() -> bool:
        known = users["usernames"]
        if normalize_username(username) not in known:
            # As slow as a wrong password: the time does not tell which usernames exist.
            like = next((user["password"] for user in known.values()), None)
            return check_no_password(password, like=like)
        return bool(authenticator.authentication_controller.login(username, password))

    try:
        result = data.sign_in(username, _client_address(), check_password)
    except SignInUnavailable as exc:
        st.error(md(exc))
        return
    if result.outcome is Outcome.SIGNED_IN:
        _remember_version(users)
        # Start again without the form. The cookie is written in the next run, since this
        # one ends before the browser could run the component that stores it.
        st.session_state[SET_COOKIE_KEY] = True
        st.rerun()
    elif result.lock is not None:
        st.error(md(result.lock.message))
    else:
        st.error("Wrong username or password.")


def _client_address() -> str:
    """The address this attempt counts against (finance_core.access.client_address)."""
    return client_address.counted_address(
        reported=st.context.ip_address,
        forwarded_for=st.context.headers.get_all("X-Forwarded-For"),
        trusted_proxies=data.settings().dashboard_trusted_proxies,
        server_trusts=client_address.server_trusts(),
    )


def _remember_version(users: Mapping[str, Any]) -> None:
    st.session_state[SESSION_VERSION_KEY] = users["usernames"][st.session_state["username"]][
        "session_version"
    ]


def _sidebar_logout(authenticator: stauth.Authenticate) -> None:
    authenticator.logout(
        button_name="Log out", location="sidebar", key="finance_logout", callback=_log_out
    )


def _log_out(details: Mapping[str, Any]) -> None:
    """Log out ends every session of the user, a copied cookie included."""
    if details.get("username"):
        data.sign_out_everywhere(details["username"])
    st.session_state.pop(SESSION_VERSION_KEY, None)


def _sidebar_identity(viewer: Viewer) -> None:
    roles = ", ".join(viewer.roles) or "no role"
    st.sidebar.caption(f"Signed in as **{md(viewer.name)}** ({md(viewer.username)}) · {md(roles)}")


def _oidc_sign_in() -> Viewer | None:
    if not st.user.is_logged_in:
        st.title("PenguinMails Finance")
        if importlib.util.find_spec("authlib") is None:  # st.login needs it
            st.error(
                "OpenID Connect is configured ([auth] in .streamlit/secrets.toml) but Authlib "
                "is not installed: `pip install Authlib`, or remove the [auth] section."
            )
            return None
        st.button("Sign in with your company account", on_click=st.login, type="primary")
        return None
    claims = st.user.to_dict()
    max_age = data.settings().dashboard_cookie_expiry_days * 86_400
    if sso.sign_in_expired(claims, now=time.time(), max_age_seconds=max_age):
        st.title("PenguinMails Finance")
        st.info(SSO_EXPIRED)
        st.button("Sign in again", on_click=st.logout, type="primary")
        return None
    # Read on every run: a change to the maps in secrets.toml applies at the next click.
    roles = sso.roles_for_identity(claims, sso.RoleMaps.from_secrets(st.secrets))
    email = str(claims.get("email") or "")
    identity = email or str(claims.get("preferred_username") or claims.get("sub") or "")
    viewer = Viewer(identity, str(claims.get("name") or identity), roles)
    # st.logout deletes Streamlit's HttpOnly identity cookie and, where the provider
    # publishes an end_session_endpoint, ends the session there too.
    st.sidebar.button("Log out", on_click=st.logout, key="finance_oidc_logout")
    _sidebar_identity(viewer)
    return viewer
