"""The dashboard at scale: sign-in to the Overview's chart in headless Chromium, and its memory.

`streamlit run app.py` starts once on an empty store and once on the filled one. Each run
signs in from a fresh browser context (a first visit: nothing cached) and times:

- load: from navigating to the URL until the sign-in page is ready: the app's first runs
  (including the one the login cookie's component triggers) have finished and the page's
  off-screen warm-up chart is drawn, that is plotly has loaded;
- sign-in ("login to chart", the target): from pressing Login until the plan distribution
  chart is drawn (on the empty store, until its "No active subscriptions yet." message shows);
- delivered: from pressing Login until the websocket message carrying the plans (the chart's
  spec, or the empty-store message) reached the browser: the server's share of sign-in;
- settled: from pressing Login until the app's last script run of the sign-in ended.

Load plus sign-in is "navigate to chart". It leaves out only the bench's own wait for the app
to stay idle before filling the form (a form submitted mid-rerun is lost, as it would be for a
very fast human). The first run of each process is cold; with a pause between runs longer
than the dashboard's 30 s summary cache, every later run reads the store again. Then the same
context signs in once more without its cookies: a returning visitor whose browser has the
scripts cached (and whose reads come from the dashboard's cache), which tells the browser's
share from the server's.

Memory is the resident set of the streamlit process (and any children), read from /proc
after each first-visit run while its page is still open.
"""

import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, sync_playwright

from bench.read_path_http import finance_cli, running, service_env
from dashboard import PLOTLY_WARM_UP_KEY
from tests.support.postgres import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 60_000
IDLE_MS = 600
NO_PLANS = "No active subscriptions yet."
# In the websocket message that carries the Overview's plans: the chart's spec or the message.
OVERVIEW_MARKERS = (b'"type": "bar"', b'"type":"bar"', NO_PLANS.encode())


