"""Catalogue tagging: learn from verified labels, gate, tag a day in shards, publish, validate.

```
export_answers -> harvest_labels -> retrain -> gate_and_promote -> resolve_run -> plan_shards
                                 -> tag_shard[*] -> publish -> validate -> announce
                  resolve_run -> retag -> republish_answered      publish -> fill_review_queue
```

* **export_answers** writes the review queue's answers (tagging.review) per day to
  `<catalogue>/reviews/dt=D/answers.parquet`; only days whose answers changed.
* **harvest_labels** collects the rows with `verified_category` of the last `harvest_days`
  partitions (and the `TAGGING_REAL_PHOTOS` folder) into the label store
  (`<catalogue>/labels/`); unchanged partitions are skipped.
* **retrain** trains a candidate on Fashion-MNIST plus the store's train side, calibrated
  on its holdout (one fit), or reuses the champion when nothing changed or fewer than
  `min_new_labels` new labels arrived; runs in the `tagging_training` pool (1 slot) so
  two trainings never run at once.
* **gate_and_promote** scores the candidate and the champion on the current holdout and
  promotes the candidate only if it passes the gate; a refused candidate is logged and
  recorded in the registry's event log, the champion stays. No champion at all fails
  the run.
* **retag**: after a promotion, re-tags and republishes the `retag_days` previous days.
* **republish_answered** publishes again (re-tag path, the day's own model version) the
  days whose review answers changed since their last publication: a person's answer wins
  in `category` (`category_source = verified`).
* **resolve_run** pins the model version (champion, or the `model_version` param) and
  the partition (the `partition` param, else the run's logical date) for every task.
* **plan_shards** / **tag_shard** (dynamic task mapping, retries with exponential
  backoff) stage one Parquet file per shard; only paths travel through XCom.
* **publish** commits the day to the tagged Delta table in one commit, only when every shard
  succeeded;
  **validate** checks it (live accuracy on verified rows and review rate against the
  version's held-out figures too); **fill_review_queue** adds the day's needs_review rows
  and its audit slice to the review queue; **announce** emits the `catalogue_tagged` asset
  event, only when the run published something new (it is skipped otherwise).

Queues (CeleryExecutor): retrain and gate_and_promote on the training queue, tag_shard
on the tagging queue (each uses every core: workers serve them with concurrency 1), the
rest on Airflow's default queue; names from `TAGGING_TRAINING_QUEUE` /
`TAGGING_TAGGING_QUEUE`. Assets have fixed logical URIs (never a path from the
environment, which would make one of two differently configured parsers' assets
inactive); the physical location travels in the event's `extra`.

A partition already published by the same model from the same input files is not
re-tagged, so re-running a day or a backfill changes nothing.

On call (tagging.ops): a task that fails for good is alerted by its on_failure_callback
(alerts.TaskFailed); a refused candidate, validation warnings and a review backlog are
alerted as warnings by the tasks that find them, and the steps' figures go out as metrics
through Airflow's [metrics] settings (tagging.ops.oncall says which step sends what).

Every task is a function of `tagging.pipeline` (or `tagging.catalogue`); settings come
from the environment (`tagging.settings`: `TAGGING_CATALOGUE`, `TAGGING_REGISTRY`,
`TAGGING_FASHION_MNIST_DIR`, `TAGGING_REAL_PHOTOS`, ...); heavy libraries are imported
inside the tasks only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from tagging.ops.alerts import TaskFailed
from tagging.pipeline.results import (
    CandidateRef,
    GateOutcome,
    HarvestSummary,
    Publication,
    RetaggedDay,
    RunPlan,
    ValidatedRun,
)
from tagging.settings import DAG_ID, LoopPolicy, Settings, TaggingLimits

if TYPE_CHECKING:  # planning reads Parquet: not imported when the DAG is parsed
    from tagging.catalogue.planning import Shard

log = logging.getLogger(__name__)

SETTINGS = Settings.from_env()
LIMITS = TaggingLimits()
LOOP = LoopPolicy()

# Lineage: what tag_shard reads (a day's incoming partition, the champion model) and
# what announce emits (the day's published partition, as the event's partition key).
INCOMING = Asset(name="catalogue_incoming", uri="catalogue://incoming", group="catalogue")
CHAMPION = Asset(name="champion_model", uri="model-registry://champion", group="ml-model")
TAGGED = Asset(name="catalogue_tagged", uri="catalogue://tagged", group="catalogue")

PARAMS = {
    "partition": Param(None, type=["null", "string"], format="date",
                       description="Day to tag (YYYY-MM-DD); default: the run's logical date."),
    "force_retrain": Param(False, type="boolean",
                           description="Train a new candidate even if nothing changed."),
    "model_version": Param(None, type=["null", "string"], pattern=r"^v\d{4,}$",
                           description="Pin a registry version (e.g. v0003) instead of the "
                                       "champion."),
    "review_threshold": Param(None, type=["null", "number"], minimum=0, maximum=1,
                              description="Confidence below which a tag needs review; default: "
                                          "the model's own policy."),
    "rows_per_shard": Param(LIMITS.rows_per_shard, type="integer", minimum=1),
    "max_error_rate": Param(LIMITS.max_error_rate, type="number", minimum=0, maximum=1),
    "max_review_rate": Param(LIMITS.max_review_rate, type="number", minimum=0, maximum=1),
    "train": Param({}, type="object",
                   description="TrainConfig overrides, e.g. {\"epochs\": 2} or "
                               "{\"real_photos\": \"/data/labelled-photos\"} (default: "
                               "$TAGGING_REAL_PHOTOS)."),
    "gate": Param({}, type="object",
                  description="GatePolicy overrides: min_accuracy, min_class_recall, tolerance, "
                              "real_photo_tolerance, holdout_tolerance, holdout_z."),
    "harvest_days": Param(LOOP.harvest_days, type="integer", minimum=1,
                          description="Harvest verified labels from this many days, up to the "
                                      "run's partition."),
    "min_new_labels": Param(LOOP.min_new_labels, type="integer", minimum=0,
                            description="Retrain only when this many new train-side labels "
                                        "arrived since the champion was trained."),
    "target_precision": Param(LOOP.target_precision, type="number", minimum=0, maximum=1,
                              description="Precision the tags published without review must "
                                          "reach on the held-out real photos."),
    "retag_days": Param(LOOP.retag_days, type="integer", minimum=0,
                        description="After a promotion, re-tag this many days before the "
                                    "run's partition."),
    "live_accuracy_margin": Param(LOOP.live_accuracy_margin, type="number", minimum=0, maximum=1,
                                  description="validate fails when live accuracy on verified "
                                              "rows is this far below the holdout's."),
    "review_rate_margin": Param(LOOP.review_rate_margin, type="number", minimum=0, maximum=1,
                                description="validate fails when the review rate is this far "
                                            "above the version's expected rate."),
}


def _actor(dag_run: Any) -> str:
    return f"airflow:{DAG_ID}/{dag_run.run_id}"


def _no_retry(step: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a pipeline step; its expected errors fail the task without retries."""
    from tagging.errors import EXPECTED_ERRORS

    try:
        return step(*args, **kwargs)
    except EXPECTED_ERRORS as e:
        raise AirflowFailException(str(e)) from e


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable(SETTINGS.schedule, timezone="UTC"),
    start_date=SETTINGS.start_date.replace(tzinfo=UTC),
    catchup=False,
    max_active_runs=SETTINGS.max_active_runs,
    params=PARAMS,
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=1),
                  "on_failure_callback": [TaskFailed()]},
    tags=["catalogue", "ml"],
    doc_md=__doc__,
)
def catalogue_tagging() -> None:
    @task(queue=SETTINGS.training_queue)  # decodes photos in a process pool: a solo worker
    def harvest_labels(params: dict | None = None, logical_date: datetime | None = None,
                       data_interval_start: datetime | None = None) -> HarvestSummary:
        """Verified rows of the last harvest_days partitions -> the label store."""
        from tagging.pipeline.learn import harvest
        from tagging.pipeline.tag import choose_partition

        partition, _ = _no_retry(choose_partition, params["partition"], logical_date,
                                 data_interval_start)
        return _no_retry(harvest, partition, params["harvest_days"], params["train"])

    @task
    def export_answers() -> dict:
        """Review answers -> <catalogue>/reviews/dt=D/answers.parquet, for the label store
        and the next publication of their day (a day is rewritten only when it changed)."""
        from tagging.pipeline.review import export_review_answers

        return _no_retry(export_review_answers)

    @task(pool=SETTINGS.training_pool, queue=SETTINGS.training_queue, max_active_tis_per_dag=1,
          execution_timeout=timedelta(hours=3))
    def retrain(params: dict | None = None, dag_run: Any = None) -> CandidateRef:
        """Train a candidate, or reuse the champion (nothing changed, or too few labels)."""
        from tagging.ops import oncall
        from tagging.pipeline.learn import retrain

        started = time.monotonic()
        candidate = _no_retry(retrain, params["train"], force=params["force_retrain"],
                              actor=_actor(dag_run), min_new_labels=params["min_new_labels"],
                              target_precision=params["target_precision"])
        oncall.retrained(candidate, time.monotonic() - started)
        return candidate

    @task(pool=SETTINGS.training_pool, queue=SETTINGS.training_queue)
    def gate_and_promote(candidate: CandidateRef, params: dict | None = None,
                         dag_run: Any = None) -> GateOutcome:
        """Promote through the gate; a refusal keeps the champion and the run goes on."""
        from tagging.ops import oncall
        from tagging.pipeline.learn import promote_unless_reused

        outcome = _no_retry(promote_unless_reused, candidate, params["gate"],
                            actor=_actor(dag_run))
        oncall.gated(outcome, candidate)
        return outcome

    @task
    def resolve_run(gate: GateOutcome, params: dict | None = None,
                    logical_date: datetime | None = None,
                    data_interval_start: datetime | None = None) -> RunPlan:
        """Pin the model version and the partition once for the whole run."""
        from tagging.pipeline.tag import choose_partition, plan_run

        partition, source = _no_retry(choose_partition, params["partition"], logical_date,
                                      data_interval_start)
        log.info("partition %s (from %s)", partition, source)
        return _no_retry(plan_run, partition, params["model_version"])

    @task(queue=SETTINGS.tagging_queue)  # tags with every core, like tag_shard
    def retag(gate: GateOutcome, run: RunPlan, params: dict | None = None
              ) -> list[RetaggedDay]:
        """After a promotion, re-tag and republish the previous retag_days days."""
        from tagging.pipeline.learn import retag_after_promotion

        return _no_retry(retag_after_promotion, gate, run["partition"], params["retag_days"])

    @task(queue=SETTINGS.tagging_queue)  # re-tags, like retag
    def republish_answered(run: dict, retagged: list[dict]) -> list[dict]:
        """Publish again the days whose review answers changed since their publication."""
        from tagging.pipeline.review import republish_answered

        return _no_retry(republish_answered, run)

    @task
    def plan_shards(run: RunPlan, params: dict | None = None) -> list[Shard]:
        """Shards of the partition's input (file x row-group range); none if already published."""
        from tagging.catalogue.planning import plan_shards

        if run["already_published"]:
            return []
        settings = Settings.from_env()
        return _no_retry(plan_shards, settings.catalogue_root, run["partition"],
                         rows_per_shard=params["rows_per_shard"],
                         max_shards=settings.max_map_length)

    @task(queue=SETTINGS.tagging_queue, inlets=[INCOMING, CHAMPION],
          retries=SETTINGS.shard_retries,
          retry_delay=timedelta(seconds=SETTINGS.shard_retry_delay_s),
          retry_exponential_backoff=2.0, max_retry_delay=timedelta(minutes=30),
          execution_timeout=timedelta(hours=2))
    def tag_shard(shard: Shard, run: RunPlan, params: dict | None = None,
                  dag_run: Any = None) -> str:
        """Tag one shard with the pinned model; returns the staged Parquet path."""
        from tagging.catalogue.tagger import tag_shard_to_staging
        from tagging.ops import oncall

        settings = Settings.from_env()
        started = time.monotonic()
        staged = tag_shard_to_staging(
            shard, catalogue_root=settings.catalogue_root, registry_root=settings.registry_root,
            model_version=run["model_version"], run_id=dag_run.run_id,
            tagged_at=run["tagged_at"], review_threshold=params["review_threshold"])
        oncall.shard_tagged(shard["rows"], time.monotonic() - started)
        return staged

    @task(trigger_rule="none_failed")
    def publish(run: RunPlan, staged: list[str]) -> Publication:
        """Commit the day to the tagged Delta table (runs only when no shard failed)."""
        from tagging.ops import oncall
        from tagging.pipeline.tag import publish_run

        publication = _no_retry(publish_run, run, staged[:])
        oncall.published(run, publication)
        return publication

    @task
    def validate(run: RunPlan, published: Publication,
                 params: dict | None = None) -> ValidatedRun:
        """Row count, schema and quality limits; a breach fails the run, warnings are alerted."""
        from tagging.ops import oncall
        from tagging.pipeline.tag import validate_run

        result = _no_retry(validate_run, run, published,
                           max_error_rate=params["max_error_rate"],
                           max_review_rate=params["max_review_rate"],
                           live_accuracy_margin=params["live_accuracy_margin"],
                           review_rate_margin=params["review_rate_margin"])
        oncall.validated(result)
        return result

    @task
    def fill_review_queue(run: dict, published: dict) -> dict:
        """Queue the day's needs_review rows and its audit slice for the review page; the
        queue's figures go out as metrics, a backlog older than the setting is alerted."""
        from tagging.ops import oncall
        from tagging.pipeline.review import fill_review_queue

        filled = _no_retry(fill_review_queue, run["partition"])
        oncall.review_queue()
        return filled

    @task(outlets=[TAGGED])
    def announce(run: RunPlan, validated: ValidatedRun, outlet_events: Any = None) -> None:
        """Emit the catalogue_tagged event for a newly published day; skipped otherwise."""
        if not validated["newly_published"]:
            raise AirflowSkipException(f"{run['partition']} was already published by "
                                       f"{run['model_version']}: no new catalogue_tagged event")
        event = outlet_events[TAGGED]
        report = {k: v for k, v in validated["validation"].items() if k != "problems"}
        event.extra = {**report, "path": validated["path"],
                       "newly_published": validated["newly_published"]}
        event.add_partitions(run["partition"])

    candidate = retrain()
    export_answers() >> harvest_labels() >> candidate
    gate = gate_and_promote(candidate)
    run = resolve_run(gate)
    republish_answered(run, retag(gate, run))
    staged = tag_shard.partial(run=run).expand(shard=plan_shards(run))
    published = publish(run, staged)
    fill_review_queue(run, published)
    announce(run, validate(run, published))


catalogue_tagging()
