"""Stripe sync (admins): reconcile the store from Stripe's API now, and the latest runs."""

import streamlit as st

from dashboard import auth, data, tables, ui
from dashboard.sync_job import SyncJob
from dashboard.text import md

viewer = auth.current_admin("Only an admin can run a Stripe sync.")

st.title("Stripe sync")
st.caption(
    "Webhooks keep the numbers current; a sync is the backstop after an outage or for a new "
    "store. It recovers the events Stripe could not deliver in the last 30 days, then reads "
    "every product, price, subscription and open invoice and applies them by the same rules "
    "as webhooks (a newer webhook always wins). It is `python -m finance_core sync`, and "
    "running it again is safe."
)


def count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")


def follow(job: SyncJob) -> None:
    """The run's progress as it goes, then what it changed or why it stopped."""
    st.caption(f"Started by {md(job.triggered_by)} at {ui.absolute_time(job.started_at)}.")
    with st.status("Syncing from Stripe…", expanded=True) as box:
        for lines in job.follow():
            for line in lines:
                box.markdown(md(line))
            seconds = (data.now() - job.started_at).total_seconds()
            box.update(label=f"Syncing from Stripe… {seconds:.0f} s")
        report = job.report
        if report is None:
            box.update(label="Sync stopped", state="error")
        else:
            box.update(label="Sync finished", state="complete", expanded=False)
    if report is None:
        st.error(f"The sync stopped: {md(job.error)}", icon=":material/sync_problem:")
        st.caption("What it read until then is kept; running it again is safe.")
        return
    summary = f"{count(report.changed, 'change')}, {count(report.failed, 'failure')}"
    if report.errors:
        problems = "\n".join(f"- {md(error)}" for error in report.errors)
        st.warning(f"Sync finished with problems ({summary}):\n\n{problems}")
    else:
        st.success(f"Sync finished: {summary}. Every page now shows the synced numbers.")
    done = [line for line in report.lines() if not line.startswith("error:")]
    st.markdown("\n".join(f"- {md(line)}" for line in done))


configured = data.stripe_configured()
if not configured:
    st.info(
        "Sync is not configured. Set **STRIPE_API_KEY** in the dashboard's environment to a "
        "restricted key with read access to products, prices, subscriptions, invoices and "
        "events (Stripe Dashboard → Developers → API keys), then restart the dashboard.",
        icon=":material/key:",
    )
job = data.running_sync()
clicked = st.button(
    "Sync now",
    type="primary",
    icon=":material/sync:",
    disabled=not configured or job is not None,
)
if clicked:
    job = data.start_sync(actor=viewer.username)
if job is not None:
    follow(job)

st.subheader("Latest runs")
runs = data.sync_runs()
if not runs:
    st.info("No sync has run yet. Runs from this page and from the command line show here.")
else:
    st.dataframe(**tables.sync_run_table(runs))
    ui.in_full(
        "Errors in full",
        [(f"Run started {ui.absolute_time(run.started_at)}", run.error or "") for run in runs],
    )
    latest = next((run for run in runs if run.report is not None), None)
    # For whoever comes back later; a run followed above has just shown its report.
    if job is None and latest is not None and latest.report is not None:
        with st.expander(f"Report of the run started {ui.absolute_time(latest.started_at)}"):
            st.markdown("\n".join(f"- {md(line)}" for line in latest.report.lines()))
