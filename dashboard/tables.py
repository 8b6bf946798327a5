"""Tables for st.dataframe: small frames from finance_core's answers, with column settings."""

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from dashboard.ui import IN_FULL_HELP
from finance_core.access.audit import AuditEntry
from finance_core.access.tokens import TokenInfo
from finance_core.access.users import DashboardUser
from finance_core.alerts.store import AlertRecord
from finance_core.feed.feed_check import Destination
from finance_core.feed.rejections import ReasonCount
from finance_core.feed.sync import SyncRun
from finance_core.views.event_log import EventRow, VersionCount
from finance_core.views.payments import NO_MORE_RETRIES, CurrencyTotal, FailingInvoice
from finance_core.views.queries import PlanCount
from finance_core.views.recovery import RecoveredTotal
from finance_core.views.shares import percent_shares
from finance_core.views.trends import PlanSeries, WeekFlow

WHEN = "YYYY-MM-DD HH:mm:ss"


def plan_table(plans: Sequence[PlanCount]) -> dict[str, Any]:
    """Plan, count and share of the active subscriptions (shares adding up to 100.0%)."""
    counts = [plan.count for plan in plans]
    frame = pd.DataFrame(
        {
            "Plan": [plan.plan_name for plan in plans],
            "Count": counts,
            "Share": percent_shares(counts, decimals=1),
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
    return {
        "data": frame,
        "hide_index": True,
        # Wide enough for the longest pause reason ("paused: trial ended without a ...").
        "column_config": {"Status": st.column_config.TextColumn(width="large")},
    }


def api_version_table(versions: Sequence[VersionCount]) -> dict[str, Any]:
    """Deliveries per kind and API version."""
    frame = pd.DataFrame(
        {
            "Kind": [item.kind for item in versions],
            "API version": [
                item.api_version or ("none (thin events)" if item.kind == "thin" else "none given")
                for item in versions
            ],
            "Events": [item.count for item in versions],
        }
    )
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {"Events": st.column_config.NumberColumn(format="localized")},
    }


def destination_table(found: Sequence[Destination]) -> dict[str, Any]:
    """Our webhook endpoints and event destinations as the feed check found them at Stripe."""
    frame = pd.DataFrame(
        {
            "Kind": [item.kind for item in found],
            "Id": [item.id for item in found],
            "Status": [item.status for item in found],
            "Payload": [item.payload for item in found],
            "Events sent": [
                "all"
                if {"*", "v1.*"} & set(item.enabled_events)
                else f"{len(item.enabled_events)} types"
                for item in found
            ],
            "API version": [
                item.api_version
                or ("none (thin events)" if item.payload == "thin" else "the account's default")
                for item in found
            ],
        }
    )
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
            "Type": st.column_config.TextColumn(width="medium"),  # customer.subscription.…
            "Error": st.column_config.TextColumn(width="large", help=IN_FULL_HELP),
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
            "Error": st.column_config.TextColumn(width="large", help=IN_FULL_HELP),
        },
    }


def user_table(people: Sequence[DashboardUser]) -> dict[str, Any]:
    """Dashboard users with their roles; never a password hash."""
    frame = pd.DataFrame(
        {
            "Username": [user.username for user in people],
            "Name": [user.name for user in people],
            "Roles": [", ".join(user.roles) or "none" for user in people],
            "Added (UTC)": [user.created_at for user in people],
        }
    )
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {"Added (UTC)": st.column_config.DatetimeColumn(format=WHEN)},
    }


def token_table(infos: Sequence[TokenInfo]) -> dict[str, Any]:
    """Finance API tokens with their roles and use; never a secret."""
    frame = pd.DataFrame(
        {
            "Name": [info.name for info in infos],
            "Roles": [", ".join(info.roles) or "none" for info in infos],
            "Created (UTC)": [info.created_at for info in infos],
            "Last used (UTC)": [info.last_used_at for info in infos],
            "Revoked (UTC)": [info.revoked_at for info in infos],
        }
    )
    when = st.column_config.DatetimeColumn(format=WHEN)
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {
            "Created (UTC)": when,
            "Last used (UTC)": when,
            "Revoked (UTC)": when,
        },
    }


def audit_table(entries: Sequence[AuditEntry]) -> dict[str, Any]:
    """Audit entries, newest first as given."""
    frame = pd.DataFrame(
        {
            "Time (UTC)": [entry.recorded_at for entry in entries],
            "Actor": [entry.actor for entry in entries],
            "Action": [entry.action for entry in entries],
            "Target": [entry.target for entry in entries],
            "Detail": [entry.detail for entry in entries],
        }
    )
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {
            "Time (UTC)": st.column_config.DatetimeColumn(format=WHEN),
            "Detail": st.column_config.TextColumn(width="large", help=IN_FULL_HELP),
        },
    }


