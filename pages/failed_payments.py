"""Payments: the failing invoices for collections, paged in SQL, linked to Stripe; Recovered."""

import streamlit as st

from dashboard import auth, data, paging, tables, ui
from finance_core.views.recovery import DEFAULT_RECOVERED_DAYS, RECOVERED_WINDOWS

PAGE_SIZE = 50
WINDOWS = {f"Last {days} days": days for days in RECOVERED_WINDOWS}

auth.current_viewer()
st.title("Payments")
st.caption(
    "Invoices whose latest payment attempt failed and that are still open: the Overview's "
    "Failed payments. Each stays here until it is paid, voided, marked uncollectible or "
    "deleted. Open an invoice or a customer in Stripe to retry the payment or get in touch."
)

pages = paging.Pages("payments", ())
page, totals = data.failing_invoices(PAGE_SIZE, pages.after)
failing = sum(total.invoices for total in totals)

if not failing:
    st.success("No failing payments: every open invoice's latest attempt succeeded.")
else:
    count, by_currency = st.columns([1, 3])
    count.metric("Failing invoices", f"{failing:,}", border=True)
    by_currency.dataframe(**tables.currency_total_table(totals))

    shown_from = pages.first_shown(PAGE_SIZE)
    if page.rows:
        shown_to = shown_from + len(page.rows) - 1
        st.caption(f"Showing {shown_from:,}–{shown_to:,} of {failing:,}, newest failure first")
        st.dataframe(**tables.failing_invoice_table(page.rows))
    else:  # the invoices of this page recovered meanwhile
        st.info("No more failing invoices past the previous page.")
    pages.buttons(
        page.next_cursor, csv=data.payments_csv_export(data.engine()), file_stem="failing-invoices"
    )

st.subheader("Recovered")
default = next(name for name, days in WINDOWS.items() if days == DEFAULT_RECOVERED_DAYS)
window = st.segmented_control("Window", list(WINDOWS), default=default, key="recovered_window")
days = WINDOWS[window or default]
recovered = data.recovered(days)
paid = sum(total.invoices for total in recovered.totals)
if paid:
    st.caption(
        f"Invoices that were failing and were paid in the last {days} days (after a retry, "
        f"a new card or a reminder): {paid:,}."
    )
    st.dataframe(**tables.recovered_table(recovered.totals))
else:
    st.caption(f"No invoice that was failing was paid in the last {days} days.")
st.write(recovered.recovery_rate_text)

st.caption(f"As of {ui.absolute_time(data.now())} · amounts in each invoice's own currency")
