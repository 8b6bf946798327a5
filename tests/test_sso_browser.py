"""Single sign-on end to end: Chromium, `streamlit run app.py` with `[auth]`, a real provider.

The provider is npm's `oidc-provider` (pinned in tests/support/oidc_provider/package.json),
installed there by the first run (`npm ci`, node_modules is gitignored) and started on loopback
with its own development sign-in form. The dashboard reads `[auth]` and the role maps from a
secrets file of the test's own (STREAMLIT_SECRETS_FILES), which the removal test rewrites.
"""

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import skip_or_fail
from tests.support.browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    metric_values,
    prepare_store,
    running_dashboard,
    wait_until_idle,
)
from tests.support.postgres import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PROVIDER_DIR = Path(__file__).resolve().parent / "support" / "oidc_provider"
CLIENT_ID = "penguinmails-finance"
CLIENT_SECRET = "sso-test-client-secret-0123456789"
ACCOUNTS = {
    "ana": {"email": "Ana@Example.com", "name": "Ana Admin", "groups": []},
    "finn": {"email": "finn@example.com", "name": "Finn Groups", "groups": ["finance-team"]},
    "bob": {"email": "bob@example.com", "name": "Bob Mapped", "groups": []},
    "mallory": {"email": "mallory@example.com", "name": "Mallory", "groups": ["marketing"]},
}
EMAIL_ROLES = {"ana@example.com": ["admin"], "bob@example.com": "finance"}
SIGN_IN = "Sign in with your company account"


def secrets_toml(*, provider_port: int, email_roles: dict[str, object]) -> str:
    lines = [
        "[auth]",
        'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"',
        'cookie_secret = "sso-test-cookie-secret-0123456789abcdef"',
        f'client_id = "{CLIENT_ID}"',
        f'client_secret = "{CLIENT_SECRET}"',
        "server_metadata_url = "
        f'"http://127.0.0.1:{provider_port}/.well-known/openid-configuration"',
        # oidc-provider knows no prompt=select_account, Streamlit's default.
        'client_kwargs = { prompt = "login" }',
        "",
        "[dashboard_roles]",
        *(f"{json.dumps(email)} = {json.dumps(roles)}" for email, roles in email_roles.items()),
        "",
        "[dashboard_groups]",
        'claim = "groups"',
        "[dashboard_groups.roles]",
        '"finance-team" = ["finance"]',
        "",
    ]
    return "\n".join(lines)


