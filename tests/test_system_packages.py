"""`make test` on a bare machine: the system packages found, installed, or the command printed."""

import os
import subprocess
import sys

from tests.support.system_packages import TEST_PACKAGES, install_command, missing

COMMAND = [sys.executable, "-m", "tests.support.system_packages"]


def test_with_everything_installed_it_prints_nothing():
    assert missing(TEST_PACKAGES) == [], "this machine should have had them installed by now"
    done = subprocess.run(COMMAND, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_off_debian_it_prints_the_install_command_and_installs_nothing():
    """Without apt-get (not Debian, or not root) the exact command is printed instead."""
    # No apt-get on PATH, and no PostgreSQL: as on a machine where it cannot install.
    env = {**os.environ, "PATH": os.path.dirname(sys.executable), "PG_BIN": "/nonexistent"}
    done = subprocess.run(COMMAND, capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0  # the suites skip (or fail under CI=true) with the reason
    first, command = done.stderr.splitlines()[:2]
    absent = first.removeprefix("missing system packages: ").split(";")[0].split()
    assert "postgresql" in absent
    assert command.strip() == install_command(absent)
    assert done.stdout == ""
