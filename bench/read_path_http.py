"""The Finance API over HTTP beside /healthz: the real listener process on a filled store.

Requests go one at a time over one keep-alive connection on loopback, the three paths
interleaved (the order rotates every round), so machine noise hits all three alike. Each
answer's own `Server-Timing: app;dur=<ms>` gives the server's time; the client's clock
around the request gives what a caller sees.
"""

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.read_path import percentiles
from finance_core.settings import Settings
from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parent.parent
PATHS = {
    "subscription-summary": "/api/v1/platform/finance/subscription-summary",
    "stripe-sync-status": "/api/v1/platform/finance/stripe-sync-status",
    "healthz": "/healthz",
}
# High enough that the bench never meets the per-token limit it is not measuring.
RATE_LIMIT = "1000000/minute"
SERVER_TIMING = re.compile(r"app;dur=([0-9.]+)")


def service_env(database_url: str, **settings: str) -> dict[str, str]:
    """This environment without any of our settings, then the store and the given settings."""
    ours = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in ours}
    env.update({name.upper(): value for name, value in settings.items()})
    env.update({"DATABASE_URL": database_url, "PYTHONUNBUFFERED": "1"})
    return env


def finance_cli(env: Mapping[str, str], *args: str, stdin: str | None = None) -> str:
    """Run `python -m finance_core ARGS` on the store of `env`; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "finance_core", *args],
        cwd=ROOT,
        env=dict(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"finance_core {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


@contextmanager
def running(
    command: list[str], env: Mapping[str, str], *, ready_url: str, ready_body: str | None, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server process, wait until `ready_url` answers 200, stop it on the way out."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=dict(env), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[2]} exited early:\n{log.read_text()}")
            try:
                answer = httpx.get(ready_url, timeout=2, trust_env=False)
                if answer.status_code == 200 and ready_body in (None, answer.text):
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[2]} did not start:\n{log.read_text()}")
            time.sleep(0.2)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(
    database_url: str, *, workdir: Path, requests: int = 400, warmup: int = 50
) -> dict[str, object]:
    """p50/p95 of each path, server side and client side, over `requests` calls of each."""
    env = service_env(
        database_url,
        stripe_webhook_secret=f"whsec_{secrets.token_hex(16)}",
        finance_api_rate_limit=RATE_LIMIT,
    )
    name = f"bench-{secrets.token_hex(4)}"
    token = finance_cli(env, "token", "create", name, "--role", "finance").splitlines()[-1]
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "webhook_listener", "--port", str(port)]
    log = workdir / "listener.log"
    server: dict[str, list[float]] = {path: [] for path in PATHS}
    client: dict[str, list[float]] = {path: [] for path in PATHS}
    with (
        running(command, env, ready_url=f"{base_url}/healthz", ready_body=None, log=log),
        httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},  # /healthz ignores it
            timeout=10,
            trust_env=False,
        ) as http,
    ):
        names = list(PATHS)
        for round_ in range(warmup + requests):
            shift = round_ % len(names)
            for path in names[shift:] + names[:shift]:
                started = time.perf_counter()
                response = http.get(PATHS[path])
                elapsed_ms = (time.perf_counter() - started) * 1000
                if response.status_code != 200:
                    raise RuntimeError(f"{PATHS[path]}: {response.status_code} {response.text}")
                if round_ < warmup:
                    continue
                match = SERVER_TIMING.fullmatch(response.headers.get("server-timing", ""))
                if match is None:
                    raise RuntimeError(f"{PATHS[path]} answered without Server-Timing")
                server[path].append(float(match[1]))
                client[path].append(elapsed_ms)
    figures = {
        side: {path: percentiles(samples[path]) for path in PATHS}
        for side, samples in (("server", server), ("client", client))
    }
    for by_path in figures.values():
        healthz_p95 = max(by_path["healthz"]["p95_ms"], 0.001)
        for timing in by_path.values():
            timing["x_healthz_p95"] = timing["p95_ms"] / healthz_p95
    return {
        "requests_per_path": requests,
        "warmup_per_path": warmup,
        **figures,
        "samples_ms": {
            path: {
                "server": [round(value, 3) for value in server[path]],
                "client": [round(value, 3) for value in client[path]],
            }
            for path in PATHS
        },
    }
