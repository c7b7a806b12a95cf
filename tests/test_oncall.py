"""Alerts and metrics without a DAG run: no secret in a message, channels that are down,
the "On call" page (docs/platform/on-call.md) naming every metric and alert. The real DAG
runs that send them: tests/test_dag.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from oncall_support import ONCALL, alert_env, closed_port, sinks

from tagging.ops import metrics
from tagging.settings import AlertSettings

ON_CALL_PAGE = Path(__file__).resolve().parents[1] / "docs" / "platform" / "on-call.md"
KINDS = ("task_failed", "validation_warning", "gate_refused", "review_backlog")


@pytest.fixture(scope="module", autouse=True)
def airflow_home(tmp_path_factory):
    """Airflow (imported by tagging.ops.alerts) keeps its folder here, not in ~/airflow."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
        yield


def test_redact_removes_credentials_and_secret_values():
    from tagging.ops.alerts import redact

    env = {"AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG", "AWS_ACCESS_KEY_ID": "AKIAIOSFODNN7",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:pg-pass-123@db/airflow",
           "AIRFLOW_CONN_TAGGING_ALERTS_WEBHOOK": json.dumps(
               {"conn_type": "http", "host": "https://hooks.slack.com/services/T/B/xyz"}),
           "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps({"host": "smtp.shop.example",
                                                    "password": "smtp-pass-456"}),
           "TAGGING_SHARD_RETRIES": "3", "AWS_ENDPOINT_URL": "http://127.0.0.1:8333"}
    text = ("denied for AKIAIOSFODNN7 / wJalrXUtnFEMI/K7MDENG; could not reach "
            "redis://:redis-pw-789@127.0.0.1:6379/0 nor db (pg-pass-123); posted to "
            "https://hooks.slack.com/services/T/B/xyz; smtp-pass-456 refused by "
            "smtp.shop.example; retried 3 times at http://127.0.0.1:8333")
    clean = redact(text, env)
    for secret in ("AKIAIOSFODNN7", "wJalrXUtnFEMI", "redis-pw-789", "pg-pass-123",
                   "hooks.slack.com", "smtp-pass-456"):
        assert secret not in clean
    assert clean.startswith("denied for … / …; could not reach redis://…@127.0.0.1:6379/0")
    # what is not secret stays: the SMTP host, the endpoint, a count
    assert "smtp.shop.example" in clean and "http://127.0.0.1:8333" in clean
    assert "retried 3 times" in clean


def test_alert_settings_off_when_unset():
    assert AlertSettings.from_env({}) == AlertSettings()
    assert AlertSettings().webhook_conn is None and AlertSettings().email_to == ()
    to = AlertSettings.from_env({"TAGGING_ALERT_EMAIL_TO": "a@x.example, b@x.example"})
    assert to.email_to == ("a@x.example", "b@x.example")


def test_a_sink_that_is_down_is_logged_and_the_others_still_get_it(monkeypatch, caplog):
    from tagging.ops.alerts import Alert, send

    alert = Alert(kind="gate_refused", severity="warning", title="the gate refused v0002",
                  details=("reason: accuracy 0.4 < 0.5",), day="2026-03-01")
    with sinks() as up:
        down = closed_port()
        for key, value in alert_env(down, up.smtp_port, up.statsd_port).items():
            monkeypatch.setenv(key, value)
        assert send(alert) == ["email"]
        assert any("not sent by webhook" in r.getMessage() for r in caplog.records)
        [body] = up.emails_about("the gate refused v0002")
        assert "reason: accuracy 0.4 &lt; 0.5" in body  # escaped, never a template
        assert up.emails[0]["To"] == ONCALL
        # and the webhook, when it is up: Slack's text plus the fields
        for key, value in alert_env(up.webhook_port, down, up.statsd_port).items():
            monkeypatch.setenv(key, value)
        assert send(alert) == ["webhook"]
    [post] = up.posts
    assert post["text"] == ("[catalogue_tagging] WARNING: the gate refused v0002\n"
                            "reason: accuracy 0.4 < 0.5")
    assert post["alert"]["kind"] == "gate_refused" and post["alert"]["day"] == "2026-03-01"


def test_no_channel_configured_sends_nothing(monkeypatch):
    from tagging.ops.alerts import Alert, send

    for key in ("TAGGING_ALERT_WEBHOOK_CONN", "TAGGING_ALERT_EMAIL_TO"):
        monkeypatch.delenv(key, raising=False)
    assert send(Alert(kind="review_backlog", severity="warning", title="t")) == []


def test_an_undocumented_metric_is_refused():
    with pytest.raises(ValueError, match="not one of the documented metrics"):
        metrics.gauge("tagging.something_new", 1.0)


def test_the_on_call_page_names_every_metric_and_alert():
    section = ON_CALL_PAGE.read_text()
    documented = set(re.findall(r"`(tagging\.[a-z_.]+)`", section))
    assert documented == set(metrics.NAMES)
    for kind in KINDS:
        assert f"`{kind}`" in section
