"""End to end in headless Chromium: the admins' Alerts page with its channels masked, and
Send test alert reaching a real HTTP receiver and SMTP server; a finance user has no such page."""

import pytest

from tests.support import browser as e2e
from tests.support.browser import metric_values, open_page, screenshot, sign_in
from tests.support.receivers import SMTP_PASSWORD, json_receiver, smtp_receiver

pytestmark = pytest.mark.browser
HOOK_PASSWORD = "browser-hook-pass-93ac"

browser, page = e2e.browser, e2e.page  # the fixtures: Chromium, and a fresh context on the app


@pytest.fixture(scope="module")
def channels():
    with json_receiver() as hook, smtp_receiver() as mail:
        yield hook, mail


@pytest.fixture(scope="module")
def dashboard_url(channels, tmp_path_factory):
    """The dashboard with ALERT_URLS naming the receivers, on a store with its users."""
    hook, mail = channels
    store = f"sqlite:///{tmp_path_factory.mktemp('alerts-browser')}/finance.db"
    e2e.prepare_store(store)
    urls = f"{hook.url(credentials=f'finance:{HOOK_PASSWORD}')},{mail.url()}"
    log = tmp_path_factory.mktemp("streamlit") / "streamlit.log"
    with e2e.running_dashboard(store, log, ALERT_URLS=urls) as url:
        yield url


def test_admin_sends_a_test_alert_to_the_masked_channels(page, channels):
    hook, mail = channels
    sign_in(page, "ada")
    metric_values(page)
    open_page(page, "Alerts")
    page.get_by_text(f"json://127.0.0.1:{hook.port}", exact=True).wait_for()
    page.get_by_text(f"mailto://127.0.0.1:{mail.port}", exact=True).wait_for()
    assert HOOK_PASSWORD not in page.content() and SMTP_PASSWORD not in page.content()
    page.get_by_role("button", name="Send test alert").click()
    page.get_by_text("Test alert sent to every channel").wait_for()
    assert len(hook.wait_for(1)) == 1
    assert hook.messages()[0].startswith("PenguinMails Finance: test alert")
    assert len(mail.wait_for(1)) == 1
    screenshot(page, "alerts")


def test_a_finance_user_has_no_alerts_page(page, dashboard_url):
    sign_in(page, "fiona")
    metric_values(page)
    assert page.get_by_test_id("stSidebarNav").get_by_text("Alerts", exact=True).count() == 0
    page.goto(f"{dashboard_url}/alerts")
    # Signed in from the cookie, and told the page is for admins; nothing of it shown.
    page.get_by_text("This page is for admins.", exact=False).wait_for()
    assert page.get_by_role("button", name="Send test alert").count() == 0
