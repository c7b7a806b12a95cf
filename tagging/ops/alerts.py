"""Alerts for the people on call: a webhook (JSON POST with Slack's `text`) and email.

Channels, each off while its setting is unset (tagging.settings.AlertSettings):
* webhook: `TAGGING_ALERT_WEBHOOK_CONN` names an Airflow connection whose host is the
  webhook's URL (a Slack URL is a secret: it stays in Airflow's connections or secrets
  backend);
* email: `TAGGING_ALERT_EMAIL_TO` lists recipients; the server is Airflow's SMTP connection
  (`[email] email_conn_id`, `smtp_default`), used through the SMTP provider's hook.

A failed task reaches `TaskFailed`, the DAG's `on_failure_callback` (Airflow runs it once
a task has failed for good, on the worker or, for a worker that died, in the DAG
processor); warnings are sent from the tasks that find them (tagging.ops.oncall). A
channel that fails is logged (and counted, `tagging.alerts_failed`) and the next one is
tried: an alert never changes a run's outcome.

No secret in a message: every free text (an error, a warning, a reason) goes through
`redact`, which removes URL credentials and the values of secret-looking environment
variables (AWS keys, passwords, tokens, Airflow's connections and keys). Text is never
rendered as a template (an error message could carry `{{ ... }}`).
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseNotifier

from tagging.ops import metrics
from tagging.settings import DAG_ID, AlertSettings

log = logging.getLogger(__name__)

CRITICAL, WARNING = "critical", "warning"
MAX_LINE = 300
# Environment variables whose values are secrets, and URLs with credentials in them.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|FERNET|CREDENTIAL|ACCESS_KEY|API_KEY"
                         r"|PRIVATE_KEY|^AIRFLOW_CONN_", re.IGNORECASE)
USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)[^\s/@]+@")
MIN_SECRET = 6  # shorter values ("1", "true") are not masked: they would mangle the text


@dataclass(frozen=True)
class Alert:
    """One message: what happened (title), its details, and where to look."""

    kind: str  # task_failed | validation_warning | gate_refused | review_backlog
    severity: str  # critical | warning
    title: str
    details: tuple[str, ...] = ()
    day: str | None = None
    task: str | None = None
    run_id: str | None = None
    log_url: str | None = None
    dag_id: str = DAG_ID

    def text(self) -> str:
        head = f"[{self.dag_id}] {self.severity.upper()}: {self.title}"
        tail = [f"log: {self.log_url}"] if self.log_url else []
        return "\n".join([head, *self.details, *tail])

    def payload(self) -> dict[str, Any]:
        """The webhook's JSON: Slack's `text`, and every field for other receivers."""
        return {"text": self.text(), "alert": asdict(self)}


def send(alert: Alert, settings: AlertSettings | None = None) -> list[str]:
    """Send `alert` on every configured channel; the channels that took it. Never raises."""
    try:
        settings = settings or AlertSettings.from_env()
    except Exception as e:
        log.error("alert %s not sent: %s", alert.kind, e)
        return []
    log.warning("alert %s: %s", alert.kind, alert.title)
    sent = []
    for name, deliver in _channels(settings):
        try:
            deliver(alert)
        except Exception as e:  # a channel's failure must not change the run's outcome
            log.error("alert %s not sent by %s: %s", alert.kind, name,
                      redact(one_line(e)))
            metrics.incr(metrics.ALERTS_FAILED)
        else:
            sent.append(name)
    return sent


def _channels(settings: AlertSettings) -> list[tuple[str, Any]]:
    channels = []
    if settings.webhook_conn:
        channels.append(("webhook", lambda a: post_webhook(settings.webhook_conn, a,
                                                           timeout=settings.timeout_s)))
    if settings.email_to:
        channels.append(("email", lambda a: send_email(settings.email_to, a)))
    return channels


def post_webhook(conn_id: str, alert: Alert, *, timeout: float) -> None:
    """POST the alert's JSON to the URL in the connection's host."""
    from airflow.sdk import Connection

    url = Connection.get(conn_id).host or ""
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"connection {conn_id!r}: its host must be the webhook's http(s) URL")
    request = urllib.request.Request(url, data=json.dumps(alert.payload()).encode(),
                                     headers={"Content-Type": "application/json"},
                                     method="POST")
    with urllib.request.urlopen(request, timeout=timeout):  # HTTPError for 4xx/5xx
        pass


def send_email(to: Iterable[str], alert: Alert) -> None:
    """Email the alert through Airflow's SMTP connection (plain text in a <pre>)."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook
    from airflow.sdk.configuration import conf

    conn_id = conf.get("email", "email_conn_id", fallback=SmtpHook.default_conn_name)
    with SmtpHook(smtp_conn_id=conn_id) as hook:
        hook.send_email_smtp(to=list(to), subject=alert.text().splitlines()[0],
                             html_content=f"<pre>{html.escape(alert.text())}</pre>",
                             from_email=conf.get("email", "from_email", fallback=None))


