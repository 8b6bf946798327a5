"""Trends: active subscriptions per plan per day, and new and canceled subscriptions per week."""

import streamlit as st

from dashboard import auth, charts, data, tables

WINDOWS = {"30 days": 30, "90 days": 90, "365 days": 365}
DEFAULT = "90 days"

auth.current_viewer()
st.title("Trends")

window = st.segmented_control("Period", list(WINDOWS), default=DEFAULT, key="trends_window")
per_day, per_week = data.subscription_trends(WINDOWS[window or DEFAULT])
st.caption(
    "UTC days, from the daily history the store keeps as subscriptions change; it starts on "
    "the day the store first saw each change (a sync backfill shows on its day). Active means "
    f"{', '.join(data.settings().active_subscription_statuses)}."
)

st.subheader("Active subscriptions per plan")
if per_day:
    chart, table = st.columns([3, 2])
    chart.plotly_chart(charts.active_per_plan_per_day(per_day), width="stretch")
    table.dataframe(**tables.plan_trend_table(per_day))
else:
    st.info("No active subscriptions in this period.")

st.subheader("New and canceled subscriptions per week")
if any(week.new_subscriptions or week.cancellations for week in per_week):
    chart, table = st.columns([3, 2])
    chart.plotly_chart(charts.week_flow(per_week), width="stretch")
    table.dataframe(**tables.week_flow_table(per_week))
else:
    st.info("No subscription started or was canceled in this period.")
