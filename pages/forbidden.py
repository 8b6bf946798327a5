"""The page for a signed-in user without a role that grants access: no data at all."""

import streamlit as st

from dashboard.auth import VIEWER_KEY
from dashboard.text import md

viewer = st.session_state.get(VIEWER_KEY)
st.title("No access")
st.error(
    "Your account has no role that grants access to the finance data. "
    "Ask an admin to give you the `finance` role."
)
if viewer is not None:
    st.caption(f"Signed in as {md(viewer.username)}.")