OUTCOME_WORDS = {"sent": "sent", "failed": "failed", "timed_out": "timed out"}
ALERT_STATUS_WORDS = {
    "sending": "sending",
    "sent": "sent",
    "failed": "failed",
    "unsent": "not sent (no channel)",
}


def channel_results(alert: AlertRecord) -> list[str]:
    """Each channel's result in words: the last attempt, and the failures before it."""
    by_channel: dict[int, list[Any]] = {}
    for delivery in alert.deliveries:
        by_channel.setdefault(delivery.channel, []).append(delivery)
    lines = []
    for attempts in by_channel.values():
        last = attempts[-1]
        line = f"{last.channel_name}: {OUTCOME_WORDS[last.outcome]} on attempt {last.attempt}"
        earlier = [
            f"{a.attempt}: {OUTCOME_WORDS[a.outcome]}" + (f" ({a.detail})" if a.detail else "")
            for a in attempts[:-1]
        ]
        if last.outcome != "sent" and last.detail:
            line += f" ({last.detail})"
        lines.append(line + (f"; earlier {'; '.join(earlier)}" if earlier else ""))
    return lines


def alert_table(alerts: Sequence[AlertRecord]) -> dict[str, Any]:
    """Alerts with what they said and how each channel took them."""
    frame = pd.DataFrame(
        {
            "Time (UTC)": [alert.created_at for alert in alerts],
            "Rule": [alert.rule for alert in alerts],
            "Change": [alert.kind for alert in alerts],
            "State": [alert.state for alert in alerts],
            "Status": [ALERT_STATUS_WORDS[alert.status] for alert in alerts],
            "Channels": ["\n".join(channel_results(alert)) for alert in alerts],
            "Text": [f"{alert.title}\n{alert.body}" for alert in alerts],
        }
    )
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {
            "Time (UTC)": st.column_config.DatetimeColumn(format=WHEN),
            "Channels": st.column_config.TextColumn(width="large", help=IN_FULL_HELP),
            "Text": st.column_config.TextColumn(width="large", help=IN_FULL_HELP),
        },
    }


def failing_invoice_table(rows: Sequence[FailingInvoice]) -> dict[str, Any]:
    """Failing invoices for collections, each linked to its invoice and customer in Stripe."""
    frame = pd.DataFrame(
        {
            "Invoice": [row.stripe_url for row in rows],
            "Customer": [row.customer_url for row in rows],
            "Plan": [row.plan_name or "" for row in rows],
            "Subscription": [row.subscription_id or "" for row in rows],
            "Amount due": [row.amount for row in rows],
            "Attempts": pd.array([row.attempts for row in rows], "Int64"),
            "Next retry": [
                f"{row.next_retry:%Y-%m-%d %H:%M} UTC" if row.next_retry else NO_MORE_RETRIES
                for row in rows
            ],
            "Failing since (UTC)": [row.failing_since for row in rows],
        }
    )
    return {
        "data": frame,
        "hide_index": True,
        "column_config": {
            # Each link shows the id and opens its page in Stripe.
            "Invoice": st.column_config.LinkColumn(display_text=r"/invoices/([^/?#]+)$"),
            "Customer": st.column_config.LinkColumn(
                display_text=r"/customers/([^/?#]+)$", help="The Stripe customer; opens in Stripe"
            ),
            "Plan": st.column_config.TextColumn(help="The plan the invoice bills"),
            "Amount due": st.column_config.TextColumn(help="In the invoice's own currency"),
            "Next retry": st.column_config.TextColumn(
                help="When Stripe tries the payment again; no more retries: Stripe stopped"
            ),
            "Failing since (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        },
    }


def recovered_table(totals: Sequence[RecoveredTotal]) -> dict[str, Any]:
    """Invoices that were failing and were paid, and the amount paid, per currency."""
    frame = pd.DataFrame(
        {
            "Currency": [(total.currency or "unknown").upper() for total in totals],
            "Invoices": [total.invoices for total in totals],
            "Amount paid": [total.amount for total in totals],
        }
    )
    return {"data": frame, "hide_index": True}


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
            # A plan that started in the window changed from nothing.
            "Change": [(plan.counts[-1] or 0) - (plan.counts[0] or 0) for plan in plans],
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
