"""The job's metrics, sent through Airflow's own metrics settings (`[metrics]`: `statsd_on`,
`statsd_host`, `statsd_port`, `statsd_prefix`, or `otel_on`...), so they reach whatever
collects Airflow's metrics already. Off (nothing sent) when Airflow's metrics are off.

The names below are stable: dashboards and alert rules are written against them (StatsD
puts Airflow's `statsd_prefix`, `airflow` by default, in front: `airflow.tagging.rows`).
A metric that cannot be sent is logged; it never fails a task.
"""

from __future__ import annotations

import functools
import logging
import os
from datetime import timedelta
from typing import Any

log = logging.getLogger(__name__)

# name -> (kind, meaning); docs/platform/on-call.md lists them (tests/test_oncall.py keeps it so).
ROWS = "tagging.rows"
TAGGED = "tagging.tagged"
ERRORS = "tagging.errors"
NEEDS_REVIEW = "tagging.needs_review"
NEEDS_REVIEW_RATE = "tagging.needs_review_rate"
IMAGES_PER_S = "tagging.images_per_s"
LIVE_ACCURACY = "tagging.live_accuracy"
LIVE_VERIFIED = "tagging.live_verified"
RETRAIN_DURATION = "tagging.retrain_duration"
PROMOTIONS = "tagging.promotions"
GATE_REFUSALS = "tagging.gate_refusals"
REVIEW_QUEUE = "tagging.review.queue_length"
REVIEW_ANSWERS_PER_HOUR = "tagging.review.answers_per_hour"
REVIEW_OLDEST_DAYS = "tagging.review.oldest_open_days"
ALERTS_FAILED = "tagging.alerts_failed"

NAMES = {
    ROWS: ("counter", "rows a run published for its day (not re-tags after a promotion)"),
    TAGGED: ("counter", "rows published with a tag"),
    ERRORS: ("counter", "rows published untagged (tag_error)"),
    NEEDS_REVIEW: ("counter", "rows published with needs_review"),
    NEEDS_REVIEW_RATE: ("gauge", "needs_review share of the day just published"),
    IMAGES_PER_S: ("gauge", "photos tagged per second by a tag_shard task"),
    LIVE_ACCURACY: ("gauge", "accuracy of the day's tags on verified rows the model did not "
                             "train on (sent when there are some)"),
    LIVE_VERIFIED: ("gauge", "how many verified rows live_accuracy was measured on"),
    RETRAIN_DURATION: ("timer", "time to train a new candidate (ms; not sent when reused)"),
    PROMOTIONS: ("counter", "candidates promoted to champion"),
    GATE_REFUSALS: ("counter", "candidates refused by the gate"),
    REVIEW_QUEUE: ("gauge", "photos waiting for a reviewer"),
    REVIEW_ANSWERS_PER_HOUR: ("gauge", "review answers given in the last hour"),
    REVIEW_OLDEST_DAYS: ("gauge", "days since the oldest waiting photo was queued"),
    ALERTS_FAILED: ("counter", "alerts a channel (webhook, email) failed to deliver"),
}


@functools.cache
def _backend(pid: int) -> Any:
    """Airflow's metrics logger for this process, as its [metrics] settings make it."""
    from airflow.sdk.observability.metrics.stats_utils import get_stats_factory

    return get_stats_factory()()


def _send(method: str, name: str, *args: Any) -> None:
    if name not in NAMES:
        raise ValueError(f"{name} is not one of the documented metrics")
    try:
        getattr(_backend(os.getpid()), method)(name, *args)
    except Exception as e:  # a metric must never fail a task
        log.warning("metric %s not sent: %s", name, e)


def incr(name: str, count: int = 1) -> None:
    _send("incr", name, count)


def gauge(name: str, value: float) -> None:
    _send("gauge", name, value)


def timing(name: str, seconds: float) -> None:
    _send("timing", name, timedelta(seconds=seconds))