# ---------------------------------------------------------------- failed tasks


class TaskFailed(BaseNotifier):
    """on_failure_callback: a task failed for good (its retries spent) -> a critical alert
    with the day, the task, the one-line error and the log's URL."""

    def notify(self, context: Mapping[str, Any]) -> None:
        try:
            alert = failure_alert(context)
        except Exception as e:  # an odd context must not hide the failure: log it
            log.error("no alert for the failed task: %s", e)
            return
        send(alert)


def failure_alert(context: Mapping[str, Any]) -> Alert:
    ti = context["ti"]
    index = getattr(ti, "map_index", None)
    task = ti.task_id + (f"[{index}]" if index is not None and index >= 0 else "")
    error = context.get("exception")
    if error is None:
        line = ("no error reached the callback (a worker that died or a task that was "
                "killed): see the log")
    else:  # Airflow's own exceptions (AirflowFailException...) carry the step's message
        kind = "" if type(error).__module__.startswith("airflow") else f"{type(error).__name__}: "
        line = redact(kind + one_line(error))
    day = run_day(context)
    return Alert(kind="task_failed", severity=CRITICAL,
                 title=f"{task} failed" + (f" for {day}" if day else ""),
                 details=(f"error: {line}", f"run: {context.get('run_id')}, try "
                          f"{getattr(ti, 'try_number', '?')}"),
                 day=day, task=task, run_id=context.get("run_id"),
                 log_url=getattr(ti, "log_url", None))


def run_day(context: Mapping[str, Any]) -> str | None:
    """The day a run tags (its 'partition' param, else its logical date), if it has one."""
    from tagging.errors import TaggingError
    from tagging.pipeline.tag import choose_partition

    params = context.get("params") or {}
    try:
        return choose_partition(params.get("partition"), context.get("logical_date"),
                                context.get("data_interval_start"))[0]
    except TaggingError:
        return None


# ---------------------------------------------------------------- no secrets


def one_line(error: BaseException | str) -> str:
    """The first line of an error, at most MAX_LINE characters."""
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return first if len(first) <= MAX_LINE else first[:MAX_LINE - 1] + "…"


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """`text` without URL credentials nor the values of secret environment variables."""
    text = USERINFO.sub(lambda m: m["scheme"] + "…@", text)
    for secret in sorted(secrets_of(os.environ if env is None else env), key=len,
                         reverse=True):
        text = text.replace(secret, "…")
    return text


def secrets_of(env: Mapping[str, str]) -> set[str]:
    """Values of secret-looking variables, and the passwords inside URL-valued ones."""
    found = set()
    for name, value in env.items():
        if SECRET_NAME.search(name):
            found.add(value)
            if value.lstrip().startswith("{"):  # an AIRFLOW_CONN_ in JSON form
                found |= _json_secrets(value)
        for match in re.finditer(r"://[^\s/@:]*:([^\s/@]+)@", value):
            found.add(match[1])
    return {s for s in found if len(s) >= MIN_SECRET}


def _json_secrets(value: str) -> set[str]:
    try:
        conn = json.loads(value)
    except ValueError:
        return set()
    host = str(conn.get("host") or "")  # a webhook's URL is its secret
    return {str(v) for v in (conn.get("password"), host if "://" in host else None) if v}
