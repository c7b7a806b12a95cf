"""Catalogue tagging: retrain, gate, tag one day's partition in shards, publish, validate.

```
retrain -> gate_and_promote -> resolve_run -> plan_shards -> tag_shard[*] -> publish -> validate
```

* **retrain** trains a candidate (or reuses the champion when the training data
  fingerprint and configuration are unchanged); runs in the `tagging_training` pool
  (1 slot) so two trainings never run at once. With labelled real photos
  (`TAGGING_REAL_PHOTOS`, or `{"train": {"real_photos": ...}}`) it trains on them too and
  calibrates the review policy on out-of-fold predictions (about 5 minutes).
* **gate_and_promote** promotes the candidate only if it passes the gate; a refused
  candidate is logged and recorded in the registry's event log, the champion stays.
  No champion at all fails the run.
* **resolve_run** pins the model version (champion, or the `model_version` param) and
  the partition (the `partition` param, else the run's logical date) for every task.
* **plan_shards** / **tag_shard** (dynamic task mapping, retries with exponential
  backoff) stage one Parquet file per shard; only paths travel through XCom.
* **publish** swaps the partition in atomically, only when every shard succeeded;
  **validate** checks it and emits the `catalogue_tagged` asset event.

A partition already published by the same model from the same input files is not
re-tagged, so re-running a day or a backfill changes nothing.

Paths come from the environment (`TAGGING_CATALOGUE`, `TAGGING_REGISTRY`,
`TAGGING_FASHION_MNIST_DIR`, `TAGGING_REAL_PHOTOS`); heavy libraries are imported inside
the tasks only.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException

from tagging import config

log = logging.getLogger(__name__)

DAG_ID = "catalogue_tagging"
SCHEDULE = os.environ.get("TAGGING_SCHEDULE", "@daily")
START_DATE = datetime.fromisoformat(os.environ.get("TAGGING_START_DATE", "2024-01-01"))
MAX_ACTIVE_RUNS = int(os.environ.get("TAGGING_MAX_ACTIVE_RUNS", "2"))
TRAINING_POOL = os.environ.get("TAGGING_TRAINING_POOL", "tagging_training")
SHARD_RETRIES = int(os.environ.get("TAGGING_SHARD_RETRIES", "3"))
SHARD_RETRY_DELAY = timedelta(seconds=float(os.environ.get("TAGGING_SHARD_RETRY_DELAY", "30")))

TAGGED = Asset(
    name="catalogue_tagged",
    uri=Path(config.catalogue_root(), "tagged").absolute().as_uri(),
    group="catalogue",
)

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
    "rows_per_shard": Param(20_000, type="integer", minimum=1),
    "max_error_rate": Param(0.05, type="number", minimum=0, maximum=1),
    "max_review_rate": Param(0.6, type="number", minimum=0, maximum=1),
    "train": Param({}, type="object",
                   description="TrainConfig overrides, e.g. {\"epochs\": 2} or "
                               "{\"real_photos\": \"/data/labelled-photos\"} (default: "
                               "$TAGGING_REAL_PHOTOS)."),
    "gate": Param({}, type="object",
                  description="GatePolicy overrides: min_accuracy, min_class_recall, tolerance, "
                              "real_photo_tolerance."),
}


def _actor(dag_run: Any) -> str:
    return f"airflow:{DAG_ID}/{dag_run.run_id}"


def _partition(params: dict, logical_date: datetime | None,
               data_interval_start: datetime | None) -> tuple[str, str]:
    """The day this run tags, and where that came from."""
    if params.get("partition"):
        value, source = params["partition"], "the 'partition' param"
    elif logical_date is not None:
        value, source = logical_date.astimezone(UTC).date().isoformat(), "the run's logical date"
    elif data_interval_start is not None:
        value = data_interval_start.astimezone(UTC).date().isoformat()
        source = "the run's data interval start"
    else:
        raise AirflowFailException(
            "this run has no logical date: pass the day to tag as the 'partition' param")
    try:
        return date.fromisoformat(value).isoformat(), source
    except ValueError:
        raise AirflowFailException(f"partition {value!r} is not a YYYY-MM-DD date") from None


@dag(
    dag_id=DAG_ID,
    schedule=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
    start_date=START_DATE.replace(tzinfo=UTC),
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    params=PARAMS,
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=1)},
    tags=["catalogue", "ml"],
    doc_md=__doc__,
)
def catalogue_tagging() -> None:
    @task(pool=TRAINING_POOL, max_active_tis_per_dag=1, execution_timeout=timedelta(hours=3))
    def retrain(params: dict | None = None, dag_run: Any = None) -> dict:
        """Train a candidate, or reuse the champion when data and config are unchanged."""
        from tagging.train import TrainConfig, train_candidate

        try:
            real_photos = config.real_photos()
            defaults = {"real_photos": real_photos} if real_photos else {}
            train_config = TrainConfig.from_dict(defaults | params["train"])
        except (TypeError, ValueError) as e:
            raise AirflowFailException(f"bad 'train' param: {e}") from e
        candidate = train_candidate(
            train_config, registry_root=config.registry_root(), created_by=_actor(dag_run),
            reuse_if_unchanged=not params["force_retrain"])
        log.info("candidate %s (%s)", candidate.version,
                 "champion reused" if candidate.reused else "newly trained")
        return {"version": candidate.version, "reused": candidate.reused}

    @task(pool=TRAINING_POOL)
    def gate_and_promote(candidate: dict, params: dict | None = None,
                         dag_run: Any = None) -> dict:
        """Promote through the gate; a refusal keeps the champion and the run goes on."""
        from model_registry import GatePolicy, Registry

        try:
            policy = GatePolicy(**params["gate"])
        except TypeError as e:
            raise AirflowFailException(f"bad 'gate' param: {e}") from e
        registry = Registry(config.registry_root())
        result = {"candidate": candidate["version"], "promoted": False, "reasons": []}
        if not candidate["reused"]:
            decision = registry.promote(candidate["version"], policy=policy, actor=_actor(dag_run))
            result.update(promoted=decision.passed, reasons=decision.reasons)
            if not decision.passed:
                log.warning("gate refused %s, champion stays %s: %s", candidate["version"],
                            decision.champion, "; ".join(decision.reasons))
        result["champion"] = registry.champion()
        if result["champion"] is None:
            raise AirflowFailException(
                f"no champion model in {registry.root}: the candidate was refused by the gate "
                f"({'; '.join(result['reasons'])}) and there is no earlier champion to tag with")
        return result

    @task
    def resolve_run(gate: dict, params: dict | None = None,
                    logical_date: datetime | None = None,
                    data_interval_start: datetime | None = None) -> dict:
        """Pin the model version and the partition once for the whole run."""
        from model_registry import Registry, RegistryError
        from tagging.batch import is_published

        partition, source = _partition(params, logical_date, data_interval_start)
        log.info("partition %s (from %s)", partition, source)
        ref = params["model_version"] or "champion"
        try:
            version = Registry(config.registry_root()).get(ref).version
        except RegistryError as e:
            raise AirflowFailException(f"cannot use model {ref!r}: {e}") from e
        log.info("model version %s (%s)", version,
                 "pinned by the 'model_version' param" if params["model_version"] else "champion")
        published = is_published(config.catalogue_root(), partition, version)
        if published:
            log.info("%s is already published by %s from the same inputs: nothing to re-tag",
                     partition, version)
        return {"partition": partition, "model_version": version, "already_published": published,
                "tagged_at": datetime.now(UTC).replace(microsecond=0).isoformat()}

    @task
    def plan_shards(run: dict, params: dict | None = None) -> list[dict]:
        """Shards of the partition's input (file x row-group range); none if already published."""
        from tagging.batch import PartitionNotFound
        from tagging.batch import plan_shards as plan

        if run["already_published"]:
            return []
        try:
            return plan(config.catalogue_root(), run["partition"],
                        rows_per_shard=params["rows_per_shard"])
        except PartitionNotFound as e:
            raise AirflowFailException(str(e)) from e

    @task(retries=SHARD_RETRIES, retry_delay=SHARD_RETRY_DELAY, retry_exponential_backoff=2.0,
          max_retry_delay=timedelta(minutes=30), execution_timeout=timedelta(hours=2))
    def tag_shard(shard: dict, run: dict, params: dict | None = None,
                  dag_run: Any = None) -> str:
        """Tag one shard with the pinned model; returns the staged Parquet path."""
        from tagging.batch import tag_shard as tag

        return tag(shard, catalogue_root=config.catalogue_root(),
                   registry_root=config.registry_root(), model_version=run["model_version"],
                   run_id=dag_run.run_id, tagged_at=run["tagged_at"],
                   review_threshold=params["review_threshold"])

    @task(trigger_rule="none_failed")
    def publish(run: dict, staged: list[str]) -> dict:
        """Swap the partition in atomically (runs only when no shard failed)."""
        from tagging.batch import publish_partition, published_dir

        if run["already_published"]:
            return {"path": str(published_dir(config.catalogue_root(), run["partition"])),
                    "newly_published": False}
        path = publish_partition(config.catalogue_root(), run["partition"], staged=staged[:],
                                 model_version=run["model_version"], tagged_at=run["tagged_at"])
        return {"path": str(path), "newly_published": True}

    @task(outlets=[TAGGED])
    def validate(run: dict, published: dict, params: dict | None = None,
                 outlet_events: Any = None) -> dict:
        """Row count, schema and quality limits; a breach fails the run. Emits the asset."""
        from tagging.batch import PartitionInvalid, validate_partition

        try:
            report = validate_partition(config.catalogue_root(), run["partition"],
                                        max_error_rate=params["max_error_rate"],
                                        max_review_rate=params["max_review_rate"])
        except PartitionInvalid as e:
            raise AirflowFailException(str(e)) from e
        report["path"] = published["path"]
        report["newly_published"] = published["newly_published"]
        event = outlet_events[TAGGED]
        event.extra = {k: v for k, v in report.items() if k != "problems"}
        event.add_partitions(run["partition"])
        return report

    run = resolve_run(gate_and_promote(retrain()))
    staged = tag_shard.partial(run=run).expand(shard=plan_shards(run))
    validate(run, publish(run, staged))


catalogue_tagging()
