"""`python -m webhook_listener [--host H] [--port P] [--forwarded-allow-ips IPS] [--jobs J]`.

Behind a reverse proxy, `--forwarded-allow-ips` names the proxies (comma-separated addresses or
networks, as uvicorn takes them) whose X-Forwarded-For is trusted, so that the failed-login limit
and the rejection log see the client's address rather than the proxy's. Without it the header is
ignored, since any client could set it. `--jobs` picks the background jobs this listener's worker
process runs (all by default; `none` for a listener that only answers).
"""

import argparse
import logging
import sys

import uvicorn

from finance_core.settings import SettingsError, get_settings
from webhook_listener.app import create_app
from webhook_listener.background_process import JOBS


def main() -> int:
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
        "--jobs",
        metavar="JOBS",
        help="background jobs to run, comma-separated, or 'none' "
        f"(default: all of {', '.join(JOBS) or 'none'})",
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        get_settings().webhook_secrets()  # a clear error before uvicorn starts
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        jobs = _jobs(args.jobs)
    except ValueError as exc:
        parser.error(str(exc))
    uvicorn.run(
        create_app(jobs=jobs),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        proxy_headers=args.forwarded_allow_ips is not None,
        forwarded_allow_ips=args.forwarded_allow_ips,
    )
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
