"""Users (admins): add, change roles, reset a password, remove; as `python -m finance_core user`."""

import streamlit as st

from dashboard import auth, data, tables, ui
from dashboard.text import md
from finance_core.access.roles import ADMIN, FINANCE

OUTCOME = "users_outcome"
PASSWORDS_DIFFER = (False, "The two passwords differ; nothing was changed.")

viewer = auth.current_admin("Only an admin can manage users.")
st.title("Users")
st.caption(
    "Dashboard accounts, the same as `python -m finance_core user …`. A new password, new "
    "roles or removal ends that user's sessions at once, in every browser. `finance` reads "
    "everything; `admin` may also replay and dismiss events, sync, and manage users and tokens."
)
ui.show_flash(OUTCOME)

people = data.dashboard_users()
st.dataframe(**tables.user_table(people))
known_roles = sorted({FINANCE, ADMIN, *(role for user in people for role in user.roles)})


def done(outcome: tuple[bool, str]) -> None:
    """Keep the outcome for the next run, which shows the change."""
    st.session_state[OUTCOME] = outcome
    st.rerun()


st.subheader("Add a user")
# What was typed stays after a refusal (a short password, a taken name); a user added clears it.
ADD_FIELDS = ("add_username", "add_name", "add_roles", "add_password", "add_repeat")


def add() -> None:
    """The Add user button: add, or say why not and keep the form as typed."""
    typed = st.session_state
    try:
        if typed["add_password"] != typed["add_repeat"]:
            outcome = PASSWORDS_DIFFER
        else:
            outcome = data.add_user(
                typed["add_username"],
                typed["add_name"],
                typed["add_roles"],
                typed["add_password"],
                actor=viewer.username,
            )
    except data.StoreUnavailable as exc:
        outcome = (False, str(exc))
    if outcome[0]:
        for key in ADD_FIELDS:  # back to their defaults
            del typed[key]
    typed[OUTCOME] = outcome


with st.form("add_user"):
    left, right = st.columns(2)
    left.text_input("Username", key="add_username")
    right.text_input("Name (optional)", key="add_name")
    st.multiselect(
        "Roles",
        known_roles,
        default=[FINANCE],
        accept_new_options=True,
        key="add_roles",
        help=f"`{FINANCE}` or `{ADMIN}`; any other name is refused",
    )
    left.text_input("Initial password", type="password", key="add_password")
    right.text_input("Repeat the password", type="password", key="add_repeat")
    st.form_submit_button("Add user", type="primary", on_click=add)

if people:
    st.subheader("Change a user")
    chosen = st.selectbox("User", [user.username for user in people], key="users_chosen")
    user = next(user for user in people if user.username == chosen)
    roles_tab, password_tab, remove_tab = st.tabs(["Roles", "Password", "Remove"])
    with roles_tab, st.form("set_roles"):
        new_roles = st.multiselect(
            "Roles", known_roles, default=user.roles, accept_new_options=True, key=f"roles_{chosen}"
        )
        if st.form_submit_button("Save roles"):
            done(data.set_roles(chosen, new_roles, actor=viewer.username))
    with password_tab, st.form("set_password", clear_on_submit=True):
        new_password = st.text_input("New password", type="password")
        new_repeat = st.text_input("Repeat the new password", type="password")
        if st.form_submit_button("Set password"):
            if new_password != new_repeat:
                done(PASSWORDS_DIFFER)
            done(data.set_password(chosen, new_password, actor=viewer.username))
    with remove_tab, st.form("remove_user"):
        sure = st.checkbox(f"Yes, remove {md(chosen)} and end their sessions")
        if st.form_submit_button("Remove user"):
            if not sure:
                done((False, f"Tick the box to confirm; {chosen} was not removed."))
            done(data.remove_user(chosen, actor=viewer.username))
