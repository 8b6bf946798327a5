"""Who is looking: streamlit-authenticator against the store's users, or OpenID Connect.

Roles always come from the store (or, with OpenID Connect, from the configured email map)
on every run, never from the login cookie, so a role change or a removed user applies at
the next click.
"""

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st
import streamlit_authenticator as stauth
from streamlit_authenticator.utilities import LoginError

from dashboard import charts, data
from finance_core.roles import can_read, is_admin

COOKIE_NAME = "penguinmails_finance_login"
VIEWER_KEY = "finance_viewer"
SET_COOKIE_KEY = "finance_set_login_cookie"
OIDC_ROLES_SECTION = "dashboard_roles"
LOGIN_FIELDS = {"Form name": "Sign in", "Username": "Username", "Password": "Password"}


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


def _password_sign_in() -> Viewer | None:
    cookie_key = data.settings().cookie_key()  # SettingsError: app.py shows it and stops
    users = data.credentials()
    # The one Authenticate of this run. login_sleep_time=0: 0.4.2 reads the cookie from
    # the request (st.context.cookies), so its default pause before the form waits for
    # nothing; bcrypt already makes each password guess slow.
    authenticator = stauth.Authenticate(
        users,
        cookie_name=COOKIE_NAME,
        cookie_key=cookie_key,
        cookie_expiry_days=data.settings().dashboard_cookie_expiry_days,
        auto_hash=False,
        login_sleep_time=0,
    )
    was_signed_in = bool(st.session_state.get("authentication_status"))
    if was_signed_in:
        if st.session_state.pop(SET_COOKIE_KEY, False):
            authenticator.cookie_controller.set_cookie()
        _sidebar_logout(authenticator)
    if not st.session_state.get("authentication_status"):
        _login_form(authenticator, logged_out=was_signed_in)
        if not st.session_state.get("authentication_status"):
            return None
        _sidebar_logout(authenticator)  # signed in from the remembered cookie

    username = st.session_state.get("username") or ""
    user = users["usernames"].get(username)
    if user is None:  # removed from the store since signing in
        authenticator.logout(location="unrendered")
        st.warning("Your account no longer exists. Ask an admin for a new one.")
        return None
    viewer = Viewer(username, user["name"], tuple(user.get("roles") or ()))
    _sidebar_identity(viewer)
    return viewer


def _login_form(authenticator: stauth.Authenticate, *, logged_out: bool) -> None:
    st.title("PenguinMails Finance")
    if logged_out:
        st.info("You have logged out.")
    remembered = bool(authenticator.cookie_controller.get_cookie())
    try:
        authenticator.login(location="main", fields=LOGIN_FIELDS, key="finance_login")
    except LoginError as exc:  # e.g. a remembered login for a user since removed
        st.error(f"Sign-in refused: {exc}")
        return
    status = st.session_state.get("authentication_status")
    if status and not remembered:
        # Signed in with the form during this run: start again without the form. The
        # cookie is written in the next run, since this one ends before the browser
        # could run the component that stores it.
        st.session_state[SET_COOKIE_KEY] = True
        st.rerun()
    elif status is False:
        st.error("Wrong username or password.")
    elif status is None:
        st.caption("Accounts are created by an admin with `python -m finance_core user add`.")
    if not status:
        charts.load_plotly_early()


def _sidebar_logout(authenticator: stauth.Authenticate) -> None:
    authenticator.logout(button_name="Log out", location="sidebar", key="finance_logout")


def _sidebar_identity(viewer: Viewer) -> None:
    roles = ", ".join(viewer.roles) or "no role"
    st.sidebar.caption(f"Signed in as **{viewer.name}** ({viewer.username}) · {roles}")


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
    email = str(st.user.get("email") or "")
    verified = st.user.get("email_verified") is not False
    roles = roles_for_email(email, _oidc_role_map()) if verified else ()
    viewer = Viewer(email, str(st.user.get("name") or email), roles)
    st.sidebar.button("Log out", on_click=st.logout, key="finance_oidc_logout")
    _sidebar_identity(viewer)
    return viewer


def _oidc_role_map() -> Mapping[str, Any]:
    section = st.secrets.get(OIDC_ROLES_SECTION, {})
    return section if isinstance(section, Mapping) else {}


def roles_for_email(email: str, role_map: Mapping[str, Any]) -> tuple[str, ...]:
    """The roles the configured map grants an email address (case-insensitive)."""
    wanted = email.strip().lower()
    for address, roles in role_map.items():
        if str(address).strip().lower() == wanted and wanted:
            listed = [roles] if isinstance(roles, str) else list(roles or ())
            return tuple(sorted({str(role).strip().lower() for role in listed if role}))
    return ()
