"""Trends: active subscriptions per plan per day, and new and canceled subscriptions per week."""

import streamlit as st

from dashboard import auth, charts, data, tables

WINDOWS = {"30 days": 30, "90 days": 90, "365 days": 365}
DEFAULT = "90 days"

auth.current_viewer()
st.title("Trends")

window = st.segmented_control("Period", list(WINDOWS), default=DEFAULT, key="trends_window")
answer = data.subscription_trends(WINDOWS[window or DEFAULT])
per_day, per_week = answer.per_plan, answer.weekly
st.caption(
    "UTC days, dated by Stripe: a subscription is new on its own start date and canceled on "
    "its own cancel date; other changes land on the day they happened. Active means "
    f"{', '.join(data.settings().active_subscription_statuses)}."
)
if answer.reconstructed(answer.window[0]):
    st.caption(
        f"Observed since {answer.observed_since:%Y-%m-%d}. Earlier days are reconstructed from "
        "Stripe's start and cancel dates (whether a subscription was trialing or past due then "
        "is not known)."
    )

st.subheader("Active subscriptions per plan")
if per_day:
    chart, table = st.columns([3, 2])
    chart.plotly_chart(
        charts.active_per_plan_per_day(per_day, observed_since=answer.observed_since),
        width="stretch",
    )
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
