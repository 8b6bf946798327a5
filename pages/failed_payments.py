"""Payments: the failing invoices behind "Failed payments", paged in SQL, linked to Stripe."""

import streamlit as st

from dashboard import auth, data, paging, tables, ui

PAGE_SIZE = 50

auth.current_viewer()
st.title("Payments")
st.caption(
    "Invoices whose latest payment attempt failed and that are still open: the Overview's "
    "Failed payments. Each stays here until it is paid, voided, marked uncollectible or "
    "deleted. Open one in Stripe to retry the payment or see the customer."
)

pages = paging.Pages("payments", ())
page, totals = data.failing_invoices(PAGE_SIZE, pages.after)
failing = sum(total.invoices for total in totals)

if not failing:
    st.success("No failing payments: every open invoice's latest attempt succeeded.")
    st.stop()

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
st.caption(f"As of {ui.absolute_time(data.now())} · amounts in each invoice's own currency")
