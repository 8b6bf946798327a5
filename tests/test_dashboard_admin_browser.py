"""End to end in headless Chromium: the admin pages, a token over the Finance API, lockouts,
and sessions that end (a copied cookie after logout, a password reset, a role change).

`streamlit run app.py` and Chromium as tests/test_dashboard_browser.py starts them, on a store
of this module's own; the Finance API is the listener app on the same store.
"""

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dashboard.auth import COOKIE_NAME, SESSION_ENDED
from finance_core.store import migrate
from finance_core.store.db import make_engine
from tests.conftest import make_settings
from tests.support import browser as browser_suite
from tests.support import stripe_factory as sf
from tests.support.accounts import add_users
from tests.support.api import SUMMARY, bearer
from tests.support.browser import (
    LOCKED,
    PASSWORD,
    TIMEOUT_MS,
    choose,
    feed,
    metric_values,
    new_page,
    open_page,
    pick,
    sign_in,
    wait_for_attempts,
    wait_until_idle,
)
from tests.support.servers import ThreadedServer
from tests.support.store_dump import store_text

pytestmark = pytest.mark.browser

CAROL_PASSWORD = "carol's first password"
CAROL_RESET = "carol's second password"

# The fixtures: one Chromium, and `streamlit run app.py` on this module's `store`.
browser = browser_suite.browser
dashboard_url = browser_suite.dashboard_url


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """Ada the admin, Fiona and Lee of finance, and a subscription for the API to count."""
    url = f"sqlite:///{tmp_path_factory.mktemp('admin-browser')}/finance.db"
    engine = make_engine(url)
    migrate.upgrade(engine)
    add_users(engine, [("ada", ["admin"]), ("fiona", ["finance"]), ("lee", ["finance"])], PASSWORD)
    feed(engine, "customer.subscription.created", sf.subscription("sub_1", "active", "prod_pro"))
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def finance_api(store) -> Iterator[str]:
    """The listener, serving the Finance API from the same store."""
    from webhook_listener.app import create_app

    engine = make_engine(store)
    server = ThreadedServer(create_app(make_settings(store), engine)).start()
    yield server.url
    server.stop()
    engine.dispose()


def login_cookie(page) -> list[dict]:
    """The login cookie, once the run after signing in has stored it."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while time.monotonic() < deadline:
        cookies = [c for c in page.context.cookies() if c["name"] == COOKIE_NAME]
        if cookies:
            return cookies
        page.wait_for_timeout(100)
    raise AssertionError("the login cookie was never set")


def form(page, submit: str):
    """The form whose button is `submit`."""
    return page.get_by_test_id("stForm").filter(has=page.get_by_role("button", name=submit))


def fill(page, submit: str, fields: dict[str, str]) -> None:
    """Fill a form's text fields by label and press its button."""
    wait_until_idle(page)
    box = form(page, submit)
    for label, value in fields.items():
        box.get_by_role("textbox", name=label, exact=True).fill(value)
    box.get_by_role("button", name=submit).click()


def add_role(page, submit: str, role: str) -> None:
    """Add a role in the multiselect of the form whose button is `submit`."""
    wait_until_idle(page)
    box = form(page, submit).get_by_test_id("stMultiSelect")
    pick(page, box, box.locator("input"), role)
    page.keyboard.press("Escape")


def signed_out_with(page, notice: str) -> None:
    page.get_by_text(notice).wait_for()
    page.get_by_role("textbox", name="Username").wait_for()
    assert page.get_by_test_id("stMetric").count() == 0


def next_run(page) -> None:
    """Anything that reruns the app: here, the Plans link in the sidebar."""
    wait_until_idle(page)
    page.get_by_test_id("stSidebarNav").get_by_text("Plans", exact=True).click()


