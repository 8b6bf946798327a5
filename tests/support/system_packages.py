"""The Debian packages the suites need: found, installed (as root on Debian), or how to get them.

`python -m tests.support.system_packages [--bench]` runs first in `make test` (and `make bench`,
which also needs wrk). It prints nothing when nothing is missing. As root on a Debian-like
machine it installs what is missing and stops the services the packages start (the tests start
servers of their own); elsewhere it prints the install command, and the suites that need a
missing package skip with that command as their reason (under CI=true they fail instead).
"""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable

from tests.support.postgres import find_pg_bin

# Where Debian puts the daemons: not on a normal user's PATH.
SYSTEM_DIRS = ("/usr/sbin", "/sbin")
# Started by their packages on install; the tests start their own on free ports.
SERVICES = ("postgresql", "redis-server", "prometheus")


def which(command: str) -> str | None:
    """The path of `command` on PATH or in the system directories."""
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *SYSTEM_DIRS])
    return shutil.which(command, path=path)


def _has(command: str) -> Callable[[], bool]:
    return lambda: which(command) is not None


# Debian package: whether what the suites use from it is there.
TEST_PACKAGES: dict[str, Callable[[], bool]] = {
    "postgresql": lambda: find_pg_bin() is not None,
    "redis-server": _has("redis-server"),
    "chromium": _has("chromium"),
    "haproxy": _has("haproxy"),
    "prometheus": _has("prometheus"),
    "util-linux": _has("runuser"),  # runs PostgreSQL as nobody when the tests run as root
}
BENCH_PACKAGES: dict[str, Callable[[], bool]] = {"wrk": _has("wrk")}


def install_command(packages: list[str]) -> str:
    """The command that installs `packages` on Debian or Ubuntu."""
    return f"sudo apt-get install -y --no-install-recommends {' '.join(packages)}"


def install_hint(package: str) -> str:
    """What a skipped suite says about its missing package."""
    return f"install it with `{install_command([package])}`, or run `make test` as root"


def missing(packages: dict[str, Callable[[], bool]]) -> list[str]:
    return [package for package, present in packages.items() if not present()]


def install(packages: list[str]) -> None:
    """apt-get install, quietly; then stop the services the packages started."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt_get = ["apt-get", "-qq"]
    subprocess.run([*apt_get, "update"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(
        [*apt_get, "install", "-y", "--no-install-recommends", *packages],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    stop = which("service")  # absent where no init system is installed: nothing started
    if stop is None:
        return
    for service in SERVICES:
        subprocess.run(
            [stop, service, "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,  # not installed, or not started (no init system in a container)
        )


def main(argv: list[str]) -> int:
    wanted = {**TEST_PACKAGES, **(BENCH_PACKAGES if "--bench" in argv else {})}
    absent = missing(wanted)
    if not absent:
        return 0
    if os.geteuid() == 0 and which("apt-get"):
        print(f"installing {' '.join(absent)}", flush=True)
        install(absent)
        still = missing(wanted)
        if still:
            print(f"error: still missing after apt-get: {' '.join(still)}", file=sys.stderr)
            return 1
        return 0
    print(
        f"missing system packages: {' '.join(absent)}; install them with\n"
        f"  {install_command(absent)}\n"
        "(the suites that need them are skipped until then; under CI=true they fail)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
