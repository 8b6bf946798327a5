"""The admins' Users, API tokens and Audit log pages, and sessions ending, through AppTest."""

from datetime import UTC, datetime

import bcrypt
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.auth import SESSION_ENDED, VIEWER_KEY, Viewer
from finance_core.access.audit import record
from finance_core.access.tokens import authenticate_token
from finance_core.access.users import authenticator_credentials, set_password, set_roles
from finance_core.store.db import read_transaction
from tests.support import apptest
from tests.support.apptest import APP, PASSWORD, app, shown, signed_in, texts

USERS, TOKENS, AUDIT = "pages/user_accounts.py", "pages/tokens.py", "pages/audit.py"
ADMIN_PAGES = {USERS: "Users", TOKENS: "API tokens", AUDIT: "Audit log"}
NEW_PASSWORD = "a brand new password"

dashboard = apptest.dashboard  # the fixture: the test store, its users, no cache left over


def stored_users(engine) -> dict:
    with read_transaction(engine) as conn:
        return authenticator_credentials(conn=conn)["usernames"]


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def field(at: AppTest, label: str):
    return next(f for f in at.text_input if f.label == label)


def add_user_form(at: AppTest, username: str, name: str, password: str, repeat: str) -> None:
    for label, value in [
        ("Username", username),
        ("Name (optional)", name),
        ("Initial password", password),
        ("Repeat the password", repeat),
    ]:
        field(at, label).input(value)
    button(at, "Add user").click().run()


def flash(at: AppTest) -> str:
    return "\n".join(shown(part.value) for part in [*at.success, *at.error])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_only_admins_get_the_admin_pages(dashboard):
    at = signed_in("ada")
    for page, title in ADMIN_PAGES.items():
        at.switch_page(page).run()
        assert not at.exception, page
        assert [t.value for t in at.title] == [title]
    for username in ("fiona", "nora"):  # finance only, and no role: not in their navigation
        at = signed_in(username)
        for page in ADMIN_PAGES:
            with pytest.raises(ValueError):
                at.switch_page(page)
    for page in ADMIN_PAGES:  # and run directly, each page refuses a finance user by itself
        at = AppTest.from_file(APP.parent / page, default_timeout=60)
        at.session_state[VIEWER_KEY] = Viewer("fiona", "Fiona", ("finance",))
        at.run()
        assert not at.exception
        assert at.error[0].value.startswith("Only an admin can")
        assert not at.dataframe and not at.text_input


def test_admin_adds_a_user_changes_roles_resets_the_password_and_removes_them(dashboard):
    at = signed_in("ada").switch_page(USERS).run()
    assert list(at.dataframe[0].value["Username"]) == ["ada", "fiona", "nora"]

    add_user_form(at, "Carol", "", "short", "short")
    assert flash(at) == "The password needs at least 8 characters."
    assert "carol" not in stored_users(dashboard)

    add_user_form(at, "Carol", "Carol Ng", PASSWORD, PASSWORD + "!")
    assert flash(at) == "The two passwords differ; nothing was changed."
    assert "carol" not in stored_users(dashboard)

    add_user_form(at, "Carol", "Carol Ng", PASSWORD, PASSWORD)
    assert not at.exception
    assert flash(at) == "Added carol with the roles finance."
    assert list(at.dataframe[0].value["Username"]) == ["ada", "carol", "fiona", "nora"]
    carol = stored_users(dashboard)["carol"]
    assert (carol["name"], carol["roles"]) == ("Carol Ng", ["finance"])
    assert bcrypt.checkpw(PASSWORD.encode(), carol["password"].encode())

    at.selectbox(key="users_chosen").set_value("carol").run()
    at.multiselect(key="roles_carol").select("admin")  # in a form: sent with its button
    button(at, "Save roles").click().run()
    assert flash(at) == "carol now has the roles admin, finance; their sessions have ended."
    assert stored_users(dashboard)["carol"]["roles"] == ["admin", "finance"]

    at.multiselect(key="roles_carol").unselect("admin").unselect("finance")
    button(at, "Save roles").click().run()
    assert flash(at).startswith("Give at least one role")
    assert stored_users(dashboard)["carol"]["roles"] == ["admin", "finance"]

    field(at, "New password").input(NEW_PASSWORD)
    field(at, "Repeat the new password").input(NEW_PASSWORD)
    button(at, "Set password").click().run()
    assert flash(at) == "Set a new password for carol; their sessions have ended."
    stored = stored_users(dashboard)["carol"]["password"].encode()
    assert bcrypt.checkpw(NEW_PASSWORD.encode(), stored)

    button(at, "Remove user").click().run()
    assert flash(at) == "Tick the box to confirm; carol was not removed."
    at.checkbox[0].check()
    button(at, "Remove user").click().run()
    assert not at.exception
    assert flash(at) == "Removed carol; their sessions have ended."
    assert "carol" not in stored_users(dashboard)
    assert list(at.dataframe[0].value["Username"]) == ["ada", "fiona", "nora"]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_refused_form_keeps_what_was_typed_and_a_role_must_be_finance_or_admin(dashboard):
    at = signed_in("ada").switch_page(USERS).run()
    at.multiselect(key="add_roles").select("auditor")  # typed: the field takes new names
    add_user_form(at, "Carol", "Carol Ng", PASSWORD, PASSWORD)
    assert flash(at) == "Unknown role 'auditor': a role is 'finance' or 'admin'."
    assert "carol" not in stored_users(dashboard)
    typed = {label: field(at, label).value for label in ("Username", "Name (optional)")}
    assert typed == {"Username": "Carol", "Name (optional)": "Carol Ng"}
    assert field(at, "Initial password").value == PASSWORD
    assert at.multiselect(key="add_roles").value == ["finance", "auditor"]

    at.multiselect(key="add_roles").unselect("auditor")
    button(at, "Add user").click().run()
    assert flash(at) == "Added carol with the roles finance."
    assert field(at, "Username").value == ""  # added: the form empties for the next one
    assert at.multiselect(key="add_roles").value == ["finance"]

    at.switch_page(TOKENS).run()
    field(at, "Name").input("reporting")
    at.multiselect(key="token_roles").select("reader")
    button(at, "Create token").click().run()
    refused = "Unknown role 'reader': a role is 'finance' or 'admin'."
    assert [shown(e.value) for e in at.error] == [refused]
    assert field(at, "Name").value == "reporting"