def install_provider() -> None:
    if (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        skip_or_fail("npm is needed to install oidc-provider", package="npm")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=PROVIDER_DIR,
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def sso(tmp_path_factory) -> Iterator[dict[str, object]]:
    """The provider and a dashboard signing in through it; their URLs and the secrets file."""
    if shutil.which("node") is None:
        skip_or_fail("node is needed to run oidc-provider", package="nodejs")
    install_provider()
    tmp = tmp_path_factory.mktemp("sso")
    store = f"sqlite:///{tmp}/finance.db"
    prepare_store(store)
    provider_port = free_port()
    secrets = tmp / "secrets.toml"
    secrets.write_text(secrets_toml(provider_port=provider_port, email_roles=EMAIL_ROLES))
    with running_dashboard(
        store, tmp / "streamlit.log", STREAMLIT_SECRETS_FILES=str(secrets)
    ) as dashboard:
        issuer = f"http://127.0.0.1:{provider_port}"
        config = tmp / "provider.json"
        config.write_text(
            json.dumps(
                {
                    "issuer": issuer,
                    "port": provider_port,
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "redirect_uri": f"{dashboard}/oauth2callback",
                    "post_logout_redirect_uri": f"{dashboard}/oauth2callback",
                    "accounts": ACCOUNTS,
                }
            )
        )
        with (tmp / "provider.log").open("wb") as log:
            provider = subprocess.Popen(
                ["node", "provider.mjs", str(config)],
                cwd=PROVIDER_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                if provider.poll() is not None:
                    pytest.fail(f"oidc-provider exited:\n{(tmp / 'provider.log').read_text()}")
                try:
                    httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=2)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        pytest.fail("oidc-provider did not start")
                    time.sleep(0.2)
            yield {
                "dashboard": dashboard,
                "issuer": issuer,
                "secrets": secrets,
                "port": provider_port,
            }
        finally:
            provider.terminate()
            provider.wait(timeout=15)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        skip_or_fail(f"no Chromium at {CHROMIUM}", package="chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser):
    """A fresh browser (no cookies) that reaches nothing but loopback."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    # The provider's development form imports a web font; nothing here may leave the host.
    context.route(
        "**/*",
        lambda route: (
            route.continue_()
            if urlsplit(route.request.url).hostname == "127.0.0.1"
            else route.abort()
        ),
    )
    yield context
    context.close()


def sign_in(context, sso, login: str):
    """Through the provider's own form, back to the dashboard; the page."""
    page = context.new_page()
    page.goto(str(sso["dashboard"]))
    button = page.get_by_role("button", name=SIGN_IN)
    button.wait_for()
    wait_until_idle(page)
    button.click()
    page.locator('input[name="login"]').fill(login)
    page.locator('input[name="password"]').fill("any password: the test provider checks none")
    page.get_by_role("button", name="Sign-in").click()
    page.wait_for_url(lambda url: url.startswith(f"{sso['issuer']}/") or "127.0.0.1" in url)
    consent = page.get_by_role("button", name="Continue")
    dashboard_prefix = str(sso["dashboard"])
    # The first sign-in of an account asks for consent to share its claims.
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while not page.url.startswith(dashboard_prefix):
        if consent.count():
            consent.click()
        if time.monotonic() > deadline:
            raise AssertionError(f"never came back to the dashboard: {page.url}")
        page.wait_for_timeout(100)
    page.get_by_test_id("stSidebar").wait_for()
    wait_until_idle(page)
    return page


def nav_titles(page) -> list[str]:
    nav = page.get_by_test_id("stSidebarNav")
    if not nav.count():
        return []
    # Each link reads "<icon name>\n\n<title>": the title is its last line.
    return [
        text.strip().splitlines()[-1]
        for text in nav.get_by_test_id("stSidebarNavLink").all_inner_texts()
        if text.strip()
    ]


def identity_cookies(context) -> list[dict]:
    return [c for c in context.cookies() if c["name"].startswith("_streamlit_user")]


def test_roles_from_the_email_map_and_the_groups_claim(context, sso):
    admin = sign_in(context, sso, "ana")  # in the email map, as Ana@Example.com
    assert set(metric_values(admin)) >= {"Active subscriptions", "Failed payments"}
    assert "Users" in nav_titles(admin) and "Audit log" in nav_titles(admin)
    admin.close()
    context.clear_cookies()

    member = sign_in(context, sso, "finn")  # in no email map; the group finance-team
    assert set(metric_values(member)) >= {"Active subscriptions", "Failed payments"}
    titles = nav_titles(member)
    assert "Overview" in titles and "Users" not in titles


def test_an_identity_neither_map_knows_sees_no_access_and_no_data(context, sso):
    page = sign_in(context, sso, "mallory")
    no_access = page.get_by_role("heading", name="No access")
    # While a rerun draws the page again, the last run's heading can still be there beside it.
    no_access.first.wait_for()
    assert page.get_by_test_id("stMetric").count() == 0
    page.goto(f"{sso['dashboard']}/payments")
    no_access.first.wait_for()
    wait_until_idle(page)
    assert no_access.count() == 1
    assert page.get_by_test_id("stMetric").count() == 0
    assert page.get_by_test_id("stDataFrame").count() == 0


def test_logout_ends_the_session_and_the_cookie_was_httponly(context, sso):
    page = sign_in(context, sso, "ana")
    cookies = identity_cookies(context)
    assert cookies and all(c["httpOnly"] for c in cookies)
    assert page.evaluate("document.cookie").find("_streamlit_user") == -1
    page.get_by_test_id("stSidebar").get_by_role("button", name="Log out").click()
    # The provider asks to confirm ending its own session, then sends the browser back. The
    # page may show the sign-in button before the browser has been to /auth/logout (which
    # clears the cookies): signed out is both, the button and no identity cookie left.
    confirm = page.get_by_role("button", name="Yes, sign me out")
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while identity_cookies(context) or not page.get_by_role("button", name=SIGN_IN).count():
        if confirm.count():
            confirm.click()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not signed out: {page.url}, {len(identity_cookies(context))} cookies"
            )
        page.wait_for_timeout(100)
    page.goto(str(sso["dashboard"]))
    page.get_by_role("button", name=SIGN_IN).wait_for()
    wait_until_idle(page)
    assert page.get_by_test_id("stMetric").count() == 0


def test_a_user_removed_from_the_map_loses_access_at_the_next_run(context, sso):
    page = sign_in(context, sso, "bob")
    metric_values(page)
    secrets: Path = sso["secrets"]  # type: ignore[assignment]
    original = secrets.read_text()
    without_bob = {k: v for k, v in EMAIL_ROLES.items() if k != "bob@example.com"}
    try:
        secrets.write_text(secrets_toml(provider_port=sso["port"], email_roles=without_bob))
        # Clicking through the open session: no new sign-in, no reload.
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not page.get_by_role("heading", name="No access").count():
            if time.monotonic() > deadline:
                raise AssertionError("bob kept access after leaving the map")
            nav = page.get_by_test_id("stSidebarNav")
            if nav.count():
                nav.get_by_text("Plans", exact=True).click()
                wait_until_idle(page)
                nav = page.get_by_test_id("stSidebarNav")
                if nav.count():
                    nav.get_by_text("Overview", exact=True).click()
            wait_until_idle(page)
        assert page.get_by_test_id("stMetric").count() == 0
    finally:
        secrets.write_text(original)
