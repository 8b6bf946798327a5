"""The audit log: every change recorded with its actor in the change's transaction, never edited."""

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError

from finance_core.access import audit
from finance_core.access.audit import AuditFilter, audit_page, csv_pages, record
from finance_core.access.tokens import TokenError, create_token, revoke_token
from finance_core.access.users import UserError, add_user, remove_user, set_password, set_roles
from finance_core.feed.ingest import ReplayError, dismiss_event
from finance_core.feed.replay import replay_events
from finance_core.store.db import read_transaction, write_transaction
from finance_core.store.models import audit_log
from tests.support import stripe_factory as sf
from tests.support.apptest import feed

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
PASSWORD = "audited horse battery"


def logged(engine) -> list[tuple[str, str, str, str]]:
    """(actor, action, target, detail) of every entry, oldest first."""
    with read_transaction(engine) as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.id))
        return [(row.actor, row.action, row.target, row.detail) for row in rows]


def test_the_database_refuses_to_change_or_delete_an_entry(engine):
    record(engine=engine, actor="ada", action="user_added", target="bob", now=T0)
    statements = [
        update(audit_log).values(actor="mallory"),
        delete(audit_log),
        text("UPDATE audit_log SET detail = 'nothing happened'"),
        text("DELETE FROM audit_log"),
    ]
    if engine.dialect.name == "postgresql":
        statements.append(text("TRUNCATE audit_log"))  # which row triggers do not see
    for statement in statements:
        refused = pytest.raises(DBAPIError, match="audit_log rows cannot be changed or deleted")
        with refused, write_transaction(engine) as conn:
            conn.execute(statement)
    assert logged(engine) == [("ada", "user_added", "bob", "")]


def test_user_and_token_changes_are_recorded_with_their_actor(engine):
    add_user(
        engine=engine, username="Bob", password=PASSWORD, roles=["finance"], actor="ada", now=T0
    )
    set_roles(engine=engine, username="bob", roles=["admin", "finance"], actor="ada", now=T0)
    set_password(engine=engine, username="bob", password=PASSWORD + "!", actor="cli:root", now=T0)
    token = create_token(engine=engine, name="reporting", roles=["finance"], actor="ada", now=T0)
    revoke_token(engine=engine, name="reporting", actor="ada", now=T0)
    remove_user(engine=engine, username="bob", actor="cli:root", now=T0)
    assert logged(engine) == [
        ("ada", "user_added", "bob", "roles: finance"),
        ("ada", "user_roles_set", "bob", "roles: admin, finance (were: finance); sessions ended"),
        ("cli:root", "user_password_set", "bob", "new password; sessions ended"),
        ("ada", "token_created", "reporting", "roles: finance"),
        ("ada", "token_revoked", "reporting", ""),
        ("cli:root", "user_removed", "bob", ""),
    ]
    everything = repr(logged(engine))
    assert PASSWORD not in everything and token.split("_", 2)[2] not in everything


def test_a_refused_change_records_nothing(engine):
    add_user(engine=engine, username="bob", password=PASSWORD, roles=[], actor="ada", now=T0)
    by_ada = {"actor": "ada", "now": T0}
    refused = [
        (UserError, set_password, {"username": "bob", "password": "short"}),
        (UserError, set_password, {"username": "nobody", "password": PASSWORD}),
        (UserError, set_roles, {"username": "nobody", "roles": ["finance"]}),
        (UserError, set_roles, {"username": "bob", "roles": [" "]}),
        (UserError, set_roles, {"username": "bob", "roles": ["a,b"]}),
        (UserError, remove_user, {"username": "nobody"}),
        (TokenError, revoke_token, {"name": "nothing"}),
        (TokenError, create_token, {"name": " ", "roles": ["finance"]}),
        (ReplayError, dismiss_event, {"event_id": "evt_none"}),
    ]
    for error, change, arguments in refused:
        with pytest.raises(error):
            change(engine=engine, **arguments, **by_ada)
    assert logged(engine) == [("ada", "user_added", "bob", "roles: none")]


