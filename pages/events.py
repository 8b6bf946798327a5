"""Events: the webhook event log, filtered and paged in SQL, exportable as CSV."""

import streamlit as st

from dashboard import auth, data, paging, tables, ui
from finance_core.store.models import EVENT_STATUSES
from finance_core.views.event_log import EventFilter

ALL = "All"
PAGE_SIZE = 50

auth.current_viewer()
st.title("Events")
st.caption(
    f"Processed, ignored and dismissed events are kept for {data.settings().event_retention_days} "
    "days (EVENT_RETENTION_DAYS), then pruned; failed events stay until they are replayed or "
    "dismissed, and pending thin events until they are resolved. Counts, trends and health "
    "do not depend on them."
)

kind, outcome, period = st.columns(3)
event_type = kind.selectbox("Type", [ALL, *data.event_types()], key="events_type")
status = outcome.selectbox("Status", [ALL, *EVENT_STATUSES], key="events_status")
range_name, dates = paging.time_range(period, "Received", key="events_range")

pages = paging.Pages("events", (event_type, status, range_name, str(dates)))
start, end = paging.window(range_name, dates, pages.anchor)
filters = EventFilter(
    event_type=None if event_type == ALL else event_type,
    status=None if status == ALL else status,
    start=start,
    end=end,
)

page, matching = data.event_page(filters, PAGE_SIZE, pages.after)
shown_from = pages.first_shown(PAGE_SIZE)
total = f"{matching:,}" if matching <= 10_000 else "more than 10,000"
if page.rows:
    events = "event" if matching == 1 else "events"
    shown_to = shown_from + len(page.rows) - 1
    st.caption(
        f"{total} matching {events} · showing {shown_from:,}–{shown_to:,}, newest first"
        f" · from {pages.anchor:%H:%M:%S} UTC"
    )
    st.dataframe(**tables.event_table(page.rows))
    ui.in_full("Errors in full", [(row.id, row.error or "") for row in page.rows])
else:
    st.info("No events match these filters.")

pages.buttons(
    page.next_cursor, csv=data.csv_export(data.engine(), filters), file_stem="webhook-events"
)
