"""`python -m webhook_listener [--host H] [--port P] [--forwarded-allow-ips IPS]`: the listener.

Behind a reverse proxy, `--forwarded-allow-ips` names the proxies (comma-separated addresses or
networks, as uvicorn takes them) whose X-Forwarded-For is trusted, so that the failed-login limit
and the rejection log see the client's address rather than the proxy's. Without it the header is
ignored, since any client could set it.
"""

import argparse
import logging
import sys

import uvicorn

from finance_core.settings import SettingsError, get_settings


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
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        get_settings().webhook_secrets()  # a clear error before uvicorn starts
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        "webhook_listener.app:app",
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        proxy_headers=args.forwarded_allow_ips is not None,
        forwarded_allow_ips=args.forwarded_allow_ips,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