def test_replays_and_dismissals_are_recorded(engine):
    broken = sf.subscription("sub_broken", "active", "prod_pro")
    del broken["status"]
    feed(engine, "customer.subscription.updated", broken, event_id="evt_broken")
    [outcome] = replay_events(engine=engine, event_ids=None, actor="cli:root", now=T0)
    assert not outcome.ok
    dismiss_event(engine=engine, event_id="evt_broken", actor="ada", now=T0)
    [(actor, action, target, detail), dismissed] = logged(engine)
    assert (actor, action, target) == ("cli:root", "event_replayed", "evt_broken")
    assert detail.startswith("not applied: failed again:")
    assert dismissed == ("ada", "event_dismissed", "evt_broken", "")


def test_pages_are_keyset_pages_newest_first_and_filters_narrow_them(engine):
    for n in range(120):
        record(
            engine=engine,
            actor="ada" if n % 2 else "cli:root",
            action="token_created" if n % 3 else "user_added",
            target=f"target-{n:03}",
            now=T0 + timedelta(minutes=n // 2),  # two entries a minute: ties on the time
        )
    with read_transaction(engine) as conn:
        first = audit_page(conn=conn, filters=AuditFilter(), limit=50)
        second = audit_page(conn=conn, filters=AuditFilter(), limit=50, after=first.next_cursor)
        third = audit_page(conn=conn, filters=AuditFilter(), limit=50, after=second.next_cursor)
        targets = [entry.target for page in (first, second, third) for entry in page.rows]
        assert targets == [f"target-{n:03}" for n in reversed(range(120))]
        assert third.next_cursor is None and len(third.rows) == 20

        narrow = AuditFilter(
            actor="ada",
            action="user_added",
            start=T0 + timedelta(minutes=10),
            end=T0 + timedelta(minutes=40),
        )
        rows = audit_page(conn=conn, filters=narrow, limit=500).rows
    expected = [n for n in range(120) if n % 2 and not n % 3 and 10 <= n // 2 < 40]
    assert [row.target for row in rows] == [f"target-{n:03}" for n in reversed(expected)]


def test_the_csv_export_is_every_matching_entry_and_safe_in_a_spreadsheet(engine):
    record(engine=engine, actor="ada", action="user_added", target="=HYPERLINK(1)", now=T0)
    record(engine=engine, actor="ada", action="token_revoked", target="ops", now=T0)
    rows = list(
        csv.DictReader(io.StringIO("".join(csv_pages(engine=engine, filters=AuditFilter()))))
    )
    assert [(row["action"], row["target"]) for row in rows] == [
        ("token_revoked", "ops"),
        ("user_added", "'=HYPERLINK(1)"),
    ]
    assert rows[0]["recorded_at"] == "2026-11-01T12:00:00Z"
    only = "".join(csv_pages(engine=engine, filters=AuditFilter(action="token_revoked")))
    assert len(list(csv.DictReader(io.StringIO(only)))) == 1


def test_filters_and_actions_refuse_bad_input(engine):
    with pytest.raises(ValueError, match="unknown audit action 'user_hacked'"):
        AuditFilter(action="user_hacked")
    with pytest.raises(ValueError, match="naive"):
        AuditFilter(start=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="unknown audit action"):
        record(engine=engine, actor="ada", action="user_hacked", target="x", now=T0)
    with read_transaction(engine) as conn:
        assert conn.execute(select(func.count()).select_from(audit_log)).scalar_one() == 0


def test_the_cli_actor_names_the_operating_system_user(monkeypatch):
    monkeypatch.setenv("LOGNAME", "operator")
    assert audit.cli_actor() == "cli:operator"
    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(variable, raising=False)
    assert audit.cli_actor().startswith("cli:")
