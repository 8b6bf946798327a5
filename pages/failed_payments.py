"""Payments: the failing invoices behind "Failed payments", paged in SQL, linked to Stripe."""

import streamlit as st

from dashboard import auth, data, tables, ui
from finance_core.payments import Cursor

PAGE_SIZE = 50
TRAIL = "payments_trail"  # the cursors of the pages already seen

auth.current_viewer()
st.title("Payments")
st.caption(
    "Invoices whose latest payment attempt failed and that are still open: the Overview's "
    "Failed payments. Each stays here until it is paid, voided, marked uncollectible or "
    "deleted. Open one in Stripe to retry the payment or see the customer."
)

trail: list[Cursor] = st.session_state.setdefault(TRAIL, [])
page, totals = data.failing_invoices(PAGE_SIZE, trail[-1] if trail else None)
failing = sum(total.invoices for total in totals)

if not failing:
    st.success("No failing payments: every open invoice's latest attempt succeeded.")
    st.stop()

count, by_currency = st.columns([1, 3])
count.metric("Failing invoices", f"{failing:,}", border=True)
by_currency.dataframe(**tables.currency_total_table(totals))

shown_from = len(trail) * PAGE_SIZE + 1
if page.rows:
    shown_to = shown_from + len(page.rows) - 1
    st.caption(f"Showing {shown_from:,}–{shown_to:,} of {failing:,}, newest failure first")
    st.dataframe(**tables.failing_invoice_table(page.rows))
else:  # the invoices of this page recovered meanwhile
    st.info("No more failing invoices past the previous page.")


def refresh() -> None:
    st.session_state[TRAIL] = []
    data.forget_cached_reads()


export = ui.keyset_pager(TRAIL, page.next_cursor, refresh=refresh)
export.download_button(
    "Download CSV",
    data=data.payments_csv_export(data.engine()),
    file_name=f"failing-invoices-{data.now():%Y%m%dT%H%M%SZ}.csv",
    mime="text/csv",
    icon=":material/download:",
    on_click="ignore",
)
st.caption(f"As of {ui.absolute_time(data.now())} · amounts in each invoice's own currency")
