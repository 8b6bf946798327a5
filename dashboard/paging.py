"""Time ranges and keyset pages for the log pages (Events, Audit log), kept in the session."""

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from dashboard import data

CUSTOM = "Custom (UTC dates)"
RANGES = {
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(days=1),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "All time": None,
    CUSTOM: None,
}


def time_range(column: DeltaGenerator, label: str, *, key: str, index: int = 1) -> tuple[str, Any]:
    """The range select box, and for a custom range the dates (from and to, inclusive)."""
    range_name = column.selectbox(label, list(RANGES), index=index, key=key)
    dates = None
    if range_name == CUSTOM:
        today = datetime.now(UTC).date()
        dates = st.date_input("From and to (inclusive)", (today - timedelta(days=7), today))
    return range_name, dates


def window(
    range_name: str, dates: Any, anchor: datetime
) -> tuple[datetime | None, datetime | None]:
    """The half-open UTC range [start, end) a range names; open-ended ranges end at now."""
    if range_name == CUSTOM:
        if isinstance(dates, tuple) and len(dates) == 2:
            return _midnight(dates[0]), _midnight(dates[1] + timedelta(days=1))
        return None, None
    span = RANGES[range_name]
    # Open-ended: newer entries join the first page.
    return (anchor - span if span is not None else None), None


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), UTC)


class Pages:
    """The cursors of the pages seen and the time the listing started, while filters stay."""

    def __init__(self, key: str, chosen: tuple[object, ...]) -> None:
        self.trail_key, self.anchor_key = f"{key}_trail", f"{key}_anchor"
        filter_key = f"{key}_filter_key"
        if st.session_state.get(filter_key) != chosen or self.anchor_key not in st.session_state:
            # New filters: back to the first page, with "now" fixed so the window does not
            # slide under the pages being read.
            st.session_state[filter_key] = chosen
            st.session_state[self.anchor_key] = data.now()
            st.session_state[self.trail_key] = []

    @property
    def anchor(self) -> datetime:
        return st.session_state[self.anchor_key]

    @property
    def trail(self) -> list[Any]:
        return st.session_state[self.trail_key]

    @property
    def after(self) -> Any:
        """Where the page to show starts: after the last row of the previous one."""
        return self.trail[-1] if self.trail else None

    def first_shown(self, page_size: int) -> int:
        return len(self.trail) * page_size + 1

    def buttons(self, next_cursor: Any, *, csv: Callable[[], bytes], file_stem: str) -> None:
        """Newer, Older, Refresh, and Download CSV of everything the filters match."""

        def newer() -> None:
            st.session_state[self.trail_key] = self.trail[:-1]

        def older() -> None:
            st.session_state[self.trail_key] = [*self.trail, next_cursor]

        def refresh() -> None:
            st.session_state.pop(self.anchor_key, None)
            data.forget_cached_reads()

        back, forward, again, export = st.columns([1, 1, 1, 3])
        back.button("← Newer", on_click=newer, disabled=not self.trail)
        forward.button("Older →", on_click=older, disabled=next_cursor is None)
        again.button("Refresh", on_click=refresh, icon=":material/refresh:")
        export.download_button(
            "Download CSV",
            data=csv,
            file_name=f"{file_stem}-{self.anchor:%Y%m%dT%H%M%SZ}.csv",
            mime="text/csv",
            icon=":material/download:",
            on_click="ignore",
        )
