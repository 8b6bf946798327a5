"""Audit log (admins): who changed what and when, filtered and paged in SQL, exportable as CSV."""

import streamlit as st

from dashboard import auth, data, paging, tables, ui
from finance_core.access.audit import ACTIONS, AuditFilter

ALL = "All"
PAGE_SIZE = 50

auth.current_admin("Only an admin can read the audit log.")
st.title("Audit log")
st.caption(
    "Every change to users and tokens, every replay, dismissal and sync, every failed sign-in "
    "and lockout, from the dashboard (the admin's username) and the command line "
    "(`cli:<user>`). Entries are never changed or deleted; the database refuses it."
)

who, what, when = st.columns(3)
actor = who.text_input("Actor", key="audit_actor", help="Exactly, e.g. ada or cli:root").strip()
action = what.selectbox("Action", [ALL, *ACTIONS], key="audit_action")
range_name, dates = paging.time_range(when, "When", key="audit_range", index=2)

pages = paging.Pages("audit", (actor, action, range_name, str(dates)))
start, end = paging.window(range_name, dates, pages.anchor)
filters = AuditFilter(
    actor=actor or None, action=None if action == ALL else action, start=start, end=end
)

page = data.audit_page(filters, PAGE_SIZE, pages.after)
if page.rows:
    shown_from = pages.first_shown(PAGE_SIZE)
    shown_to = shown_from + len(page.rows) - 1
    st.caption(
        f"Showing {shown_from:,}–{shown_to:,}, newest first · from {pages.anchor:%H:%M:%S} UTC"
    )
    st.dataframe(**tables.audit_table(page.rows))
    ui.in_full(
        "Details in full",
        [
            (f"{ui.absolute_time(row.recorded_at)} {row.action} {row.target}", row.detail or "")
            for row in page.rows
        ],
    )
else:
    st.info("No audit entries match these filters.")

pages.buttons(
    page.next_cursor, csv=data.audit_csv_export(data.engine(), filters), file_stem="audit-log"
)
