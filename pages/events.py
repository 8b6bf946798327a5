"""Events: the webhook event log, filtered and paged in SQL, exportable as CSV."""

from datetime import UTC, datetime, time, timedelta

import streamlit as st

from dashboard import auth, data, tables, ui
from finance_core.event_log import Cursor, EventFilter
from finance_core.models import EVENT_STATUSES

ALL = "All"
PAGE_SIZE = 50
RANGES = {
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "All time": None,
    "Custom (UTC dates)": None,
}
# Pages already seen (cursors), kept while the filters stay the same.
TRAIL, FILTER_KEY, ANCHOR = "events_trail", "events_filter_key", "events_anchor"

auth.current_viewer()
st.title("Events")
st.caption(
    f"Processed, ignored and dismissed events are kept for {data.settings().event_retention_days} "
    "days (EVENT_RETENTION_DAYS), then pruned; failed events stay until they are replayed or "
    "dismissed. Counts, trends and health do not depend on them."
)

kind, outcome, period = st.columns(3)
event_type = kind.selectbox("Type", [ALL, *data.event_types()], key="events_type")
status = outcome.selectbox("Status", [ALL, *EVENT_STATUSES], key="events_status")
range_name = period.selectbox("Received", list(RANGES), index=1, key="events_range")
dates = None
if range_name == "Custom (UTC dates)":
    today = datetime.now(UTC).date()
    dates = st.date_input("From and to (inclusive)", (today - timedelta(days=7), today))

chosen = (event_type, status, range_name, str(dates))
if st.session_state.get(FILTER_KEY) != chosen or ANCHOR not in st.session_state:
    # New filters: back to the first page, with "now" fixed so the window does not slide
    # under the pages being read.
    st.session_state[FILTER_KEY] = chosen
    st.session_state[ANCHOR] = data.now()
    st.session_state[TRAIL] = []

anchor: datetime = st.session_state[ANCHOR]
start = end = None
if range_name == "Custom (UTC dates)":
    if isinstance(dates, tuple) and len(dates) == 2:
        start = datetime.combine(dates[0], time(), UTC)
        end = datetime.combine(dates[1] + timedelta(days=1), time(), UTC)
elif RANGES[range_name] is not None:
    start = anchor - RANGES[range_name]  # open-ended: newer events join the first page
filters = EventFilter(
    event_type=None if event_type == ALL else event_type,
    status=None if status == ALL else status,
    start=start,
    end=end,
)

trail: list[Cursor] = st.session_state[TRAIL]
page, matching = data.event_page(filters, PAGE_SIZE, trail[-1] if trail else None)
shown_from = len(trail) * PAGE_SIZE + 1
total = f"{matching:,}" if matching <= 10_000 else "more than 10,000"
if page.rows:
    events = "event" if matching == 1 else "events"
    shown_to = shown_from + len(page.rows) - 1
    st.caption(
        f"{total} matching {events} · showing {shown_from:,}–{shown_to:,}, newest first"
        f" · from {anchor:%H:%M:%S} UTC"
    )
    st.dataframe(**tables.event_table(page.rows))
else:
    st.info("No events match these filters.")


def refresh() -> None:
    st.session_state.pop(ANCHOR, None)
    data.forget_cached_reads()


export = ui.keyset_pager(TRAIL, page.next_cursor, refresh=refresh)
export.download_button(
    "Download CSV",
    data=data.csv_export(data.engine(), filters),
    file_name=f"webhook-events-{anchor:%Y%m%dT%H%M%SZ}.csv",
    mime="text/csv",
    icon=":material/download:",
    on_click="ignore",
)