def _status_kib(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # the process ended while we looked
            continue
        # The command name may hold spaces and parentheses: the ppid follows the last ")".
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def memory_mb(pid: int) -> dict[str, float]:
    """Resident and peak resident memory of a process and its descendants, in MB."""
    pids = [pid, *_descendants(pid)]
    totals = {"VmRSS": 0, "VmHWM": 0}
    for each in pids:
        for name, kib in _status_kib(each).items():
            totals[name] += kib
    return {
        "rss_mb": totals["VmRSS"] / 1024,
        "peak_rss_mb": totals["VmHWM"] / 1024,
        "processes": len(pids),
    }


def _idle_since(page: Page) -> float:
    """When the app's last script run ended, once it has stayed idle for IDLE_MS."""
    running_app = page.locator('[data-testid="stApp"][data-test-script-state="running"]')
    deadline = time.perf_counter() + TIMEOUT_MS / 1000
    quiet_since = time.perf_counter()
    while time.perf_counter() < deadline:
        if running_app.count():
            quiet_since = time.perf_counter()
        elif (time.perf_counter() - quiet_since) * 1000 >= IDLE_MS:
            return quiet_since
        page.wait_for_timeout(20)
    raise RuntimeError("the dashboard kept running")


def sign_in_to_overview(page: Page, url: str, username: str, password: str) -> dict[str, Any]:
    """One timed sign-in, ending when the Overview's plans are drawn."""
    moments: dict[str, float] = {}

    def frame_received(payload: str | bytes) -> None:
        if "submitted" not in moments or "delivered" in moments:
            return
        data = payload.encode() if isinstance(payload, str) else payload
        if any(marker in data for marker in OVERVIEW_MARKERS):
            moments["delivered"] = time.perf_counter()

    page.on("websocket", lambda socket: socket.on("framereceived", frame_received))
    started = time.perf_counter()
    page.goto(url)
    page.get_by_role("textbox", name="Username").wait_for()
    form_ready = _idle_since(page)
    # The sign-in page draws an empty chart off-screen so that plotly loads while the viewer
    # types (dashboard.charts.load_plotly_early): the page has loaded once it is drawn.
    if page.locator(f".st-key-{PLOTLY_WARM_UP_KEY}").count():
        page.locator(f".st-key-{PLOTLY_WARM_UP_KEY} .js-plotly-plot").wait_for(state="attached")
    form_ready = max(form_ready, time.perf_counter())
    page.get_by_role("textbox", name="Username").fill(username)
    page.get_by_role("textbox", name="Password").fill(password)
    submitted = moments["submitted"] = time.perf_counter()
    page.get_by_role("button", name="Login").click()
    chart = page.locator(".js-plotly-plot").filter(has=page.locator("g.point"))
    page.get_by_text(NO_PLANS).or_(chart).first.wait_for()
    drawn = time.perf_counter()
    settled = _idle_since(page)
    bars = chart.locator("g.point").count()
    if not bars and not page.get_by_text(NO_PLANS).count():
        raise RuntimeError("the Overview showed neither a chart nor its empty-store message")
    return {
        "load_ms": (form_ready - started) * 1000,
        "sign_in_to_chart_ms": (drawn - submitted) * 1000,
        "navigate_to_chart_ms": (form_ready - started + drawn - submitted) * 1000,
        "sign_in_settled_ms": (settled - submitted) * 1000,
        # The server's share of sign-in to chart: until the plans' message reached the browser.
        "sign_in_to_delivered_ms": (moments.get("delivered", float("nan")) - submitted) * 1000,
        "bars": bars,
    }


def _measure_store(
    browser: Browser,
    database_url: str,
    *,
    workdir: Path,
    label: str,
    runs: int,
    pause: float,
    options: list[str],
) -> dict[str, Any]:
    username, password = f"bench-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    env = service_env(database_url, dashboard_cookie_key=secrets.token_urlsafe(32))
    finance_cli(env, "user", "add", username, "--role", "finance", stdin=password + "\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "streamlit", "run", "app.py"]
    command += ["--server.headless", "true", "--server.port", str(port)]
    command += ["--server.address", "127.0.0.1"]
    command += [f"--{option}" for option in options]
    log = workdir / f"streamlit-{label}.log"
    first_visits: list[dict[str, Any]] = []
    returning: list[dict[str, Any]] = []
    with running(command, env, ready_url=f"{url}/_stcore/health", ready_body="ok", log=log) as app:
        memory = [memory_mb(app.pid)]  # started, before any page
        for run in range(runs):
            if run:
                time.sleep(pause)
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(TIMEOUT_MS)
            try:
                page = context.new_page()
                first_visits.append(sign_in_to_overview(page, url, username, password))
                page.wait_for_timeout(500)  # plotly finishes drawing after the run ends
                memory.append(memory_mb(app.pid))
                page.close()
                context.clear_cookies()
                returning.append(sign_in_to_overview(context.new_page(), url, username, password))
            finally:
                context.close()
    if "Traceback" in log.read_text():
        raise RuntimeError(f"the dashboard logged a traceback:\n{log.read_text()}")
    return {
        "first_visit": _summary(first_visits),
        "returning_visitor": _summary(returning),
        "memory_after_start": memory[0],
        "memory_after_runs": memory[1:],
        "rss_mb": memory[-1]["rss_mb"],
        "peak_rss_mb": memory[-1]["peak_rss_mb"],
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    figures: dict[str, Any] = {"runs": runs}
    for name in (
        "navigate_to_chart_ms",
        "load_ms",
        "sign_in_to_chart_ms",
        "sign_in_to_delivered_ms",
        "sign_in_settled_ms",
    ):
        values = [run[name] for run in runs]
        figures[name.replace("_ms", "_median_ms")] = statistics.median(values)
        figures[name.replace("_ms", "_max_ms")] = max(values)
    return figures


def measure(
    *,
    empty_url: str,
    filled_url: str,
    workdir: Path,
    runs: int = 5,
    pause: float = 31,
    options: list[str] | None = None,
) -> dict[str, Any]:
    """Sign-in to chart and memory on an empty and on the filled store.

    `options` are extra `streamlit run` settings, as `section.name=value`, for experiments.
    """
    options = options or []
    if not CHROMIUM.exists():
        raise RuntimeError(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            stores = {
                label: _measure_store(
                    browser,
                    url,
                    workdir=workdir,
                    label=label,
                    runs=runs,
                    pause=pause,
                    options=options,
                )
                for label, url in (("empty", empty_url), ("filled", filled_url))
            }
        finally:
            browser.close()
    return {
        "runs": runs,
        "pause_s": pause,
        "streamlit_options": options,
        **stores,
        "rss_difference_mb": stores["filled"]["rss_mb"] - stores["empty"]["rss_mb"],
        "peak_rss_difference_mb": stores["filled"]["peak_rss_mb"] - stores["empty"]["peak_rss_mb"],
    }
