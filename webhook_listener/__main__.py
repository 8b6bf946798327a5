"""`python -m webhook_listener [--host H] [--port P] [--forwarded-allow-ips IPS] [--jobs J]`.

Behind a reverse proxy, `--forwarded-allow-ips` names the proxies (comma-separated addresses or
networks, as uvicorn takes them) whose X-Forwarded-For is trusted, so that the failed-login limit
and the rejection log see the client's address rather than the proxy's. Without it the header is
ignored, since any client could set it. `--jobs` picks the background jobs this listener's worker
process runs (all by default; `none` for a listener that only answers).

Exit status 2: a setting is wrong (a missing secret, a URL SQLAlchemy cannot use, a database
that refuses the credentials), said in one line; restarting will not help.
Exit status 1: the writer or the background worker failed to start five times in a row (a
missing dependency, a broken installation), said in one line.
"""

import argparse
import contextlib
import logging
import sys

import uvicorn

from finance_core.settings import SettingsError, get_settings
from finance_core.store.db import make_engine
from finance_core.store.files import restrict_umask
from webhook_listener.app import create_app
from webhook_listener.background_process import JOBS
from webhook_listener.http_limits import (
    BODY_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    MAX_CONNECTIONS,
    bounded_protocol,
)
from webhook_listener.supervisor import GaveUp

log = logging.getLogger("webhook_listener")
SETTINGS_ERROR = 2
CHILD_FAILED = 1  # the writer or the background worker could not be started


def main() -> int:
    restrict_umask()  # the SQLite store and its WAL files: the owner's alone
    parser = argparse.ArgumentParser(prog="python -m webhook_listener", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--forwarded-allow-ips",
        metavar="IPS",
        help="trust X-Forwarded-For from these proxies (e.g. 10.0.0.5 or 10.0.0.0/8)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=HEADER_TIMEOUT_S,
        metavar="SECONDS",
        help=f"a request's headers must arrive within this (default {HEADER_TIMEOUT_S:.0f})",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=BODY_TIMEOUT_S,
        metavar="SECONDS",
        help=f"and its body within this after them (default {BODY_TIMEOUT_S:.0f})",
    )
    parser.add_argument(
        "--jobs",
        metavar="JOBS",
        help="background jobs to run, comma-separated, or 'none' "
        f"(default: all of {', '.join(JOBS) or 'none'})",
    )
    args = parser.parse_args()
    level = args.log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        # Its start and stop lines ("Waiting for application startup." ...) say less than ours;
        # its warnings and errors (a port in use) still show.
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    try:
        settings = get_settings()
        secrets = settings.webhook_secrets()  # clear errors before uvicorn starts
        engine = make_engine(settings.database_url)  # connects nothing yet
        store = engine.url.render_as_string(hide_password=True)
        engine.dispose()
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return SETTINGS_ERROR

    try:
        jobs = _jobs(args.jobs)
    except ValueError as exc:
        parser.error(str(exc))

    refusals: list[SettingsError] = []
    failures: list[GaveUp] = []

    def stop_on_refusal(refusal: SettingsError) -> None:
        refusals.append(refusal)
        server.should_exit = True

    def stop_on_give_up(failure: GaveUp) -> None:
        failures.append(failure)
        server.should_exit = True

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(
                jobs=jobs,
                on_refused=stop_on_refusal,
                on_give_up=stop_on_give_up,
                freeze_heap=True,
            ),
            host=args.host,
            port=args.port,
            log_config=None,  # ours, above
            access_log=False,
            proxy_headers=args.forwarded_allow_ips is not None,
            forwarded_allow_ips=args.forwarded_allow_ips,
            http=bounded_protocol(
                header_timeout_s=args.header_timeout, body_timeout_s=args.body_timeout
            ),
            limit_concurrency=MAX_CONNECTIONS,
        )
    )
    trusting = (
        f", trusting X-Forwarded-For from {args.forwarded_allow_ips}"
        if args.forwarded_allow_ips
        else ""
    )
    log.info(
        "starting on http://%s:%d%s; store %s; %d webhook signing secret%s",
        args.host,
        args.port,
        trusting,
        store,
        len(secrets),
        "" if len(secrets) == 1 else "s",
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn shut down, then re-raised it
        server.run()
    if refusals:
        print(f"error: {refusals[0]}", file=sys.stderr)
        return SETTINGS_ERROR
    if failures:  # systemd restarts the listener, or shows it failed
        print(f"error: {failures[0]}", file=sys.stderr)
        return CHILD_FAILED
    return 0


def _jobs(option: str | None) -> list[str]:
    """The --jobs option as a list of job names (all of them when not given)."""
    if option is None:
        return list(JOBS)
    names = [name.strip() for name in option.split(",") if name.strip()]
    if names == ["none"]:
        return []
    unknown = sorted(set(names) - set(JOBS))
    if unknown:
        raise ValueError(f"--jobs: unknown job {', '.join(unknown)} (known: {', '.join(JOBS)})")
    return names


if __name__ == "__main__":
    sys.exit(main())
