"""PenguinMails Finance dashboard: `streamlit run app.py`.

Signs the viewer in, then offers the pages their roles allow through st.navigation.
"""

from collections.abc import Callable, Iterable

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from dashboard import auth, ui
from finance_core.store.files import restrict_umask

restrict_umask()  # what the dashboard creates (a new SQLite store, its WAL) is the owner's

st.set_page_config(page_title="PenguinMails Finance", page_icon="🐧", layout="wide")

# The addresses of the pages below. Signed out, each shows the sign-in form and keeps its URL,
# so that a link to a page (a bookmark, an alert's) opens that page once signed in rather than
# Streamlit's "page not found" over the form.
FINANCE_PAGE_PATHS = (
    "home",
    "plan-distribution",
    "payments",
    "trends",
    "webhook-health",
    "event-log",
)
ADMIN_PAGE_PATHS = ("stripe-sync", "users", "api-tokens", "audit-log", "alerts")
PAGE_PATHS = FINANCE_PAGE_PATHS + ADMIN_PAGE_PATHS


def signed_out() -> None:
    """Nothing but the login form above."""


def admins_only() -> None:
    """An admin page's address opened by someone else: said in words, not "Page not found"."""
    st.title("Admins only")
    st.error("This page is for admins. Ask an admin if you need what it shows or does.")


def no_access() -> None:
    """Any page's address opened by a signed-in user without a role: the forbidden page."""
    st.switch_page("pages/forbidden.py")


def hidden(run: Callable[[], None], paths: Iterable[str]) -> list[StreamlitPage]:
    """Pages not in the menu, so that these addresses open `run` rather than "Page not found"."""
    return [st.Page(run, title=path, url_path=path, visibility="hidden") for path in paths]


with ui.friendly_errors():
    viewer = auth.sign_in()

# URL paths differ from the file names on purpose. Until st.navigation first runs in a
# process (and on every AppTest run), Streamlit treats a `pages/` folder as a legacy
# multipage app and would run a page whose URL matches a file name without this script,
# that is without the sign-in. Unmatched, it falls back to this script, which navigates.
if viewer is None:
    # Always navigate, even signed out, so that Streamlit never serves pages/ on its own.
    page = st.navigation(
        [
            st.Page(signed_out, title="Sign in", url_path="sign-in", default=True),
            *(st.Page(signed_out, title="Sign in", url_path=path) for path in PAGE_PATHS),
        ],
        position="hidden",
    )
elif viewer.can_read:
    pages = [
        st.Page(
            "pages/overview.py",
            title="Overview",
            icon=":material/dashboard:",
            url_path="home",
            default=True,
        ),
        st.Page(
            "pages/plans.py",
            title="Plans",
            icon=":material/bar_chart:",
            url_path="plan-distribution",
        ),
        st.Page(
            "pages/failed_payments.py",
            title="Payments",
            icon=":material/credit_card_off:",
            url_path="payments",
        ),
        st.Page(
            "pages/subscription_trends.py",
            title="Trends",
            icon=":material/trending_up:",
            url_path="trends",
        ),
        st.Page(
            "pages/webhooks.py",
            title="Webhooks",
            icon=":material/webhook:",
            url_path="webhook-health",
        ),
        st.Page(
            "pages/events.py", title="Events", icon=":material/list_alt:", url_path="event-log"
        ),
    ]
    if not viewer.is_admin:
        # Not listed for anyone else: their addresses say the page is for admins.
        pages += hidden(admins_only, ADMIN_PAGE_PATHS)
    else:
        pages += [
            st.Page(
                "pages/sync.py", title="Stripe sync", icon=":material/sync:", url_path="stripe-sync"
            ),
            st.Page(
                "pages/user_accounts.py", title="Users", icon=":material/group:", url_path="users"
            ),
            st.Page(
                "pages/tokens.py", title="API tokens", icon=":material/key:", url_path="api-tokens"
            ),
            st.Page(
                "pages/audit.py", title="Audit log", icon=":material/history:", url_path="audit-log"
            ),
            st.Page(
                "pages/alert_history.py",
                title="Alerts",
                icon=":material/notifications:",
                url_path="alerts",
            ),
        ]
    page = st.navigation(pages)
else:
    page = st.navigation(
        [
            st.Page("pages/forbidden.py", title="No access", url_path="no-access"),
            *hidden(no_access, PAGE_PATHS),
        ]
    )

with ui.friendly_errors():
    page.run()