def test_an_admin_adds_a_user_and_a_token_and_ends_the_users_sessions(
    browser, dashboard_url, finance_api, store
):
    admin = new_page(browser, dashboard_url)
    sign_in(admin, "ada")
    metric_values(admin)

    open_page(admin, "Users")
    fill(
        admin,
        "Add user",
        {
            "Username": "carol",
            "Name (optional)": "Carol",
            "Initial password": CAROL_PASSWORD,
            "Repeat the password": CAROL_PASSWORD + "!",
        },
    )
    admin.get_by_text("The two passwords differ; nothing was changed.").wait_for()
    typed = form(admin, "Add user")
    assert typed.get_by_role("textbox", name="Username", exact=True).input_value() == "carol"
    assert typed.get_by_role("textbox", name="Name (optional)", exact=True).input_value() == "Carol"
    fill(admin, "Add user", {"Repeat the password": CAROL_PASSWORD})  # only the mistake again
    admin.get_by_text("Added carol with the roles finance.").wait_for()

    open_page(admin, "API tokens")
    fill(admin, "Create token", {"Name": "reporting"})
    admin.get_by_text("Copy it now: it is shown only this once.").wait_for()
    token = admin.get_by_test_id("stCode").locator("code").inner_text().strip()
    assert token.startswith("pmf_")
    answer = httpx.get(finance_api + SUMMARY, headers=bearer(token), timeout=10)
    assert answer.status_code == 200 and answer.json()["data"]["active_subscriptions"] == 1
    open_page(admin, "Audit log")
    open_page(admin, "API tokens")  # back again: the token is not shown anywhere any more
    admin.get_by_role("button", name="Revoke").wait_for()
    assert admin.get_by_test_id("stCode").count() == 0 and token not in admin.content()
    admin.get_by_role("button", name="Revoke").click()
    admin.get_by_text("Revoked the token 'reporting'").wait_for()
    assert httpx.get(finance_api + SUMMARY, headers=bearer(token), timeout=10).status_code == 401

    carol = new_page(browser, dashboard_url)
    sign_in(carol, "carol", CAROL_PASSWORD)
    assert "Active subscriptions" in metric_values(carol)
    nav = carol.get_by_test_id("stSidebarNav")
    assert nav.get_by_text("Plans").count() == 1 and nav.get_by_text("Users").count() == 0
    login_cookie(carol)
    carol.goto(f"{dashboard_url}/users")  # an admin page's URL: said so, in words
    carol.get_by_text("This page is for admins.", exact=False).wait_for()
    wait_until_idle(carol)
    assert carol.get_by_text("Page not found").count() == 0
    assert carol.get_by_role("heading", name="Users").count() == 0
    assert carol.get_by_test_id("stDataFrame").count() == 0  # and no user listed

    # A new password ends her open session at its next run.
    open_page(admin, "Users")
    choose(admin, "User", "carol")
    admin.get_by_role("tab", name="Password").click()
    fill(
        admin,
        "Set password",
        {"New password": CAROL_RESET, "Repeat the new password": CAROL_RESET},
    )
    admin.get_by_text("Set a new password for carol; their sessions have ended.").wait_for()
    next_run(carol)
    signed_out_with(carol, SESSION_ENDED)
    sign_in(carol, "carol", CAROL_RESET)
    carol.get_by_role("heading", name="Plans").wait_for()  # back on the page she asked for

    # So do new roles; signed in again, she has the admin pages.
    wait_until_idle(admin)
    admin.get_by_role("tab", name="Roles").click()
    add_role(admin, "Save roles", "admin")
    form(admin, "Save roles").get_by_role("button", name="Save roles").click()
    admin.get_by_text("carol now has the roles admin, finance").wait_for()
    next_run(carol)
    signed_out_with(carol, SESSION_ENDED)
    sign_in(carol, "carol", CAROL_RESET)
    carol.get_by_role("heading", name="Plans").wait_for()  # back on the page she asked for
    open_page(carol, "Users")

    # The audit log has all of it, by ada; its CSV and the store hold no password or token.
    open_page(admin, "Audit log")
    with admin.expect_download() as download:
        admin.get_by_role("button", name="Download CSV").click()
    exported = Path(download.value.path()).read_text()
    rows = list(csv.DictReader(io.StringIO(exported)))
    by_ada = [(row["action"], row["target"]) for row in rows if row["actor"] == "ada"]
    assert by_ada == [
        ("user_roles_set", "carol"),
        ("user_password_set", "carol"),
        ("token_revoked", "reporting"),
        ("token_created", "reporting"),
        ("user_added", "carol"),
    ]
    dumped = store_text(make_engine(store))
    for secret in (PASSWORD, CAROL_PASSWORD, CAROL_RESET, token, token.split("_", 2)[2]):
        assert secret not in exported and secret not in dumped
    for page in (admin, carol):
        page.context.close()


def test_lockouts_say_the_same_for_any_username_and_a_copied_cookie_dies_at_logout(
    browser, dashboard_url, store
):
    page = new_page(browser, dashboard_url)
    said = {}
    for username in ("lee", "nobody-at-all"):  # a user, and a name no user has
        for n in range(5):
            sign_in(page, username, f"guess number {n}")
            wait_for_attempts(store, username, n + 1)
        wait_until_idle(page)
        errors = page.get_by_test_id("stAlertContentError")
        said[username] = errors.inner_text().strip()
        sign_in(page, username, PASSWORD)  # the right password, for lee
        wait_for_attempts(store, username, 6)
        wait_until_idle(page)
        assert errors.inner_text().strip() == said[username]
        assert page.get_by_test_id("stMetric").count() == 0
    assert said == {"lee": LOCKED, "nobody-at-all": LOCKED}

    signed_in = new_page(browser, dashboard_url)
    sign_in(signed_in, "fiona")
    metric_values(signed_in)
    copied = login_cookie(signed_in)
    elsewhere = new_page(browser, dashboard_url, cookies=copied)
    assert "Active subscriptions" in metric_values(elsewhere)  # the copy signs in, until...

    wait_until_idle(signed_in)
    signed_in.get_by_role("button", name="Log out").click()
    signed_in.get_by_text("You have logged out.").wait_for()
    again = new_page(browser, dashboard_url, cookies=copied)
    again.get_by_role("textbox", name="Username").wait_for()
    wait_until_idle(again)
    assert again.get_by_test_id("stMetric").count() == 0
    next_run(elsewhere)  # and the browser already signed in with it is signed out
    signed_out_with(elsewhere, SESSION_ENDED)
    for each in (page, signed_in, elsewhere, again):
        each.context.close()
