"""Receivers for what the people on call are sent, on 127.0.0.1 in the test process: a
webhook (HTTP), an SMTP server (aiosmtpd) and a StatsD listener (UDP); and the environment
that points a DAG run's alerts and Airflow's metrics at them (or at ports nobody listens on).
"""

from __future__ import annotations

import contextlib
import email
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tagging.ops.airflow import free_port
from tagging.settings import ALERT_BACKLOG_DAYS_ENV, ALERT_EMAIL_TO_ENV, ALERT_WEBHOOK_CONN_ENV

WEBHOOK_CONN = "tagging_alerts_webhook"
ONCALL = "oncall@shop.example"


@dataclass
class Sinks:
    """What arrived: webhook JSON bodies, emails, StatsD lines; and the ports they came on."""

    webhook_port: int
    smtp_port: int
    statsd_port: int
    posts: list[dict] = field(default_factory=list)
    emails: list[Message] = field(default_factory=list)
    statsd: list[str] = field(default_factory=list)

    def alerts(self, kind: str) -> list[dict]:
        return [p["alert"] for p in self.posts if p["alert"]["kind"] == kind]

    def metric_names(self) -> set[str]:
        return {line.split(":", 1)[0] for line in self.statsd}

    def emails_about(self, text: str) -> list[str]:
        bodies = [m.get_payload(decode=True) if not m.is_multipart() else
                  m.get_payload()[0].get_payload(decode=True) for m in self.emails]
        return [b.decode() for b in bodies if text in b.decode()]


def alert_env(webhook_port: int, smtp_port: int, statsd_port: int, *,
              backlog_days: float = 0) -> dict[str, str]:
    """Alerts by webhook and email, and Airflow's StatsD metrics, to these ports."""
    smtp = {"conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port,
            "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0,
                      "timeout": 10, "from_email": "airflow@shop.example"}}
    return {
        ALERT_WEBHOOK_CONN_ENV: WEBHOOK_CONN,
        f"AIRFLOW_CONN_{WEBHOOK_CONN.upper()}": json.dumps(
            {"conn_type": "http", "host": f"http://127.0.0.1:{webhook_port}/hooks/T0/B0/s3cr3t"}),
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(smtp),
        ALERT_EMAIL_TO_ENV: ONCALL,
        ALERT_BACKLOG_DAYS_ENV: str(backlog_days),
        "AIRFLOW__METRICS__STATSD_ON": "True",
        "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
        "AIRFLOW__METRICS__STATSD_PORT": str(statsd_port),
        "AIRFLOW__METRICS__STATSD_PREFIX": "airflow",
    }


def closed_port() -> int:
    """A port nobody listens on (TCP and UDP): a receiver that is down."""
    return free_port()


@contextlib.contextmanager
def sinks() -> Iterator[Sinks]:
    """The three receivers, running until the block ends."""
    from aiosmtpd.controller import Controller

    found = Sinks(free_port(), free_port(), 0)

    class Webhook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            found.posts.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    class Mailbox:
        async def handle_DATA(self, server, session, envelope) -> str:
            found.emails.append(email.message_from_bytes(envelope.content))
            return "250 OK"

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    found.statsd_port = udp.getsockname()[1]

    def listen() -> None:
        with contextlib.suppress(OSError):
            while True:
                found.statsd += udp.recv(65536).decode().splitlines()

    http = ThreadingHTTPServer(("127.0.0.1", found.webhook_port), Webhook)
    smtp = Controller(Mailbox(), hostname="127.0.0.1", port=found.smtp_port)
    threads = [threading.Thread(target=http.serve_forever, daemon=True),
               threading.Thread(target=listen, daemon=True)]
    smtp.start()
    for thread in threads:
        thread.start()
    try:
        yield found
    finally:
        http.shutdown()
        http.server_close()
        smtp.stop()
        udp.close()
