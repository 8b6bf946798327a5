"""The admins' Alerts page through AppTest: history with each channel's result, the channels
masked, and Send test alert reaching a real HTTP receiver and SMTP server; no one else sees it."""

from datetime import UTC, datetime

import pytest

from finance_core.access import audit
from finance_core.alerts.job import evaluate, send_test_alert
from finance_core.settings import get_settings
from tests.conftest import make_settings
from tests.support import apptest
from tests.support.apptest import forget, signed_in, texts
from tests.support.receivers import SMTP_PASSWORD, json_receiver, smtp_receiver

ALERTS_PAGE = "pages/alert_history.py"
HOOK_PASSWORD = "page-hook-pass-5e2d"

dashboard = apptest.dashboard  # the fixture: the test store, its users, no cache left over


def alerts_page(username: str = "ada"):
    return signed_in(username).switch_page(ALERTS_PAGE).run()


def button(at, label):
    return next(b for b in at.button if b.label == label)


def test_only_admins_get_the_alerts_page(dashboard):
    for username in ("fiona", "nora"):
        with pytest.raises(ValueError):
            signed_in(username).switch_page(ALERTS_PAGE)
    at = alerts_page()
    assert not at.exception
    assert [title.value for title in at.title] == ["Alerts"]


def test_without_channels_the_page_says_so_and_keeps_the_alerts(dashboard, database_url):
    at = alerts_page()
    assert "No alert channel configured (ALERT_URLS is empty)" in texts(at)
    assert "No alert yet" in texts(at)
    assert button(at, "Send test alert").disabled

    evaluate(engine=dashboard, settings=make_settings(database_url), now=datetime.now(UTC))
    forget()  # the history is cached for a few seconds
    at = alerts_page()
    (history,) = (frame.value for frame in at.dataframe)
    row = history.iloc[0]
    assert (row["Rule"], row["Change"], row["State"]) == ("webhook_health", "started", "delayed")
    assert row["Status"] == "not sent (no channel)"
    assert "Webhook health is delayed: no webhook has been received yet" in row["Text"]


def test_channels_are_masked_and_the_test_alert_reaches_them(dashboard, monkeypatch):
    with json_receiver() as hook, smtp_receiver() as mail:
        hook_url = hook.url(credentials=f"finance:{HOOK_PASSWORD}")
        monkeypatch.setenv("ALERT_URLS", f"{hook_url},{mail.url()}")
        get_settings.cache_clear()  # as a restart after setting it would
        at = alerts_page()
        assert not at.exception
        shown = texts(at)
        assert f"json://127.0.0.1:{hook.port}" in shown
        assert f"mailto://127.0.0.1:{mail.port}" in shown
        assert HOOK_PASSWORD not in shown and SMTP_PASSWORD not in shown

        button(at, "Send test alert").click().run()
        assert not at.exception
        assert at.success[0].value.startswith("Test alert sent to every channel")
        assert len(hook.messages()) == 1 and len(mail.wait_for(1)) == 1
        assert hook.messages()[0].startswith("PenguinMails Finance: test alert")
    (history,) = (frame.value for frame in at.dataframe)
    row = history.iloc[0]
    assert (row["Rule"], row["Change"], row["Status"]) == ("test", "test", "sent")
    assert f"json://127.0.0.1:{hook.port}: sent on attempt 1" in row["Channels"]
    assert f"mailto://127.0.0.1:{mail.port}: sent on attempt 1" in row["Channels"]
    assert HOOK_PASSWORD not in "\n".join(history.astype(str).to_numpy().ravel())
    entries = audit.entries(engine=dashboard, filters=audit.AuditFilter(action="alert_test_sent"))
    assert [(e.actor, e.detail) for e in entries] == [("ada", "to 2 channels")]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_history_pages_through_older_alerts(dashboard, database_url):
    settings = make_settings(database_url)
    for _ in range(53):
        send_test_alert(engine=dashboard, settings=settings, actor="cli:ops", now=datetime.now(UTC))
    at = alerts_page()
    assert len(at.dataframe[0].value) == 50
    button(at, "Older →").click().run()
    assert len(at.dataframe[0].value) == 3
    button(at, "← Newer").click().run()
    assert len(at.dataframe[0].value) == 50


def test_send_digest_now_reaches_the_digest_channel_and_is_kept(dashboard, monkeypatch):
    at = alerts_page()
    assert "The morning digest is off (DIGEST_AT is empty)" in texts(at)
    assert button(at, "Send digest now").disabled  # no channel at all
    with json_receiver() as hook:
        monkeypatch.setenv("DIGEST_AT", "08:00 Europe/Berlin")
        monkeypatch.setenv("DIGEST_URLS", hook.url(credentials=f"finance:{HOOK_PASSWORD}"))
        get_settings.cache_clear()
        at = alerts_page()
        assert f"Sent once a day at `08:00 Europe/Berlin` to `json://127.0.0.1:{hook.port}`" in (
            texts(at)
        )
        button(at, "Send digest now").click().run()
        assert not at.exception
        assert at.success[0].value.startswith("Digest sent to every channel")
        (message,) = hook.wait_for(1)
    assert message.startswith("PenguinMails Finance: morning digest for ")
    assert "Active subscriptions: 0 (no change since yesterday).\n" in message
    assert message in [text.value for text in at.text]
    (history,) = (frame.value for frame in at.dataframe)
    row = history.iloc[0]
    assert (row["Rule"], row["Change"], row["Status"]) == ("digest", "digest", "sent")
    entries = audit.entries(engine=dashboard, filters=audit.AuditFilter(action="digest_sent"))
    assert [(e.actor, e.detail) for e in entries] == [("ada", "to 1 channel")]
