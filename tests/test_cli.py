"""`python -m finance_core`: the operator's commands, run as real processes."""

import os
import subprocess
import sys
from datetime import UTC, datetime

import bcrypt
import pytest

from finance_core.access import audit
from finance_core.access.tokens import authenticate_token
from finance_core.access.users import authenticator_credentials
from finance_core.store.db import make_engine, read_transaction
from tests.support.store_dump import store_text


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


@pytest.mark.slow
def test_init_db_is_idempotent(cli):
    assert cli("init-db").returncode == 0
    second = cli("init-db")
    assert second.returncode == 0
    assert "schema is current" in second.stdout


@pytest.mark.slow
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
    assert token.split("_", 2)[2] not in listing.stdout

    assert cli("token", "revoke", "reporting").returncode == 0
    assert (
        authenticate_token(engine=make_engine(cli.url), token=token, now=datetime.now(UTC)) is None
    )


@pytest.mark.slow
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


@pytest.mark.slow
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

    with read_transaction(make_engine(cli.url)) as conn:
        stored = authenticator_credentials(conn=conn)["usernames"]["alice"]
    assert bcrypt.checkpw(b"correct horse battery", stored["password"].encode())


@pytest.mark.slow
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


# --- set-password, set-roles and the audit log ------------------------------------------


def stored_user(url: str, username: str) -> dict:
    engine = make_engine(url)
    try:
        with read_transaction(engine) as conn:
            return authenticator_credentials(conn=conn)["usernames"].get(username)
    finally:
        engine.dispose()


def audit_entries(url: str) -> list[audit.AuditEntry]:
    engine = make_engine(url)
    try:
        return list(audit.entries(engine=engine, filters=audit.AuditFilter()))
    finally:
        engine.dispose()


def audit_lines(cli, *options: str) -> list[str]:
    listed = cli("audit", "list", *options)
    assert listed.returncode == 0, listed.stderr
    header, *lines = listed.stdout.splitlines()
    assert header.split() == ["TIME", "ACTOR", "ACTION", "TARGET", "DETAIL"]
    return lines


@pytest.mark.slow
def test_set_password_and_set_roles_end_sessions_and_every_change_is_audited(cli):
    first, second = "first horse battery", "second horse battery"
    assert cli("user", "add", "alice", "--role", "finance", stdin=f"{first}\n").returncode == 0
    version = stored_user(cli.url, "alice")["session_version"]

    changed = cli("user", "set-password", "Alice", stdin=f"{second}\n")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.strip() == "set a new password for 'alice'; their sessions have ended"
    alice = stored_user(cli.url, "alice")
    assert bcrypt.checkpw(second.encode(), alice["password"].encode())
    assert not bcrypt.checkpw(first.encode(), alice["password"].encode())
    assert alice["session_version"] != version

    roles = cli("user", "set-roles", "alice", "--role", "admin", "--role", "Finance")
    assert roles.returncode == 0, roles.stderr
    assert "now has the roles admin, finance" in roles.stdout
    assert stored_user(cli.url, "alice")["roles"] == ["admin", "finance"]
    assert stored_user(cli.url, "alice")["session_version"] != alice["session_version"]

    token = cli("token", "create", "ops", "--role", "finance").stdout.splitlines()[-1]
    assert cli("token", "revoke", "ops").returncode == 0
    assert cli("user", "remove", "alice").returncode == 0

    actor = audit.cli_actor()  # the same operating-system user as the processes above
    assert actor.startswith("cli:")
    lines = audit_lines(cli)
    assert [line.split()[1:4] for line in lines] == [
        [actor, "user_removed", "alice"],
        [actor, "token_revoked", "ops"],
        [actor, "token_created", "ops"],
        [actor, "user_roles_set", "alice"],
        [actor, "user_password_set", "alice"],
        [actor, "user_added", "alice"],
    ]
    [created] = audit_lines(
        cli, "--action", "token_created", "--actor", actor, "--since", "2000-01-01"
    )
    assert created.split()[1:5] == [actor, "token_created", "ops", "roles:"]
    assert audit_lines(cli, "--since", "2999-01-01T00:00:00Z") == []

    # Nowhere in the store, in the audit log's listing or in its CSV export.
    engine = make_engine(cli.url)
    exported = "".join(audit.csv_pages(engine=engine, filters=audit.AuditFilter()))
    dumped = store_text(engine)
    engine.dispose()
    for secret in (first, second, token, token.split("_", 2)[2]):
        assert secret not in dumped
        assert secret not in "\n".join(lines)
        assert secret not in exported


ROLE_REFUSED = "unknown role %s: a role is 'finance' or 'admin'"


@pytest.mark.slow
def test_bad_input_is_a_clear_error_and_changes_nothing(cli):
    assert cli("user", "add", "bob", "--role", "finance", stdin="long enough\n").returncode == 0
    before = (stored_user(cli.url, "bob"), audit_entries(cli.url))
    refused = [
        (("user", "set-password", "nobody"), "long enough\n", "no user named 'nobody'"),
        (("user", "set-roles", "nobody", "--role", "admin"), "", "no user named 'nobody'"),
        (("user", "remove", "nobody"), "", "no user named 'nobody'"),
        (("user", "set-password", "bob"), "short\n", "at least 8 characters"),
        (("user", "set-roles", "bob"), "", "the following arguments are required: --role"),
        (("user", "set-roles", "bob", "--role", " "), "", "give at least one role"),
        (("user", "set-roles", "bob", "--role", "auditor"), "", ROLE_REFUSED % "'auditor'"),
        (("user", "add", "carol", "--role", "fiance"), "long enough\n", ROLE_REFUSED % "'fiance'"),
        (("token", "create", "ops", "--role", "superuser"), "", ROLE_REFUSED % "'superuser'"),
        (("audit", "list", "--since", "yesterday"), "", "'yesterday' is not an ISO 8601 time"),
        (("audit", "list", "--action", "user_hacked"), "", "invalid choice: 'user_hacked'"),
    ]
    for args, stdin, message in refused:
        result = cli(*args, stdin=stdin)
        assert result.returncode == 2, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert (stored_user(cli.url, "bob"), audit_entries(cli.url)) == before
