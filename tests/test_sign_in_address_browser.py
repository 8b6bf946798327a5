"""The sign-in address limit in Chromium, behind a real HAProxy and without one (SPEC 13, 19).

Each failed attempt comes with a different forged X-Forwarded-For. Behind HAProxy, which
connects to the dashboard from 127.0.0.2 (DASHBOARD_TRUSTED_PROXIES), the address counted is
the one HAProxy appends (the browser's, 127.0.0.1); without a proxy, the peer's (loopback).
Either way the forged addresses neither spread the failures nor dodge the lock: the 20th
failure locks the browser's address, and the right password under yet another forged address
is refused. The dashboards run without FORWARDED_ALLOW_IPS, as a bare `streamlit run` does, so
uvicorn believes loopback peers' headers: the dashboard must see through that too.
"""

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from finance_core.access.audit import AuditFilter, entries
from finance_core.store.db import make_engine
from tests.conftest import skip_or_fail
from tests.support import browser as browser_fixtures
from tests.support.browser import (
    PASSWORD,
    prepare_store,
    running_dashboard,
    wait_until_idle,
)
from tests.support.postgres import free_port

browser = browser_fixtures.browser  # the fixture: one Chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOCKED = "Sign-in is locked after too many failed attempts"
ADDRESS_FAILURES = 20  # finance_core.access.sign_in.ADDRESS_FAILURES


@contextmanager
def haproxy_in_front(dashboard: str, workdir: Path) -> Iterator[str]:
    """HAProxy with `option forwardfor`, reaching the dashboard from 127.0.0.2; its URL."""
    binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(binary).exists():
        skip_or_fail("haproxy is not installed", package="haproxy")
    port = free_port()
    config = workdir / "haproxy.cfg"
    config.write_text(
        "\n".join(
            [
                "defaults",
                "    mode http",
                "    timeout connect 2s",
                "    timeout client 60s",
                "    timeout server 60s",
                "    timeout tunnel 1h",
                "frontend dashboard",
                f"    bind 127.0.0.1:{port}",
                "    option forwardfor",
                "    default_backend dashboard",
                "backend dashboard",
                f"    server dashboard {urlsplit(dashboard).netloc} source 127.0.0.2",
                "",
            ]
        )
    )
    log = workdir / "haproxy.log"
    with log.open("wb") as out:
        process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                raise AssertionError(f"haproxy exited: {log.read_text()}")
            try:
                if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"haproxy did not start: {log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(params=["behind-haproxy", "direct"])
def setup(request, tmp_path) -> Iterator[tuple[str, str]]:
    """The URL the browser opens, and the store."""
    store = f"sqlite:///{tmp_path}/finance.db"
    prepare_store(store)
    settings = {}
    if request.param == "behind-haproxy":
        settings["DASHBOARD_TRUSTED_PROXIES"] = "127.0.0.2"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("FORWARDED_ALLOW_IPS", raising=False)
        patch.delenv("DASHBOARD_TRUSTED_PROXIES", raising=False)
        with running_dashboard(store, tmp_path / "streamlit.log", **settings) as dashboard:
            if request.param == "direct":
                yield dashboard, store
            else:
                with haproxy_in_front(dashboard, tmp_path) as url:
                    yield url, store


@contextmanager
def browser_claiming(browser, url: str, forged: str) -> Iterator[object]:
    """A fresh browser whose every request says X-Forwarded-For: `forged`, on the sign-in page."""
    context = browser.new_context(extra_http_headers={"X-Forwarded-For": forged})
    context.set_default_timeout(30_000)
    try:
        page = context.new_page()
        page.goto(url)
        page.get_by_role("textbox", name="Username").wait_for()
        wait_until_idle(page, quiet_ms=2000)  # the cookie component's rerun, as sign_in waits
        yield page
    finally:
        context.close()


def submit(page, username: str, password: str) -> str:
    """Press Login on the open form, as typed; the error it shows."""
    typed = {"Username": username, "Password": password}
    for name, value in typed.items():
        page.get_by_role("textbox", name=name).fill(value)
    wait_until_idle(page, quiet_ms=300)
    # A rerun on a loaded machine can draw the form again between typing and Login (CI once
    # waited 30 s for an error that never came): press Login only on what was typed.
    for name, value in typed.items():
        box = page.get_by_role("textbox", name=name)
        if box.input_value() != value:
            box.fill(value)
    page.get_by_role("button", name="Login").click()
    wait_until_idle(page, quiet_ms=300)
    alert = page.get_by_test_id("stAlertContentError")
    alert.first.wait_for(timeout=60_000)
    return alert.first.inner_text()


def test_forged_forwarded_addresses_neither_spread_failures_nor_dodge_the_lock(browser, setup):
    url, store = setup
    refused = "Wrong username or password."
    # Three browsers, each claiming another address (one Streamlit session each).
    for n in range(1, 4):
        with browser_claiming(browser, url, f"203.0.113.{n}") as page:
            assert refused in submit(page, f"made-up-{n}", "wrong password")
    # The rest of the 20 from a fourth (a new username each time: no username lock).
    with browser_claiming(browser, url, "203.0.113.4") as page:
        for n in range(4, ADDRESS_FAILURES + 1):
            expected = LOCKED if n == ADDRESS_FAILURES else refused
            assert expected in submit(page, f"made-up-{n}", "wrong password"), n
    # The right password, from a new browser claiming a new address: still locked.
    with browser_claiming(browser, url, "198.51.100.99") as page:
        assert LOCKED in submit(page, "fiona", PASSWORD)

    engine = make_engine(store)
    try:
        actors = {
            entry.actor
            for entry in entries(engine=engine, filters=AuditFilter())
            if entry.action.startswith("sign_in")
        }
    finally:
        engine.dispose()
    # Behind HAProxy, what HAProxy saw; directly, the loopback peer: never a forged address.
    assert actors == {"sign-in:127.0.0.1"}
