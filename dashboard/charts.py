"""Plotly figures for the pages, built from finance_core's answers (a few rows each)."""

from collections.abc import Sequence
from datetime import date, datetime, timedelta

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import PLOTLY_WARM_UP_KEY
from dashboard.text import chart_label
from dashboard.ui import STATUS_COLORS
from finance_core.store.models import EVENT_STATUSES
from finance_core.views.event_log import HourlyCount
from finance_core.views.queries import PlanCount
from finance_core.views.shares import percent_shares
from finance_core.views.trends import PlanSeries, WeekFlow

PLAN_COLOR = "#1f6feb"
FONT = {"family": "Inter, Source Sans Pro, sans-serif", "size": 13}


def load_plotly_early() -> None:
    """Have the browser load plotly now, drawing an empty chart off-screen.

    Streamlit fetches and evaluates its 4.7 MB plotly bundle the first time a page draws a
    chart: about a second of the browser's main thread here. Called on the sign-in page, this
    moves that second to while the viewer types, so the Overview's chart follows the sign-in.
    An empty table beside it does the same for the data grid's 1.2 MB of scripts, which the
    Payments page's table would otherwise wait for.
    """
    st.html(
        f"<style>.st-key-{PLOTLY_WARM_UP_KEY} {{position: absolute; left: -10000px; width: 320px; "
        "height: 1px; overflow: hidden;}}</style>"
    )
    with st.container(key=PLOTLY_WARM_UP_KEY):
        st.plotly_chart(_layout(go.Figure(), height=40), config={"staticPlot": True})
        st.dataframe(pd.DataFrame({"": []}), height=40)


def _layout(figure: go.Figure, *, height: int) -> go.Figure:
    figure.update_layout(
        height=height,
        margin={"l": 8, "r": 8, "t": 8, "b": 8},
        font=FONT,
        plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)",
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    )
    return figure


def plan_distribution(plans: Sequence[PlanCount]) -> go.Figure:
    """Active subscriptions per plan as horizontal bars, the largest on top."""
    ordered = list(reversed(plans))  # plotly draws the first bar at the bottom
    shares = percent_shares([plan.count for plan in ordered])  # adding up to 100
    figure = go.Figure(
        go.Bar(
            x=[plan.count for plan in ordered],
            y=[chart_label(plan.plan_name) for plan in ordered],  # names come from Stripe
            orientation="h",
            marker_color=PLAN_COLOR,
            text=[
                f"{plan.count:,} ({share:.0f}%)"
                for plan, share in zip(ordered, shares, strict=True)
            ],
            textposition="auto",
            hovertemplate="%{y}: %{x:,} subscriptions<extra></extra>",
        )
    )
    figure.update_xaxes(title_text="Active subscriptions", gridcolor="#e6e9ef")
    figure.update_yaxes(automargin=True)
    return _layout(figure, height=max(220, 48 * len(plans) + 80))


def status_breakdown(counts: dict[str, int]) -> go.Figure:
    """All subscriptions per status."""
    figure = go.Figure(
        go.Bar(
            x=[chart_label(status) for status in counts],
            y=list(counts.values()),
            marker_color="#6e7781",
            text=[f"{count:,}" for count in counts.values()],
            textposition="auto",
            hovertemplate="%{x}: %{y:,}<extra></extra>",
        )
    )
    figure.update_yaxes(title_text="Subscriptions", gridcolor="#e6e9ef")
    return _layout(figure, height=300)


def events_per_hour(counts: Sequence[HourlyCount], *, end: datetime, hours: int) -> go.Figure:
    """Events per hour stacked by outcome; hours without events show as empty, not missing."""
    hours_index = pd.date_range(end=end - timedelta(hours=1), periods=hours, freq="h")
    frame = pd.DataFrame(
        [(item.hour, item.status, item.count) for item in counts],
        columns=["hour", "status", "events"],
    )
    table = pd.DataFrame(index=hours_index)
    if not frame.empty:
        table = (
            frame.pivot_table(index="hour", columns="status", values="events", aggfunc="sum")
            .reindex(hours_index)
            .fillna(0)
        )
    figure = go.Figure()
    for status in EVENT_STATUSES:
        values = table[status] if status in table else pd.Series(0, index=hours_index)
        figure.add_bar(
            x=hours_index,
            y=values,
            name=status,
            marker_color=STATUS_COLORS[status],
            hovertemplate="%{x|%Y-%m-%d %H:00} UTC: %{y:,} " + status + "<extra></extra>",
        )
    figure.update_layout(barmode="stack", bargap=0.1)
    figure.update_yaxes(title_text="Events", gridcolor="#e6e9ef", rangemode="tozero")
    figure.update_xaxes(title_text="Hour (UTC)")
    return _layout(figure, height=320)


def active_per_plan_per_day(
    plans: Sequence[PlanSeries], *, observed_since: date | None = None
) -> go.Figure:
    """Active subscriptions of each plan at the end of each day, a line per plan; a line marks
    the day the history is observed from, when it is in the window."""
    figure = go.Figure()
    for plan in plans:
        name = chart_label(plan.plan_name)
        figure.add_scatter(
            x=list(plan.days),
            y=list(plan.counts),  # None before the plan's first subscription: not drawn
            name=name,
            mode="lines",
            hovertemplate="%{x|%Y-%m-%d}: %{y:,} active on " + name + "<extra></extra>",
        )
    if plans and observed_since is not None and plans[0].days[0] < observed_since:
        figure.add_vline(x=observed_since, line_dash="dot", line_color="#6e7781")
        figure.add_annotation(
            x=observed_since,
            y=1,
            yref="paper",
            text="observed from here; earlier days reconstructed",
            showarrow=False,
            xanchor="left",
            font={"size": 11, "color": "#6e7781"},
        )
    figure.update_yaxes(title_text="Active subscriptions", gridcolor="#e6e9ef", rangemode="tozero")
    figure.update_xaxes(title_text="Day (UTC)")
    return _layout(figure, height=340)


def week_flow(weeks: Sequence[WeekFlow]) -> go.Figure:
    """New and canceled subscriptions per week, side by side."""
    starts = [week.week for week in weeks]
    figure = go.Figure()
    figure.add_bar(
        x=starts,
        y=[week.new_subscriptions for week in weeks],
        name="new",
        marker_color=STATUS_COLORS["processed"],
        hovertemplate="Week of %{x|%Y-%m-%d}: %{y:,} new<extra></extra>",
    )
    figure.add_bar(
        x=starts,
        y=[week.cancellations for week in weeks],
        name="canceled",
        marker_color=STATUS_COLORS["failed"],
        hovertemplate="Week of %{x|%Y-%m-%d}: %{y:,} canceled<extra></extra>",
    )
    figure.update_layout(barmode="group", bargap=0.2)
    figure.update_yaxes(title_text="Subscriptions", gridcolor="#e6e9ef", rangemode="tozero")
    figure.update_xaxes(title_text="Week (UTC, from Monday)")
    return _layout(figure, height=300)
