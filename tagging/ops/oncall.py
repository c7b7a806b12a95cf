"""What the DAG's steps tell the people on call: each step's metrics (tagging.ops.metrics)
and warnings (tagging.ops.alerts). Called by the DAG's tasks with what their step returned;
a failed task is alerted by alerts.TaskFailed instead.

| step | metrics | warning alert |
| --- | --- | --- |
| retrain | retrain_duration (a new candidate) | - |
| gate_and_promote | promotions, gate_refusals | gate_refused |
| tag_shard | images_per_s | - |
| publish | rows, tagged, errors, needs_review, needs_review_rate, live_* | - |
| validate | - | validation_warning (the live-quality drop is one) |
| fill_review_queue | review.queue_length, answers_per_hour, oldest_open_days | review_backlog |
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tagging.ops import metrics
from tagging.ops.alerts import WARNING, Alert, redact, run_day, send
from tagging.pipeline.results import CandidateRef, GateOutcome, Publication, ValidatedRun
from tagging.settings import AlertSettings, ReviewSettings, Settings

log = logging.getLogger(__name__)
DAY_S = 86400.0
F = TypeVar("F", bound=Callable[..., None])


def quietly(report: F) -> F:
    """What is told to the people on call never fails the step that told it: logged."""
    @functools.wraps(report)
    def guarded(*args: Any, **kwargs: Any) -> None:
        try:
            report(*args, **kwargs)
        except Exception as e:
            log.error("%s: nothing reported (%s)", report.__name__, redact(str(e)))

    return guarded  # type: ignore[return-value]


def where(task: str) -> dict[str, Any]:
    """The running task's day, run and log URL, for an alert's fields."""
    from airflow.sdk import get_current_context

    context = get_current_context()
    return {"day": run_day(context), "task": task, "run_id": context.get("run_id"),
            "log_url": context["ti"].log_url}


@quietly
def retrained(candidate: CandidateRef, seconds: float) -> None:
    if not candidate["reused"]:
        metrics.timing(metrics.RETRAIN_DURATION, seconds)


@quietly
def gated(outcome: GateOutcome, candidate: CandidateRef) -> None:
    """A promotion is counted; a refused candidate is counted and alerted."""
    if candidate["reused"]:
        return
    if outcome["promoted"]:
        metrics.incr(metrics.PROMOTIONS)
        return
    metrics.incr(metrics.GATE_REFUSALS)
    send(Alert(kind="gate_refused", severity=WARNING,
               title=f"the gate refused candidate {outcome['candidate']}: the champion stays "
                     f"{outcome['champion']}",
               details=tuple(f"reason: {redact(r)}" for r in outcome["reasons"]),
               **where("gate_and_promote")))


@quietly
def shard_tagged(rows: int, seconds: float) -> None:
    if rows and seconds > 0:
        metrics.gauge(metrics.IMAGES_PER_S, round(rows / seconds, 2))


@quietly
def published(run: dict, publication: Publication) -> None:
    """The counts and live quality of a day just published (nothing on a re-run)."""
    from tagging.catalogue.published import read_manifest

    if not publication["newly_published"]:
        return
    manifest = read_manifest(Settings.from_env().catalogue_root, run["partition"]) or {}
    counts, quality = manifest.get("counts") or {}, manifest.get("quality") or {}
    for name, key in ((metrics.ROWS, "rows"), (metrics.TAGGED, "tagged"),
                      (metrics.ERRORS, "errors"), (metrics.NEEDS_REVIEW, "needs_review")):
        metrics.incr(name, int(counts.get(key, 0)))
    if counts.get("rows"):
        metrics.gauge(metrics.NEEDS_REVIEW_RATE, round(counts["needs_review"] / counts["rows"], 4))
    metrics.gauge(metrics.LIVE_VERIFIED, int(quality.get("verified") or 0))
    if quality.get("accuracy") is not None:
        metrics.gauge(metrics.LIVE_ACCURACY, quality["accuracy"])


@quietly
def validated(result: ValidatedRun) -> None:
    """Validation warnings (a live-quality drop among them): the run succeeds, people are told."""
    report = result["validation"]
    if report["warnings"]:
        send(Alert(kind="validation_warning", severity=WARNING,
                   title=f"{report['partition']} published by {report['model_version']} "
                         f"with {len(report['warnings'])} warning(s)",
                   details=tuple(f"warning: {redact(w)}" for w in report["warnings"]),
                   **where("validate")))


@quietly
def review_queue() -> None:
    """The review queue's length, pace and age; a backlog older than the setting is alerted."""
    from tagging.review.store import ReviewStore

    url = ReviewSettings.from_env().db_or_none(Settings.from_env().catalogue_root)
    if url is None:
        return
    store = ReviewStore(url)
    try:
        vitals = store.vitals()
    finally:
        store.close()
    age_days = (vitals["oldest_open_s"] or 0.0) / DAY_S
    metrics.gauge(metrics.REVIEW_QUEUE, vitals["queue"])
    metrics.gauge(metrics.REVIEW_ANSWERS_PER_HOUR, vitals["answers_last_hour"])
    metrics.gauge(metrics.REVIEW_OLDEST_DAYS, round(age_days, 3))
    limit = AlertSettings.from_env().backlog_days
    if vitals["queue"] and age_days > limit:
        send(Alert(kind="review_backlog", severity=WARNING,
                   title=f"review backlog: {vitals['queue']} photos waiting, the oldest queued "
                         f"{age_days:.1f} days ago (limit {limit:g})",
                   details=(f"answers in the last hour: {vitals['answers_last_hour']}",),
                   **where("fill_review_queue")))
