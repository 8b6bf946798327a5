"""`python -m finance_core`: the operator's commands, run as real processes."""

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from finance_core.db import make_engine
from finance_core.tokens import authenticate_token


@pytest.fixture
def cli(tmp_path):
    url = f"sqlite:///{tmp_path}/cli.db"
    env = {**os.environ, "DATABASE_URL": url}

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "finance_core", *args],
            input=stdin,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    run.url = url  # type: ignore[attr-defined]
    return run


def test_init_db_is_idempotent(cli):
    assert cli("init-db").returncode == 0
    second = cli("init-db")
    assert second.returncode == 0
    assert "schema is current" in second.stdout


def test_token_create_prints_the_token_last_and_only_then(cli):
    created = cli("token", "create", "reporting", "--role", "finance")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("pmf_")
    info = authenticate_token(engine=make_engine(cli.url), token=token, now=datetime.now(UTC))
    assert info is not None
    assert (info.name, info.roles) == ("reporting", ["finance"])

    listing = cli("token", "list")
    assert "reporting" in listing.stdout
    assert token.split("_")[-1] not in listing.stdout

    assert cli("token", "revoke", "reporting").returncode == 0
    assert (
        authenticate_token(engine=make_engine(cli.url), token=token, now=datetime.now(UTC)) is None
    )


def test_token_errors_are_clear(cli):
    assert cli("token", "create", "ops", "--role", "admin").returncode == 0
    again = cli("token", "create", "ops", "--role", "admin")
    assert again.returncode == 2
    assert "a token named 'ops' already exists" in again.stderr
    unknown = cli("token", "revoke", "nobody")
    assert (unknown.returncode, unknown.stderr.strip()) == (2, "error: no token named 'nobody'")
    assert cli("token", "create", "norole").returncode == 2  # --role is required


def test_tokens_are_stored_only_as_hashes(cli, tmp_path):
    token = cli("token", "create", "hashed", "--role", "finance").stdout.strip().splitlines()[-1]
    secret = token.split("_", 2)[2]
    assert secret.encode() not in (tmp_path / "cli.db").read_bytes()


def test_user_add_reads_the_password_from_stdin(cli, tmp_path):
    added = cli(
        "user",
        "add",
        "Alice",
        "--role",
        "finance",
        "--role",
        "admin",
        "--name",
        "Alice Ng",
        stdin="correct horse battery\n",
    )
    assert added.returncode == 0, added.stderr
    listing = cli("user", "list").stdout
    assert "alice" in listing and "Alice Ng" in listing and "admin,finance" in listing
    assert b"correct horse battery" not in (tmp_path / "cli.db").read_bytes()

    from finance_core.db import read_transaction
    from finance_core.users import authenticator_credentials

    with read_transaction(make_engine(cli.url)) as conn:
        stored = authenticator_credentials(conn=conn)["usernames"]["alice"]
    import bcrypt

    assert bcrypt.checkpw(b"correct horse battery", stored["password"].encode())


def test_user_errors_are_clear(cli):
    short = cli("user", "add", "bob", "--role", "finance", stdin="short\n")
    assert short.returncode == 2
    assert "at least 8 characters" in short.stderr
    assert cli("user", "add", "bob", "--role", "finance", stdin="long enough\n").returncode == 0
    again = cli("user", "add", "bob", "--role", "finance", stdin="long enough\n")
    assert "user 'bob' already exists" in again.stderr
    assert cli("user", "remove", "bob").returncode == 0
    assert "no user named 'bob'" in cli("user", "remove", "bob").stderr


def test_bad_settings_are_a_clear_error(cli, tmp_path):
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/x.db",
        "STRIPE_WEBHOOK_SECRET": "changeme",
    }
    result = subprocess.run(
        [sys.executable, "-m", "finance_core", "init-db"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "STRIPE_WEBHOOK_SECRET is a placeholder" in result.stderr
    assert "Traceback" not in result.stderr
