"""API tokens (admins): create one, shown once; list and revoke; as the CLI's `token` commands."""

import streamlit as st

from dashboard import auth, data, tables, ui
from dashboard.text import md
from finance_core.access.roles import ADMIN, FINANCE

OUTCOME = "tokens_outcome"

viewer = auth.current_admin("Only an admin can manage API tokens.")
st.title("API tokens")
st.caption(
    "Bearer tokens for the Finance API, the same as `python -m finance_core token …`. A token "
    "is shown once, when it is created: the store keeps only its hash."
)
ui.show_flash(OUTCOME)

CREATED = "tokens_created"


def create() -> None:
    """The Create token button: the token for this run to show once, or why not (form kept)."""
    typed = st.session_state
    try:
        token, message = data.create_token(
            typed["token_name"], typed["token_roles"], actor=viewer.username
        )
    except data.StoreUnavailable as exc:
        token, message = None, str(exc)
    if token is not None:
        del typed["token_name"], typed["token_roles"]  # created: the form empties
    typed[CREATED] = (token, message)


with st.form("create_token"):
    st.text_input("Name", help="Who or what will use it, e.g. reporting", key="token_name")
    st.multiselect(
        "Roles",
        [FINANCE, ADMIN],
        default=[FINANCE],
        accept_new_options=True,
        key="token_roles",
        help=f"`{FINANCE}` or `{ADMIN}`; any other name is refused",
    )
    st.form_submit_button("Create token", type="primary", on_click=create)
# Shown in this run only: popped here, so the next click makes it disappear.
created = st.session_state.pop(CREATED, None)
if created is not None:
    token, message = created
    if token is None:
        st.error(md(message))
    else:
        st.success(f"{md(message)} Copy it now: it is shown only this once.")
        st.code(token, language=None)

st.subheader("Tokens")
infos = data.api_tokens()
if not infos:
    st.info("No token yet.")
else:
    st.dataframe(**tables.token_table(infos))
    live = [info.name for info in infos if info.revoked_at is None]
    if live:

        def revoke() -> None:
            chosen = st.session_state.get("token_to_revoke")
            if not chosen:
                return
            try:
                outcome = data.revoke_token(chosen, actor=viewer.username)
            except data.StoreUnavailable as exc:
                outcome = (False, str(exc))
            st.session_state[OUTCOME] = outcome

        choice, button = st.columns([3, 1], vertical_alignment="bottom")
        choice.selectbox("Token", live, key="token_to_revoke")
        button.button("Revoke", on_click=revoke, icon=":material/block:")
