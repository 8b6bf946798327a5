"""`make run`: listener and dashboard side by side; demo mode when Stripe is not configured.

Without STRIPE_WEBHOOK_SECRET it runs on its own store, data/demo.db, with a generated signing
secret, cookie key and demo login (kept in data/demo.env, mode 0600), and a sender that posts
signed demo events to the listener over HTTP (a year of customers: sign-ups, churn, failed,
recovered and voided payments), then dates the store's history by those events and sends a
trickle at the same rates so that health stays live. It opens healthy: an admin can send a
malformed event from the Webhooks page to see a failure, its alert, replay and dismissal.
Both listen on 127.0.0.1 only unless LISTENER_HOST or DASHBOARD_ADDRESS say otherwise: the
demo login is printed on the terminal, and Streamlit would otherwise serve every interface.
One Ctrl-C (or SIGTERM) stops everything.
"""

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from finance_core import demo
from finance_core.access import audit
from finance_core.access.users import add_user, list_users
from finance_core.settings import SettingsError, load_settings
from finance_core.store import files, migrate
from finance_core.store.db import make_engine, read_transaction

DEMO_USER = "demo"
TRICKLE_SECONDS = 5


def _demo_environment(data_dir: Path) -> dict[str, str]:
    """Generated once, then reused so that restarts keep the same login and cookie."""
    path = data_dir / "demo.env"
    files.private_directory(data_dir)
    if not path.exists():
        values = {
            "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(24),
            "DASHBOARD_COOKIE_KEY": secrets.token_urlsafe(48),
            "DEMO_PASSWORD": secrets.token_urlsafe(12),
        }
        # Created 0600 (the umask), not chmod-ed after others could open it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, files.FILE_MODE)
        with os.fdopen(fd, "w") as out:
            out.write("".join(f"{k}={v}\n" for k, v in values.items()))
    files.private_file(path)
    values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    values["DATABASE_URL"] = f"sqlite:///{data_dir}/demo.db"
    return values


def _ensure_demo_user(database_url: str, password: str) -> None:
    engine = make_engine(database_url)
    migrate.upgrade(engine)
    with read_transaction(engine) as conn:
        exists = any(user.username == DEMO_USER for user in list_users(conn=conn))
    if not exists:
        add_user(
            engine=engine,
            username=DEMO_USER,
            password=password,
            roles=["finance", "admin"],
            name="Demo Finance",
            actor=audit.cli_actor(),
            now=datetime.now(UTC),
        )
    engine.dispose()


def _send_demo(url: str, secret: str, database_url: str, stop: threading.Event) -> None:
    year = demo.world()
    events = demo.backfill(year)
    with httpx.Client(timeout=10) as client:
        for event in events:
            if stop.is_set():
                return
            demo.post(client, url, event, secret)
        engine = make_engine(database_url)
        try:
            demo.seed_failed_payment_days(engine=engine, now=datetime.now(UTC))
        finally:
            engine.dispose()
        for happened in demo.trickle(year, TRICKLE_SECONDS):
            if stop.wait(TRICKLE_SECONDS):
                return
            for event in happened:
                try:
                    demo.post(client, url, event, secret)
                except httpx.TransportError:
                    continue


def _wait_for(url: str, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.TransportError:
            time.sleep(0.2)
    return False


def _reachable(host: str) -> str:
    """An address to reach a server bound to `host` from this machine."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def main() -> int:
    files.restrict_umask()  # for the listener and the dashboard too: they inherit it
    listener_port = int(os.environ.get("LISTENER_PORT", "8000"))
    dashboard_port = int(os.environ.get("DASHBOARD_PORT", "8501"))
    listener_host = os.environ.get("LISTENER_HOST") or "127.0.0.1"
    dashboard_address = os.environ.get("DASHBOARD_ADDRESS") or "127.0.0.1"
    data_dir = Path(os.environ.get("FINANCE_DATA_DIR", "data")).resolve()
    files.private_directory(data_dir)
    env = dict(os.environ)
    demo_mode = not env.get("STRIPE_WEBHOOK_SECRET")
    if demo_mode:
        env.update(_demo_environment(data_dir))
    try:
        settings = load_settings(
            **{"database_url": env.get("DATABASE_URL", "sqlite:///data/finance.db")}
        )
        if not demo_mode:
            load_settings().cookie_key()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if demo_mode:
        _ensure_demo_user(settings.database_url, env["DEMO_PASSWORD"])
    else:
        migrate.upgrade(make_engine(settings.database_url))

    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "webhook_listener",
                "--host",
                listener_host,
                "--port",
                str(listener_port),
            ],
            env=env,
        ),
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                "app.py",
                "--server.address",
                dashboard_address,
                "--server.port",
                str(dashboard_port),
                "--server.headless",
                "true",
            ],
            # uvicorn believes no X-Forwarded-For: the sign-in limit counts the peer, or
            # what DASHBOARD_TRUSTED_PROXIES report (finance_core.access.client_address).
            env={**env, "FORWARDED_ALLOW_IPS": ""},
        ),
    ]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    listener_url = f"http://{_reachable(listener_host)}:{listener_port}"
    try:
        if _wait_for(f"{listener_url}/healthz") and demo_mode:
            threading.Thread(
                target=_send_demo,
                args=(listener_url, env["STRIPE_WEBHOOK_SECRET"], settings.database_url, stop),
                daemon=True,
            ).start()
        print(f"\n  Dashboard: http://{_reachable(dashboard_address)}:{dashboard_port}")
        print(f"  Listener:  {listener_url}/webhooks/stripe")
        if demo_mode:
            print(
                f"  Demo mode (data in {data_dir}/demo.db). Log in as "
                f"{DEMO_USER} / {env['DEMO_PASSWORD']}"
            )
        print("  Ctrl-C stops everything.\n", flush=True)
        while not stop.is_set() and all(child.poll() is None for child in children):
            stop.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
