"""Tables for st.dataframe: small frames from finance_core's answers, with column settings."""

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from finance_core.event_log import EventRow
from finance_core.payments import CurrencyTotal, FailingInvoice
from finance_core.queries import PlanCount
from finance_core.rejections import ReasonCount
from finance_core.sync import SyncRun
from finance_core.trends import PlanSeries, WeekFlow


def plan_table(plans: Sequence[PlanCount]) -> dict[str, Any]:
    """Plan, count and share of the active subscriptions."""
    total = sum(plan.count for plan in plans) or 1
    frame = pd.DataFrame(
        {
            "Plan": [plan.plan_name for plan in plans],
            "Count": [plan.count for plan in plans],
            "Share": [100 * plan.count / total for plan in plans],
        }
    )
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {
            "Count": st.column_config.NumberColumn(format="localized"),
            "Share": st.column_config.ProgressColumn(format="%.1f%%", min_value=0, max_value=100),
        },
    }


def status_table(counts: dict[str, int]) -> dict[str, Any]:
    """Subscriptions per status."""
    frame = pd.DataFrame({"Status": list(counts), "Subscriptions": list(counts.values())})
    return {"data": frame, "hide_index": True}


def rejection_table(reasons: Sequence[ReasonCount]) -> dict[str, Any]:
    """Rejected deliveries per reason, with the latest time each was seen."""
    frame = pd.DataFrame(
        {
            "Reason": [item.reason for item in reasons],
            "Rejected": [item.count for item in reasons],
            "Last rejected (UTC)": [item.last_rejected_at for item in reasons],
        }
    )
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {
            "Last rejected (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")
        },
    }


def event_table(rows: Sequence[EventRow], *, with_error: bool = True) -> dict[str, Any]:
    """Events, each linked to its page in the Stripe Dashboard."""
    frame = pd.DataFrame(
        {
            "Received (UTC)": [row.first_received_at for row in rows],
            "Type": [row.type for row in rows],
            "Status": [row.status for row in rows],
            "Event": [row.stripe_url for row in rows],
            "Created (UTC)": [row.created for row in rows],
            "Attempts": [row.attempts for row in rows],
            "Deliveries": [row.deliveries for row in rows],
            "Error": [row.error or "" for row in rows],
        }
    )
    if not with_error:
        frame = frame.drop(columns="Error")
    when = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {
            "Received (UTC)": when,
            "Created (UTC)": when,
            # The link shows the event id and opens the event in Stripe.
            "Event": st.column_config.LinkColumn(display_text=r"/events/([^/?#]+)$"),
            "Error": st.column_config.TextColumn(width="large"),
        },
    }


def sync_run_table(runs: Sequence[SyncRun]) -> dict[str, Any]:
    """Sync runs with what each changed, and why a run stopped."""
    frame = pd.DataFrame(
        {
            "Started (UTC)": [run.started_at for run in runs],
            "Finished (UTC)": [run.finished_at for run in runs],
            "Status": [run.status for run in runs],
            "Triggered by": [run.triggered_by for run in runs],
            # Empty while a run goes on, or for one whose process stopped before its end.
            "Changes": pd.array([r.report.changed if r.report else None for r in runs], "Int64"),
            "Failures": pd.array([r.report.failed if r.report else None for r in runs], "Int64"),
            "Error": [run.error or "" for run in runs],
        }
    )
    when = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {
            "Started (UTC)": when,
            "Finished (UTC)": when,
            "Changes": st.column_config.NumberColumn(format="localized"),
            "Failures": st.column_config.NumberColumn(format="localized"),
            "Error": st.column_config.TextColumn(width="large"),
        },
    }


def failing_invoice_table(rows: Sequence[FailingInvoice]) -> dict[str, Any]:
    """Failing invoices, each linked to its page in the Stripe Dashboard."""
    frame = pd.DataFrame(
        {
            "Invoice": [row.stripe_url for row in rows],
            "Subscription": [row.subscription_id or "" for row in rows],
            "Plan": [row.plan_name or "" for row in rows],
            "Amount due": [row.amount for row in rows],
            "Attempts": pd.array([row.attempts for row in rows], "Int64"),
            "Failing since (UTC)": [row.failing_since for row in rows],
        }
    )
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {
            # The link shows the invoice id and opens the invoice in Stripe.
            "Invoice": st.column_config.LinkColumn(display_text=r"/invoices/([^/?#]+)$"),
            "Amount due": st.column_config.TextColumn(help="In the invoice's own currency"),
            "Failing since (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    }


def currency_total_table(totals: Sequence[CurrencyTotal]) -> dict[str, Any]:
    """Failing invoices and the amount they leave unpaid, per currency."""
    frame = pd.DataFrame(
        {
            "Currency": [(total.currency or "unknown").upper() for total in totals],
            "Invoices": [total.invoices for total in totals],
            "Amount due": [total.amount for total in totals],
        }
    )
    return {"data": frame, "hide_index": True}


def plan_trend_table(plans: Sequence[PlanSeries]) -> dict[str, Any]:
    """Per plan: active subscriptions on the window's first and last days, and the change."""
    first_day, last_day = plans[0].days[0], plans[0].days[-1]
    frame = pd.DataFrame(
        {
            "Plan": [plan.plan_name for plan in plans],
            f"{first_day:%Y-%m-%d}": [plan.counts[0] for plan in plans],
            f"{last_day:%Y-%m-%d}": [plan.counts[-1] for plan in plans],
            "Change": [plan.counts[-1] - plan.counts[0] for plan in plans],
        }
    )
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {"Change": st.column_config.NumberColumn(format="%+d")},
    }


def week_flow_table(weeks: Sequence[WeekFlow]) -> dict[str, Any]:
    """New and canceled subscriptions per week, newest week first."""
    ordered = list(reversed(weeks))
    frame = pd.DataFrame(
        {
            "Week of": [week.week for week in ordered],
            "New": [week.new_subscriptions for week in ordered],
            "Canceled": [week.cancellations for week in ordered],
            "Net": [week.net for week in ordered],
        }
    )
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {
            "Week of": st.column_config.DateColumn(format="YYYY-MM-DD"),
            "Net": st.column_config.NumberColumn(format="%+d"),
        },
    }