def test_a_token_is_shown_once_then_listed_without_its_secret_and_revoked(dashboard):
    at = signed_in("ada").switch_page(TOKENS).run()
    assert "No token yet." in texts(at)
    at.text_input[0].input("reporting")
    button(at, "Create token").click().run()
    assert not at.exception
    [block] = at.code
    token = block.value
    assert token.startswith("pmf_")
    assert "shown only this once" in at.success[0].value
    info = authenticate_token(engine=dashboard, token=token, now=datetime.now(UTC))
    assert info is not None and info.roles == ["finance"]
    listed = at.dataframe[0].value
    assert list(listed["Name"]) == ["reporting"] and list(listed["Roles"]) == ["finance"]
    assert token.split("_", 2)[2] not in listed.to_csv()

    at.text_input[0].input("reporting")
    button(at, "Create token").click().run()
    assert not at.code
    assert at.error[0].value.startswith("A token named 'reporting' already exists")

    at.run()  # any later run: the token is gone from the page for good
    assert not at.code and token not in texts(at)

    button(at, "Revoke").click().run()
    assert shown(at.success[0].value) == (
        "Revoked the token 'reporting'; the Finance API refuses it from now on."
    )
    assert authenticate_token(engine=dashboard, token=token, now=datetime.now(UTC)) is None
    assert at.dataframe[0].value["Revoked (UTC)"].notna().all()
    assert not [b for b in at.button if b.label == "Revoke"]  # nothing left to revoke


def test_the_audit_log_lists_the_admins_actions_and_filters_them(dashboard):
    at = signed_in("ada").switch_page(TOKENS).run()
    at.text_input[0].input("ops")
    button(at, "Create token").click().run()
    record(
        engine=dashboard,
        actor="cli:root",
        action="sync_run",
        target="sync run 1",
        now=datetime.now(UTC),
    )

    at.switch_page(AUDIT).run()
    assert not at.exception
    entries = at.dataframe[0].value
    assert list(entries["Action"]) == [
        "sync_run",
        "token_created",
        "user_added",
        "user_added",
        "user_added",
    ]
    assert list(entries["Actor"])[:2] == ["cli:root", "ada"]
    assert list(entries["Target"])[1] == "ops"

    at.selectbox(key="audit_action").set_value("token_created").run()
    assert list(at.dataframe[0].value["Target"]) == ["ops"]
    at.selectbox(key="audit_action").set_value("All")
    at.text_input(key="audit_actor").input("cli:root").run()
    assert list(at.dataframe[0].value["Action"]) == ["sync_run"]
    at.text_input(key="audit_actor").input("nobody").run()
    assert "No audit entries match these filters." in texts(at)
    assert at.get("download_button")


def test_an_open_session_ends_on_its_next_run_after_a_new_password_or_new_roles(dashboard):
    for change in (
        lambda: set_password(
            engine=dashboard,
            username="fiona",
            password=NEW_PASSWORD,
            actor="tests",
            now=datetime.now(UTC),
        ),
        lambda: set_roles(
            engine=dashboard,
            username="fiona",
            roles=["finance"],
            actor="tests",
            now=datetime.now(UTC),
        ),
    ):
        at = signed_in("fiona")
        assert at.metric
        change()
        at.run()
        assert not at.exception
        assert not at.metric
        assert SESSION_ENDED in texts(at)
        assert [field.label for field in at.text_input] == ["Username", "Password"]
        assert not at.session_state["authentication_status"]


def test_logging_out_ends_the_users_other_sessions(dashboard):
    elsewhere = signed_in("fiona")
    at = app().run()
    at.text_input[0].input("fiona")
    at.text_input[1].input(PASSWORD)
    at.button[0].click().run()
    assert at.metric
    at.sidebar.button[0].click().run()  # Log out
    assert "You have logged out." in texts(at)
    elsewhere.run()
    assert not elsewhere.metric
    assert SESSION_ENDED in texts(elsewhere)
